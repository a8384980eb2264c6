"""Packed listings: a big folder's entries in one row, as columns.

A first listing of a folder of 100,000 tracks read from ``nodes`` makes a
Python tuple per entry (~1.3 µs each: two thirds of the readdir handler's time,
benchmarks/bench.py "readdir, first"). The same entries kept as four arrays and
one string of names come out of one row in a few milliseconds. `Listing` is
that form; L1 (`musicfs.core.content.hotcache`) holds listings in it too.

The ``listings`` table (schema 16) holds one row per folder that changed since
it was last packed, or that is packed:

* triggers on ``nodes`` clear a folder's packed columns in the same
  transaction as any change that its listing shows (an entry added, removed,
  renamed, moved, or given another size or mtime), leaving the row behind as a
  mark that the folder changed. So a packed row is always exactly what
  `LISTING_QUERY` returns, or it is not there and readers read rows;
* `pack_listings` packs each marked folder that holds from `PACKED_MIN` to
  `PACKED_MAX` entries and forgets the marks of the others: smaller folders'
  rows cost little, and a bigger folder's row would be rewritten whole (tens
  of MB, seconds in a write transaction) after every change. The scanner runs
  it when a scan ends, the mount once more after its own writes that follow a
  scan (overlays), a shared catalog's follower at most once a minute, and a
  template change made while mounted after its rebuild (one made in the
  config is packed by the scan that follows the mount). Until then a marked
  folder is listed from its rows.

Each row holds a CRC-32 of its columns: a row that does not match is passed
over for the rows (and logged), never sent.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from itertools import accumulate, chain
from operator import itemgetter

from musicfs.core.catalog.rows import Part
from musicfs.core.catalog.tree import LISTING_QUERY

log = logging.getLogger(__name__)

#: Folders with fewer entries, or more, are listed from their rows (not packed).
PACKED_MIN = 1000
PACKED_MAX = 250_000

#: A listing row: (node id, name as UTF-8 bytes, size or -1 for a folder, mtime_ns).
Row = tuple[int, bytes, int, int]

_BIG_ENDIAN = sys.byteorder == "big"  # packed columns are little-endian on disk


class Listing:
    """One folder's entries in node-id order, as columns (no object per entry)."""

    __slots__ = ("_names", "_offsets", "ids", "mtimes", "sizes")

    ids: array[int]
    sizes: array[int]  # -1: a folder
    mtimes: array[int]
    _names: bytes  # the names, NUL-separated (names hold no NUL)
    _offsets: array[int]  # where each name starts, and one past the last

    def __init__(self, pages: Sequence[Sequence[Row]]) -> None:
        rows = list(chain.from_iterable(pages))
        self.ids = array("q", map(itemgetter(0), rows))
        self.sizes = array("q", map(itemgetter(2), rows))
        self.mtimes = array("q", map(itemgetter(3), rows))
        names = list(map(itemgetter(1), rows))
        self._names = b"\0".join(names)
        self._offsets = array("q", accumulate(map((1).__add__, map(len, names)), initial=0))

    @classmethod
    def unpacked(cls, columns: Sequence[bytes], checksum: int) -> Listing:
        """The listing stored as `packed` columns (ids, sizes, mtimes, offsets,
        names) with their *checksum*; ValueError if they do not match it."""
        if _checksum(columns) != checksum:
            raise ValueError("its columns do not match their checksum")
        listing = cls.__new__(cls)
        arrays = []
        for column in columns[:4]:
            values = array("q", column)
            if _BIG_ENDIAN:
                values.byteswap()
            arrays.append(values)
        listing.ids, listing.sizes, listing.mtimes, listing._offsets = arrays
        listing._names = bytes(columns[4])
        count = len(listing.ids)
        if not len(listing.sizes) == len(listing.mtimes) == len(listing._offsets) - 1 == count:
            raise ValueError("its columns hold different numbers of entries")
        if listing._offsets[0] != 0 or listing._offsets[-1] != len(listing._names) + 1:
            raise ValueError("its names do not fill their column")
        return listing

    def packed(self) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        """The columns a listings row stores: ids, sizes, mtimes, offsets, names."""
        arrays = [self.ids, self.sizes, self.mtimes, self._offsets]
        if _BIG_ENDIAN:
            arrays = [_swapped(values) for values in arrays]
        ids, sizes, mtimes, offsets = (values.tobytes() for values in arrays)
        return ids, sizes, mtimes, offsets, self._names

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self) -> list[Row]:
        """The entries as listing rows (for tests and checks, not for readdir)."""
        return list(zip(self.ids, self.names(0, len(self)), self.sizes, self.mtimes, strict=True))

    def index_after(self, node_id: int) -> int:
        """The index of the first entry whose id is above *node_id*."""
        return bisect_right(self.ids, node_id)

    def names(self, start: int, stop: int) -> list[bytes]:
        """The names of entries *start* to *stop* (exclusive)."""
        if start >= stop:
            return []
        return self._names[self._offsets[start] : self._offsets[stop] - 1].split(b"\0")


def _checksum(columns: Sequence[bytes]) -> int:
    crc = 0
    for column in columns:
        crc = zlib.crc32(column, crc)
    return crc


def _swapped(values: array[int]) -> array[int]:
    copy = array("q", values)
    copy.byteswap()
    return copy


_PACKED_COLUMNS = "ids, sizes, mtimes, offsets, names"


class Listings(Part):
    """Reading, packing and forgetting packed listings."""

    transaction: Callable[[], AbstractContextManager[None]]  # `Catalog.transaction`
    _damaged_listings: set[int]  # folders whose damaged packed row was logged

    def packed_listing(self, parent: int) -> Listing | None:
        """The packed listing of folder *parent*: None if it is not packed (small,
        or changed since the last `pack_listings`); then read its rows."""
        row = self._conn.execute(
            f"SELECT {_PACKED_COLUMNS}, checksum FROM listings"
            " WHERE parent = ? AND ids IS NOT NULL",
            (parent,),
        ).fetchone()
        if row is None:
            return None
        try:
            return Listing.unpacked(tuple(row)[:5], row[5])
        except (TypeError, ValueError) as exc:  # a damaged row: the rows still answer
            if parent not in self._damaged_listings:  # logged once, not at every listing
                self._damaged_listings.add(parent)
                log.warning("the packed listing of folder %d is damaged (%s); its entries are "
                            "read from the tree instead (`musicfs cache verify` checks the "
                            "whole catalog)", parent, exc)  # fmt: skip
            return None

    def pack_listings(
        self,
        min_entries: int | None = None,
        stop: Callable[[], bool] | None = None,
        max_entries: int | None = None,
    ) -> int:
        """Pack the listings of the folders changed since they were last packed
        that hold from *min_entries* to *max_entries* entries (default
        `PACKED_MIN`, `PACKED_MAX`); forget the marks of the others.

        One transaction for the marks and one per packed folder, so the
        filesystem's writers wait at most for one folder. Returns the number of
        folders packed; *stop* ends it early (the rest stay marked). Never
        raises for SQLite's sake: a folder that cannot be packed now (a busy
        or full disk) stays marked, and is listed from its rows.
        """
        low = max(1, PACKED_MIN if min_entries is None else min_entries)
        high = PACKED_MAX if max_entries is None else max_entries
        packed = 0
        try:
            with self.transaction():
                self._conn.execute(
                    "DELETE FROM listings WHERE ids IS NULL AND (SELECT count(*) FROM nodes"
                    " WHERE parent = listings.parent) NOT BETWEEN ? AND ?",
                    (low, high),
                )
                rows = self._conn.execute("SELECT parent FROM listings WHERE ids IS NULL")
                marked = [row[0] for row in rows]
            for parent in marked:
                if stop is not None and stop():
                    break
                with self.transaction():
                    packed += self._pack(parent, low, high)
        except sqlite3.Error as exc:
            log.warning("could not pack folder listings (%s); they are listed from the tree "
                        "until the next scan packs them", exc)  # fmt: skip
        return packed

    def _pack(self, parent: int, low: int, high: int) -> bool:
        cursor = self._conn.cursor()
        cursor.row_factory = None
        rows = cursor.execute(LISTING_QUERY, (parent, 0, high + 1)).fetchall()
        if not low <= len(rows) <= high:  # it changed size since it was marked
            self._conn.execute("DELETE FROM listings WHERE parent = ?", (parent,))
            return False
        columns = Listing([rows]).packed()
        self._conn.execute(
            f"INSERT OR REPLACE INTO listings (parent, {_PACKED_COLUMNS}, checksum)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (parent, *columns, _checksum(columns)),
        )
        return True

    def listing_marks(self) -> dict[int, bool]:
        """Folders with a listings row: whether each is packed (False: marked changed)."""
        rows = self._conn.execute("SELECT parent, ids IS NOT NULL FROM listings")
        return {r[0]: bool(r[1]) for r in rows}
