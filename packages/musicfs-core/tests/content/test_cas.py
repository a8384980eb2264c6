"""The chunk store (L3): content-defined chunks, dedup, verification, LRU eviction."""

from __future__ import annotations

import itertools
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from musicfs.core.content import cas, packfiles
from musicfs.core.content.cachedfile import CachedFile
from musicfs.core.content.cas import ChunkStore
from musicfs.core.content.chunks import (
    CHUNK_MAX,
    CHUNK_MIN,
    ChunkReader,
    CorruptChunk,
    Place,
    chunk_hash,
    cut,
)


def noise(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def test_chunks_cover_the_data_within_the_size_bounds() -> None:
    data = noise(3 * 1024 * 1024)
    bounds = cut(data)
    assert bounds[0][0] == 0
    assert sum(length for _, length in bounds) == len(data)
    assert all(a + la == b for (a, la), (b, _) in itertools.pairwise(bounds))
    assert all(CHUNK_MIN <= length <= CHUNK_MAX for _, length in bounds[:-1])


def test_an_edit_moves_only_nearby_boundaries() -> None:
    data = noise(2 * 1024 * 1024)
    edited = data[:1_000_000] + b"tag edit" + data[1_000_000:]
    before = {data[o : o + n] for o, n in cut(data)}
    after = {edited[o : o + n] for o, n in cut(edited)}
    assert len(after - before) <= 2  # the chunk holding the edit (and maybe its neighbour)


def test_identical_content_is_stored_once(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    data = noise(100_000)
    assert store.put(data) == store.put(data)
    assert (store.stats.entries, store.stats.bytes) == (1, 100_000)


def test_get_verifies_and_drops_a_damaged_chunk(
    tmp_path: Path, damage_chunk: Callable[[ChunkStore, str, int], None]
) -> None:
    store = ChunkStore(tmp_path)
    digest = store.put(noise(50_000))
    damage_chunk(store, digest, 1234)
    with pytest.raises(CorruptChunk, match=digest):
        store.get(digest)
    assert not store.has(digest)
    assert store.get(digest) is None  # now a miss, to be fetched again
    assert store.stats.corrupt == 1


def test_lru_eviction_keeps_the_store_under_its_limit(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, limit=300_000)
    first = store.put(noise(100_000, 1))
    second = store.put(noise(100_000, 2))
    store.put(noise(100_000, 3))
    store.get(first)  # first is now more recent than second
    store.put(noise(100_000, 4))
    assert store.stats.bytes <= 300_000
    assert store.has(first)
    assert not store.has(second)
    assert store.stats.evictions == 1


def test_reads_never_write_the_index_and_eviction_still_goes_by_their_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read (the FUSE thread) neither waits for a copy holding the index nor
    writes its chunks' uses there itself (that cost a cold cached read 8%): a
    thread of their own does, each chunk with its own time. Eviction goes by
    them, and what is not written yet when the store closes is written then."""
    monkeypatch.setattr(cas, "_TOUCH_BATCH", 3)
    ticks = itertools.count(1_000_000)
    monkeypatch.setattr(time, "time", lambda: float(next(ticks)))  # every use later
    store = ChunkStore(tmp_path, limit=500_000)
    chunks = [store.put(noise(100_000, seed)) for seed in range(5)]
    read, unread = chunks[:3], chunks[3:]
    places = store.places(chunks)
    writers: list[threading.Thread] = []
    store._db.set_trace_callback(
        lambda sql: writers.append(threading.current_thread()) if "last_used" in sql else None
    )

    def uses() -> dict[str, float]:
        with sqlite3.connect(tmp_path / "index.sqlite3") as db:
            return dict(db.execute("SELECT hash, last_used FROM chunks"))

    def wait_until(written: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10  # written with nothing else asking for it
        while not written():
            assert time.monotonic() < deadline, "the uses were never written"
            time.sleep(0.01)

    with store._lock, ChunkReader(store) as reader:  # as a copy holds it for a while
        data = reader.read([(d, places[d]) for d in read])  # the oldest three: a batch
    assert [bytes(b) for b in data] == [noise(100_000, seed) for seed in range(3)]
    wait_until(lambda: min(uses()[d] for d in read) > max(uses()[d] for d in unread))
    assert writers
    assert threading.current_thread() not in writers
    used = uses()
    assert used[read[0]] < used[read[1]] < used[read[2]]  # each its own time
    store.put(noise(100_000, 9))  # over the limit: the oldest use goes
    assert all(store.has(d) for d in read)
    assert not store.has(unread[0])
    # A batch whose writer waits for the lock when the store closes: written then.
    with store._lock, ChunkReader(store) as reader:
        reader.read([(d, places[d]) for d in (unread[1], read[0], read[1])])
        closing = threading.Thread(target=store.close)
        closing.start()
    closing.join(10)
    assert not closing.is_alive()
    used = uses()
    assert used[unread[1]] > used[read[2]]


def test_pinned_chunks_are_not_evicted(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, limit=150_000)
    held = store.put(noise(100_000, 1))
    with store.pinned([held]):
        store.put(noise(100_000, 2))
        assert store.has(held)
    assert store.stats.bytes <= 150_000 + CHUNK_MAX  # over by at most one chunk


def test_index_survives_reopening_and_verify_finds_damage(
    tmp_path: Path, damage_chunk: Callable[[ChunkStore, str, int], None]
) -> None:
    store = ChunkStore(tmp_path)
    good = store.put(noise(40_000, 1))
    bad = store.put(noise(40_000, 2))
    store.close()
    damage_chunk(ChunkStore(tmp_path), bad, 10)
    reopened = ChunkStore(tmp_path)
    assert reopened.stats.entries == 2
    assert reopened.verify() == [bad]
    assert reopened.get(good) is not None
    assert not reopened.has(bad)


def allocated(store: ChunkStore) -> int:
    """Bytes the store's pack files take on disk (holes excluded)."""
    return sum(p.stat().st_blocks * 512 for p in (store.root / "packs").glob("*.pack"))


def test_a_files_chunks_lie_back_to_back_and_read_back_as_one_run(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    data = noise(2 * 1024 * 1024)
    bounds = cut(data)
    digests = store.put_all([data[o : o + n] for o, n in bounds])
    places = [store.places(digests)[d] for d in digests]
    assert len({p.pack for p in places}) == 1
    assert all(a.offset + a.size == b.offset for a, b in itertools.pairwise(places))
    with ChunkReader(store) as reader:
        assert b"".join(reader.read(list(zip(digests, places, strict=True)))) == data


def test_evicted_chunks_give_their_disk_space_back(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, limit=2_000_000)
    first = noise(1_500_000, 1)
    store.put_all([first[o : o + n] for o, n in cut(first)])
    before = allocated(store)
    second = noise(1_500_000, 2)
    store.put_all([second[o : o + n] for o, n in cut(second)])
    assert store.stats.bytes <= 2_000_000
    # Both went into one pack; what was evicted from it is a hole now.
    assert allocated(store) <= 2_000_000 + 64 * 1024
    assert allocated(store) < before + 1_500_000


def test_a_pack_with_no_chunk_left_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cas, "PACK_TARGET", 100_000)  # every file starts a new pack
    store = ChunkStore(tmp_path)
    kept = store.put(noise(150_000, 1))
    dropped = store.put(noise(150_000, 2))
    current = store.put(noise(150_000, 3))  # in the pack being written to now
    packs = {store.place(d).pack for d in (kept, dropped)}  # type: ignore[union-attr]
    assert len(packs) == 2
    store.drop_unreferenced({kept, current})
    assert sorted(p.name for p in (tmp_path / "packs").glob("*.pack")) == [
        f"{store.place(kept).pack:08d}.pack",  # type: ignore[union-attr]
        f"{store.place(current).pack:08d}.pack",  # type: ignore[union-attr]
    ]
    assert store.get(kept) == noise(150_000, 1)


def test_a_store_from_before_packs_is_still_read(tmp_path: Path) -> None:
    data = noise(70_000)
    digest = chunk_hash(data)
    old = tmp_path / "chunks" / digest[:2] / digest[2:4] / digest
    old.parent.mkdir(parents=True)
    old.write_bytes(data)
    with sqlite3.connect(tmp_path / "index.sqlite3") as db:
        db.execute("CREATE TABLE chunks (hash TEXT PRIMARY KEY, size INTEGER NOT NULL,"
                   " last_used REAL NOT NULL)")  # fmt: skip
        db.execute("INSERT INTO chunks VALUES (?, ?, 0)", (digest, len(data)))
    store = ChunkStore(tmp_path)
    assert store.get(digest) == data
    assert store.verify(deep=True) == []
    store.drop_unreferenced(set())
    assert not old.exists()


def one_chunk_store(root: Path) -> tuple[ChunkStore, str, Place]:
    """A closed store at *root* holding one 100,000-byte chunk: (store, hash, place)."""
    store = ChunkStore(root)
    digest = store.put(noise(100_000, 1))
    place = store.place(digest)
    assert place is not None
    store.close()
    return store, digest, place


def test_bytes_of_a_copy_interrupted_before_indexing_are_given_back(tmp_path: Path) -> None:
    store, kept, place = one_chunk_store(tmp_path)
    pack = Path(store.path_of(place.pack))
    with open(pack, "ab") as fh:  # written, then the daemon was killed before the index
        fh.write(noise(300_000, 2))
    reopened = ChunkStore(tmp_path)
    assert pack.stat().st_size == 100_000
    assert reopened.get(kept) == noise(100_000, 1)
    again = reopened.put(noise(50_000, 3))  # appends go on where the pack really ends
    assert reopened.place(again) == Place(place.pack, 100_000, 50_000)
    assert reopened.get(again) == noise(50_000, 3)


def test_a_pack_cut_short_by_a_crash_is_not_written_over(tmp_path: Path) -> None:
    store, lost, place = one_chunk_store(tmp_path)
    os.truncate(store.path_of(place.pack), 40_000)  # the index outlived the data
    reopened = ChunkStore(tmp_path)
    fresh = reopened.put(noise(50_000, 2))
    assert reopened.place(fresh) == Place(place.pack, 100_000, 50_000)
    with pytest.raises(CorruptChunk):
        reopened.get(lost)  # found damaged, dropped; its hole is not where fresh is
    assert reopened.get(fresh) == noise(50_000, 2)


def test_reads_go_on_while_a_copy_is_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fill writes a whole file's chunks: the FUSE thread's reads must not
    wait behind it."""
    store = ChunkStore(tmp_path)
    cached = store.put(noise(50_000, 1))
    writing, finish = threading.Event(), threading.Event()
    write_at = packfiles.write_at

    def slow_write(path: str, data: bytes, offset: int) -> None:
        writing.set()
        finish.wait(30)
        write_at(path, data, offset)

    monkeypatch.setattr(cas, "write_at", slow_write)
    with ThreadPoolExecutor(2) as pool:
        copy = pool.submit(store.put, noise(300_000, 2))
        assert writing.wait(10)
        try:
            read = pool.submit(store.get, cached)
            assert read.result(timeout=10) == noise(50_000, 1)
        finally:
            finish.set()
        assert store.get(copy.result(timeout=10)) == noise(300_000, 2)


def test_two_copies_racing_over_one_chunk_keep_both_files_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copy A writes chunks x and y and is slow to index them; copy B stores x
    meanwhile, in a new pack. A's y must stay readable where A put it."""
    monkeypatch.setattr(cas, "PACK_TARGET", 100_000)  # B's copy goes into a new pack
    store = ChunkStore(tmp_path)
    x, y = noise(60_000, 1), noise(60_000, 2)
    a_wrote, b_done = threading.Event(), threading.Event()
    write_at = packfiles.write_at

    def write_then_wait(path: str, data: bytes, offset: int) -> None:
        write_at(path, data, offset)
        if threading.current_thread().name.startswith("copy-a"):
            a_wrote.set()
            b_done.wait(30)

    monkeypatch.setattr(cas, "write_at", write_then_wait)
    with ThreadPoolExecutor(1, thread_name_prefix="copy-a") as copy_a:
        a = copy_a.submit(store.put_all, [x, y])
        assert a_wrote.wait(10)
        try:
            store.put_all([x])  # copy B
        finally:
            b_done.set()
        a.result(timeout=10)
    assert store.get(chunk_hash(x)) == x
    assert store.get(chunk_hash(y)) == y
    assert store.stats.entries == 2


def test_kept_chunks_are_never_evicted_until_let_go(tmp_path: Path) -> None:
    """Pins for offline: `keep` chunks stay however much else is stored; `keep`
    with another set lets the old ones go."""
    store = ChunkStore(tmp_path, limit=300_000)
    pinned = store.put_all([noise(100_000, 1)], keep=True)[0]
    also = store.put(noise(100_000, 2))
    store.keep_more([also])
    for seed in range(3, 9):
        store.put(noise(100_000, seed))
    assert store.has(pinned)
    assert store.has(also)
    assert store.stats.bytes <= 300_000
    store.keep([also])
    store.put(noise(100_000, 9))
    store.put(noise(100_000, 10))
    assert not store.has(pinned)
    assert store.has(also)


def test_a_sequential_reader_is_read_ahead_by_the_kernel_and_asked_ahead_only_at_jumps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WILLNEED over pages the kernel would read ahead anyway stops its own
    read-ahead (a cold cached read fell to 0.67x the floor): it is asked only
    where the next chunks do not follow the last in their pack."""
    store = ChunkStore(tmp_path)
    song, edit = noise(6 * 1024 * 1024, seed=2), noise(300_000, seed=3)
    song_digests = store.put_all([song[o : o + n] for o, n in cut(song)])
    edit_digests = store.put_all([edit[o : o + n] for o, n in cut(edit)])
    half = len(song_digests) // 2
    advised: list[Place] = []
    monkeypatch.setattr(ChunkReader, "advise", lambda _, place, size: advised.append(place))

    def read_through(digests: list[str], step: int = 1 << 20) -> bytes:
        places = store.places(digests)
        chunks, offset = [], 0
        for digest in digests:
            chunks.append((offset, places[digest].size, digest))
            offset += places[digest].size
        cached = CachedFile(store, b"", chunks, places)
        try:
            return b"".join(cached.read(at, step) for at in range(0, offset, step))
        finally:
            cached.close()

    assert read_through(song_digests) == song
    assert advised == []  # one pack, in order: the kernel's read-ahead alone
    # A copy whose middle is another file's chunks (a tag edit, dedup): the
    # reader jumps into the edit and back, and there the kernel is asked ahead.
    mixed = song_digests[:half] + edit_digests + song_digests[half:]
    places = store.places(mixed)
    split = sum(places[digest].size for digest in song_digests[:half])
    assert read_through(mixed) == song[:split] + edit + song[split:]
    assert [p.offset for p in advised] == [
        places[edit_digests[0]].offset,
        places[song_digests[half]].offset,
    ]
    # Requests within a chunk, across a few, across the jumps: the same bytes.
    for step in (7_000, 100_003, 3 << 20):
        assert read_through(mixed, step) == song[:split] + edit + song[split:]
