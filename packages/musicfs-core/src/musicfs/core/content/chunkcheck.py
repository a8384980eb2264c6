"""Checking the chunk store (L3) while it is in use: `check_store` hashes (or
only finds) every chunk stored when it starts; `recheck_chunks` hashes the
chunks of one damaged copy. Damaged or missing chunks are dropped.

Both are safe while copies, opens and reads go on: the index is read a batch at
a time and the store's lock is let go between batches; bytes are read and
hashed outside it. A chunk that looks wrong is judged again under the lock
(`CheckedStore.drop_if_damaged`), where nothing can evict it: one evicted
meanwhile (its bytes freed) is not damage.

Boundaries: reads the store through `CheckedStore` (what `ChunkStore` offers
for this); stores and evicts nothing itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from musicfs.core.content.chunks import ChunkReader, ChunkSource, Place, chunk_hash
from musicfs.core.content.stats import TierStats

log = logging.getLogger("musicfs.core.content.cas")  # one logger for the store's findings

CHECK_BATCH = 256  # chunks `check_store` takes from the index per hold of the lock

IndexRow = tuple[int, str, int | None, int | None, int]  # rowid, hash, pack, offset, size


@dataclass
class StoreCheck:
    """What `ChunkStore.check` got through and found."""

    chunks: int = 0  # stored when the check began: the ones it checks
    checked: int = 0
    bytes: int = 0  # of the chunks checked
    damaged: list[str] = field(default_factory=list)  # dropped: damaged or missing
    stopped: bool = False  # *should_stop* said so before the end


class CheckedStore(ChunkSource, Protocol):
    """What a check needs of the store: reading chunks back, and finding them."""

    stats: TierStats

    def places(self, digests: list[str]) -> dict[str, Place]: ...

    def index_span(self) -> tuple[int, int]:
        """(chunks indexed, the highest rowid) now."""
        ...

    def index_rows(self, after: int, last: int, limit: int) -> list[IndexRow]:
        """Up to *limit* index rows with *after* < rowid <= *last*, by rowid."""
        ...

    def drop_if_damaged(self, digest: str, place: Place, damaged: Callable[[], bool]) -> bool:
        """Under the lock: if *digest* is still at *place* and *damaged*() says so,
        drop it (counted as lost) and return True."""
        ...


def recheck_chunks(store: CheckedStore, digests: Iterable[str]) -> list[str]:
    """Hash the stored bytes of *digests* (the ones the index lists); drop and
    return the damaged ones. A file whose copy met one damaged chunk may hold
    more (a read stops at the first): checked before it is copied again, as a
    copy keeps the chunks the store already lists."""
    wanted = list(dict.fromkeys(digests))
    damaged: list[str] = []
    with ChunkReader(store) as reader:
        for digest, place in store.places(wanted).items():
            if chunk_hash(reader.raw(digest, place)) == digest:
                continue
            if store.drop_if_damaged(digest, place, partial(_corrupt, reader, digest, place)):
                damaged.append(digest)
    if damaged:
        store.stats.corrupt += len(damaged)
        log.error("dropped %d more damaged chunks of a damaged copy", len(damaged))
    return damaged


def check_store(
    store: CheckedStore,
    deep: bool = True,
    *,
    batch: int = CHECK_BATCH,
    progress: Callable[[StoreCheck], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> StoreCheck:
    """Check the chunks stored when it starts; drop the damaged or missing ones.

    *deep*: hash every chunk (reads the whole store). Otherwise only check
    that each chunk's bytes are there (its pack is long enough): quick
    enough for startup. *progress* is called after each batch; *should_stop*
    between batches.
    """
    report = StoreCheck()
    report.chunks, last = store.index_span()
    # Chunks stored after the start were hashed as they were written.
    after = 0
    with ChunkReader(store) as reader:
        while after < last:
            if should_stop is not None and should_stop():
                report.stopped = True
                break
            rows = store.index_rows(after, last, batch)
            if not rows:
                break
            after = rows[-1][0]
            sizes: dict[str, int] = {}
            # In pack order: one sequential pass over each pack's bytes.
            for _, digest, pack, offset, size in sorted(rows, key=_pack_order):
                place = Place(pack, offset or 0, size)
                if not _intact(
                    store, reader, digest, place, deep=deep, sizes=sizes
                ) and store.drop_if_damaged(
                    digest, place, partial(_damaged, store, reader, digest, place, deep)
                ):
                    report.damaged.append(digest)
                report.checked += 1
                report.bytes += size
            if progress is not None:
                progress(report)
    if report.damaged:
        store.stats.corrupt += len(report.damaged)
        log.error("cache verify: dropped %d damaged or missing chunks", len(report.damaged))
    return report


def _intact(
    store: CheckedStore,
    reader: ChunkReader,
    digest: str,
    place: Place,
    *,
    deep: bool,
    sizes: dict[str, int],
) -> bool:
    """Whether the bytes at *place* are *digest*'s (deep), or at least there.
    *sizes*: file sizes already looked up."""
    if deep:
        return chunk_hash(reader.raw(digest, place)) == digest
    path = store.path_of(place.pack, digest)
    if path not in sizes:
        try:
            sizes[path] = os.stat(path).st_size
        except FileNotFoundError:
            sizes[path] = -1
    return sizes[path] >= place.offset + place.size


def _damaged(
    store: CheckedStore, reader: ChunkReader, digest: str, place: Place, deep: bool
) -> bool:
    """Whether the chunk at *place* is damaged, judged afresh (no sizes kept)."""
    return not _intact(store, reader, digest, place, deep=deep, sizes={})


def _corrupt(reader: ChunkReader, digest: str, place: Place) -> bool:
    """Whether the bytes at *place* are not *digest*'s."""
    return chunk_hash(reader.raw(digest, place)) != digest


def _pack_order(row: IndexRow) -> tuple[int, int]:
    """Sort key of an index row: where its bytes are."""
    return (row[2] if row[2] is not None else -1, row[3] or 0)
