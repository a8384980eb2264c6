"""Live changes of a local origin: inotify events, the requests they make, and
the partial rescans that bring the catalog in step (FR-10)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import PathTemplate
from musicfs.core.origins import LocalOrigin
from musicfs.core.sync.changes import ScanRequest, WatchEvent, WatchKind
from musicfs.core.sync.scanner import Scanner
from musicfs.core.sync.watch import LocalWatch

MakeWav = Callable[..., Path]  # the make_wav fixture of conftest.py


@pytest.fixture
def lib(tmp_path: Path, make_wav: MakeWav) -> Path:
    make_wav(tmp_path / "lib" / "a" / "one.wav", title="One", artist="X")
    (tmp_path / "lib" / "b").mkdir()
    return tmp_path / "lib"


@pytest.fixture
def watch(lib: Path) -> Iterator[LocalWatch]:
    w = LocalWatch(lib)
    try:
        yield w
    finally:
        w.close()


def collect(watch: LocalWatch, until: Callable[[list[WatchEvent]], bool]) -> list[WatchEvent]:
    """Read events until *until* holds for what was seen (at most 20 reads of 0.5 s)."""
    seen: list[WatchEvent] = []
    for _ in range(20):
        seen += watch.events(timeout_ms=500, settle_ms=50)
        if until(seen):
            break
    return seen


def test_every_folder_is_watched(watch: LocalWatch) -> None:
    assert watch.watched == 3  # lib, a, b


def test_file_changes_become_events(lib: Path, watch: LocalWatch, make_wav: MakeWav) -> None:
    make_wav(lib / "b" / "two.wav", title="Two")
    (lib / "a" / "one.wav").rename(lib / "b" / "uno.wav")
    events = collect(watch, lambda s: any(e.kind is WatchKind.RENAMED for e in s))
    kinds = {(e.kind, e.relpath) for e in events}
    assert (WatchKind.ADDED, "b/two.wav") in kinds
    assert any(e.kind is WatchKind.RENAMED and e.old_relpath == "a/one.wav" for e in events)
    request = ScanRequest()
    for event in events:
        request.add(event)
    assert request.dirs == {"a", "b"}


def test_new_folders_are_watched_and_walked(
    lib: Path, watch: LocalWatch, make_wav: MakeWav
) -> None:
    (lib / "c").mkdir()
    events = collect(watch, lambda s: any(e.relpath == "c" for e in s))
    make_wav(lib / "c" / "three.wav", title="Three")  # inside the new folder: needs its watch
    events += collect(watch, lambda s: any(e.relpath == "c/three.wav" for e in s))
    request = ScanRequest()
    for event in events:
        request.add(event)
    assert "c" in request.trees
    assert "c" in request.dirs  # the file event inside it


def test_removed_folder_is_gone(lib: Path, watch: LocalWatch) -> None:
    shutil.rmtree(lib / "a")
    events = collect(watch, lambda s: any(e.relpath == "a" and e.is_dir for e in s))
    request = ScanRequest()
    for event in events:
        request.add(event)
    assert "a" in request.gone


def test_an_origin_folder_moved_away_ends_the_watch(
    tmp_path: Path, lib: Path, watch: LocalWatch
) -> None:
    """Renaming the origin's folder (or unmounting its disk) leaves inotify watching
    the folder at its new place; the watch must stop, so the daemon notices."""
    lib.rename(tmp_path / "elsewhere")
    for _ in range(20):
        watch.events(timeout_ms=500, settle_ms=50)
        if not watch.watched:
            break
    assert watch.watched == 0


def test_partial_rescan_applies_a_request(tmp_path: Path, lib: Path, make_wav: MakeWav) -> None:
    catalog = Catalog.open(tmp_path / "c.sqlite3")
    origin = LocalOrigin("lib", lib)
    scanner = Scanner(catalog, PathTemplate.parse("$title.$format"))
    scanner.scan(origin)
    make_wav(lib / "b" / "two.wav", title="Two")
    make_wav(lib / "new" / "deep" / "three.wav", title="Three")
    shutil.rmtree(lib / "a")
    request = ScanRequest(dirs={"b"}, trees={"new"}, gone={"a"})
    report = scanner.rescan(origin, request)
    assert (report.added, report.removed, report.complete) == (2, 1, True)
    assert {t.relpath for t in catalog.tracks()} == {"b/two.wav", "new/deep/three.wav"}
    assert report.dirs == 3  # b, new, new/deep: nothing else was listed


def test_a_request_for_a_vanished_folder_drops_its_files(tmp_path: Path, lib: Path) -> None:
    catalog = Catalog.open(tmp_path / "c.sqlite3")
    origin = LocalOrigin("lib", lib)
    scanner = Scanner(catalog, PathTemplate.parse("$title.$format"))
    scanner.scan(origin)
    os.rename(lib / "a", tmp_path / "moved-away")
    report = scanner.rescan(origin, ScanRequest(dirs={"a"}))
    assert report.removed == 1
    assert list(catalog.tracks()) == []


def test_hidden_names_are_followed_only_with_include_hidden_and_appledouble_never(
    lib: Path, make_wav: MakeWav
) -> None:
    (lib / ".stash").mkdir()
    for include_hidden, folders in ((False, 3), (True, 4)):  # lib, a, b (and .stash)
        watch = LocalWatch(lib, include_hidden=include_hidden)
        try:
            assert watch.watched == folders
            (lib / "b" / "._late.wav").write_bytes(b"\x00\x05\x16\x07" + bytes(100))
            make_wav(lib / "b" / f".late{int(include_hidden)}.wav", title="Late")
            make_wav(lib / "b" / f"seen{int(include_hidden)}.wav", title="Seen")
            seen = collect(watch, lambda s: any(e.relpath.startswith("b/seen") for e in s))
            names = {e.relpath for e in seen}
            assert "b/._late.wav" not in names
            assert (f"b/.late{int(include_hidden)}.wav" in names) is include_hidden
        finally:
            watch.close()
