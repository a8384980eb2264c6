"""Virtual folders: entries that are not rows of the catalog's tree (FR-14, FR-15).

``/.search/<query>/`` holds a symlink per search result, and
``/.collections/<name>/`` one per track of a smart collection, each named
``Artist - Title.ext`` and pointing into the tree
(``../../Artist/Album (1997) [FLAC]/01 - Title.flac``), so players follow it to
the real file. The artist and title are the tree's (template fallbacks: the
title of an untagged file is its file name without the extension), and a link
carries its target's collision counter (``Title (2).flac`` links to
``02 - Title (2).flac``) wherever that keeps the folder's names unique, so a
name never points at the other one of two colliding tracks.

``/.prefetch/`` mirrors the tree: listing a folder there
(``ls ~/mnt/music/.prefetch/Artist/Album``) asks for its files to be copied
into the cache (a manual prefetch hint), and its files are symlinks to the real
ones. These folders are hidden (not listed in ``/``); ``.collections`` lists
its collections, ``.search`` is entered by typing a query.

Virtual entries get inode numbers in the ranges `musicfs.core.namespace.inodes`
sets, far above any catalog node id; the query and collection entries are
numbered in a bounded table (least recently used dropped first: the
kernel then re-looks the name up). Results are computed by `Searcher` on a
read-only catalog connection of their own (call `results` from a worker
thread) and reused for `RESULTS_TTL` seconds, so a listing and the lookups
that follow it agree, and files added or removed show within that time.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from musicfs.core.catalog.layout import TEMPLATE_SETTING
from musicfs.core.catalog.search import Searcher
from musicfs.core.catalog.store import ROOT_NODE, Catalog
from musicfs.core.catalog.templates import (
    DEFAULT_TEMPLATE,
    PathTemplate,
    TemplateError,
    sanitize,
    template_values,
    with_counter,
)
from musicfs.core.config.collections import Collection
from musicfs.core.model import TrackTags
from musicfs.core.namespace.collections import all_collections, file_ids
from musicfs.core.namespace.inodes import (
    COLLECTIONS_DIR,
    LINK_BASE,
    MIRROR_BASE,
    PLAYLISTS_DIR,
    PREFETCH_DIR,
    SEARCH_DIR,
    TABLE_FIRST,
)

SEARCH_NAME = ".search"
COLLECTIONS_NAME = ".collections"
PREFETCH_NAME = ".prefetch"
PLAYLISTS_NAME = ".playlists"  # its files: musicfs.core.namespace.playlists
RESULTS_TTL = 2.0  # seconds a query's results are reused
MAX_RESULTS = 200
_MAX_ENTRIES = 50_000
_COUNTER = re.compile(r" \((\d+)\)(\.[^.]*)?$")  # the " (n)" a tree name may end with


class VirtualEntry(NamedTuple):
    """A virtual folder, a symlink to *target*, or a file of *size* bytes."""

    inode: int
    parent: int
    name: str
    target: str = ""
    size: int = -1  # a file (a cover image) when >= 0

    @property
    def is_dir(self) -> bool:
        return not self.target and self.size < 0

    @property
    def is_file(self) -> bool:
        return self.size >= 0


def result_name(tags: TrackTags, relpath: str, fmt: str) -> str:
    """``Artist - Title.ext`` with the artist and title the tree's template gets
    (same fallbacks), made a legal name the way tree names are."""
    values = template_values(tags, relpath, fmt)
    return sanitize(f"{values['artist']} - {values['title']}.{fmt}")


def tree_counter(name: str, base: str) -> int:
    """Which variant of *base* the tree name *name* is: 1 for *base* itself, n
    for ``base (n)`` (as `with_counter` makes it), 1 if it is neither."""
    found = _COUNTER.search(name)
    if found is not None:
        n = int(found.group(1))
        if n > 1 and with_counter(base, n, is_file=True) == name:
            return n
    return 1


def unique_names(wanted: list[tuple[str, int, str]]) -> list[str]:
    """A distinct name for each (base name, counter wished, tie-break key).

    Each gets ``with_counter(base, counter)`` if no other of its base got that
    counter first (lower counters, then lower keys, win); the others get the
    lowest counter still free. Independent of the order of *wanted*, so a name
    means the same track whatever order a search or collection lists them in.
    """
    names: list[str | None] = [None] * len(wanted)
    taken: set[str] = set()
    by_base: dict[str, list[int]] = {}
    for i, (base, _, _) in enumerate(wanted):
        by_base.setdefault(base, []).append(i)

    def name_of(base: str, n: int) -> str:
        return base if n == 1 else with_counter(base, n, is_file=True)

    for indexes in by_base.values():
        indexes.sort(key=lambda i: (wanted[i][1], wanted[i][2]))
        for i in indexes:
            name = name_of(wanted[i][0], wanted[i][1])
            if name not in taken:
                taken.add(name)
                names[i] = name
    for indexes in by_base.values():
        for i in indexes:
            if names[i] is None:
                n = 1
                while (name := name_of(wanted[i][0], n)) in taken:
                    n += 1
                taken.add(name)
                names[i] = name
    return [name for name in names if name is not None]


class VirtualTree:
    """The virtual folders of one mount."""

    def __init__(
        self,
        catalog_path: str | Path,
        collections: tuple[Collection, ...] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog_path = Path(catalog_path)
        self.collections = all_collections(collections)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, VirtualEntry] = OrderedDict()
        self._folders: dict[tuple[int, str], int] = {}  # (parent, name) -> inode
        self._results: dict[int, tuple[float, dict[str, VirtualEntry]]] = {}
        self._next_inode = itertools.count(TABLE_FIRST)
        self._tops = {
            SEARCH_NAME: VirtualEntry(SEARCH_DIR, ROOT_NODE, SEARCH_NAME),
            COLLECTIONS_NAME: VirtualEntry(COLLECTIONS_DIR, ROOT_NODE, COLLECTIONS_NAME),
            PREFETCH_NAME: VirtualEntry(PREFETCH_DIR, ROOT_NODE, PREFETCH_NAME),
            PLAYLISTS_NAME: VirtualEntry(PLAYLISTS_DIR, ROOT_NODE, PLAYLISTS_NAME),
        }

    def top(self, name: str) -> VirtualEntry | None:
        """The virtual folder called *name* in the root, if there is one."""
        return self._tops.get(name)

    def get(self, inode: int) -> VirtualEntry | None:
        for top in self._tops.values():
            if top.inode == inode:
                return top
        with self._lock:
            entry = self._entries.get(inode)
            if entry is not None:
                self._entries.move_to_end(inode)
            return entry

    def folder(self, parent: int, name: str) -> VirtualEntry | None:
        """A query's folder in ``/.search`` (made on first use), or a
        collection's in ``/.collections`` (None if there is no such collection)."""
        if parent == COLLECTIONS_DIR and name not in self.collections:
            return None
        if parent not in (SEARCH_DIR, COLLECTIONS_DIR):
            return None
        with self._lock:
            inode = self._folders.get((parent, name))
            if inode is None or inode not in self._entries:
                inode = next(self._next_inode)
                self._folders[(parent, name)] = inode
                self._remember(VirtualEntry(inode, parent, name))
            return self._entries[inode]

    def folders(self, parent: int) -> list[VirtualEntry]:
        """What a top folder lists: the collections (queries are never listed)."""
        if parent != COLLECTIONS_DIR:
            return []
        return [e for name in self.collections if (e := self.folder(parent, name))]

    def results(self, folder: VirtualEntry) -> dict[str, VirtualEntry]:
        """The symlinks of a query or collection folder, by name (blocking: call
        it from a worker thread)."""
        now = self._clock()
        with self._lock:
            cached = self._results.get(folder.inode)
            if cached is not None and now - cached[0] < RESULTS_TTL:
                return cached[1]
        entries: dict[str, VirtualEntry] = {}
        with Catalog.open(self.catalog_path, readonly=True) as catalog:
            if folder.parent == SEARCH_DIR:
                found = [h.track.id for h in Searcher(catalog).search(folder.name, MAX_RESULTS)]
            else:
                found = file_ids(catalog, self.collections[folder.name])
            template = _template(catalog)
            wanted: list[tuple[str, int, str]] = []
            targets: list[str] = []
            for file_id in found:
                track, node = catalog.track(file_id), catalog.node_of_file(file_id)
                if track is None or node is None:
                    continue  # not in the tree (an unreadable file, hidden by config)
                tags = catalog.effective_tags(track.id, track.tags)  # as the tree shows it
                base = result_name(tags, track.relpath, track.format)
                n = 1
                if template is not None:
                    tree_base = template.render(tags, track.relpath, track.format)[-1]
                    n = tree_counter(node.name, tree_base)
                path = catalog.path_of(node.id)
                wanted.append((base, n, path))
                targets.append("../../" + path)
            for name, target in zip(unique_names(wanted), targets, strict=True):
                entries[name] = VirtualEntry(0, folder.inode, name, target)
        with self._lock:
            numbered = {}
            for name, entry in entries.items():
                inode = next(self._next_inode)
                numbered[name] = entry._replace(inode=inode)
                self._remember(numbered[name])
            self._results[folder.inode] = (now, numbered)
            return numbered

    def _remember(self, entry: VirtualEntry) -> None:
        self._entries[entry.inode] = entry
        while len(self._entries) > _MAX_ENTRIES:
            inode, _ = self._entries.popitem(last=False)
            self._results.pop(inode, None)


def _template(catalog: Catalog) -> PathTemplate | None:
    """The template the tree was laid out with (None: unknown)."""
    try:
        return PathTemplate.parse(catalog.get_setting(TEMPLATE_SETTING) or DEFAULT_TEMPLATE)
    except TemplateError:
        return None


# -- /.prefetch: a mirror of the tree ---------------------------------------------


def mirror_entry(catalog: Catalog, node_id: int) -> VirtualEntry | None:
    """The /.prefetch entry of node *node_id*: a folder, or a symlink to the file."""
    node = catalog.node(node_id)
    if node is None:
        return None
    parent = PREFETCH_DIR if node.parent == ROOT_NODE else MIRROR_BASE + node.parent
    if node.is_dir:
        return VirtualEntry(MIRROR_BASE + node.id, parent, node.name)
    path = catalog.path_of(node.id)
    target = "../" * (path.count("/") + 1) + path
    return VirtualEntry(LINK_BASE + node.id, parent, node.name, target)
