"""Content verification on demand (FR-10.5): hashes recorded, unseen changes found."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.library import same_content
from musicfs.core.content.manifests import Version
from musicfs.core.content.verify import verify_content
from musicfs.core.origins import LocalOrigin
from musicfs.core.origins.federation import Federation
from musicfs.core.sync.scanner import Scanner

MakeWav = Callable[..., Path]  # the make_wav fixture of conftest.py


@pytest.fixture
def library(tmp_path: Path, make_wav: MakeWav) -> tuple[Path, LocalOrigin, Path]:
    for name in ("a", "b"):
        make_wav(tmp_path / "lib" / f"{name}.wav", seconds=0.2, title=name.upper())
    origin = LocalOrigin("lib", tmp_path / "lib")
    catalog_path = tmp_path / "catalog.sqlite3"
    with Catalog.open(catalog_path) as catalog:
        Scanner(catalog, PathTemplate.parse(DEFAULT_TEMPLATE)).scan(origin)
    return tmp_path / "lib", origin, catalog_path


def rewrite_in_place(path: Path) -> None:
    """Change bytes without changing size or mtime (what size/mtime polling misses)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_the_first_run_records_hashes_and_a_second_finds_an_unseen_change(
    library: tuple[Path, LocalOrigin, Path], tmp_path: Path
) -> None:
    root, origin, catalog_path = library
    federation = Federation({"lib": origin})
    first = verify_content(catalog_path, federation, None)
    assert (first.files, first.checked, first.recorded, first.changed) == (2, 2, 2, [])
    assert first.bytes == sum(p.stat().st_size for p in root.iterdir())
    again = verify_content(catalog_path, federation, None)
    assert (again.recorded, again.changed) == (0, [])

    content = ContentCache(tmp_path / "content")
    try:
        with Catalog.open(catalog_path) as catalog:
            track = next(t for t in catalog.tracks() if t.relpath == "b.wav")
        version = Version("lib", "b.wav", track.size, track.mtime_ns, "wav")
        with origin.open("b.wav") as file:
            assert content.fill(version, file)
        rewrite_in_place(root / "b.wav")
        found = verify_content(catalog_path, federation, content)
        assert [t.relpath for t in found.changed] == ["b.wav"]
        assert not content.has(version), "the cached copy holds the old bytes: it must go"
    finally:
        content.close()
    with Catalog.open(catalog_path) as catalog:
        rescan = Scanner(catalog, PathTemplate.parse(DEFAULT_TEMPLATE)).scan(origin)
    assert rescan.changed == 1  # marked changed: parsed again although size/mtime agree
    assert verify_content(catalog_path, federation, None).recorded == 1  # the new baseline


def test_a_file_that_cannot_be_read_is_reported_not_changed(
    library: tuple[Path, LocalOrigin, Path],
) -> None:
    root, origin, catalog_path = library
    (root / "a.wav").unlink()
    report = verify_content(catalog_path, Federation({"lib": origin}), None, "lib")
    assert report.checked == 1
    assert report.changed == []
    assert len(report.failed) == 1
    assert report.failed[0].startswith("lib/a.wav: ")


def test_replicas_with_different_content_hashes_are_not_read_for_each_other(
    library: tuple[Path, LocalOrigin, Path],
) -> None:
    _, _, catalog_path = library
    with Catalog.open(catalog_path) as catalog:
        track = next(catalog.tracks())
    assert same_content(track, track)
    assert same_content(replace(track, content_hash="x"), replace(track, content_hash=None))
    assert not same_content(replace(track, content_hash="x"), replace(track, content_hash="y"))
    assert not same_content(track, replace(track, size=track.size + 1))
