"""The chunk store (cache tier L3): audio payload as content-defined chunks.

Payload bytes are cut with FastCDC (min 16 KiB, average 64 KiB, max 256 KiB),
so an edit moves only the chunk boundaries near it, and identical content in
two files (other names, other folders) is stored once. A chunk is named by its
xxh3-128 hash; an SQLite index keeps its size, last use and place.

Chunks live in append-only *pack files* (``packs/00000001.pack``, rolled over
at `PACK_TARGET`): the new chunks of one file are written one after another,
so reading the file back is one sequential read of one file, which the kernel
reads ahead, instead of a file open per 64 KiB. (Stores written before packs
keep their chunks as files named by hash, ``chunks/ab/cd/abcd…``; those are
still read, and go as they are evicted.) An evicted chunk's bytes are freed
at once by punching a hole in its pack; a pack with no chunk left is deleted.

Every chunk is checked against its hash when read (NFR-8.1): a damaged chunk is
dropped and reported with `CorruptChunk`, never returned. The store is kept
under a size limit by evicting the least recently used chunks that are not
pinned (in use by an open file) and not kept (`keep`: the chunks of the copies
of tracks the user pinned for offline, which are never evicted).

This module is the store's policy: the index, where new chunks go, pins and
eviction. What a chunk is and reading it back are `chunks`; the bytes on disk,
`packfiles`; checking the store while in use, `chunkcheck`. It knows nothing of
files, origins or FUSE: it stores and returns bytes. Wiring it into the read
path is the content layer's job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from musicfs.core.content.chunkcheck import (
    CHECK_BATCH,
    IndexRow,
    StoreCheck,
    check_store,
    recheck_chunks,
)
from musicfs.core.content.chunks import ChunkReader, CorruptChunk, Place, chunk_hash
from musicfs.core.content.packfiles import punch_hole, trim, write_at
from musicfs.core.content.stats import TierStats
from musicfs.core.events import EventBus, EventType

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 10 * 1024**3
PACK_TARGET = 64 * 1024 * 1024  # a pack takes no new file's chunks once this big
_TOUCH_BATCH = 512
_DROP_BATCH = 256  # chunks dropped per hold of the lock
_QUERY_BATCH = 500  # below SQLite's limit on bound parameters


class ChunkStore:
    """Chunks in pack files under *root*, indexed in ``root/index.sqlite3``.

    Thread-safe: writes and the index are serialised by a lock; reads of chunk
    bytes (`ChunkReader`) run outside it.
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
        self._kept: set[str] = set()  # pinned for offline: never evicted (`keep`)
        self._touched: dict[str, float] = {}
        # Writes reads' uses down (`_touch_later`); none is started once closing.
        self._toucher: threading.Thread | None = None
        self._toucher_lock = threading.Lock()
        self._closing = False
        # Chunks dropped since `take_lost`: the copies listing them are no longer
        # whole (the content layer drops them; the damaged ones to be fetched again).
        self._lost_damaged: set[str] = set()
        self._lost_evicted: set[str] = set()
        # Counts the chunks dropped (evicted, damaged, cleared): a copy found
        # whole stays whole while this has not moved (`ContentCache.has`).
        self.dropped = 0
        self._chunk_dir = str(self.root / "chunks")
        self._pack_dir = self.root / "packs"
        self._pack_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / "index.sqlite3", check_same_thread=False,
                                   isolation_level=None)  # fmt: skip
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS chunks ("
            " hash TEXT PRIMARY KEY, size INTEGER NOT NULL, last_used REAL NOT NULL)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(chunks)")}
        if "pack" not in columns:  # a store from before packs: its rows are chunk files
            self._db.execute("ALTER TABLE chunks ADD COLUMN pack INTEGER")
            self._db.execute("ALTER TABLE chunks ADD COLUMN offset INTEGER")
        self._db.execute("CREATE INDEX IF NOT EXISTS chunks_by_use ON chunks (last_used)")
        self._db.execute("CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks (pack)")
        entries, total = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM chunks"
        ).fetchone()
        self.stats.entries, self.stats.bytes = entries, total
        last = self._db.execute("SELECT max(pack) FROM chunks").fetchone()[0]
        on_disk = [int(p.stem) for p in self._pack_dir.glob("*.pack") if p.stem.isdigit()]
        self._pack = max([last or 0, *on_disk]) or 1  # appends go on in the last pack
        self._punch_ok = True
        self._writing: dict[int, int] = {}  # pack -> copies being written into it
        self._pack_end = self._trim_last_pack()  # where the next chunks go in it

    def _trim_last_pack(self) -> int:
        """Cut off bytes past the last indexed chunk of the pack appends go to, and
        return where that is: a crash between writing a file's chunks and indexing
        them leaves them there, named by no row (the file is copied again when next
        read). A pack cut short by a crash keeps its indexed places reserved: they
        are never written over."""
        end = self._indexed_end_locked(self._pack)
        trim(self.path_of(self._pack), end)
        return end

    def close(self) -> None:
        with self._toucher_lock:
            self._closing = True
            toucher = self._toucher
        if toucher is not None:
            toucher.join()
        with self._lock:
            self._flush_touches()
        self._db.close()

    def path_of(self, pack: int | None, digest: str = "") -> str:
        """The file holding a chunk: pack *pack*, or (None) the old chunk file *digest*."""
        if pack is None:
            return f"{self._chunk_dir}/{digest[:2]}/{digest[2:4]}/{digest}"
        return f"{self._pack_dir}/{pack:08d}.pack"

    def place(self, digest: str) -> Place | None:
        """Where *digest* is stored; None if it is not."""
        with self._lock:
            row = self._db.execute(
                "SELECT pack, offset, size FROM chunks WHERE hash = ?", (digest,)
            ).fetchone()
        return None if row is None else Place(row[0], row[1] or 0, row[2])

    # -- storing -------------------------------------------------------------------------

    def put(self, data: bytes | memoryview) -> str:
        """Store *data* (once, however often it is put); return its hash."""
        return self.put_all([data])[0]

    def put_all(
        self,
        blocks: Sequence[bytes | memoryview],
        *,
        keep: bool = False,
        more_of_a_file: bool = False,
    ) -> list[str]:
        """Store *blocks* (one file's chunks, in order) and return their hashes.

        The ones not stored yet are written one after another into one pack,
        with one write and one index transaction. The write happens outside the
        lock (its place is reserved first), so readers never wait for a copy.
        *keep*: they are a pinned track's (`keep_more`), from before the
        eviction that storing them may cause. *more_of_a_file*: they go on
        the file of the last call (copied a block at a time), in its pack.
        """
        digests = [chunk_hash(block) for block in blocks]
        with self._lock:
            if keep:
                self._kept.update(digests)
            known = self._known_locked(digests)
            fresh: dict[str, bytes | memoryview] = {}
            for digest, block in zip(digests, blocks, strict=True):
                if digest in known:
                    self._touch(digest)
                elif digest not in fresh:
                    fresh[digest] = block
            if not fresh:
                return digests
            size = sum(len(block) for block in fresh.values())
            pack, offset = self._reserve_locked(size, more_of_a_file=more_of_a_file)
            self._writing[pack] = self._writing.get(pack, 0) + 1
        data = b"".join(fresh.values())
        try:
            write_at(self.path_of(pack), data, offset)
        except BaseException:
            with self._lock:
                self._done_writing_locked(pack)
            raise
        rows, now, at = [], time.time(), offset
        for digest, block in fresh.items():
            rows.append((digest, len(block), now, pack, at))
            at += len(block)
        with self._lock:
            # A chunk another copy stored meanwhile keeps its place; ours is freed,
            # after our other rows are in (the pack must not look empty meanwhile).
            taken = self._known_locked(list(fresh))
            ours = [row for row in rows if row[0] not in taken]
            try:
                with self._transaction_locked():
                    self._db.executemany(
                        "INSERT INTO chunks (hash, size, last_used, pack, offset)"
                        " VALUES (?, ?, ?, ?, ?)",
                        ours,
                    )
            finally:
                self._done_writing_locked(pack)
            self.stats.entries += len(ours)
            self.stats.bytes += sum(row[1] for row in ours)
            for digest, size, _, _, where in rows:
                if digest in taken:
                    self._free_locked(pack, where, size)
            self._evict_locked()
        return digests

    @contextlib.contextmanager
    def _transaction_locked(self) -> Iterator[None]:
        """One write transaction, rolled back if the block fails (a full disk must
        not leave the connection stuck inside a transaction)."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _done_writing_locked(self, pack: int) -> None:
        self._writing[pack] -= 1
        if not self._writing[pack]:
            del self._writing[pack]

    def _reserve_locked(self, size: int, *, more_of_a_file: bool = False) -> tuple[int, int]:
        """(pack, offset) where *size* new bytes go; a pack past `PACK_TARGET` is
        left for a new one, but not in the middle of a file."""
        if self._pack_end >= PACK_TARGET and not more_of_a_file:
            self._pack += 1
            self._pack_end = 0
        offset = self._pack_end
        self._pack_end += size
        return self._pack, offset

    def _indexed_end_locked(self, pack: int) -> int:
        row = self._db.execute(
            "SELECT coalesce(max(offset + size), 0) FROM chunks WHERE pack = ?", (pack,)
        ).fetchone()
        return int(row[0])

    def _known_locked(self, digests: list[str]) -> set[str]:
        known: set[str] = set()
        for start in range(0, len(digests), _QUERY_BATCH):
            batch = digests[start : start + _QUERY_BATCH]
            marks = ",".join("?" * len(batch))
            found = self._db.execute(f"SELECT hash FROM chunks WHERE hash IN ({marks})", batch)
            known.update(row[0] for row in found)
        return known

    # -- fetching ------------------------------------------------------------------------

    def get(self, digest: str) -> bytes | None:
        """The chunk's bytes, verified; None if it is not stored.

        Raises `CorruptChunk` (after dropping it) if the stored bytes are damaged.
        """
        place = self.place(digest)
        if place is None:
            self.stats.misses += 1
            return None
        with ChunkReader(self) as reader:
            return bytes(reader.read([(digest, place)])[0])

    def has(self, digest: str) -> bool:
        """Whether the index lists *digest*."""
        return self.place(digest) is not None

    def places(self, digests: list[str]) -> dict[str, Place]:
        """Where each of *digests* is stored (the ones the index lists).

        One query per few hundred chunks, not a file lookup per chunk: a chunk
        lost behind the index's back is still caught when it is read.
        """
        found: dict[str, Place] = {}
        with self._lock:
            for start in range(0, len(digests), _QUERY_BATCH):
                batch = digests[start : start + _QUERY_BATCH]
                marks = ",".join("?" * len(batch))
                rows = self._db.execute(
                    f"SELECT hash, pack, offset, size FROM chunks WHERE hash IN ({marks})", batch
                )
                found.update((h, Place(p, o or 0, n)) for h, p, o, n in rows)
        return found

    def all_indexed(self, digests: list[str]) -> bool:
        """Whether the index lists every one of *digests*."""
        return len(self.places(digests)) == len(set(digests))

    def checked(self, digest: str, data: bytes | memoryview, place: Place | None = None) -> None:
        """Count a read of *digest*; raise `CorruptChunk` (dropping it) if *data*
        is not what was stored."""
        if len(data) and chunk_hash(data) == digest:
            self.stats.hits += 1
            # No lock: a read (on the FUSE thread) must never wait behind a copy
            # or an eviction, nor write the index itself.
            self._touched[digest] = time.time()
            if len(self._touched) >= _TOUCH_BATCH:
                self._touch_later()
            return
        if len(data):
            self.stats.corrupt += 1
            log.error("chunk %s is corrupt (hash mismatch); dropping it", digest)
            problem = "failed verification"
        else:
            self.stats.misses += 1
            problem = "is gone"
        with self._lock:
            self._forget_locked(digest, place)
            self._lost_damaged.add(digest)
        raise CorruptChunk(f"chunk {digest} in {self.root} {problem}")

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

    def keep(self, digests: Iterable[str]) -> None:
        """Never evict *digests* (the chunks of pinned tracks' copies), instead of
        the ones kept until now: those may go once the store is over its limit."""
        kept = set(digests)
        with self._lock:
            self._kept = kept

    def keep_more(self, digests: Iterable[str]) -> None:
        """Never evict *digests* either (a pinned track's new copy)."""
        with self._lock:
            self._kept.update(digests)

    def drop_unreferenced(self, keep: set[str]) -> tuple[int, int]:
        """Delete every chunk not in *keep* and not pinned by an open file;
        return (chunks, bytes) deleted. Works in batches, letting go of the lock
        between them, so copies and opens go on meanwhile."""
        with self._lock:
            self._flush_touches()
            rows = self._db.execute("SELECT hash FROM chunks").fetchall()
        dropped = freed = 0
        for start in range(0, len(rows), _DROP_BATCH):
            with self._lock, self._transaction_locked():
                for (digest,) in rows[start : start + _DROP_BATCH]:
                    if digest in keep or digest in self._pins:
                        continue
                    gone = self._forget_locked(digest)
                    dropped += gone > 0
                    freed += gone
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
        with self._transaction_locked():  # one commit for the lot, not one per chunk
            for digest, _ in rows:
                if self.stats.bytes <= self.limit:
                    break
                if digest in self._pins or digest in self._kept:
                    continue
                freed += self._forget_locked(digest)
                self._lost_evicted.add(digest)
                self.stats.evictions += 1
        if freed:
            log.info("evicted %d bytes of chunks (limit %d)", freed, self.limit)
            if self.events is not None:
                self.events.publish(EventType.CACHE_EVICTED, bytes=freed, limit=self.limit)
        return freed

    def _forget_locked(self, digest: str, place: Place | None = None) -> int:
        """Drop *digest* from the index and free its bytes; with *place*, only if it
        is still stored there (it may have been stored again elsewhere since).
        Returns the bytes freed (0: it was not stored)."""
        if place is None:
            row = self._db.execute(
                "DELETE FROM chunks WHERE hash = ? RETURNING size, pack, offset", (digest,)
            ).fetchone()
        else:
            row = self._db.execute(
                "DELETE FROM chunks WHERE hash = ? AND pack IS ? AND coalesce(offset, 0) = ? "
                "RETURNING size, pack, offset",
                (digest, place.pack, place.offset),
            ).fetchone()
        self._touched.pop(digest, None)
        if row is None:
            return 0
        self.dropped += 1
        size, pack, offset = row
        self.stats.entries -= 1
        self.stats.bytes -= size
        if pack is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path_of(None, digest))
        else:
            self._free_locked(pack, offset or 0, size)
        return int(size)

    def _free_locked(self, pack: int, offset: int, size: int) -> None:
        """Give the bytes of a dropped chunk back to the disk."""
        left = self._db.execute("SELECT 1 FROM chunks WHERE pack = ? LIMIT 1", (pack,)).fetchone()
        path = self.path_of(pack)
        if left is None and pack != self._pack and pack not in self._writing:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        if self._punch_ok:  # else freed when the whole pack goes
            self._punch_ok = punch_hole(path, offset, size)

    def _touch(self, digest: str) -> None:
        # Remembered in memory and written in batches: one write transaction per
        # chunk read would cost more than reading the chunk.
        self._touched[digest] = time.time()
        if len(self._touched) >= _TOUCH_BATCH:
            self._flush_touches()

    def _touch_later(self) -> None:
        """Write the uses read so far down in a thread of their own. On the reading
        thread they cost a cold cached read of the mount 8% (the index's write
        transaction, and its growing log slowing each open's lookups); a thread's
        SQLite runs beside it on the other core."""
        with self._toucher_lock:
            toucher = self._toucher
            if self._closing or (toucher is not None and toucher.is_alive()):
                return  # it takes what was added meanwhile too, or the next one does
            self._toucher = threading.Thread(
                target=self._write_touches, name="musicfs-chunk-uses", daemon=True
            )
            self._toucher.start()

    def _write_touches(self) -> None:
        with self._lock:  # (`close` waits for this thread before it closes the index)
            self._flush_touches()

    def _flush_touches(self) -> None:
        if not self._touched:
            return
        touched, self._touched = self._touched, {}  # readers add to the new one
        # One statement for the batch: SQLite runs it with the GIL released once,
        # not once a row (each time, the reading thread waited to get it back).
        with self._transaction_locked():
            self._db.execute(
                "UPDATE chunks SET last_used = used.value FROM json_each(?) AS used"
                " WHERE chunks.hash = used.key",
                (json.dumps(touched),),
            )

    def take_lost(self) -> tuple[set[str], set[str]]:
        """The chunks dropped as damaged (or gone), and those evicted, since the
        last call: the copies that list them are no longer whole."""
        with self._lock:
            damaged, self._lost_damaged = self._lost_damaged, set()
            evicted, self._lost_evicted = self._lost_evicted, set()
        return damaged, evicted

    # -- maintenance (chunkcheck) -------------------------------------------------------

    def recheck(self, digests: Iterable[str]) -> list[str]:
        """Hash the stored bytes of *digests*; drop and return the damaged ones
        (`recheck_chunks`)."""
        return recheck_chunks(self, digests)

    def verify(self, deep: bool = True) -> list[str]:
        """Check every chunk; drop and return the damaged or missing ones (`check`)."""
        return self.check(deep).damaged

    def check(
        self,
        deep: bool = True,
        *,
        batch: int = CHECK_BATCH,
        progress: Callable[[StoreCheck], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> StoreCheck:
        """Check the chunks stored when it starts; drop the damaged or missing ones
        (`check_store`: safe while the store is in use)."""
        return check_store(self, deep, batch=batch, progress=progress, should_stop=should_stop)

    def index_span(self) -> tuple[int, int]:
        """(chunks indexed, the highest rowid) now."""
        with self._lock:
            count, last = self._db.execute(
                "SELECT count(*), coalesce(max(rowid), 0) FROM chunks"
            ).fetchone()
        return int(count), int(last)

    def index_rows(self, after: int, last: int, limit: int) -> list[IndexRow]:
        """Up to *limit* index rows (rowid, hash, pack, offset, size) with
        *after* < rowid <= *last*, by rowid."""
        with self._lock:
            return self._db.execute(
                "SELECT rowid, hash, pack, offset, size FROM chunks"
                " WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?",
                (after, last, limit),
            ).fetchall()

    def drop_if_damaged(self, digest: str, place: Place, damaged: Callable[[], bool]) -> bool:
        """Judge *digest* again where nothing can evict it meanwhile: if the index
        still places it at *place* (places are never reused) and *damaged*() says
        so, drop it (the copies listing it are no longer whole) and return True."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM chunks WHERE hash = ? AND pack IS ? AND coalesce(offset, 0) = ?",
                (digest, place.pack, place.offset),
            ).fetchone()
            if row is None or not damaged():
                return False
            self._forget_locked(digest, place)
            self._lost_damaged.add(digest)
            return True
