"""The read policy without a mount: what an open track serves on the FUSE
thread and what it leaves to a worker, the order copies are tried in when a
read fails over, and the request budget (content/openfile.py)."""

from __future__ import annotations

import errno
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from musicfs.core.catalog.store import Catalog, Overlay
from musicfs.core.catalog.templates import PathTemplate
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.cas import ChunkStore
from musicfs.core.content.library import Library, LibraryError, version_of
from musicfs.core.content.openfile import OpenTrack, Request, in_worker
from musicfs.core.events import EventType
from musicfs.core.origins import LocalOrigin, federation
from musicfs.core.origins.base import OriginFile, OriginUnavailable
from musicfs.core.origins.federation import Federation, OriginLimits
from musicfs.core.sync.scanner import Scanner

MakeWav = Callable[..., Path]  # the make_wav fixture of conftest.py
DamageChunk = Callable[[ChunkStore, str, int], None]

T = TypeVar("T")
SONG = "Band/Song.wav"
BLOCK = 4096


class CountedFile(OriginFile):
    """An origin file whose reads are counted, fail while its origin is broken,
    and wait while it hangs; it says when it is closed."""

    def __init__(self, origin: CountedOrigin, inner: OriginFile) -> None:
        self.origin, self.inner = origin, inner
        self.size, self.mtime_ns = inner.size, inner.mtime_ns
        self.closed = threading.Event()

    def read(self, offset: int, size: int) -> bytes:
        self.origin.reads += 1
        self.origin.wait_if_hung()
        if self.origin.broken:
            raise OriginUnavailable(self.origin.id, "stopped answering")
        return self.inner.read(offset, size)

    def close(self) -> None:
        self.inner.close()
        self.closed.set()


class CountedOrigin(LocalOrigin):
    """A folder (a local disk, or a share when *kind* is ``nfs``) that counts
    opens and reads, and can stop answering or hang until released."""

    def __init__(self, origin_id: str, root: Path, kind: str) -> None:
        super().__init__(origin_id, root, kind)
        self.opens = self.reads = 0
        self.broken = False
        self.hung = False
        self.release = threading.Event()
        self.files: list[CountedFile] = []
        self.opened_one = threading.Event()

    def wait_if_hung(self) -> None:
        if self.hung:
            assert self.release.wait(30), "a hanging request was never released"

    def open(self, relpath: str) -> CountedFile:  # type: ignore[override]
        self.opens += 1
        self.wait_if_hung()
        file = CountedFile(self, super().open(relpath))
        self.files.append(file)
        self.opened_one.set()
        return file


@dataclass
class Setup:
    library: Library
    a: CountedOrigin
    b: CountedOrigin
    original: bytes

    def node_id(self) -> int:
        node = self.library.catalog.resolve(SONG)
        assert node is not None
        return node.id

    def fill_cache(self, origin: str) -> None:
        """A complete cached copy of *origin*'s replica."""
        content = self.library.content
        assert content is not None
        (track,) = [t for t in self.library.catalog.tracks() if t.origin == origin]
        with self.library.federation[origin].open(track.relpath) as file:
            assert content.fill(version_of(track), file)

    def source_of(self, handle: int) -> tuple[str, bool]:
        """(origin of the copy a handle reads, whether it is the cached copy)."""
        opened = self.library.handle(handle)
        assert opened.source is not None
        return opened.track.origin, opened.cached


@pytest.fixture
def make_setup(tmp_path: Path, make_wav: MakeWav) -> Iterator[Callable[[str], Setup]]:
    """The same track on origins *a* (preferred) and *b*, of *kind*, and a content cache."""
    made: list[Setup] = []

    def make(kind: str) -> Setup:
        song = make_wav(tmp_path / "src" / "song.wav", seconds=1, title="Song", artist="Band")
        for folder in ("a", "b"):
            (tmp_path / folder).mkdir()
            shutil.copyfile(song, tmp_path / folder / "song.wav")
        catalog = Catalog.open(tmp_path / "catalog.sqlite3")
        a = CountedOrigin("a", tmp_path / "a", kind)
        b = CountedOrigin("b", tmp_path / "b", kind)
        scanner = Scanner(catalog, PathTemplate.parse("$artist/$title.$format"), workers=1)
        scanner.scan(a)
        scanner.scan(b)
        scanner.close()
        limits = {
            "a": OriginLimits(priority=0, timeout=0.1),
            "b": OriginLimits(priority=1, timeout=0.1),
        }
        fed = Federation({"a": a, "b": b}, limits)
        library = Library(catalog, fed, content=ContentCache(tmp_path / "content"))
        setup = Setup(library, a, b, song.read_bytes())
        made.append(setup)
        return setup

    yield make
    for setup in made:
        setup.a.release.set()
        setup.b.release.set()
        setup.library.close_all()
        setup.library.catalog.close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(federation, "RETRY_DELAYS", (0.01, 0.02))


def open_now_or_in_worker(library: Library, node_id: int) -> tuple[OpenTrack, bool]:
    """Open as the FUSE skin does; also say whether it was done on this thread."""
    opening = library.opening(node_id)
    opened = opening.now()
    return (opening.finish(), False) if opened is None else (opened, True)


# -- can it serve now? ---------------------------------------------------------------------


def test_a_local_disk_is_opened_and_read_on_the_calling_thread(
    make_setup: Callable[[str], Setup],
) -> None:
    setup = make_setup("local")
    opened, now = open_now_or_in_worker(setup.library, setup.node_id())
    assert now
    handle = setup.library.register(opened)
    assert setup.library.handle(handle).read(0, BLOCK).now() == setup.original[:BLOCK]


def test_a_share_is_left_to_a_worker_before_it_is_asked_anything(
    make_setup: Callable[[str], Setup],
) -> None:
    setup = make_setup("nfs")
    opening = setup.library.opening(setup.node_id())
    assert opening.now() is None
    assert setup.a.opens == 0  # the share was not asked on this thread
    handle = setup.library.register(opening.finish())
    assert setup.a.opens == 1
    reading = setup.library.handle(handle).read(BLOCK, BLOCK)
    assert reading.now() is None
    assert setup.a.reads == 0
    assert reading.finish() == setup.original[BLOCK : 2 * BLOCK]
    assert setup.a.reads == 1


def test_the_cached_copy_of_a_share_is_served_now_without_the_network(
    make_setup: Callable[[str], Setup],
) -> None:
    setup = make_setup("nfs")
    setup.fill_cache("a")
    opens, reads = setup.a.opens, setup.a.reads
    opened, now = open_now_or_in_worker(setup.library, setup.node_id())
    assert now
    handle = setup.library.register(opened)
    assert setup.source_of(handle) == ("a", True)
    assert setup.library.handle(handle).read(100, BLOCK).now() == setup.original[100 : 100 + BLOCK]
    assert (setup.a.opens, setup.a.reads) == (opens, reads)


def test_a_damaged_cached_chunk_goes_on_in_a_worker_from_the_share_once(
    make_setup: Callable[[str], Setup], damage_chunk: DamageChunk
) -> None:
    setup = make_setup("nfs")
    setup.fill_cache("a")
    content = setup.library.content
    assert content is not None
    with setup.library.events.subscribe({EventType.CHUNK_CORRUPT}) as corrupt:
        handle = setup.library.register(open_now_or_in_worker(setup.library, setup.node_id())[0])
        cached = content.open(version_of(setup.library.handle(handle).track))
        assert cached is not None
        damage_chunk(content.store, cached.chunks[0][2], 0)
        cached.close()
        reading = setup.library.handle(handle).read(0, BLOCK)
        assert reading.now() is None  # the share may block: not on this thread
        reads = setup.a.reads
        assert reading.finish() == setup.original[:BLOCK]
        assert setup.a.reads == reads + 1  # one read of the share, the cache not asked again
        assert setup.source_of(handle) == ("a", False)
        assert corrupt.get(timeout=1) is not None
        assert corrupt.get(timeout=0) is None  # reported once


def test_a_read_in_the_overlay_header_needs_no_source(make_setup: Callable[[str], Setup]) -> None:
    setup = make_setup("nfs")
    handle = setup.library.open(setup.node_id())
    opened = setup.library.handle(handle)
    opened.overlay = Overlay(header=b"NEWHEADER", header_length=44)
    reads = setup.a.reads
    assert opened.read(0, 3).now() == b"NEW"
    reading = opened.read(6, 8)  # the header's end, then the file after its own header
    assert reading.now() is None
    assert reading.finish() == b"DER" + setup.original[44:49]
    assert setup.a.reads == reads + 1


# -- fail-over order ---------------------------------------------------------------------


def test_candidates_come_in_one_order(make_setup: Callable[[str], Setup]) -> None:
    setup = make_setup("nfs")
    library = setup.library
    tracks = sorted(library.catalog.tracks(), key=lambda t: t.origin)
    order = [(c.track.origin, c.cached, c.blocking) for c in library.policy.candidates(tracks)]
    # Shares: each replica's cached copy (no network) before the replica itself.
    assert order == [("a", True, False), ("a", False, True), ("b", True, False), ("b", False, True)]
    library.federation.failed("a", OriginUnavailable("a", "down"))
    after = [(c.track.origin, c.cached) for c in library.policy.candidates(tracks)]
    assert after == [("b", True), ("b", False), ("a", True)]  # an offline origin is passed over


def test_a_read_fails_over_from_origin_to_replica_to_cached_copy(
    make_setup: Callable[[str], Setup],
) -> None:
    setup = make_setup("local")
    setup.fill_cache("a")
    library = setup.library
    size = len(setup.original)
    handle = library.open(setup.node_id())
    assert setup.source_of(handle) == ("a", False)
    setup.a.broken = True
    assert library.read(handle, BLOCK, BLOCK) == setup.original[BLOCK : 2 * BLOCK]
    assert setup.source_of(handle) == ("b", False)
    assert not library.federation.online("a")
    setup.b.broken = True
    assert library.read(handle, 2 * BLOCK, size) == setup.original[2 * BLOCK :]
    assert setup.source_of(handle) == ("a", True)
    # All of it on this thread: every copy involved is a local disk or the cache.
    assert library.handle(handle).read(0, BLOCK).now() == setup.original[:BLOCK]


def test_a_read_meeting_a_fail_over_in_progress_waits_in_a_worker_and_asks_nothing_twice(
    make_setup: Callable[[str], Setup],
) -> None:
    setup = make_setup("local")
    library = setup.library
    handle = library.open(setup.node_id())
    opened = library.handle(handle)
    setup.a.broken = True
    reading = opened.read(BLOCK, BLOCK)
    with opened.lock:  # another read is failing over (in a worker)
        assert reading.now() is None  # the FUSE thread does not wait for it
    reads = setup.a.reads
    assert reading.finish() == setup.original[BLOCK : 2 * BLOCK]
    assert setup.a.reads == reads  # the copy that failed was not asked again
    assert setup.source_of(handle) == ("b", False)


def test_with_no_copy_left_a_read_answers_eio_and_the_handle_stays_failed(
    make_setup: Callable[[str], Setup],
) -> None:
    setup = make_setup("local")
    library = setup.library
    handle = library.open(setup.node_id())
    setup.a.broken = setup.b.broken = True
    for _ in range(2):
        with pytest.raises(LibraryError) as info:
            library.read(handle, 0, BLOCK)
        assert info.value.errno == errno.EIO
    assert setup.b.opens == 1  # the second read did not go round the copies again


# -- the request budget -------------------------------------------------------------------


@pytest.fixture
def short_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(federation, "REQUEST_GRACE", 0.3)


def serve_in_worker(request: Request[T]) -> T:
    async def main() -> T:
        with trio.fail_after(20):  # a hang fails the test rather than stalling it
            return await in_worker(request, trio.CapacityLimiter(4))

    return trio.run(main)


def test_the_budget_is_stated_once_from_the_slowest_origin(tmp_path: Path) -> None:
    origins = {oid: LocalOrigin(oid, tmp_path) for oid in ("a", "b")}
    limits = {"a": OriginLimits(timeout=1.0), "b": OriginLimits(timeout=4.0)}
    attempts = len(federation.RETRY_DELAYS) + 1
    expected = attempts * 4.0 + federation.REQUEST_GRACE
    assert Federation(origins, limits).request_budget == expected


@pytest.mark.usefixtures("short_budget")
def test_an_open_past_its_budget_answers_eio_and_closes_what_it_opens_late(
    make_setup: Callable[[str], Setup],
) -> None:
    setup = make_setup("nfs")
    setup.b.broken = True
    setup.a.hung = True
    opening = setup.library.opening(setup.node_id())
    assert opening.now() is None
    with pytest.raises(LibraryError) as info:
        serve_in_worker(opening)
    assert info.value.errno == errno.EIO
    assert "origin 'a' gave no answer within" in str(info.value)
    assert not setup.library.federation.online("a")  # the next request does not wait
    setup.a.release.set()  # the open given up on goes through now...
    assert setup.a.opened_one.wait(10)
    (late,) = setup.a.files
    assert late.closed.wait(10), "the late open was left open on the share"


@pytest.mark.usefixtures("short_budget")
def test_a_read_past_its_budget_answers_eio(make_setup: Callable[[str], Setup]) -> None:
    setup = make_setup("nfs")
    handle = setup.library.open(setup.node_id())
    setup.a.hung = True
    reading = setup.library.handle(handle).read(0, BLOCK)
    assert reading.now() is None
    with pytest.raises(LibraryError) as info:
        serve_in_worker(reading)
    assert info.value.errno == errno.EIO
    assert "origin 'a' gave no answer within" in str(info.value)
    assert not setup.library.federation.online("a")
