"""The chunk store (L3): content-defined chunks, dedup, verification, LRU eviction."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import pytest

from musicfs.core.cas import CHUNK_MAX, CHUNK_MIN, ChunkStore, CorruptChunk, cut


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


def test_get_verifies_and_drops_a_damaged_chunk(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    digest = store.put(noise(50_000))
    path = Path(store.path_of(digest))
    damaged = bytearray(path.read_bytes())
    damaged[1234] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptChunk, match=digest):
        store.get(digest)
    assert not path.exists()
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


def test_pinned_chunks_are_not_evicted(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, limit=150_000)
    held = store.put(noise(100_000, 1))
    with store.pinned([held]):
        store.put(noise(100_000, 2))
        assert store.has(held)
    assert store.stats.bytes <= 150_000 + CHUNK_MAX  # over by at most one chunk


def test_index_survives_reopening_and_verify_finds_damage(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    good = store.put(noise(40_000, 1))
    bad = store.put(noise(40_000, 2))
    store.close()
    with open(ChunkStore(tmp_path).path_of(bad), "r+b") as fh:
        fh.seek(10)
        fh.write(b"X")
    reopened = ChunkStore(tmp_path)
    assert reopened.stats.entries == 2
    assert reopened.verify() == [bad]
    assert reopened.get(good) is not None
    assert not os.path.exists(reopened.path_of(bad))
