"""A remote scan parses FLAC and ID3v2 heads on the scan thread (issue 17).

The reading threads hand over the head of a file whose tags end inside it
(`read_head` -> `Head`); the scan thread parses it (`parse_head`). Whatever way a
file goes, its tags and reasons are what `read_remote` reads through the open
file, and a head mutagen reads past is read again, never given up.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import mutagen.flac
import mutagen.id3
import pytest

from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.model import AUDIO_EXTENSIONS
from musicfs.core.origins import LocalOrigin
from musicfs.core.origins.local import LocalFile
from musicfs.core.sync import remote as remote_module
from musicfs.core.sync import scanner as scanner_module
from musicfs.core.sync.parsing import Parsed
from musicfs.core.sync.remote import Head, parse_head, read_head, read_remote
from musicfs.core.sync.scanner import Scanner, ScanReport

COVER = bytes(range(256)) * 1200  # 300 KB: longer than a head


class RemoteFolder(LocalOrigin):
    """A flat folder read as a remote origin is: by ranged reads, never by
    path (its listing still goes by path: keep it flat)."""

    def local_path(self, relpath: str) -> None:  # type: ignore[override]
        return None

    def open(self, relpath: str) -> LocalFile:
        path = os.path.join(self.root, relpath)
        return LocalFile(self.id, path, os.open(path, os.O_RDONLY | os.O_CLOEXEC))


@pytest.fixture
def library(tmp_path: Path, corpus: Path, encode: Callable[..., Path]) -> Path:
    """The corpus's FLAC and MP3 files (damaged ones, MP3s with only ID3v1),
    30-second ones (longer than a head), and a FLAC and an MP3 whose cover
    makes their tags longer than a head."""
    root = tmp_path / "lib"
    root.mkdir()
    for path in sorted(corpus.rglob("*")):
        if path.suffix.lower() in (".flac", ".mp3") and path.is_file():
            shutil.copy(path, root / path.name)
    for name in ("long.flac", "long.mp3"):
        encode(root / name, 30.0, title="Long", artist="B", album="C", track="3/9")
    flac = encode(root / "covered.flac", 2.0, title="Covered", artist="A")
    mp3 = encode(root / "covered.mp3", 2.0, title="Covered", artist="A")
    picture = mutagen.flac.Picture()
    picture.type, picture.mime, picture.data = 3, "image/jpeg", COVER
    audio = mutagen.flac.FLAC(flac)
    audio.add_picture(picture)
    audio.save()
    tags = mutagen.id3.ID3(mp3)
    tags.add(mutagen.id3.APIC(encoding=3, mime="image/jpeg", type=3, desc="", data=COVER))
    tags.save(mp3)
    return root


def _through_the_open_file(origin: LocalOrigin, relpath: str) -> Parsed:
    with origin.open(relpath) as opened:
        return read_remote(opened, relpath, identity=False)[0]


def _scan(origin: LocalOrigin, catalog_path: Path) -> tuple[ScanReport, dict[str, Parsed]]:
    with Catalog.open(catalog_path) as catalog:
        scanner = Scanner(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))
        try:
            report = scanner.scan(origin)
        finally:
            scanner.close()
        found = {t.relpath: Parsed(t.tags, t.error) for t in catalog.tracks()}
    return report, found


def _audio(library: Path) -> list[str]:
    return sorted(p.name for p in library.iterdir() if p.suffix.lower()[1:] in AUDIO_EXTENSIONS)


def test_heads_hold_the_tags_or_the_file_is_parsed_in_its_thread(library: Path) -> None:
    """Plain files come back as heads that read as the open file does; the
    covered ones (tags past the head) are parsed at once, through the open file."""
    origin = LocalOrigin("lib", library)
    heads = 0
    for relpath in _audio(library):
        with origin.open(relpath) as opened:
            got, traffic = read_head(opened, relpath)
        expected = _through_the_open_file(origin, relpath)
        if isinstance(got, Head):
            heads += 1
            assert traffic.requests == opened.open_requests + 1, relpath  # the head alone
            assert len(got.data) <= remote_module._HEAD_KEPT
            assert parse_head(relpath, got) == expected, relpath
        else:
            assert got == expected, relpath
        if relpath.startswith("covered"):
            assert isinstance(got, Parsed), relpath
            assert got.tags.has_art, relpath
        if relpath.startswith("long"):
            assert isinstance(got, Head), relpath
            assert len(got.data) < got.size // 10, relpath
    assert heads >= 10


def test_a_remote_scan_catalogs_what_the_open_files_read(library: Path, tmp_path: Path) -> None:
    origin = RemoteFolder("lib", library)
    report, found = _scan(origin, tmp_path / "c.sqlite3")
    assert sorted(found) == _audio(library)
    for relpath, parsed in found.items():
        assert parsed == _through_the_open_file(origin, relpath), relpath
    assert found["covered.mp3"].tags.title == "Covered"
    assert report.remote.files == len(found)


def test_a_head_mutagen_reads_past_is_read_again(
    library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With heads cut at the end of the tags, mutagen reads past an MP3's head
    for its stream info: those files are read again, with the same result."""
    origin = RemoteFolder("lib", library)
    normal_report, normal = _scan(origin, tmp_path / "normal.sqlite3")
    monkeypatch.setattr(remote_module, "_AFTER_TAGS", {"flac": 0, "mp3": 0})
    missed: list[str] = []

    def counted(relpath: str, head: Head) -> Parsed | None:
        parsed = parse_head(relpath, head)
        if parsed is None:
            missed.append(relpath)
        return parsed

    monkeypatch.setattr(scanner_module, "parse_head", counted)
    report, cut = _scan(origin, tmp_path / "cut.sqlite3")
    assert cut == normal
    assert "long.mp3" in missed
    # Each file read again costs its open and its head once more, and is
    # still one file.
    assert report.remote.files == len(cut)
    assert report.remote.requests > normal_report.remote.requests
