"""The semantic core under FUSE: lookups, listing and reads, with errnos, no mount needed."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from musicfs.core.catalog.store import ROOT_NODE, Catalog
from musicfs.core.catalog.templates import PathTemplate
from musicfs.core.content.library import Library, LibraryError
from musicfs.core.origins import LocalFile, LocalOrigin
from musicfs.core.sync.scanner import Scanner

MakeWav = Callable[..., Path]  # the make_wav fixture of conftest.py


@pytest.fixture
def library(tmp_path: Path, make_wav: MakeWav) -> Library:
    make_wav(tmp_path / "lib" / "a.wav", seconds=1, title="A", artist="X")
    catalog = Catalog.open(tmp_path / "c.sqlite3")
    origin = LocalOrigin("lib", tmp_path / "lib")
    Scanner(catalog, PathTemplate.parse("$artist/$title.$format")).scan(origin)
    return Library(catalog, {"lib": origin})


def test_lookup_and_read_return_the_origin_bytes(tmp_path: Path, library: Library) -> None:
    artist = library.lookup(ROOT_NODE, "X")
    node = library.lookup(artist.id, "A.wav")
    original = (tmp_path / "lib" / "a.wav").read_bytes()
    assert node.size == len(original)
    handle = library.open(node.id)
    try:
        assert library.read(handle, 0, len(original) + 100) == original
        assert library.read(handle, 1000, 10) == original[1000:1010]
        assert library.read(handle, len(original) + 5, 10) == b""
    finally:
        library.close(handle)
    assert library.open_handles == 0


def test_errors_carry_the_errno(tmp_path: Path, library: Library) -> None:
    with pytest.raises(LibraryError) as info:
        library.lookup(ROOT_NODE, "nope")
    assert info.value.errno == errno.ENOENT
    artist = library.lookup(ROOT_NODE, "X")
    with pytest.raises(LibraryError) as info:
        library.open(artist.id)
    assert info.value.errno == errno.EISDIR
    node = library.lookup(artist.id, "A.wav")
    with pytest.raises(LibraryError) as info:
        library.children(node.id, 0, 10)
    assert info.value.errno == errno.ENOTDIR
    (tmp_path / "lib" / "a.wav").unlink()
    with pytest.raises(LibraryError) as info:
        library.open(node.id)
    assert info.value.errno == errno.ENOENT  # the origin answers: the file is gone
    assert "is gone" in str(info.value)
    (tmp_path / "lib").rename(tmp_path / "unplugged")
    with pytest.raises(LibraryError) as info:
        library.open(node.id)
    assert info.value.errno == errno.EIO  # the origin does not answer: offline, not gone
    assert "unreachable" in str(info.value)


def test_a_file_changed_since_the_scan_asks_for_a_rescan(tmp_path: Path, library: Library) -> None:
    stale: list[str] = []
    library.on_stale = lambda track: stale.append(track.relpath)
    node = library.catalog.resolve("X/A.wav")
    assert node is not None
    library.close(library.open(node.id))
    assert stale == []
    with open(tmp_path / "lib" / "a.wav", "ab") as fh:
        fh.write(b"more")
    library.close(library.open(node.id))
    assert stale == ["a.wav"]


def test_totals_count_entries_and_bytes(tmp_path: Path, library: Library) -> None:
    entries, total_bytes, unreadable = library.totals()
    assert (entries, unreadable) == (3, 0)  # root, X, A.wav
    assert total_bytes == (tmp_path / "lib" / "a.wav").stat().st_size


def test_an_offline_origin_is_read_from_the_content_cache(tmp_path: Path, library: Library) -> None:
    from musicfs.core.content.cache import ContentCache
    from musicfs.core.content.library import version_of

    library.content = ContentCache(tmp_path / "content")
    wanted: list[str] = []
    library.on_fill = lambda track: wanted.append(track.relpath)
    node = library.catalog.resolve("X/A.wav")
    assert node is not None
    library.close(library.open(node.id))
    assert wanted == ["a.wav"]  # opened from the origin, not cached yet: a copy is asked for
    track = library.catalog.track(node.file_id or 0)
    assert track is not None
    original = (tmp_path / "lib" / "a.wav").read_bytes()
    with LocalFile.at(tmp_path / "lib" / "a.wav") as file:
        assert library.content.fill(version_of(track), file)
    (tmp_path / "lib").rename(tmp_path / "unplugged")
    handle = library.open(node.id)
    try:
        assert library.read(handle, 0, len(original) + 10) == original
        assert library.read(handle, 100, 50) == original[100:150]
    finally:
        library.close(handle)
