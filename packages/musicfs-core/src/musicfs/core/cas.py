"""The chunk store (cache tier L3): audio payload as content-defined chunks.

Payload bytes are cut with FastCDC (min 16 KiB, average 64 KiB, max 256 KiB),
so an edit moves only the chunk boundaries near it, and identical content in
two files (other names, other folders) is stored once. A chunk lives in a file
named by its xxh3-128 hash under a fanned-out directory
(``chunks/ab/cd/abcd…``); an SQLite index keeps its size and last use.

Every chunk is checked against its hash when read (NFR-8.1): a damaged chunk is
dropped and reported with `CorruptChunk`, never returned. The store is kept
under a size limit by evicting the least recently used chunks that are not
pinned (in use by an open file).

This module knows nothing of files, origins or FUSE: it stores and returns bytes.
Wiring it into the read path is the content layer's job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash
from pyfastcdc import FastCDC

from musicfs.core.events import EventBus, EventType

log = logging.getLogger(__name__)

CHUNK_MIN = 16 * 1024
CHUNK_AVG = 64 * 1024
CHUNK_MAX = 256 * 1024
DEFAULT_LIMIT = 10 * 1024**3
_TOUCH_BATCH = 512
_QUERY_BATCH = 500  # below SQLite's limit on bound parameters

_CDC = FastCDC(avg_size=CHUNK_AVG, min_size=CHUNK_MIN, max_size=CHUNK_MAX)


def chunk_hash(data: bytes | memoryview) -> str:
    """The name of a chunk: xxh3-128 of its bytes, in hex."""
    return xxhash.xxh3_128_hexdigest(data)


def cut(data: bytes | memoryview) -> list[tuple[int, int]]:
    """FastCDC boundaries of *data* as (offset, length) pairs, in order."""
    if not data:
        return []
    return [(c.offset, c.length) for c in _CDC.cut_buf(data)]


class CorruptChunk(Exception):
    """A chunk's bytes no longer match its hash. It has been dropped."""


@dataclass
class TierStats:
    """What a cache tier holds and how it has been used."""

    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    corrupt: int = 0

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class ChunkStore:
    """Chunks on disk under *root*, indexed in ``root/index.sqlite3``.

    Thread-safe: calls are serialised by a lock (chunk I/O is small and the
    index is SQLite).
    """

    def __init__(
        self, root: str | Path, limit: int = DEFAULT_LIMIT, events: EventBus | None = None
    ) -> None:
        self.root = Path(root)
        self.limit = limit
        self.events = events
        self.stats = TierStats()
        self._lock = threading.Lock()
        self._pins: dict[str, int] = {}
        self._touched: dict[str, float] = {}
        (self.root / "chunks").mkdir(parents=True, exist_ok=True)
        self._chunk_dir = str(self.root / "chunks")
        self._db = sqlite3.connect(self.root / "index.sqlite3", check_same_thread=False,
                                   isolation_level=None)  # fmt: skip
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS chunks ("
            " hash TEXT PRIMARY KEY, size INTEGER NOT NULL, last_used REAL NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS chunks_by_use ON chunks (last_used)")
        entries, total = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM chunks"
        ).fetchone()
        self.stats.entries, self.stats.bytes = entries, total

    def close(self) -> None:
        with self._lock:
            self._flush_touches()
        self._db.close()

    def path_of(self, digest: str) -> str:
        # Plain string joins: this runs for every chunk read, and pathlib's
        # parsing cost as much as the read itself.
        return f"{self._chunk_dir}/{digest[:2]}/{digest[2:4]}/{digest}"

    # -- storing and fetching -------------------------------------------------

    def put(self, data: bytes) -> str:
        """Store *data* (once, however often it is put); return its hash."""
        digest = chunk_hash(data)
        with self._lock:
            row = self._db.execute("SELECT 1 FROM chunks WHERE hash = ?", (digest,)).fetchone()
            path = self.path_of(digest)
            if row is not None and os.path.exists(path):
                self._touch(digest)
                return digest
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)  # a reader sees the whole chunk or none
            self._db.execute(
                "INSERT OR REPLACE INTO chunks (hash, size, last_used) VALUES (?, ?, ?)",
                (digest, len(data), time.time()),
            )
            if row is None:
                self.stats.entries += 1
                self.stats.bytes += len(data)
            self._evict_locked()
        return digest

    def get(self, digest: str) -> bytes | None:
        """The chunk's bytes, verified; None if it is not stored.

        Raises `CorruptChunk` (after dropping it) if the stored bytes are damaged.
        """
        try:
            with open(self.path_of(digest), "rb", buffering=0) as fh:
                data = fh.read()
        except FileNotFoundError:
            self.stats.misses += 1
            with self._lock:
                self._forget_locked(digest)
            return None
        if chunk_hash(data) != digest:
            self.stats.corrupt += 1
            log.error("chunk %s is corrupt (hash mismatch); dropping it", digest)
            with self._lock:
                self._forget_locked(digest)
            raise CorruptChunk(f"chunk {digest} in {self.root} failed verification")
        self.stats.hits += 1
        with self._lock:
            self._touch(digest)
        return data

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path_of(digest))

    def all_indexed(self, digests: list[str]) -> bool:
        """Whether the index lists every one of *digests*.

        Asks the index, not the disk: one query instead of a directory lookup
        per chunk (thousands for a long file on a cold disk). A chunk file lost
        behind the index's back is still caught when it is read.
        """
        wanted = set(digests)
        with self._lock:
            for start in range(0, len(digests), _QUERY_BATCH):
                batch = digests[start : start + _QUERY_BATCH]
                marks = ",".join("?" * len(batch))
                found = self._db.execute(f"SELECT hash FROM chunks WHERE hash IN ({marks})", batch)
                wanted.difference_update(row[0] for row in found)
        return not wanted

    # -- pins and eviction ---------------------------------------------------------

    def pin(self, digests: Iterable[str]) -> None:
        """Keep *digests* from eviction until `unpin` (an open file's chunks)."""
        with self._lock:
            for d in digests:
                self._pins[d] = self._pins.get(d, 0) + 1

    def unpin(self, digests: Iterable[str]) -> None:
        with self._lock:
            for d in digests:
                left = self._pins.get(d, 0) - 1
                if left > 0:
                    self._pins[d] = left
                else:
                    self._pins.pop(d, None)

    @contextlib.contextmanager
    def pinned(self, digests: Iterable[str]) -> Iterator[None]:
        """Keep *digests* from eviction while the block runs."""
        held = list(digests)
        self.pin(held)
        try:
            yield
        finally:
            self.unpin(held)

    def drop_unreferenced(self, keep: set[str]) -> tuple[int, int]:
        """Delete every chunk not in *keep* and not pinned by an open file;
        return (chunks, bytes) deleted."""
        with self._lock:
            self._flush_touches()
            rows = self._db.execute("SELECT hash, size FROM chunks").fetchall()
            dropped = freed = 0
            for digest, size in rows:
                if digest in keep or digest in self._pins:
                    continue
                self._forget_locked(digest)
                dropped += 1
                freed += size
        return dropped, freed

    def evict(self) -> int:
        """Bring the store under its limit now; return the bytes freed."""
        with self._lock:
            return self._evict_locked()

    def _evict_locked(self) -> int:
        freed = 0
        if self.stats.bytes <= self.limit:
            return 0
        self._flush_touches()  # eviction must see the true order of use
        rows = self._db.execute("SELECT hash, size FROM chunks ORDER BY last_used").fetchall()
        for digest, size in rows:
            if self.stats.bytes <= self.limit:
                break
            if digest in self._pins:
                continue
            self._forget_locked(digest)
            self.stats.evictions += 1
            freed += size
        if freed:
            log.info("evicted %d bytes of chunks (limit %d)", freed, self.limit)
            if self.events is not None:
                self.events.publish(EventType.CACHE_EVICTED, bytes=freed, limit=self.limit)
        return freed

    def _forget_locked(self, digest: str) -> None:
        row = self._db.execute("SELECT size FROM chunks WHERE hash = ?", (digest,)).fetchone()
        self._db.execute("DELETE FROM chunks WHERE hash = ?", (digest,))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_of(digest))
        if row is not None:
            self.stats.entries -= 1
            self.stats.bytes -= row[0]

    def _touch(self, digest: str) -> None:
        # Remembered in memory and written in batches: one write transaction per
        # chunk read would cost more than reading the chunk.
        self._touched[digest] = time.time()
        if len(self._touched) >= _TOUCH_BATCH:
            self._flush_touches()

    def _flush_touches(self) -> None:
        if not self._touched:
            return
        items = [(when, digest) for digest, when in self._touched.items()]
        self._touched.clear()
        self._db.execute("BEGIN")
        self._db.executemany("UPDATE chunks SET last_used = ? WHERE hash = ?", items)
        self._db.execute("COMMIT")

    # -- maintenance -------------------------------------------------------------

    def verify(self, deep: bool = True) -> list[str]:
        """Check every chunk; drop and return the damaged or missing ones.

        *deep*: hash every chunk (reads the whole store). Otherwise only check
        that each file is there with the right size: quick enough for startup.
        """
        bad = []
        for digest, size in self._db.execute("SELECT hash, size FROM chunks").fetchall():
            path = Path(self.path_of(digest))
            try:
                ok = (
                    (chunk_hash(path.read_bytes()) == digest)
                    if deep
                    else (path.stat().st_size == size)
                )
            except FileNotFoundError:
                ok = False
            if not ok:
                bad.append(digest)
                with self._lock:
                    self._forget_locked(digest)
        if bad:
            self.stats.corrupt += len(bad)
            log.error("cache verify: dropped %d damaged or missing chunks", len(bad))
        return bad
