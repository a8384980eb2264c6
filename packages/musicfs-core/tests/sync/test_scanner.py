"""The scanner: first scan, incremental rescans, unreadable files, offline origins."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import mutagen.flac
import pytest

from musicfs.core.catalog.layout import TreeChange
from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.extensions import Extensions
from musicfs.core.model import TrackTags
from musicfs.core.origins import DirListing, LocalOrigin
from musicfs.core.sync import parsing
from musicfs.core.sync import scanner as scanner_module
from musicfs.core.sync.scanner import Scanner

MakeWav = Callable[..., Path]  # the make_wav fixture of conftest.py
CatalogSQL = Callable[..., list[Any]]  # the catalog_sql fixture of conftest.py
Encode = Callable[..., Path]  # the encode fixture of conftest.py


def tree(catalog: Catalog) -> set[str]:
    return {
        catalog.path_of(node.id) for t in catalog.tracks() if (node := catalog.node_of_file(t.id))
    }


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog.open(tmp_path / "catalog.sqlite3")


def scanner(catalog: Catalog, **kwargs: object) -> Scanner:
    return Scanner(catalog, PathTemplate.parse(DEFAULT_TEMPLATE), **kwargs)  # type: ignore[arg-type]


def test_first_scan_catalogs_tags_and_lays_out_the_tree(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav
) -> None:
    lib = tmp_path / "lib"
    make_wav(lib / "x" / "1.wav", title="One", artist="Ann", album="Al", date="2020", track="1/9")
    make_wav(lib / "x" / "2.wav", title="Two", artist="Ann", album="Al", date="2020", track="2/9")
    (lib / "cover.jpg").write_bytes(b"not audio, not scanned")
    report = scanner(catalog).scan(LocalOrigin("lib", lib))
    assert (report.seen, report.added, report.unreadable, report.complete) == (2, 2, 0, True)
    assert tree(catalog) == {"Ann/Al (2020) [WAV]/01 - One.wav", "Ann/Al (2020) [WAV]/02 - Two.wav"}
    track = next(catalog.tracks(title="One"))
    assert (track.tags.track, track.tags.tracktotal, track.tags.year) == (1, 9, 2020)
    assert track.size == (lib / "x" / "1.wav").stat().st_size


def test_rescan_sees_added_changed_and_removed_files(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav
) -> None:
    lib = tmp_path / "lib"
    make_wav(lib / "keep.wav", title="Keep", artist="A")
    make_wav(lib / "change.wav", title="Before", artist="A")
    make_wav(lib / "gone" / "gone.wav", title="Gone", artist="A")
    origin = LocalOrigin("lib", lib)
    scanner(catalog).scan(origin)
    make_wav(lib / "new.wav", title="New", artist="A")
    make_wav(lib / "change.wav", title="After", artist="A")
    os.utime(lib / "change.wav", ns=(1, 10**18))  # make sure the mtime moved
    shutil.rmtree(lib / "gone")
    changes: list[TreeChange] = []
    report = scanner(catalog, on_changes=changes.extend).scan(origin)
    assert (report.added, report.changed, report.removed) == (1, 1, 1)
    names = {p.rsplit("/", 1)[1] for p in tree(catalog)}
    assert names == {"00 - Keep.wav", "00 - After.wav", "00 - New.wav"}
    assert {c.name for c in changes} >= {"00 - Before.wav", "00 - Gone.wav", "00 - New.wav"}


def test_unchanged_files_are_not_parsed_again(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav
) -> None:
    make_wav(tmp_path / "lib" / "a.wav", title="A")
    origin = LocalOrigin("lib", tmp_path / "lib")
    scanner(catalog).scan(origin)
    report = scanner(catalog).scan(origin)
    assert (report.seen, report.added, report.changed, report.removed) == (1, 0, 0, 0)


def test_a_tag_edit_that_keeps_size_and_mtime_is_seen_on_a_share(
    tmp_path: Path, catalog: Catalog, encode: Encode
) -> None:
    """What inotify cannot see on a share and size/mtime do not tell: a tag editor
    that rewrites within the FLAC padding and puts the mtime back. The ctime moved."""
    (tmp_path / "share").mkdir()
    path = encode(tmp_path / "share" / "a.flac", title="Before", artist="A")
    origin = LocalOrigin("nas", tmp_path / "share", kind="nfs")
    scanner(catalog).scan(origin)
    before = path.stat()
    audio = mutagen.flac.FLAC(path)
    audio["title"] = "After"
    audio.save()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    report = scanner(catalog).scan(origin)
    assert report.changed == 1
    assert {p.rsplit("/", 1)[1] for p in tree(catalog)} == {"00 - After.flac"}


def test_rows_from_before_change_times_are_not_all_parsed_again(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav, catalog_sql: CatalogSQL
) -> None:
    make_wav(tmp_path / "lib" / "a.wav", title="A")
    origin = LocalOrigin("lib", tmp_path / "lib")
    scanner(catalog).scan(origin)
    catalog_sql(catalog, "UPDATE files SET ctime_ns = 0")  # as migrated from schema 3
    report = scanner(catalog).scan(origin)
    assert (report.seen, report.changed) == (1, 0)
    [(stored,)] = catalog_sql(catalog, "SELECT ctime_ns FROM files")
    assert stored == (tmp_path / "lib" / "a.wav").stat().st_ctime_ns


def test_unreadable_files_are_recorded_and_shown_under_fallback_names(
    tmp_path: Path, catalog: Catalog
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "broken.mp3").write_bytes(b"\xff" * 10)
    (lib / "empty.flac").write_bytes(b"")
    report = scanner(catalog).scan(LocalOrigin("lib", lib))
    assert report.unreadable == 2
    assert {t.error is not None for t in catalog.tracks()} == {True}
    assert "Unknown Artist/Unknown Album (0000) [MP3]/00 - broken.mp3" in tree(catalog)


class CarelessParser:
    """A format plugin's tag parser that hands back what no catalog row holds as
    it is: a title with an unpaired surrogate, a number past 64 bits (both are
    stored mended), and a genre as a list, as mutagen gives tags (not at all)."""

    name = "careless"

    def parse(self, reader: BinaryIO) -> TrackTags:
        data = reader.read()
        if b"bad title" in data:
            return TrackTags(title="bad \udcff title", artist="Plug")
        if b"bad number" in data:
            return TrackTags(title="Big", artist="Plug", bitrate=2**70)
        if b"bad genre" in data:
            return TrackTags(title="Listed", artist="Plug", genre=["Jazz"])  # type: ignore[arg-type]
        return TrackTags(title=data.decode().strip(), artist="Plug")


class CarelessPlugins(Extensions):
    def tag_parser(self, extension: str) -> CarelessParser | None:
        return CarelessParser() if extension == "xyz" else None

    def extra_extensions(self) -> frozenset[str]:
        return frozenset({"xyz"})


def test_a_file_whose_row_cannot_be_written_is_unreadable_and_the_scan_goes_on(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav
) -> None:
    lib = tmp_path / "lib"
    make_wav(lib / "1.wav", title="Before", artist="Ann")
    (lib / "2.xyz").write_bytes(b"bad title")
    (lib / "3.xyz").write_bytes(b"bad number")
    (lib / "4.xyz").write_bytes(b"bad genre")
    (lib / "5.xyz").write_bytes(b"Fine")
    make_wav(lib / "6.wav", title="After", artist="Ann")
    report = scanner(catalog, plugins=CarelessPlugins()).scan(LocalOrigin("lib", lib))
    assert (report.seen, report.added, report.unreadable, report.complete) == (6, 6, 1, True)
    errors = {t.relpath: t.error for t in catalog.tracks()}
    assert [errors[name] for name in ("1.wav", "2.xyz", "3.xyz", "5.xyz", "6.wav")] == [None] * 5
    error = errors["4.xyz"]
    assert error is not None
    assert error.startswith("cannot be catalogued: ProgrammingError: ")
    assert "list" in error
    assert tree(catalog) == {
        "Ann/Unknown Album (0000) [WAV]/00 - Before.wav",
        "Ann/Unknown Album (0000) [WAV]/00 - After.wav",
        "Plug/Unknown Album (0000) [XYZ]/00 - bad \ufffd title.xyz",
        "Plug/Unknown Album (0000) [XYZ]/00 - Big.xyz",
        "Plug/Unknown Album (0000) [XYZ]/00 - Fine.xyz",
        "Unknown Artist/Unknown Album (0000) [XYZ]/00 - 4.xyz",
    }
    assert catalog.integrity_check() == "ok"


def test_a_scan_the_catalog_fails_leaves_nothing_behind_for_the_next(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches are parsed while earlier ones are written (issue 17). When the
    catalog itself fails a write (disk full, I/O error), the scan stops, and the
    next scan catalogs and counts each file left once, none twice."""
    lib = tmp_path / "lib"
    total = 4 * 256 + 10
    for i in range(total):
        make_wav(lib / f"d{i // 100:02d}" / f"{i}.wav", title=f"T{i}", artist="A")
    real = catalog.upsert_file
    calls = 0

    def failing(scanned: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 400:  # in the second batch written, with later ones parsed
            raise sqlite3.OperationalError("disk I/O error")
        return real(scanned)

    sc = scanner(catalog, workers=1)
    monkeypatch.setattr(catalog, "upsert_file", failing)
    with pytest.raises(sqlite3.OperationalError):
        sc.scan(LocalOrigin("lib", lib))
    monkeypatch.setattr(catalog, "upsert_file", real)
    kept = len(list(catalog.tracks()))
    assert 0 < kept < total  # the first batch was committed, the second was not
    report = sc.scan(LocalOrigin("lib", lib))
    assert (report.seen, report.added, report.changed) == (total, total - kept, 0)
    assert len(tree(catalog)) == total


def test_an_unreachable_origin_keeps_its_files(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav
) -> None:
    lib = tmp_path / "lib"
    make_wav(lib / "a.wav", title="A")
    scanner(catalog).scan(LocalOrigin("lib", lib))
    lib.rename(tmp_path / "elsewhere")
    report = scanner(catalog).scan(LocalOrigin("lib", lib))
    assert not report.complete
    assert report.removed == 0
    assert len(tree(catalog)) == 1


class FlakyOrigin(LocalOrigin):
    """A local origin whose folder *broken* cannot be listed (EIO), as on a failing disk."""

    def __init__(self, origin_id: str, root: Path, broken: str) -> None:
        super().__init__(origin_id, root)
        self.broken = broken

    def list_dir(self, reldir: str, extensions: Iterable[str]) -> DirListing:
        if reldir == self.broken:
            raise OSError(errno.EIO, "Input/output error")
        return super().list_dir(reldir, extensions)


def test_a_folder_that_cannot_be_listed_keeps_its_files(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav
) -> None:
    lib = tmp_path / "lib"
    make_wav(lib / "sub" / "a.wav", title="A")
    make_wav(lib / "b.wav", title="B")
    scanner(catalog).scan(LocalOrigin("lib", lib))
    report = scanner(catalog).scan(FlakyOrigin("lib", lib, "sub"))
    assert (report.listing_errors, report.removed, report.complete) == (1, 0, False)
    assert "Input/output error" in report.errors[0]
    assert len(tree(catalog)) == 2


def test_a_scan_cancelled_while_it_removes_an_origins_files_stops_between_batches(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav
) -> None:
    """An unmount cancels the scan; one taking out thousands of vanished files
    (a whole origin emptied) stops after the batch under way, not at the end,
    and says it is incomplete; the next scan takes out the rest."""
    lib = tmp_path / "lib"
    total = scanner_module._BATCH * 3
    for i in range(total):
        make_wav(lib / f"d{i % 5}" / f"{i}.wav", title=f"T{i}", artist="A")
    origin = LocalOrigin("lib", lib)
    sc = scanner(catalog, workers=2)
    try:
        assert sc.scan(origin).added == total
    finally:
        sc.close()
    for folder in lib.iterdir():
        shutil.rmtree(folder)

    def cancel(changes: list[TreeChange]) -> None:
        cancelling.cancelled = True  # as the sync loop does on unmount

    cancelling = scanner(catalog, on_changes=cancel)
    report = cancelling.scan(origin)
    assert (report.removed, report.complete) == (scanner_module._BATCH, False)
    assert len(tree(catalog)) == total - scanner_module._BATCH
    report = scanner(catalog).scan(origin)
    assert (report.removed, report.complete) == (total - scanner_module._BATCH, True)
    assert tree(catalog) == set()


@pytest.mark.parametrize("kind", ["local", "nfs"])
def test_the_pool_parses_large_batches_in_worker_processes(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    for i in range(300):
        make_wav(lib / f"d{i % 7}" / f"{i}.wav", title=f"T{i}", artist="A")
    batches: list[int] = []  # batches of paths handed to the pool (or, small, parsed here)
    submit = Scanner._submit

    def counted(self: Scanner, paths: list[str]) -> Callable[[], list[Any]]:
        batches.append(len(paths))
        return submit(self, paths)

    monkeypatch.setattr(Scanner, "_submit", counted)
    sc = scanner(catalog, workers=2)
    try:
        # A mounted share too: its files have a path, so its batches are as big
        # as a local disk's (a small batch would be parsed in this process).
        report = sc.scan(LocalOrigin("lib", lib, kind=kind))
    finally:
        sc.close()
    assert (report.seen, report.added, report.unreadable) == (300, 300, 0)
    assert len(tree(catalog)) == 300
    # Whole folders up to 256 files, then the rest: only that is parsed here.
    assert len(batches) == 2, batches
    assert sum(batches) == 300
    assert batches[0] >= 256 > scanner_module._POOL_THRESHOLD


def test_the_whole_realworld_corpus_scans_without_an_exception(
    tmp_path: Path, catalog: Catalog, corpus: Path
) -> None:
    report = scanner(catalog, workers=2).scan(LocalOrigin("corpus", corpus))
    assert report.complete
    assert report.seen > 80
    assert 0 < report.unreadable < report.seen
    assert catalog.integrity_check() == "ok"


def test_a_batch_is_read_as_each_of_its_files_alone_is(tmp_path: Path, corpus: Path) -> None:
    """Workers open each file once and ask the disk for all of a window's reads
    first (issue 17): tags, identities and the reasons files are unreadable
    stay what reading every file alone gives, a file gone meanwhile included."""
    paths = sorted(str(p) for p in corpus.rglob("*") if p.is_file())
    paths.insert(len(paths) // 2, str(tmp_path / "vanished.flac"))
    assert len(paths) > 2 * parsing._AHEAD  # several windows
    alone = [parsing.parse_file(p) for p in paths]
    assert parsing.parse_files(paths) == alone
    assert any(p.error for p in alone)
    assert any(p.audio_id for p in alone)


def test_hidden_files_are_scanned_only_with_include_hidden_and_appledouble_never(
    tmp_path: Path, make_wav: Callable[..., Path]
) -> None:
    """Names starting with a dot are hidden ([scan] include_hidden = false); the
    AppleDouble ``._*`` files macOS leaves beside each file hold no audio and are
    skipped even when hidden files are included."""
    lib = tmp_path / "lib"
    make_wav(lib / "a" / "one.wav", title="One", artist="X")
    make_wav(lib / "a" / ".two.wav", title="Two", artist="X")
    make_wav(lib / ".stash" / "three.wav", title="Three", artist="X")
    (lib / "a" / "._one.wav").write_bytes(b"\x00\x05\x16\x07" + bytes(4000))
    (lib / ".stash" / "._three.wav").write_bytes(b"\x00\x05\x16\x07" + bytes(4000))
    for include_hidden, seen in ((False, {"One"}), (True, {"One", "Two", "Three"})):
        origin = LocalOrigin("lib", lib)
        origin.include_hidden = include_hidden
        with Catalog.open(tmp_path / f"catalog-{include_hidden}.sqlite3") as catalog:
            report = scanner(catalog).scan(origin)
            assert (report.seen, report.unreadable) == (len(seen), 0)  # no ._ file was read
            assert {t.tags.title for t in catalog.tracks()} == seen


def test_a_scan_packs_the_listings_of_big_folders_it_changed(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A first `ls` of a big folder reads its listing packed in one row; a scan
    # that changed the folder packs it again, and one that shrank it forgets it.
    monkeypatch.setattr("musicfs.core.catalog.listings.PACKED_MIN", 3)
    lib = tmp_path / "lib"
    for n in range(3):
        make_wav(lib / f"{n}.wav", title=f"Song {n}", artist="A", album="Al")
    origin = LocalOrigin("lib", lib)
    scanner(catalog).scan(origin)
    album = catalog.resolve("A/Al (0000) [WAV]")
    assert album is not None
    packed = catalog.packed_listing(album.id)
    assert packed is not None, "a folder of 3 tracks is not packed"
    assert packed.rows() == catalog.child_rows(album.id, 0, -1)
    make_wav(lib / "3.wav", title="Song 3", artist="A", album="Al")
    scanner(catalog).scan(origin)
    packed = catalog.packed_listing(album.id)
    assert packed is not None
    assert b"00 - Song 3.wav" in packed.names(0, len(packed))
    assert packed.rows() == catalog.child_rows(album.id, 0, -1)
    for n in range(3):
        (lib / f"{n}.wav").unlink()
    scanner(catalog).scan(origin)
    assert catalog.packed_listing(album.id) is None
    assert album.id not in catalog.listing_marks()
