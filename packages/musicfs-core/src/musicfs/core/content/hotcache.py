"""Cache tier L1: the entries of recently used directories, in memory.

A FUSE lookup asks for one name in one directory; answering each from SQLite
costs a read transaction (two fcntl locks and an fstat of the WAL) per call.
Loading the whole directory once and answering the following lookups from a
dict makes a first ``stat`` of a file in a listed folder nearly free.

Bounded by the number of entries held (LRU by directory); directories larger
than `BIG_DIRECTORY` are not held (their lookups go to SQLite). The scanner's
tree changes drop the directories they touch. Thread-safe: the FUSE loop reads
it, the scanner thread invalidates it.

It also keeps the *listings* of folders listed more than once
(`musicfs.core.catalog.listings.Listing`: the rows readdir sends, compact,
~45 bytes an entry): the kernel does not keep
listings, so every ``ls`` of a folder asks again, and SQLite's rows cost
several times what the kernel spends on them (benchmarks/bench.py readdir). A
folder is kept at its second complete listing only, so one walk of a library
fills nothing; listings are bounded by `DEFAULT_MAX_LISTED` entries (LRU) and
dropped with the directory's lookups.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter

from musicfs.core.catalog.listings import Listing, Row
from musicfs.core.catalog.store import Node
from musicfs.core.content.stats import TierStats

BIG_DIRECTORY = 5000
DEFAULT_MAX_ENTRIES = 100_000
#: Entries of listings kept at most (a listing above it is not kept).
DEFAULT_MAX_LISTED = 250_000
#: Folders remembered as listed once (so their second listing is kept).
_SEEN = 4096


class ListingBuilder:
    """The pages of one listing read in order from the first entry, made a
    `Listing` at the end (if no tree change came in between)."""

    __slots__ = ("last", "pages", "parent", "token")

    def __init__(self, parent: int, token: int) -> None:
        self.parent, self.token = parent, token
        self.pages: list[Sequence[Row]] = []
        self.last = 0  # the id of the last entry taken so far

    def add(self, rows: Sequence[Row]) -> None:
        """Rows of the folder after some id at most `last` (a page may repeat the
        end of the one before)."""
        if rows and rows[0][0] <= self.last:
            rows = rows[bisect_right(rows, self.last, key=itemgetter(0)) :]
        if rows:
            self.pages.append(rows)
            self.last = rows[-1][0]


class DirectoryCache:
    """name -> Node maps of whole directories, least recently used dropped first."""

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, max_listed: int = DEFAULT_MAX_LISTED
    ) -> None:
        self.max_entries = max_entries
        self.max_listed = max_listed
        self.stats = TierStats()
        self._dirs: OrderedDict[int, dict[str, Node]] = OrderedDict()
        self._listings: OrderedDict[int, Listing] = OrderedDict()
        self._listed = 0  # entries of all listings held
        self._seen: OrderedDict[int, None] = OrderedDict()  # listed once
        # folder -> the token of the builder reading it; a drop of the folder
        # removes it, so a listing read across a change of its folder is not kept.
        self._building: OrderedDict[int, int] = OrderedDict()
        self._tokens = 0
        #: Counts drops: a listing read before it last moved may be out of date.
        self.generation = 0
        self._lock = threading.Lock()

    def lookup(
        self, parent: int, name: str, load: Callable[[int, int], list[Node]]
    ) -> Node | bool | None:
        """The entry *name* of *parent*: a Node, None if there is none, or False if
        the directory is too big to hold (ask the catalog).

        *load(parent, limit)* returns up to *limit* children of *parent*.
        """
        with self._lock:
            children = self._dirs.get(parent)
            if children is not None:
                self._dirs.move_to_end(parent)
                self.stats.hits += 1
                return children.get(name)
        self.stats.misses += 1
        nodes = load(parent, BIG_DIRECTORY + 1)
        if len(nodes) > BIG_DIRECTORY or self.max_entries <= 0:
            return False
        children = {node.name: node for node in nodes}
        with self._lock:
            self._dirs[parent] = children
            self.stats.entries += len(children)
            while self.stats.entries > self.max_entries and self._dirs:
                _, dropped = self._dirs.popitem(last=False)
                self.stats.entries -= len(dropped)
                self.stats.evictions += 1
        return children.get(name)

    def drop(self, parents: Iterable[int]) -> None:
        """Forget these directories (their entries changed)."""
        with self._lock:
            self.generation += 1
            for parent in parents:
                self._building.pop(parent, None)
                dropped = self._dirs.pop(parent, None)
                if dropped is not None:
                    self.stats.entries -= len(dropped)
                listing = self._listings.pop(parent, None)
                if listing is not None:
                    self._listed -= len(listing)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._building.clear()
            self._dirs.clear()
            self.stats.entries = 0
            self._listings.clear()
            self._listed = 0
            self._seen.clear()

    # -- listings ------------------------------------------------------------------

    def listing(self, parent: int) -> Listing | None:
        """The kept listing of folder *parent*, if any."""
        with self._lock:
            listing = self._listings.get(parent)
            if listing is not None:
                self._listings.move_to_end(parent)
            return listing

    def listing_builder(self, parent: int) -> ListingBuilder | None:
        """A builder for a listing of *parent* that starts now at its first entry:
        only for a folder listed before (else None: it is noted as listed)."""
        with self._lock:
            if self.max_listed <= 0:
                return None
            if parent not in self._seen:
                self._note_seen(parent)
                return None
            del self._seen[parent]
            self._tokens += 1
            self._building[parent] = self._tokens
            if len(self._building) > _SEEN:
                self._building.popitem(last=False)
            return ListingBuilder(parent, self._tokens)

    def _note_seen(self, parent: int) -> None:
        self._seen[parent] = None
        if len(self._seen) > _SEEN:
            self._seen.popitem(last=False)

    def keep_listing(self, builder: ListingBuilder, listing: Listing | None = None) -> None:
        """Keep the listing *builder* read to its end (or *listing*, read whole
        after *builder* was made), unless its folder changed meanwhile."""
        if listing is None:
            listing = Listing(builder.pages)
        with self._lock:
            if self._building.get(builder.parent) != builder.token:
                self._note_seen(builder.parent)  # read across a change: keep the next one
                return
            del self._building[builder.parent]
            if len(listing) > self.max_listed:
                return
            old = self._listings.pop(builder.parent, None)
            self._listed += len(listing) - (len(old) if old is not None else 0)
            self._listings[builder.parent] = listing
            while self._listed > self.max_listed:
                _, dropped = self._listings.popitem(last=False)
                self._listed -= len(dropped)
