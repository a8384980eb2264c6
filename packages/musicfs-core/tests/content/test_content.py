"""The content cache: a file read once comes back byte for byte, verified."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import random
import sqlite3
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mutagen.flac import FLAC

from musicfs.core.content import cache as cache_module
from musicfs.core.content import cas
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.cas import ChunkStore
from musicfs.core.content.chunks import ChunkReader, CorruptChunk, Place, chunk_hash, cut
from musicfs.core.content.manifests import CacheCheck, CopyId, Version
from musicfs.core.origins import LocalFile

Encode = Callable[..., Path]  # the encode fixture of conftest.py


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[ContentCache]:
    c = ContentCache(tmp_path / "content")
    yield c
    c.close()


def put_file(path: Path, data: bytes) -> Version:
    path.write_bytes(data)
    st = path.stat()
    return Version("lib", path.name, st.st_size, st.st_mtime_ns, path.suffix.lstrip("."))


def fill(cache: ContentCache, path: Path, version: Version) -> bool:
    with LocalFile.at(path) as file:
        return cache.fill(version, file)


def test_reads_return_the_original_bytes_at_any_offset(tmp_path: Path, cache: ContentCache) -> None:
    data = b"fLaC\x80\x00\x00\x10" + b"T" * 16 + random.Random(3).randbytes(700_000)
    version = put_file(tmp_path / "a.flac", data)
    assert fill(cache, tmp_path / "a.flac", version)
    cached = cache.open(version)
    assert cached is not None
    assert cached.header == data[:24]  # fLaC + one metadata block
    assert cached.size == len(data)
    rng = random.Random(4)
    for _ in range(200):
        offset = rng.randrange(0, len(data) + 10)
        size = rng.randrange(1, 300_000)
        assert cached.read(offset, size) == data[offset : offset + size]


def test_a_long_file_is_copied_in_blocks_into_the_chunks_of_the_whole(
    tmp_path: Path, cache: ContentCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy holds about two blocks in memory, not the file (a 1 GB file
    would otherwise cost the daemon 1 GB), cuts the same chunks as cutting
    the whole payload at once (copies made before still share them), and
    writes them back to back in one pack, however full it gets meanwhile
    (reading the file back is one sequential read)."""
    block = 256 * 1024
    monkeypatch.setattr(cache_module, "_FILL_BLOCK", block)
    monkeypatch.setattr(cas, "PACK_TARGET", 1024 * 1024)
    header = b"fLaC\x80\x00\x00\x10" + b"T" * 16
    data = header + random.Random(8).randbytes(6 * 1024 * 1024 + 12_345)
    version = put_file(tmp_path / "long.flac", data)
    tracemalloc.start()
    try:
        assert fill(cache, tmp_path / "long.flac", version)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * block + 512 * 1024, f"{peak} bytes held to copy {len(data)}"
    cached = cache.open(version)
    assert cached is not None
    try:
        payload = data[len(header) :]
        assert cached.header == header
        whole = [(o, n, chunk_hash(payload[o : o + n])) for o, n in cut(payload)]
        assert cached.chunks == whole
        places = cache.store.places([digest for _, _, digest in whole])
        spans = sorted((places[d].pack, places[d].offset, places[d].size) for _, _, d in whole)
        assert len({pack for pack, _, _ in spans}) == 1
        assert all(a[1] + a[2] == b[1] for a, b in itertools.pairwise(spans))
        assert cached.read(0, len(data)) == data
    finally:
        cached.close()


def test_a_pinned_copy_that_stops_midway_leaves_nothing_unevictable(tmp_path: Path) -> None:
    """Its chunks stored so far were kept from eviction while it was copied;
    once the origin fails, they go like any unused chunk."""

    class Dropping:  # an origin file whose connection is lost after 8 MiB
        def __init__(self, data: bytes) -> None:
            self.data, self.size, self.mtime_ns = data, len(data), 1

        def read(self, offset: int, size: int) -> bytes:
            if offset >= 8 << 20:
                raise OSError(errno.ECONNRESET, "connection lost")
            return self.data[offset : offset + size]

    cache = ContentCache(tmp_path / "content", limit=4 << 20)
    try:
        cache.pin_files([("lib", "pinned.wav")])
        data = random.Random(9).randbytes(12 << 20)
        with pytest.raises(OSError, match="connection lost"):
            cache.fill(Version("lib", "pinned.wav", len(data), 1, "wav"), Dropping(data))  # type: ignore[arg-type]
        cache.store.evict()
        assert cache.store.stats.bytes <= 4 << 20
    finally:
        cache.close()


def test_only_the_exact_version_is_served(tmp_path: Path, cache: ContentCache) -> None:
    version = put_file(tmp_path / "a.mp3", b"x" * 1000)
    fill(cache, tmp_path / "a.mp3", version)
    changed = Version(version.origin, version.relpath, version.size, version.mtime_ns + 1, "mp3")
    assert cache.open(changed) is None
    assert cache.open(version) is not None


def test_a_file_changed_since_cataloguing_is_not_cached(
    tmp_path: Path, cache: ContentCache
) -> None:
    version = put_file(tmp_path / "a.mp3", b"x" * 1000)
    (tmp_path / "a.mp3").write_bytes(b"y" * 1001)
    assert not fill(cache, tmp_path / "a.mp3", version)
    assert cache.open(version) is None


def test_identical_files_share_their_chunks(tmp_path: Path, cache: ContentCache) -> None:
    data = random.Random(5).randbytes(500_000)
    a = put_file(tmp_path / "a.wav", data)
    (tmp_path / "sub").mkdir()
    b = put_file(tmp_path / "sub" / "b.wav", data)
    fill(cache, tmp_path / "a.wav", a)
    stored = cache.store.stats.bytes
    fill(cache, tmp_path / "sub" / "b.wav", b)
    assert cache.store.stats.bytes == stored == len(data)


def test_a_damaged_chunk_is_never_served(
    tmp_path: Path, cache: ContentCache, damage_chunk: Callable[[ChunkStore, str, int], None]
) -> None:
    data = random.Random(6).randbytes(300_000)
    version = put_file(tmp_path / "a.wav", data)
    fill(cache, tmp_path / "a.wav", version)
    cached = cache.open(version)
    assert cached is not None
    damage_chunk(cache.store, cached.chunks[0][2], 0)
    with pytest.raises(CorruptChunk):
        cached.read(0, 100)
    assert cache.open(version) is None  # the copy is incomplete now


def test_an_open_cached_file_is_never_evicted_under_its_reader(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "content", limit=600_000)
    data = random.Random(7).randbytes(500_000)
    version = put_file(tmp_path / "a.wav", data)
    fill(cache, tmp_path / "a.wav", version)
    cached = cache.open(version)
    assert cached is not None
    other = put_file(tmp_path / "b.wav", random.Random(8).randbytes(500_000))
    fill(cache, tmp_path / "b.wav", other)  # over the limit: something must go
    assert cached.read(0, len(data)) == data
    assert cache.store.stats.bytes <= 600_000 + 256 * 1024  # over by at most one chunk
    cached.close()
    cache.store.evict()
    assert cache.store.stats.bytes <= 600_000
    cache.close()


def test_verify_drops_damaged_chunks_and_the_copies_that_need_them(
    tmp_path: Path, cache: ContentCache, damage_chunk: Callable[[ChunkStore, str, int], None]
) -> None:
    good = put_file(tmp_path / "a.wav", random.Random(9).randbytes(200_000))
    hurt = put_file(tmp_path / "b.wav", random.Random(10).randbytes(200_000))
    fill(cache, tmp_path / "a.wav", good)
    fill(cache, tmp_path / "b.wav", hurt)
    opened = cache.open(hurt)
    assert opened is not None
    digest = opened.chunks[-1][2]
    opened.close()
    damage_chunk(cache.store, digest, -1)
    assert cache.verify() == ([digest], 1)
    assert cache.open(hurt) is None
    assert cache.open(good) is not None
    assert cache.verify() == ([], 0)


def version_of(path: Path) -> Version:
    st = path.stat()
    return Version("lib", path.name, st.st_size, st.st_mtime_ns, path.suffix.lstrip("."))


def test_a_tag_edit_costs_the_header_not_the_file(
    tmp_path: Path, cache: ContentCache, encode: Encode
) -> None:
    """Delta sync (FR-11, AC-10): under 10 KB read from the origin for a tag edit."""
    path = encode(tmp_path / "song.flac", seconds=5, title="Before")
    assert fill(cache, path, version_of(path))
    assert cache.origin_bytes == path.stat().st_size
    stored = cache.store.stats.bytes
    audio: Any = FLAC(path)
    audio["title"] = "After, with a longer title"
    audio.save()
    os.utime(path, ns=(1, path.stat().st_mtime_ns + 10**9))
    before = cache.origin_bytes
    assert fill(cache, path, version_of(path))
    assert cache.origin_bytes - before < 10_000
    assert cache.store.stats.bytes == stored  # the payload chunks were reused
    cached = cache.open(version_of(path))
    assert cached is not None
    assert cached.read(0, path.stat().st_size + 1) == path.read_bytes()


def test_a_changed_payload_is_copied_again(
    tmp_path: Path, cache: ContentCache, encode: Encode
) -> None:
    path = encode(tmp_path / "song.flac", seconds=5, title="Before")
    fill(cache, path, version_of(path))
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # the audio itself changed, same length
    path.write_bytes(bytes(data))
    os.utime(path, ns=(1, path.stat().st_mtime_ns + 10**9))
    before = cache.origin_bytes
    assert fill(cache, path, version_of(path))
    fetched = cache.origin_bytes - before
    assert len(data) <= fetched < len(data) + 10_000  # sampled, found different, read whole
    cached = cache.open(version_of(path))
    assert cached is not None
    assert cached.read(0, len(data)) == bytes(data)


def test_dedup_ratio_counts_shared_chunks(tmp_path: Path, cache: ContentCache) -> None:
    data = random.Random(11).randbytes(400_000)
    for name in ("a.wav", "b.wav", "c.wav"):
        fill(cache, tmp_path / name, put_file(tmp_path / name, data))
    assert cache.dedup_ratio() == pytest.approx(3.0)


def test_check_names_the_copies_that_needed_a_damaged_chunk(
    tmp_path: Path, cache: ContentCache, damage_chunk: Callable[[ChunkStore, str, int], None]
) -> None:
    """A live verify must know which files to copy again: every copy listing the
    damaged chunk (identical audio shares it), not the ones that lost chunks to
    eviction, which are dropped and counted."""
    shared = random.Random(12).randbytes(300_000)
    good = put_file(tmp_path / "a.wav", random.Random(13).randbytes(300_000))
    hurt = put_file(tmp_path / "b.wav", shared)
    twin = put_file(tmp_path / "c.wav", shared)
    evicted = put_file(tmp_path / "d.wav", random.Random(14).randbytes(300_000))
    for version in (good, hurt, twin, evicted):
        assert fill(cache, tmp_path / version.relpath, version)
    kept = {d for v in (good, hurt) for _, _, d in cache_listing(cache, v)}
    cache.store.drop_unreferenced(kept)  # as eviction would: d.wav's chunks go
    digest = cache_listing(cache, hurt)[1][2]
    damage_chunk(cache.store, digest, 5)
    stored = cache.store.stats.entries

    seen: list[int] = []
    report = cache.check(batch=2, progress=lambda r: seen.append(r.checked))

    assert report.damaged_chunks == [digest]
    assert sorted(report.damaged) == [
        CopyId("lib", v.relpath, v.size, v.mtime_ns) for v in (hurt, twin)
    ]
    assert report.incomplete == 1
    assert (report.chunks, report.checked, report.stopped) == (stored, stored, False)
    assert len(seen) > 2
    assert seen == sorted(seen)
    assert cache.open(hurt) is None
    assert cache.open(twin) is None
    opened = cache.open(good)
    assert opened is not None
    assert opened.read(0, good.size) == (tmp_path / "a.wav").read_bytes()
    opened.close()
    assert cache.verify() == ([], 0)


def cache_listing(cache: ContentCache, version: Version) -> list[tuple[int, int, str]]:
    opened = cache.open(version)
    assert opened is not None
    try:
        return opened.chunks
    finally:
        opened.close()


def test_reads_opens_and_copies_go_on_while_a_check_runs(
    tmp_path: Path, cache: ContentCache
) -> None:
    """The check lets go of the locks between batches: with it paused between two
    batches, a cached file opens and reads back whole, and a new file is copied in."""
    data = random.Random(15).randbytes(600_000)
    played = put_file(tmp_path / "a.wav", data)
    fill(cache, tmp_path / "a.wav", played)
    paused, resume = threading.Event(), threading.Event()

    def between_batches(report: CacheCheck) -> None:
        if not paused.is_set():
            paused.set()
            resume.wait()

    checker = threading.Thread(target=lambda: cache.check(batch=1, progress=between_batches))
    checker.start()
    try:
        assert paused.wait(timeout=60), "the check never reached its first batch's end"
        results: list[bytes | memoryview | bool] = []

        def use_the_cache() -> None:
            opened = cache.open(played)
            assert opened is not None
            results.append(opened.read(0, len(data)))
            opened.close()
            new = put_file(tmp_path / "b.wav", random.Random(16).randbytes(300_000))
            results.append(fill(cache, tmp_path / "b.wav", new) and cache.has(new))

        user = threading.Thread(target=use_the_cache)
        user.start()
        user.join(timeout=60)  # a deadlock detector, not a speed limit
        assert not user.is_alive(), "the cache was locked while the check paused"
        assert results == [data, True]
    finally:
        resume.set()
        checker.join()


def test_a_chunk_evicted_while_checked_is_not_called_damaged(
    tmp_path: Path, cache: ContentCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eviction frees a chunk's bytes (a hole) between the check listing it and
    reading it: that is no damage, and no copy is named damaged for it."""
    version = put_file(tmp_path / "a.wav", random.Random(17).randbytes(300_000))
    fill(cache, tmp_path / "a.wav", version)
    victim = cache_listing(cache, version)[0][2]
    raw = ChunkReader.raw

    def evicted_under_the_check(self: ChunkReader, digest: str, place: Place) -> bytes:
        if digest == victim and cache.store.has(victim):
            cache.store.drop_unreferenced(set())  # everything goes, as a full cache would
            return b""  # its bytes were freed
        return raw(self, digest, place)

    monkeypatch.setattr(ChunkReader, "raw", evicted_under_the_check)
    report = cache.check(batch=1)
    assert report.damaged_chunks == []
    assert report.damaged == []
    assert report.incomplete == 1


MARK = b"fLaC\x80\x00\x00\x20" + b"header to be damaged on disk...."  # fLaC + one block


def cached_then_closed(tmp_path: Path, seed: int) -> tuple[bytes, Version]:
    """A file copied into a cache at tmp_path/content, closed (for damage on disk)."""
    data = MARK + random.Random(seed).randbytes(300_000)
    version = put_file(tmp_path / "a.flac", data)
    cache = ContentCache(tmp_path / "content")
    try:
        assert fill(cache, tmp_path / "a.flac", version)
    finally:
        cache.close()
    return data, version


def flip_on_disk(database: Path, pattern: bytes) -> None:
    """Invert one bit of *pattern* where it lies in a (closed) SQLite file."""
    data = bytearray(database.read_bytes())
    assert data.count(pattern) == 1, "the pattern must lie there once"
    data[data.find(pattern) + len(pattern) // 2] ^= 0x10
    database.write_bytes(bytes(data))


def reads_back(cache: ContentCache, version: Version, data: bytes) -> bool:
    cached = cache.open(version)
    if cached is None:
        return False
    try:
        return cached.read(0, len(data)) == data
    finally:
        cached.close()


def test_a_header_damaged_on_disk_is_dropped_never_served(tmp_path: Path) -> None:
    data, version = cached_then_closed(tmp_path, 8)
    flip_on_disk(tmp_path / "content" / "manifests.sqlite3", MARK)
    cache = ContentCache(tmp_path / "content")
    try:
        assert not cache.has(version)
        assert cache.open(version) is None  # read from the origin, or EIO offline
        assert cache.headers.entries == 0
        assert fill(cache, tmp_path / "a.flac", version)  # copied again when read again
        assert reads_back(cache, version, data)
    finally:
        cache.close()


def test_check_names_a_copy_whose_header_was_damaged(tmp_path: Path) -> None:
    _, version = cached_then_closed(tmp_path, 9)
    flip_on_disk(tmp_path / "content" / "manifests.sqlite3", MARK)
    cache = ContentCache(tmp_path / "content")
    try:
        report = cache.check()
        assert report.damaged == [CopyId("lib", "a.flac", version.size, version.mtime_ns)]
        assert report.damaged_chunks == []  # the chunks themselves are fine
        assert cache.open(version) is None
    finally:
        cache.close()


def test_copies_cached_before_digests_existed_still_serve(tmp_path: Path) -> None:
    data, version = cached_then_closed(tmp_path, 10)
    database = tmp_path / "content" / "manifests.sqlite3"
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute("ALTER TABLE manifests DROP COLUMN digest")  # as an older MusicFS made it
    cache = ContentCache(tmp_path / "content")
    try:
        assert reads_back(cache, version, data)
    finally:
        cache.close()


def test_a_copy_a_read_finds_damaged_is_dropped_at_once_and_wanted_again(
    tmp_path: Path, cache: ContentCache, damage_chunk: Callable[[ChunkStore, str, int], None]
) -> None:
    """Issue 13.8: counted as cached only while whole; a damaged copy (and one
    sharing the damaged chunk) is remembered to be copied again, every damaged
    chunk of it afresh."""
    data = random.Random(21).randbytes(600_000)
    a = put_file(tmp_path / "a.wav", data)
    b = put_file(tmp_path / "b.wav", data)  # the same audio: the same chunks
    fill(cache, tmp_path / "a.wav", a)
    fill(cache, tmp_path / "b.wav", b)
    told: list[str] = []
    cache.on_damaged = lambda: told.append("damaged")
    cached = cache.open(a)
    assert cached is not None
    listing = ",".join(f"{o}:{n}:{d}" for o, n, d in cached.chunks)
    damage_chunk(cache.store, cached.chunks[0][2], 0)
    damage_chunk(cache.store, cached.chunks[-1][2], 0)  # a read stops before this one
    with pytest.raises(CorruptChunk):
        cached.read(0, 100)
    cached.close()
    assert cache.headers.entries == 1, "the damaged copy is still counted"
    assert told, "on_damaged was not called"
    assert cache.wanted() == [("lib", "a.wav", listing)]
    assert cache.sweep() == 1  # the other copy listed the damaged chunk too
    assert cache.headers.entries == 0
    assert sorted(w[:2] for w in cache.wanted()) == [("lib", "a.wav"), ("lib", "b.wav")]

    assert cache.recheck(listing) == [cached.chunks[-1][2]]
    assert fill(cache, tmp_path / "a.wav", a)
    assert reads_back(cache, a, data)
    assert [w[:2] for w in cache.wanted()] == [("lib", "b.wav")]


def test_a_copy_that_lost_chunks_to_eviction_is_not_counted(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "content", limit=600_000)
    first = put_file(tmp_path / "a.wav", random.Random(22).randbytes(500_000))
    second = put_file(tmp_path / "b.wav", random.Random(23).randbytes(500_000))
    fill(cache, tmp_path / "a.wav", first)
    fill(cache, tmp_path / "b.wav", second)  # over the limit: chunks of the first go
    assert cache.headers.entries == 1
    assert cache.open(first) is None
    assert cache.open(second) is not None
    assert cache.wanted() == []  # eviction is no damage: nothing to fetch again
    cache.close()


def test_a_pinned_copy_is_never_evicted_and_unpinned_goes(tmp_path: Path) -> None:
    """Pins for offline: the chunks of a pinned file stay whatever is copied after
    it, in the version copied after pinning as well as the one before; unpinned,
    it is evicted like any other copy."""
    cache = ContentCache(tmp_path / "content", limit=1_100_000)
    before = put_file(tmp_path / "pinned-before.wav", random.Random(30).randbytes(300_000))
    fill(cache, tmp_path / "pinned-before.wav", before)
    cache.pin_files({("lib", "pinned-before.wav"), ("lib", "pinned-after.wav")})
    after = put_file(tmp_path / "pinned-after.wav", random.Random(31).randbytes(300_000))
    fill(cache, tmp_path / "pinned-after.wav", after)
    for n in range(6):  # 1.8 MB more through a cache of 1.1 MB
        other = put_file(tmp_path / f"o{n}.wav", random.Random(40 + n).randbytes(300_000))
        fill(cache, tmp_path / f"o{n}.wav", other)
    assert cache.has(before)
    assert cache.has(after)
    assert cache.headers.entries < 8  # others were evicted meanwhile
    assert cache.store.stats.bytes <= 1_100_000 + 256 * 1024
    cache.pin_files({("lib", "pinned-after.wav")})  # the first one is unpinned
    for n in range(6, 9):
        other = put_file(tmp_path / f"o{n}.wav", random.Random(40 + n).randbytes(300_000))
        fill(cache, tmp_path / f"o{n}.wav", other)
    assert not cache.has(before)
    assert cache.has(after)
    cache.close()


def test_clear_keeps_pinned_copies(tmp_path: Path, cache: ContentCache) -> None:
    kept = put_file(tmp_path / "kept.wav", random.Random(50).randbytes(200_000))
    dropped = put_file(tmp_path / "dropped.wav", random.Random(51).randbytes(200_000))
    fill(cache, tmp_path / "kept.wav", kept)
    fill(cache, tmp_path / "dropped.wav", dropped)
    cache.pin_files({("lib", "kept.wav")})
    files, freed = cache.clear()
    assert files == 1
    assert freed >= 200_000
    assert cache.has(kept)
    assert not cache.has(dropped)
    assert cache.headers.entries == 1


def test_has_stays_true_only_while_the_copy_is_whole(tmp_path: Path, cache: ContentCache) -> None:
    """`has` (asked at every open, so remembered) turns false the moment a copy
    it answered for loses anything: its row to a new version of the file, a
    chunk to eviction (before any sweep), or everything to a clear."""
    a = put_file(tmp_path / "a.wav", random.Random(60).randbytes(400_000))
    b = put_file(tmp_path / "b.wav", random.Random(61).randbytes(400_000))
    fill(cache, tmp_path / "a.wav", a)
    fill(cache, tmp_path / "b.wav", b)
    assert [cache.has(a), cache.has(a), cache.has(b)] == [True, True, True]

    (tmp_path / "b.wav").write_bytes(random.Random(62).randbytes(400_000))
    os.utime(tmp_path / "b.wav", ns=(b.mtime_ns + 10**9, b.mtime_ns + 10**9))
    newer = Version("lib", "b.wav", b.size, b.mtime_ns + 10**9, "wav")
    fill(cache, tmp_path / "b.wav", newer)
    assert [cache.has(a), cache.has(b), cache.has(newer)] == [True, False, True]

    cache.store.limit = cache.store.stats.bytes - 1  # one chunk too many: the oldest goes
    assert cache.store.evict() > 0
    assert [cache.has(a), cache.has(newer)] == [False, True]

    cache.clear()
    assert not cache.has(newer)
