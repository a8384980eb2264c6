"""Cache tier L1: the entries of recently used directories, in memory.

A FUSE lookup asks for one name in one directory; answering each from SQLite
costs a read transaction (two fcntl locks and an fstat of the WAL) per call.
Loading the whole directory once and answering the following lookups from a
dict makes a first ``stat`` of a file in a listed folder nearly free.

Bounded by the number of entries held (LRU by directory); directories larger
than `BIG_DIRECTORY` are not held (their lookups go to SQLite). The scanner's
tree changes drop the directories they touch. Thread-safe: the FUSE loop reads
it, the scanner thread invalidates it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from musicfs.core.catalog.store import Node
from musicfs.core.content.stats import TierStats

BIG_DIRECTORY = 5000
DEFAULT_MAX_ENTRIES = 100_000


class DirectoryCache:
    """name -> Node maps of whole directories, least recently used dropped first."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.stats = TierStats()
        self._dirs: OrderedDict[int, dict[str, Node]] = OrderedDict()
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
            for parent in parents:
                dropped = self._dirs.pop(parent, None)
                if dropped is not None:
                    self.stats.entries -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._dirs.clear()
            self.stats.entries = 0
