"""One track on several origins: one node in the tree, reads from the preferred
replica, and failover to another replica in the middle of a read."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from musicfs.core.catalog.store import ROOT_NODE, Catalog, Node
from musicfs.core.catalog.templates import PathTemplate
from musicfs.core.content.library import Library, LibraryError
from musicfs.core.origins import LocalOrigin, federation
from musicfs.core.origins.base import OriginFile, OriginUnavailable
from musicfs.core.origins.federation import Federation, OriginLimits
from musicfs.core.sync.scanner import Scanner

MakeWav = Callable[..., Path]  # the make_wav fixture of conftest.py

TEMPLATE = "$artist/$album/$title.$format"
SONG = "Band/Record/Song.wav"
CHUNK = 4096


class TrackedFile(OriginFile):
    """A local file whose reads are counted, and fail while its origin is broken."""

    def __init__(self, origin: TrackedOrigin, inner: OriginFile) -> None:
        self.origin, self.inner = origin, inner
        self.size, self.mtime_ns = inner.size, inner.mtime_ns

    def read(self, offset: int, size: int) -> bytes:
        self.origin.reads += 1
        if self.origin.broken:
            raise OriginUnavailable(self.origin.id, "stopped answering")
        return self.inner.read(offset, size)

    def close(self) -> None:
        self.inner.close()


class TrackedOrigin(LocalOrigin):
    """A local folder that counts opens and reads, and can stop answering reads
    (as a share does when its server goes away: the open descriptor stops working)."""

    def __init__(self, origin_id: str, root: Path, kind: str = "local") -> None:
        super().__init__(origin_id, root, kind)
        self.opens = self.reads = 0
        self.broken = False

    def open(self, relpath: str) -> TrackedFile:  # type: ignore[override]
        file = TrackedFile(self, super().open(relpath))
        self.opens += 1
        return file


@dataclass
class Replicas:
    """Two origins, *a* scanned first (so its copy holds the node), and *b*."""

    tmp: Path
    catalog: Catalog
    scanner: Scanner
    a: TrackedOrigin
    b: TrackedOrigin
    original: bytes

    def scan(self) -> None:
        for origin in (self.a, self.b):
            self.scanner.scan(origin)

    def node(self) -> Node:
        node = self.catalog.resolve(SONG)
        assert node is not None, f"{SONG} is not in the tree"
        return node

    def holder(self) -> str:
        node = self.node()
        assert node.file_id is not None
        track = self.catalog.track(node.file_id)
        assert track is not None
        return track.origin

    def library(self, priorities: dict[str, int] | None = None) -> Library:
        limits = {oid: OriginLimits(priority=p) for oid, p in (priorities or {}).items()}
        return Library(self.catalog, Federation({"a": self.a, "b": self.b}, limits))


def file_nodes(catalog: Catalog) -> list[str]:
    nodes = (catalog.node_of_file(file_id) for file_id in catalog.file_ids_under(ROOT_NODE))
    return [catalog.path_of(node.id) for node in sorted(n for n in nodes if n is not None)]


def read_all(library: Library, handle: int, size: int, start: int = 0) -> bytes:
    data = bytearray()
    for offset in range(start, size, CHUNK):
        data += library.read(handle, offset, min(CHUNK, size - offset))
    return bytes(data)


def make_replicas(tmp_path: Path, make_wav: MakeWav, kind: str = "local") -> Replicas:
    song = make_wav(tmp_path / "src" / "song.wav", seconds=1,
                    title="Song", artist="Band", album="Record")  # fmt: skip
    # Identical bytes, at different places in the two origins.
    for dest in (tmp_path / "a" / "incoming" / "song.wav", tmp_path / "b" / "x" / "y" / "01.wav"):
        dest.parent.mkdir(parents=True)
        shutil.copyfile(song, dest)
    catalog = Catalog.open(tmp_path / "catalog.sqlite3")
    scanner = Scanner(catalog, PathTemplate.parse(TEMPLATE), workers=1)
    a = TrackedOrigin("a", tmp_path / "a", kind)
    b = TrackedOrigin("b", tmp_path / "b", kind)
    replicas = Replicas(tmp_path, catalog, scanner, a, b, song.read_bytes())
    replicas.scan()
    return replicas


@pytest.fixture
def replicas(tmp_path: Path, make_wav: MakeWav) -> Iterator[Replicas]:
    made = make_replicas(tmp_path, make_wav)
    yield made
    made.scanner.close()
    made.catalog.close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(federation, "RETRY_DELAYS", (0.01, 0.02))


# -- the tree ------------------------------------------------------------------------------


def test_the_same_track_on_two_origins_appears_once(replicas: Replicas) -> None:
    assert file_nodes(replicas.catalog) == [SONG]
    assert len(list(replicas.catalog.tracks())) == 2  # both copies are catalogued
    assert replicas.holder() == "a"  # the first one placed holds the node
    assert replicas.node().size == len(replicas.original)
    replicas.scan()  # scanning again changes nothing
    assert file_nodes(replicas.catalog) == [SONG]
    assert replicas.holder() == "a"


def test_two_copies_on_one_origin_both_appear(tmp_path: Path, make_wav: MakeWav) -> None:
    song = make_wav(tmp_path / "src" / "song.wav", seconds=1,
                    title="Song", artist="Band", album="Record")  # fmt: skip
    for folder in ("one", "two"):
        (tmp_path / "a" / folder).mkdir(parents=True)
        shutil.copyfile(song, tmp_path / "a" / folder / "song.wav")
    (tmp_path / "b").mkdir()
    shutil.copyfile(song, tmp_path / "b" / "song.wav")
    with Catalog.open(tmp_path / "catalog.sqlite3") as catalog:
        scanner = Scanner(catalog, PathTemplate.parse(TEMPLATE), workers=1)
        scanner.scan(LocalOrigin("a", tmp_path / "a"))
        # Two files of one origin are two files, never merged (FR-2): distinct names.
        assert file_nodes(catalog) == [SONG, "Band/Record/Song (2).wav"]
        # A replica on another origin joins them without a third entry.
        scanner.scan(LocalOrigin("b", tmp_path / "b"))
        assert file_nodes(catalog) == [SONG, "Band/Record/Song (2).wav"]
        scanner.close()


def test_the_node_passes_to_the_other_replica_when_its_holder_goes(
    replicas: Replicas,
) -> None:
    node = replicas.node()
    (replicas.tmp / "a" / "incoming" / "song.wav").unlink()
    report = replicas.scanner.scan(replicas.a)
    assert report.removed == 1
    after = replicas.node()
    assert after.id == node.id  # the same node, at the same path
    assert after.file_id != node.file_id
    assert replicas.holder() == "b"
    assert file_nodes(replicas.catalog) == [SONG]
    library = replicas.library()
    handle = library.open(after.id)
    try:
        assert read_all(library, handle, len(replicas.original)) == replicas.original
    finally:
        library.close(handle)
    assert replicas.a.opens == 0
    assert replicas.b.reads > 0

    (replicas.tmp / "b" / "x" / "y" / "01.wav").unlink()
    replicas.scanner.scan(replicas.b)
    assert replicas.catalog.resolve(SONG) is None
    assert replicas.catalog.resolve("Band") is None  # emptied folders go too
    assert file_nodes(replicas.catalog) == []


def test_removing_the_waiting_replica_leaves_the_node_alone(replicas: Replicas) -> None:
    node = replicas.node()
    (replicas.tmp / "b" / "x" / "y" / "01.wav").unlink()
    replicas.scanner.scan(replicas.b)
    assert replicas.node() == node
    assert replicas.holder() == "a"
    (replicas.tmp / "a" / "incoming" / "song.wav").unlink()
    replicas.scanner.scan(replicas.a)
    assert file_nodes(replicas.catalog) == []


def test_a_replica_that_returns_waits_behind_the_holder(replicas: Replicas) -> None:
    path = replicas.tmp / "a" / "incoming" / "song.wav"
    kept = path.read_bytes()
    path.unlink()
    replicas.scanner.scan(replicas.a)
    assert replicas.holder() == "b"
    path.write_bytes(kept)
    replicas.scanner.scan(replicas.a)
    assert file_nodes(replicas.catalog) == [SONG]
    assert replicas.holder() == "b"


# -- opening: the preferred replica ----------------------------------------------------------


@pytest.mark.parametrize(("priorities", "preferred"), [({"a": 1, "b": 0}, "b"),
                                                       ({"a": 0, "b": 1}, "a")])  # fmt: skip
def test_open_reads_from_the_preferred_origin(
    replicas: Replicas, priorities: dict[str, int], preferred: str
) -> None:
    assert replicas.holder() == "a"  # which copy holds the node does not matter
    library = replicas.library(priorities)
    handle = library.open(replicas.node().id)
    try:
        assert read_all(library, handle, len(replicas.original)) == replicas.original
    finally:
        library.close(handle)
    chosen = replicas.a if preferred == "a" else replicas.b
    other = replicas.b if preferred == "a" else replicas.a
    assert (chosen.opens, other.opens) == (1, 0)
    assert chosen.reads > 0
    assert other.reads == 0


def test_an_unreachable_preferred_origin_is_skipped(replicas: Replicas) -> None:
    library = replicas.library({"a": 0, "b": 1})
    (replicas.tmp / "a").rename(replicas.tmp / "a-unplugged")
    handle = library.open(replicas.node().id)
    try:
        assert read_all(library, handle, len(replicas.original)) == replicas.original
    finally:
        library.close(handle)
    assert replicas.b.reads > 0
    assert replicas.a.reads == 0
    assert not library.federation.online("a")

    # Offline origins are not even tried while their backoff runs.
    handle = library.open(replicas.node().id)
    library.close(handle)
    assert replicas.b.opens == 2

    # Back, and found by the health check: preferred again.
    (replicas.tmp / "a-unplugged").rename(replicas.tmp / "a")
    library.federation.health["a"].next_check = 0.0
    assert library.federation.check_due() == ["a"]
    handle = library.open(replicas.node().id)
    try:
        assert library.read(handle, 0, CHUNK) == replicas.original[:CHUNK]
    finally:
        library.close(handle)
    assert replicas.a.reads == 1


def test_with_every_replica_unreachable_open_fails_with_eio(replicas: Replicas) -> None:
    library = replicas.library()
    for name in ("a", "b"):
        (replicas.tmp / name).rename(replicas.tmp / f"{name}-unplugged")
    with pytest.raises(LibraryError) as info:
        library.open(replicas.node().id)
    assert info.value.errno == errno.EIO


# -- failover in the middle of a read ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["local", "nfs"])  # read inline, and through the Federation
def test_a_read_fails_over_to_the_other_replica_mid_file(
    tmp_path: Path, make_wav: MakeWav, kind: str
) -> None:
    replicas = make_replicas(tmp_path, make_wav, kind)
    library = replicas.library({"a": 0, "b": 1})
    size = len(replicas.original)
    half = size // 2 // CHUNK * CHUNK
    handle = library.open(replicas.node().id)
    try:
        first = read_all(library, handle, half)
        assert (replicas.a.reads, replicas.b.reads) == (half // CHUNK, 0)
        replicas.a.broken = True  # the preferred origin stops answering mid-file
        rest = read_all(library, handle, size, start=half)
        assert first + rest == replicas.original
        assert replicas.b.opens == 1
        assert replicas.b.reads == len(range(half, size, CHUNK))
        assert not library.federation.online("a")
        # The handle now reads from the other replica: the broken one is not asked again.
        reads_of_a = replicas.a.reads
        assert library.read(handle, 0, CHUNK) == replicas.original[:CHUNK]
        assert replicas.a.reads == reads_of_a
    finally:
        library.close(handle)
        replicas.catalog.close()
    assert library.open_handles == 0


def test_failover_never_uses_a_replica_of_another_size(replicas: Replicas) -> None:
    # b's copy grew after the scan: the catalog still thinks it is a replica.
    with open(replicas.tmp / "b" / "x" / "y" / "01.wav", "ab") as fh:
        fh.write(b"trailing junk")
    library = replicas.library({"a": 0, "b": 1})
    size = len(replicas.original)
    half = size // 2
    handle = library.open(replicas.node().id)
    try:
        assert read_all(library, handle, half) == replicas.original[:half]
        replicas.a.broken = True
        with pytest.raises(LibraryError) as info:
            library.read(handle, half, CHUNK)
        assert info.value.errno == errno.EIO
        assert replicas.b.opens == 1  # looked at...
        assert replicas.b.reads == 0  # ...but not read from
        with pytest.raises(LibraryError) as info:  # and the handle stays failed
            library.read(handle, half, CHUNK)
        assert info.value.errno == errno.EIO
    finally:
        library.close(handle)


def test_failover_with_no_other_replica_fails_with_eio(replicas: Replicas) -> None:
    library = replicas.library({"a": 0, "b": 1})
    handle = library.open(replicas.node().id)
    try:
        library.read(handle, 0, CHUNK)
        replicas.a.broken = replicas.b.broken = True
        with pytest.raises(LibraryError) as info:
            library.read(handle, CHUNK, CHUNK)
        assert info.value.errno == errno.EIO
    finally:
        library.close(handle)


def test_failover_never_uses_a_replica_that_changed_since_its_scan(replicas: Replicas) -> None:
    path = replicas.tmp / "b" / "x" / "y" / "01.wav"
    changed = bytearray(replicas.original)
    changed[len(changed) // 2 :] = bytes(len(changed) - len(changed) // 2)  # same size
    path.write_bytes(changed)
    library = replicas.library({"a": 0, "b": 1})
    size = len(replicas.original)
    half = size // 2
    handle = library.open(replicas.node().id)
    try:
        assert read_all(library, handle, half) == replicas.original[:half]
        replicas.a.broken = True
        # Refusing is right (as for a replica of another size); splicing in the
        # bytes of another version is not.
        with pytest.raises(LibraryError) as info:
            read_all(library, handle, size, start=half)
        assert info.value.errno == errno.EIO
        assert replicas.b.reads == 0
    finally:
        library.close(handle)


def test_a_failed_read_counts_one_failure(tmp_path: Path, make_wav: MakeWav) -> None:
    replicas = make_replicas(tmp_path, make_wav, "nfs")
    library = replicas.library({"a": 0, "b": 1})
    handle = library.open(replicas.node().id)
    try:
        library.read(handle, 0, CHUNK)
        replicas.a.broken = True
        assert library.read(handle, CHUNK, CHUNK) == replicas.original[CHUNK : 2 * CHUNK]
        health = library.federation.health["a"]
        assert not health.online
        assert health.failures == 1
    finally:
        library.close(handle)
        replicas.catalog.close()
