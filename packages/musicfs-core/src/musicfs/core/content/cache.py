"""The content cache: a copy of what was read, kept for when the origin is gone.

A file version (origin, path, size, mtime) is stored as its header (tier L2,
a blob in ``manifests.sqlite3``) and its payload as CAS chunks (tier L3,
`musicfs.core.content.cas`) listed in a manifest. `ContentCache.fill` copies a file in,
a block at a time (the daemon does it in the background after a file has
been opened);
`ContentCache.open` gives a `CachedFile` that reads the same bytes back,
verifying every chunk, so an album that was played keeps playing while its
origin is offline (NFR-7.1). Every byte served from here is verified: chunks
by their own hashes, and each manifest row (header, chunk list, version) by a
digest stored with it; a row that does not match is dropped, never served.
(`CachedFile` lives in `cachedfile`; `Version`, `CopyId` and `CacheCheck`, the
manifests' vocabulary, in `manifests`.)

A copy counts as cached only while it is whole: one found damaged (by a read,
or a check) or that lost chunks to eviction is dropped at once. The damaged
ones are remembered in the ``refetch`` table (`ContentCache.wanted`) until they
are copied again from their origins. Nothing here talks to FUSE.

Pinned files (`pin_files`: the tracks the user pinned for offline, told by the
mount) keep their chunks from eviction, in every version copied; `clear`
leaves their copies alone.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from musicfs.core.content.cachedfile import CachedFile
from musicfs.core.content.cas import DEFAULT_LIMIT, ChunkStore
from musicfs.core.content.chunkcheck import StoreCheck
from musicfs.core.content.chunks import CorruptChunk, cut
from musicfs.core.content.manifests import (
    CacheCheck,
    CopyId,
    Version,
    digests_of,
    parse_listing,
    row_digest,
)
from musicfs.core.content.stats import TierStats
from musicfs.core.events import EventBus, EventType
from musicfs.core.origins.base import OriginFile
from musicfs.core.tags.headers import header_length

__all__ = ["ContentCache"]

log = logging.getLogger(__name__)

_FILL_BLOCK = 4 * 1024 * 1024
_SAMPLES = 8  # places of the payload compared after a header-only change
_SAMPLE = 128
_CHECK_BATCH = 256  # chunks, then manifests, `ContentCache.check` takes per hold of a lock
_WHOLE_KEPT = 4096  # copies `ContentCache.has` remembers as whole


class ContentCache:
    """Headers and chunk manifests of file versions, over one `ChunkStore`."""

    def __init__(
        self, root: str | Path, limit: int = DEFAULT_LIMIT, events: EventBus | None = None
    ) -> None:
        self.root = Path(root)
        self.store = ChunkStore(self.root / "chunks", limit, events)
        self.events = events
        self.headers = TierStats()
        self.origin_bytes = 0
        # Called (any thread) when a copy was dropped as damaged: it is wanted again.
        self.on_damaged: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._checking = threading.Lock()
        self._pinned: set[tuple[str, str]] = set()  # (origin, relpath): `pin_files`
        # Copies `has` found whole, when `_whole_as_of` (chunks, copies) had been
        # dropped: asking again looks at none of their thousands of chunks (2.7 ms
        # at every open of a 100 MB file) until a chunk or a copy is dropped.
        self._whole: dict[CopyId, None] = {}
        self._whole_as_of = (0, 0)
        self._copies_dropped = 0  # or replaced by another version
        self._db = sqlite3.connect(self.root / "manifests.sqlite3", check_same_thread=False,
                                   isolation_level=None)  # fmt: skip
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS manifests ("
            " origin TEXT NOT NULL, relpath TEXT NOT NULL, size INTEGER NOT NULL,"
            " mtime_ns INTEGER NOT NULL, header BLOB NOT NULL, chunks TEXT NOT NULL,"
            " digest TEXT, PRIMARY KEY (origin, relpath))"
        )
        # Files whose copies were dropped as damaged, to copy again from their
        # origins (with the chunk list they had: more of it may be damaged).
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS refetch (origin TEXT NOT NULL, relpath TEXT NOT NULL,"
            " chunks TEXT NOT NULL DEFAULT '', PRIMARY KEY (origin, relpath))"
        )
        self._add_digests()
        row = self._db.execute("SELECT count(*), coalesce(sum(length(header)), 0) FROM manifests")
        self.headers.entries, self.headers.bytes = row.fetchone()

    def _add_digests(self) -> None:
        """Give a manifests table made before rows had digests its column, and
        each old row the digest of what it holds now (trusted as it is: the same
        trust the headers had until then)."""
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(manifests)")]
        if "digest" not in columns:
            self._db.execute("ALTER TABLE manifests ADD COLUMN digest TEXT")
        rows = self._db.execute(
            "SELECT rowid, origin, relpath, size, mtime_ns, header, chunks FROM manifests"
            " WHERE digest IS NULL"
        ).fetchall()
        if rows:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "UPDATE manifests SET digest = ? WHERE rowid = ?",
                    [(row_digest(CopyId(*row[1:5]), row[5], row[6]), row[0]) for row in rows],
                )
            log.info("content cache: %d cached headers given digests", len(rows))

    def close(self) -> None:
        self._db.close()
        self.store.close()

    def dedup_ratio(self) -> float:
        """Payload bytes the cached files hold, per byte the chunk store keeps."""
        with self._lock:
            rows = self._db.execute("SELECT chunks FROM manifests").fetchall()
        logical = sum(length for (listing,) in rows for _, length, _ in parse_listing(listing))
        stored = self.store.stats.bytes
        return logical / stored if stored else 1.0

    def has(self, version: Version) -> bool:
        """Whether this version is cached whole (its manifest, and every chunk of it:
        a copy that lost chunks to eviction or damage is copied again)."""
        copy = CopyId(version.origin, version.relpath, version.size, version.mtime_ns)
        with self._lock:
            as_of = self._drops_locked()
            if as_of != self._whole_as_of:
                self._whole.clear()
                self._whole_as_of = as_of
            if copy in self._whole:
                return True
        row = self._manifest(version)
        if row is None or not self.store.all_indexed(digests_of(row[1])):
            return False
        with self._lock:
            if self._drops_locked() == as_of:  # nothing dropped meanwhile
                if len(self._whole) >= _WHOLE_KEPT:
                    del self._whole[next(iter(self._whole))]
                self._whole[copy] = None
        return True

    def _drops_locked(self) -> tuple[int, int]:
        """What has been dropped so far (chunks, copies): while it stays the same,
        a copy found whole is still whole."""
        return self.store.dropped, self._copies_dropped

    def fill(self, version: Version, file: OriginFile) -> bool:
        """Copy the open origin *file* into the cache, if it still is *version*.

        When an earlier version of the same file is cached and only its header
        changed (a tag edit: same payload length, same bytes at sampled places),
        only the new header is read and the old chunks are kept (FR-11 delta
        sync). `origin_bytes` counts what was read from the origin.
        """
        if (file.size, file.mtime_ns) != (version.size, version.mtime_ns):
            return False  # changed since it was catalogued: the rescan will tell

        def read(offset: int, size: int) -> bytes:
            data = file.read(offset, size)
            self.origin_bytes += len(data)
            return data

        if self._fill_delta(version, read):
            return True
        first = read(0, min(version.size, _FILL_BLOCK))

        def head(offset: int, size: int) -> bytes:  # a header may be longer than a block
            return (
                first[offset : offset + size] if offset + size <= len(first) else read(offset, size)
            )

        hlen = header_length(head, version.format)
        try:
            header, listing = self._store_stream(version, first, hlen, read)
        except BaseException:
            self._forget_partial(version)
            raise
        if header is None:
            self._forget_partial(version)
            return False
        self.sweep()  # storing may have evicted chunks of other copies: not whole now
        self._save(version, header, listing)
        log.debug("cached %s/%s", version.origin, version.relpath)
        return True

    def _store_stream(
        self, version: Version, first: bytes, hlen: int, read: Callable[[int, int], bytes]
    ) -> tuple[bytes | None, str]:
        """Store the payload of *version* (after its *hlen* header bytes) block
        by block, *first* being its first block: the header and the chunk
        listing, or None if the file ended early. A block's last chunk waits
        for the next block (it may go on there), so the chunks are those of the
        whole payload cut at once, and memory stays about two blocks however
        long the file."""
        pinned = (version.origin, version.relpath) in self._pinned
        header, pending = b"", b""
        listing: list[str] = []
        offset, payload_at, block = 0, 0, first
        while True:
            if offset < hlen:
                header += block[: hlen - offset]
            pending += block[max(0, hlen - offset) :]
            offset += len(block)
            done = offset >= version.size
            bounds = cut(pending)
            if not done:
                bounds = bounds[:-1]
            if bounds:
                view = memoryview(pending)
                digests = self.store.put_all(
                    [view[o : o + n] for o, n in bounds], keep=pinned, more_of_a_file=bool(listing)
                )
                listing += (
                    f"{payload_at + o}:{n}:{d}" for (o, n), d in zip(bounds, digests, strict=True)
                )
                used = bounds[-1][0] + bounds[-1][1]
                pending, payload_at = pending[used:], payload_at + used
            if done:
                return header, ",".join(listing)
            block = read(offset, _FILL_BLOCK)
            if not block:
                return None, ""

    def _forget_partial(self, version: Version) -> None:
        """A copy that stopped midway: the chunks it stored are kept no longer
        (a pinned track's were kept from eviction while it was copied), so they
        go like any unused chunk when room is needed."""
        with self._lock:
            pinned = (version.origin, version.relpath) in self._pinned
        if pinned:
            self.pin_files(self._pinned)

    def _fill_delta(self, version: Version, read: Callable[[int, int], bytes]) -> bool:
        """Reuse the cached payload of an earlier version if only the header changed."""
        with self._lock:
            row = self._db.execute(
                "SELECT size, mtime_ns FROM manifests WHERE origin = ? AND relpath = ?",
                (version.origin, version.relpath),
            ).fetchone()
        if row is None or (row[0], row[1]) == (version.size, version.mtime_ns):
            return False
        old = self.open(Version(version.origin, version.relpath, row[0], row[1], version.format))
        if old is None or not old.header:
            return False
        try:
            hlen = header_length(read, version.format)
            payload = version.size - hlen
            if hlen == 0 or payload != old.size - len(old.header) or payload <= 0:
                return False
            # The payload is where it was and says the same at evenly spread places,
            # its first and its last bytes included (DESIGN §5: size + ranged samples).
            for k in range(_SAMPLES + 1):
                at = max(0, min(payload * k // _SAMPLES, payload - _SAMPLE))
                size = min(_SAMPLE, payload - at)
                if read(hlen + at, size) != old.read(len(old.header) + at, size):
                    return False
            header = read(0, hlen)
        except CorruptChunk:
            return False
        finally:
            old.close()
        listing = ",".join(f"{o}:{n}:{d}" for o, n, d in old.chunks)
        self._save(version, header, listing)
        log.debug("cached %s/%s by delta: new header only", version.origin, version.relpath)
        return True

    def _save(self, version: Version, header: bytes, listing: str) -> None:
        with self._lock:
            replaced = self._db.execute(
                "SELECT length(header) FROM manifests WHERE origin = ? AND relpath = ?",
                (version.origin, version.relpath),
            ).fetchone()
            key = (version.origin, version.relpath, version.size, version.mtime_ns)
            self._db.execute(
                "INSERT OR REPLACE INTO manifests VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, header, listing, row_digest(CopyId(*key), header, listing)),
            )
            self._db.execute(
                "DELETE FROM refetch WHERE origin = ? AND relpath = ?",
                (version.origin, version.relpath),
            )
            if replaced is None:
                self.headers.entries += 1
            else:  # perhaps another version's copy: no longer cached
                self._copies_dropped += 1
                self.headers.bytes -= replaced[0]
            self.headers.bytes += len(header)
            if (version.origin, version.relpath) in self._pinned:
                self.store.keep_more(digests_of(listing))  # a delta copy reuses chunks

    def pin_files(self, files: Iterable[tuple[str, str]]) -> None:
        """Keep the copies of *files* ((origin, relpath) of the pinned tracks, all
        of them: this replaces the last call's) from eviction, now and whenever
        they are copied again. Files no longer named may be evicted again: if the
        store is over its limit, at once."""
        pinned = set(files)
        with self._lock:
            self._pinned = pinned
            digests: set[str] = set()
            for origin, relpath in pinned:
                row = self._db.execute(
                    "SELECT chunks FROM manifests WHERE origin = ? AND relpath = ?",
                    (origin, relpath),
                ).fetchone()
                if row is not None:
                    digests.update(digests_of(row[0]))
            # Under our lock: a pinned copy saved meanwhile cannot be left out.
            self.store.keep(digests)
        self.store.evict()
        self.sweep()

    def open(self, version: Version) -> CachedFile | None:
        """The cached copy of exactly this version, if every chunk is still there."""
        row = self._manifest(version)
        if row is None:
            self.headers.misses += 1
            return None
        header, listing = row
        chunks = parse_listing(listing)
        digests = [digest for _, _, digest in chunks]
        # Pinned before their places are read: none can be evicted in between.
        self.store.pin(digests)
        places = self.store.places(digests)
        if len(places) < len(set(digests)):
            self.store.unpin(digests)
            self.headers.misses += 1  # some chunks were evicted: the copy is incomplete
            return None
        self.headers.hits += 1
        copy = CopyId(version.origin, version.relpath, version.size, version.mtime_ns)
        return CachedFile(self.store, header, chunks, places,
                          lambda: self._drop(copy, listing, damaged=True))  # fmt: skip

    def verify(self, deep: bool = True) -> tuple[list[str], int]:
        """Check every chunk (against its hash when *deep*, else its size) and
        every manifest against the chunks it lists; drop what is damaged or incomplete.

        Returns (damaged chunk hashes, manifests dropped). A dropped file is
        simply copied again the next time it is read from its origin.
        """
        report = self.check(deep)
        return report.damaged_chunks, len(report.damaged) + report.incomplete

    def check(
        self,
        deep: bool = True,
        *,
        batch: int = _CHECK_BATCH,
        progress: Callable[[CacheCheck], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> CacheCheck:
        """`verify`, safe on a cache in use, and saying which copies were damaged.

        The chunks are checked by `ChunkStore.check` (in batches, reads going on
        meanwhile), then the manifests *batch* at a time: a copy that listed a
        damaged chunk is dropped and named in `CacheCheck.damaged` (the caller
        may copy it again from its origin); one that lost chunks otherwise (to
        eviction) is dropped and counted. A copy whose header or chunk list
        does not match its row's digest is dropped and named too. *progress* is
        called after each batch, *should_stop* asked between batches.
        """
        with self._checking:  # one check at a time (a second waits for the first)
            report = CacheCheck()

            def chunks_done(store_check: StoreCheck) -> None:
                report.chunks, report.checked = store_check.chunks, store_check.checked
                report.bytes = store_check.bytes
                report.damaged_chunks = list(store_check.damaged)
                if progress is not None:
                    progress(report)

            store_check = self.store.check(
                deep, batch=batch, progress=chunks_done, should_stop=should_stop
            )
            chunks_done(store_check)
            report.stopped = store_check.stopped
            if not report.stopped:
                self._check_manifests(report, set(store_check.damaged), batch, should_stop)
            if progress is not None:
                progress(report)
        if report.damaged_chunks or report.damaged or report.incomplete:
            log.warning("cache verify: %d damaged chunks dropped, %d cached files damaged, "
                        "%d incomplete", len(report.damaged_chunks), len(report.damaged),
                        report.incomplete)  # fmt: skip
        return report

    def _check_manifests(
        self,
        report: CacheCheck,
        bad: set[str],
        batch: int,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        after = 0
        while True:
            if should_stop is not None and should_stop():
                report.stopped = True
                return
            with self._lock:
                rows = self._db.execute(
                    "SELECT rowid, origin, relpath, size, mtime_ns, header, chunks, digest"
                    " FROM manifests WHERE rowid > ? ORDER BY rowid LIMIT ?",
                    (after, batch),
                ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            for _, origin, relpath, size, mtime_ns, header, listing, digest in rows:
                copy = CopyId(origin, relpath, size, mtime_ns)
                if digest != row_digest(copy, header, listing):
                    if self._forget_damaged(copy, digest):
                        report.damaged.append(copy)
                    continue
                digests = digests_of(listing)
                if self.store.all_indexed(digests):  # the store's lock: once per copy
                    continue
                # Only if it is still the copy we looked at: a copy made again
                # meanwhile is whole.
                damaged = bool(bad.intersection(digests))
                if not self._drop(copy, listing, damaged=damaged):
                    continue
                if damaged:
                    report.damaged.append(copy)
                else:
                    report.incomplete += 1

    def _drop(self, copy: CopyId, listing: str, *, damaged: bool) -> bool:
        """Drop the copy of a file if it still lists exactly *listing* (it is no
        longer whole); a *damaged* one is wanted again (`wanted`). True if dropped."""
        dropped = self._delete(
            "origin = ? AND relpath = ? AND chunks = ?",
            (copy.origin, copy.relpath, listing),
            refetch=listing if damaged else None,
        )
        if dropped and damaged:
            log.warning("cached copy of %s/%s is damaged: dropped it, to be copied again "
                        "from its origin", copy.origin, copy.relpath)  # fmt: skip
            if self.on_damaged is not None:
                self.on_damaged()
        return dropped

    def _delete(self, where: str, params: tuple[object, ...], refetch: str | None = None) -> bool:
        """Delete the copy *where* selects (at most one), keeping the header
        counts true; with *refetch* (the chunk list to recheck, or ""), its file
        is wanted again, in the same transaction. True if there was one."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            row = self._db.execute(
                f"DELETE FROM manifests WHERE {where} RETURNING origin, relpath, length(header)",
                params,
            ).fetchone()
            if row is None:
                return False
            self._copies_dropped += 1
            if refetch is not None:
                self._db.execute("INSERT OR REPLACE INTO refetch VALUES (?, ?, ?)",
                                 (row[0], row[1], refetch))  # fmt: skip
            self.headers.entries -= 1
            self.headers.bytes -= row[2]
        return True

    def sweep(self, batch: int = _CHECK_BATCH) -> int:
        """Drop the copies that list a chunk the store dropped since the last
        sweep (damaged, or evicted): they are no longer whole, so no longer
        counted as cached; the damaged ones are wanted again. One pass over the
        manifests, *batch* rows per hold of the lock, only when chunks were
        dropped. Returns the copies dropped."""
        damaged, evicted = self.store.take_lost()
        lost = damaged | evicted
        dropped = after = 0
        while lost:
            with self._lock:
                rows = self._db.execute(
                    "SELECT rowid, origin, relpath, size, mtime_ns, chunks FROM manifests"
                    " WHERE rowid > ? ORDER BY rowid LIMIT ?",
                    (after, batch),
                ).fetchall()
            if not rows:
                break
            after = rows[-1][0]
            for _, origin, relpath, size, mtime_ns, listing in rows:
                digests = digests_of(listing)
                hit = lost.intersection(digests)
                if not hit or self.store.all_indexed(digests):  # stored again meanwhile
                    continue
                copy = CopyId(origin, relpath, size, mtime_ns)
                dropped += self._drop(copy, listing, damaged=bool(hit & damaged))
        if dropped:
            log.info("content cache: %d cached copies lost chunks and were dropped", dropped)
        return dropped

    def wanted(self) -> list[tuple[str, str, str]]:
        """(origin, path, chunk list) of the files whose copies were dropped as
        damaged and are not copied again yet."""
        with self._lock:
            rows = self._db.execute("SELECT origin, relpath, chunks FROM refetch").fetchall()
        return [(str(o), str(r), str(c)) for o, r, c in rows]

    def unwant(self, origin: str, relpath: str) -> None:
        """Give up copying a file again (gone from its origin or the library)."""
        with self._lock:
            self._db.execute(
                "DELETE FROM refetch WHERE origin = ? AND relpath = ?", (origin, relpath)
            )

    def recheck(self, listing: str) -> list[str]:
        """Hash the chunks of a dropped copy's *listing* that are still stored;
        drop the damaged ones (so a copy made again writes them afresh)."""
        return self.store.recheck(digests_of(listing)) if listing else []

    def clear(self, origin: str | None = None) -> tuple[int, int]:
        """Drop the cached copies of *origin*'s files (of every file when None),
        but those of pinned files, and the chunks no other copy uses. Open files
        keep reading theirs. Returns (files, bytes freed)."""
        with self._lock:
            where, params = ("", ()) if origin is None else (" WHERE origin = ?", (origin,))
            rows = self._db.execute(f"SELECT rowid, origin, relpath FROM manifests{where}", params)
            # Pinned copies stay: they are cleared by unpinning them first.
            drop = [(r[0],) for r in rows.fetchall() if (r[1], r[2]) not in self._pinned]
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM manifests WHERE rowid = ?", drop)
                self._db.execute(f"DELETE FROM refetch{where}", params)
            files = len(drop)
            self._copies_dropped += 1
            kept = self._db.execute("SELECT chunks FROM manifests").fetchall()
            row = self._db.execute(
                "SELECT count(*), coalesce(sum(length(header)), 0) FROM manifests"
            )
            self.headers.entries, self.headers.bytes = row.fetchone()
        keep = {digest for (listing,) in kept for digest in digests_of(listing)}
        _, freed = self.store.drop_unreferenced(keep)
        return files, freed

    def forget(self, origin: str, relpath: str) -> bool:
        """Drop the cached copy of a file (its chunks stay, for other files and
        for eviction to reclaim). True if there was one."""
        return self._delete("origin = ? AND relpath = ?", (origin, relpath))

    def _manifest(self, version: Version) -> tuple[bytes, str] | None:
        """The verified header and chunk list of *version*; None if not cached,
        or if its row was damaged (then it is dropped: read from the origin)."""
        copy = CopyId(version.origin, version.relpath, version.size, version.mtime_ns)
        with self._lock:
            row = self._db.execute(
                "SELECT header, chunks, digest FROM manifests WHERE origin = ? AND relpath = ? "
                "AND size = ? AND mtime_ns = ?",
                copy,
            ).fetchone()
        if row is None:
            return None
        header, listing, digest = bytes(row[0]), str(row[1]), row[2]
        if digest != row_digest(copy, header, listing):
            self._forget_damaged(copy, digest)
            return None
        return header, listing

    def _forget_damaged(self, copy: CopyId, digest: object) -> bool:
        """Drop a cached copy whose row does not match its digest (if the row is
        still that one), and tell it as a corrupt chunk would be told."""
        # Its chunk list is not to be trusted: copied again without a recheck ("").
        where = "origin = ? AND relpath = ? AND size = ? AND mtime_ns = ? AND digest IS ?"
        if not self._delete(where, (*copy, digest), refetch=""):
            return False
        log.error("cached copy of %s/%s is damaged (its header or chunk list does not match "
                  "its digest); dropped it", copy.origin, copy.relpath)  # fmt: skip
        if self.events is not None:
            self.events.publish(EventType.CHUNK_CORRUPT, origin=copy.origin, path=copy.relpath,
                                error="cached header or chunk list damaged")  # fmt: skip
        if self.on_damaged is not None:
            self.on_damaged()
        return True
