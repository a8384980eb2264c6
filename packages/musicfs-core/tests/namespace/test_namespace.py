"""The namespace in-process, no mount: every case of `tests.vfstest.cases` run
against `Namespace` over a real catalog of real scanned files, plus what only
shows at this level (listings in pages, attributes, cache timeouts).

The frontend here is what the kernel would do with the FUSE skin: walk paths
with `lookup`, stat with `attributes`, list with `readdir` a couple of entries
per call, read through `open` / `read` / `release`, follow links.
"""

from __future__ import annotations

import errno
import functools
import posixpath
import shutil
import stat
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from musicfs.core.art.covers import CoverStore
from musicfs.core.catalog.layout import Layout
from musicfs.core.catalog.store import ROOT_NODE, Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.content.library import Library, LibraryError
from musicfs.core.content.overlay import OverlayEditor
from musicfs.core.extensions import Extensions, HeaderWriter
from musicfs.core.namespace.coverfiles import CoverFiles
from musicfs.core.namespace.entries import Attributes, Entry, Link, attributes_of
from musicfs.core.namespace.inodes import COVER_OFFSET, is_virtual
from musicfs.core.namespace.namespace import Namespace, StatFields
from musicfs.core.namespace.virtual import RESULTS_TTL
from musicfs.core.origins import LocalOrigin
from musicfs.core.sync.scanner import Scanner
from musicfs.plugins.builtin.flac import FlacFormat

_REPO_ROOT = str(Path(__file__).resolve().parents[4])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.vfstest.cases import (  # noqa: E402
    ACDC_ALBUM,
    ART,
    BELLS,
    CASES,
    THRILL,
    Case,
    build_sample,
    run_case,
)

T = TypeVar("T")


class Fields:
    """The attribute object a listing fills (as pyfuse3's EntryAttributes)."""

    st_ino = st_mode = st_nlink = st_size = st_blocks = 0
    st_atime_ns = st_mtime_ns = st_ctime_ns = 0
    entry_timeout = attr_timeout = 0.0


class _Flac(Extensions):
    """What the mount's plugins give the overlay for these FLAC files: the
    built-in FLAC plugin's header writer (core has none of its own)."""

    def header_writer(self, fmt: str) -> HeaderWriter | None:
        return FlacFormat() if fmt == "flac" else None


class InProcess:
    """A `Frontend` over a `Namespace` of the sample library, as a mount would build it."""

    def __init__(self, tmp: Path, sample: Path, page: int = 2) -> None:
        self.catalog = Catalog.open(tmp / "catalog.sqlite3")
        self.template = PathTemplate.parse(DEFAULT_TEMPLATE)
        Scanner(self.catalog, self.template).scan(LocalOrigin("lib", sample))
        self.library = Library(self.catalog, {"lib": LocalOrigin("lib", sample)})
        covers = CoverFiles(CoverStore(tmp / "covers", self.library.federation), self.catalog.path)
        self.namespace = Namespace(self.library, entry_timeout=60.0, covers=covers)
        self.page = page  # entries the "kernel" takes per readdir call

    def close(self) -> None:
        if self.namespace.covers is not None:
            self.namespace.covers.close()
        self.library.close_all()
        self.catalog.close()

    @staticmethod
    def run(work: Callable[[], Awaitable[T]]) -> T:
        return trio.run(work)

    async def walk(self, path: str) -> Entry:
        entry = self.namespace.resolve(ROOT_NODE)
        for part in path.split("/") if path else []:
            entry = await self.namespace.lookup(entry.inode, part)
        return entry

    def stat(self, path: str) -> Attributes:
        return self.namespace.attributes(self.run(lambda: self.walk(path)))

    # -- the Frontend of tests.vfstest.cases ---------------------------------------------

    def kind(self, path: str) -> str:
        mode = self.stat(path).mode
        return "dir" if stat.S_ISDIR(mode) else "link" if stat.S_ISLNK(mode) else "file"

    def inode(self, path: str) -> int:
        return self.stat(path).inode

    def listdir(self, path: str) -> set[str]:
        return {name for name, _, _ in self.listing(path)}

    def listing(self, path: str) -> list[tuple[str, Attributes, int]]:
        """(name, attributes, offset) of each entry, a page of entries per readdir
        call, each call going on after the offset of the last entry taken."""

        async def listing() -> list[tuple[str, Attributes, int]]:
            fh = self.namespace.opendir((await self.walk(path)).inode)
            out: list[tuple[str, Attributes, int]] = []
            try:
                while True:
                    page: list[tuple[str, Attributes, int]] = []
                    reply = functools.partial(self._take, page)
                    await self.namespace.readdir(fh, out[-1][2] if out else 0, Fields(), reply)
                    if not page:
                        return out
                    out += page
            finally:
                self.namespace.releasedir(fh)

        entries = self.run(listing)
        names = [name for name, _, _ in entries]
        assert len(names) == len(set(names)), f"listed twice: {names}"
        return entries

    def _take(
        self, page: list[tuple[str, Attributes, int]], name: bytes, f: StatFields, offset: int
    ) -> bool:
        """What readdir_reply does: copy the entry unless the buffer is full."""
        if len(page) == self.page:
            return False
        assert f.st_atime_ns == f.st_mtime_ns == f.st_ctime_ns
        values = (f.st_ino, f.st_mode, f.st_nlink, f.st_size, f.st_blocks, f.st_mtime_ns,
                  f.entry_timeout, f.attr_timeout)  # fmt: skip
        page.append((name.decode(), attributes_of(values), offset))
        return True

    def readlink(self, path: str) -> str:
        return self.namespace.readlink(self.run(lambda: self.walk(path)).inode)

    def read(self, path: str) -> bytes:
        async def read() -> bytes:
            entry = await self.walk(path)
            if isinstance(entry, Link):
                target = posixpath.join(posixpath.dirname(path), entry.target)
                entry = await self.walk(posixpath.normpath(target))
            size = self.namespace.attributes(entry).size
            fh, _ = await self.namespace.open(entry.inode)
            try:
                data = b""
                while chunk := await self.namespace.read(fh, len(data), 65536):
                    data += chunk
            finally:
                self.namespace.release(fh)
            assert len(data) == size, f"stat says {size} bytes, read {len(data)}"
            return data

        return self.run(read)

    def retitle(self, path: str, title: str) -> None:
        layout = Layout(self.catalog, self.template)
        editor = OverlayEditor(self.catalog, layout, self.library.federation, _Flac())
        _, changes = editor.set_tags(path, {"title": title})
        self.namespace.changed(changes)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    return build_sample(tmp_path_factory.mktemp("sample"))


@pytest.fixture
def fe(tmp_path: Path, sample: Path) -> Iterator[InProcess]:
    frontend = InProcess(tmp_path, sample)
    try:
        yield frontend
    finally:
        frontend.close()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case(case: Case, fe: InProcess, sample: Path) -> None:
    run_case(case, fe, sample)


def test_cover_files_follow_the_tracks_in_every_page_size(fe: InProcess) -> None:
    fe.read(f"{ACDC_ALBUM}/cover.jpg")  # the art is known from now on
    for page in (1, 2, 3, 100):
        fe.page = page
        entries = fe.listing(ACDC_ALBUM)
        assert {name for name, _, _ in entries[:2]} == {BELLS, THRILL}
        assert {name for name, _, _ in entries[2:]} == ART
        assert all(offset > COVER_OFFSET for _, _, offset in entries[2:])


def test_attributes_are_the_same_from_stat_and_from_a_listing(fe: InProcess) -> None:
    fe.read(f"{ACDC_ALBUM}/cover.jpg")
    for folder in ("", "AC_DC", ACDC_ALBUM, ".prefetch", f".prefetch/{ACDC_ALBUM}",
                   ".collections", ".search/thrill"):  # fmt: skip
        for name, listed, _ in fe.listing(folder):
            assert fe.stat(posixpath.join(folder, name)) == listed, (folder, name)
            assert fe.namespace.stat(listed.inode) == listed, (folder, name)  # getattr


def test_what_the_kernel_may_keep_and_for_how_long(fe: InProcess) -> None:
    track = fe.stat(f"{ACDC_ALBUM}/{BELLS}")
    assert stat.S_ISREG(track.mode)
    assert track.mode & 0o777 == 0o444
    assert (track.entry_ttl, track.attr_ttl) == (60.0, 60.0)
    assert track.blocks == (track.size + 511) // 512
    assert not is_virtual(track.inode)
    folder = fe.stat(ACDC_ALBUM)
    assert stat.S_ISDIR(folder.mode)
    assert folder.nlink == 2
    assert folder.mtime_ns > 0
    link = fe.stat(".search/thrill/AC_DC - Shoot to Thrill.flac")
    assert link.size == len(fe.readlink(".search/thrill/AC_DC - Shoot to Thrill.flac").encode())
    # Virtual entries change as the catalog does: the kernel keeps them briefly.
    for path in (".search", ".search/thrill", f".prefetch/{ACDC_ALBUM}/{BELLS}",
                 f"{ACDC_ALBUM}/cover.jpg"):  # fmt: skip
        attrs = fe.stat(path)
        assert attrs.entry_ttl == attrs.attr_ttl == RESULTS_TTL, path
        assert is_virtual(attrs.inode), path


def test_a_track_is_no_folder_and_a_folder_no_file(fe: InProcess) -> None:
    track = fe.inode(f"{ACDC_ALBUM}/{THRILL}")
    with pytest.raises(LibraryError) as info:
        fe.namespace.opendir(track)
    assert info.value.errno == errno.ENOTDIR
    for folder in (ACDC_ALBUM, ".search/thrill", f".prefetch/{ACDC_ALBUM}"):
        inode = fe.inode(folder)
        with pytest.raises(LibraryError) as info:
            fe.run(lambda: fe.namespace.open(inode))  # noqa: B023 (run at once)
        assert info.value.errno == errno.EISDIR, folder
    with pytest.raises(LibraryError) as info:
        fe.readlink(ACDC_ALBUM)
    assert info.value.errno == errno.EINVAL
    for gone in (1 << 40, (1 << 62) + 12345, (1 << 62) + (1 << 60) + 7):
        with pytest.raises(LibraryError) as info:
            fe.namespace.resolve(gone)
        assert info.value.errno == errno.ENOENT, gone


def test_a_folder_listed_again_is_sent_from_memory_and_follows_changes(fe: InProcess) -> None:
    # `ls` of a big folder asks the daemon each time (the kernel keeps no
    # listing): from the second complete listing on, L1 keeps it (no SQL); a
    # change of the folder must show at the next listing all the same.
    fe.read(f"{ACDC_ALBUM}/cover.jpg")
    album = fe.inode(ACDC_ALBUM)
    first = fe.listing(ACDC_ALBUM)
    assert fe.library.kept_listing(album) is None, "kept after one listing"
    for page in (1, 2, 3, 100):
        fe.page = page
        assert fe.listing(ACDC_ALBUM) == first, page
        assert fe.library.kept_listing(album) is not None, page
        for name, listed, _ in first:
            assert fe.stat(f"{ACDC_ALBUM}/{name}") == listed, (page, name)
    fe.retitle(f"{ACDC_ALBUM}/{BELLS}", "Hells Bells (Live)")
    assert fe.library.kept_listing(album) is None, "kept across a change"
    names = [name for name, _, _ in fe.listing(ACDC_ALBUM)]
    assert BELLS not in names
    assert "01 - Hells Bells (Live).flac" in names
    assert {THRILL, *ART} <= set(names)


def test_a_packed_listing_is_sent_as_the_rows_would_be_and_follows_changes(
    tmp_path: Path, sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A big folder's first listing comes from the catalog's packed row (no row
    # per entry): the same entries, attributes and offsets in every page size,
    # and a change shows at once (the change unpacks the folder).
    monkeypatch.setattr("musicfs.core.catalog.listings.PACKED_MIN", 1)  # every folder is big
    fe = InProcess(tmp_path, sample)
    try:
        _list_packed(fe, monkeypatch)
    finally:
        fe.close()


def _list_packed(fe: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    fe.read(f"{ACDC_ALBUM}/cover.jpg")  # its cover files are known: every listing shows them
    album = fe.inode(ACDC_ALBUM)
    assert fe.catalog.packed_listing(album) is not None, "the scan packed none"
    packed_listing = fe.library.packed_listing
    with monkeypatch.context() as rows_only:
        rows_only.setattr(fe.library, "packed_listing", lambda parent: None)
        first = fe.listing(ACDC_ALBUM)  # what the rows say
    read_rows: list[int] = []  # the folders listed row by row
    rows_of = fe.library.listing

    def listing(parent: int, after: int, limit: int) -> list[tuple[int, bytes, int, int]]:
        read_rows.append(parent)
        return rows_of(parent, after, limit)

    monkeypatch.setattr(fe.library, "listing", listing)
    for page in (1, 2, 3, 100):
        fe.library.directories.clear()  # each a first listing (L1 holds none)
        fe.page = page
        assert fe.listing(ACDC_ALBUM) == first, page
    assert not read_rows, "listed row by row though packed"
    fe.retitle(f"{ACDC_ALBUM}/{BELLS}", "Hells Bells (Live)")
    names = [name for name, _, _ in fe.listing(ACDC_ALBUM)]
    assert read_rows, "a changed folder was listed from its old packed row"
    assert "01 - Hells Bells (Live).flac" in names
    assert BELLS not in names
    assert fe.catalog.pack_listings() > 0
    read_rows.clear()
    fe.library.directories.clear()
    assert [name for name, _, _ in fe.listing(ACDC_ALBUM)] == names
    assert not read_rows
    assert packed_listing(album) is not None


def test_a_handle_reading_a_packed_listing_goes_on_from_the_rows_after_a_change(
    tmp_path: Path, sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow reader halfway through a big folder when a scan renames an entry
    # further on: the kernel was told to forget the old name, so the rest of
    # the listing must not send it (it comes from the rows, not the snapshot).
    monkeypatch.setattr("musicfs.core.catalog.listings.PACKED_MIN", 1)
    fe = InProcess(tmp_path, sample)
    try:
        fe.read(f"{ACDC_ALBUM}/cover.jpg")

        async def list_across_a_change() -> list[str]:
            fh = fe.namespace.opendir((await fe.walk(ACDC_ALBUM)).inode)
            names: list[str] = []
            offset = 0
            try:
                while True:
                    page: list[tuple[str, Attributes, int]] = []
                    await fe.namespace.readdir(
                        fh, offset, Fields(), functools.partial(fe._take, page)
                    )
                    if not page:
                        return names
                    if not names:  # after the first entry: the scan renames a later one
                        assert page[0][0] != BELLS
                        fe.retitle(f"{ACDC_ALBUM}/{BELLS}", "Hells Bells (Live)")
                    names += [name for name, _, _ in page]
                    offset = page[-1][2]
            finally:
                fe.namespace.releasedir(fh)

        fe.page = 1
        names = trio.run(list_across_a_change)
        assert BELLS not in names, "the rest of the listing came from the old snapshot"
        assert "01 - Hells Bells (Live).flac" in names
    finally:
        fe.close()
