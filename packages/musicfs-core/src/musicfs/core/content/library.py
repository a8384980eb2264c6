"""The library: what is at a place in the tree, and what bytes it has.

This is the semantic core under the FUSE skin (DESIGN §9). It answers in terms
of catalog nodes and open handles, and signals failure with `LibraryError`s
that carry an errno; it knows nothing of pyfuse3 or inode bookkeeping, so the
binding can be swapped and everything here can be tested without a mount.

Opening and reading a track follow the read policy (`openfile.py`): the
first copy that answers, fail-over in the middle of a file, which part of a
request runs on the FUSE thread, and the request's time budget. The library
plans an open from the catalog, keeps the table of open handles and tells the
mount what opening found (a changed file, a file to copy into the cache).
"""

from __future__ import annotations

import errno
import itertools
import time
from collections.abc import Callable, Iterable, Mapping

from musicfs.core.catalog.store import ROOT_NODE, Catalog, Listing, Node, Track
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.hotcache import DirectoryCache, ListingBuilder
from musicfs.core.content.openfile import LibraryError, Opening, OpenPlan, OpenTrack
from musicfs.core.content.readpolicy import ReadPolicy, version_of
from musicfs.core.events import EventBus, EventType
from musicfs.core.origins.base import Origin
from musicfs.core.origins.federation import Federation

__all__ = ["Library", "LibraryError", "OpenPlan", "OpenTrack", "version_of"]


def same_content(a: Track, b: Track) -> bool:
    """Whether two replicas (same tags and duration) may be read in place of each
    other: the same size, and the same content hash where both were hashed."""
    if a.size != b.size:
        return False
    return a.content_hash is None or b.content_hash is None or a.content_hash == b.content_hash


def not_found(what: str) -> LibraryError:
    return LibraryError(errno.ENOENT, f"{what}: no such entry")


class Library:
    """Answers questions about the tree from one catalog connection."""

    def __init__(
        self,
        catalog: Catalog,
        origins: Federation | Mapping[str, Origin],
        *,
        on_stale: Callable[[Track], None] | None = None,
        content: ContentCache | None = None,
        on_fill: Callable[[Track], None] | None = None,
        events: EventBus | None = None,
    ) -> None:
        """*on_stale* is called when an opened file no longer matches its catalog
        row; *on_fill* when a file opened from its origin is not in *content* yet.
        Both are called on the thread that calls `register` (the FUSE thread).
        Opens and corrupt chunks are told to *events*."""
        self.catalog = catalog
        self.events = events if events is not None else EventBus()
        self.federation = origins if isinstance(origins, Federation) else Federation(origins)
        self.policy = ReadPolicy(self.federation, content, self.events)
        self.on_stale = on_stale
        self.on_fill = on_fill
        self.directories = DirectoryCache()
        self._stats: tuple[float, tuple[int, int, int]] | None = None
        self._handles: dict[int, OpenTrack] = {}
        self._next_handle = itertools.count(1)

    @property
    def open_handles(self) -> int:
        return len(self._handles)

    def node(self, node_id: int) -> Node:
        node = self.catalog.node(node_id)
        if node is None:
            raise not_found(f"node {node_id}")
        return node

    def root(self) -> Node:
        return self.node(ROOT_NODE)

    def lookup(self, parent: int, name: str) -> Node:
        found = self.directories.lookup(parent, name, self._load_children)
        if found is False:  # a huge directory: ask the catalog for this one name
            found = self.catalog.lookup(parent, name)
        if not isinstance(found, Node):
            raise not_found(name)
        return found

    def _load_children(self, parent: int, limit: int) -> list[Node]:
        return self.catalog.children(parent, 0, limit)

    def forget_directories(self, parents: Iterable[int]) -> None:
        """Drop cached entries of directories whose contents changed (any thread)."""
        self.directories.drop(parents)

    def children(self, parent: int, after: int, limit: int) -> list[Node]:
        node = self.node(parent)
        if not node.is_dir:
            raise LibraryError(errno.ENOTDIR, f"{node.name}: not a directory")
        return self.catalog.children(parent, after, limit)

    def listing(self, parent: int, after: int, limit: int) -> list[tuple[int, bytes, int, int]]:
        """Entries of directory *parent* after id *after* as (id, name as UTF-8
        bytes, size or -1 for a folder, mtime_ns), without checking *parent* again
        (`children` does)."""
        return self.catalog.child_rows(parent, after, limit)

    def kept_listing(self, parent: int) -> Listing | None:
        """The whole listing of *parent* if L1 keeps it (a folder listed before)."""
        return self.directories.listing(parent)

    @property
    def listings_generation(self) -> int:
        """Moves whenever a folder's entries change (`forget_directories`): a
        listing read before it moved may be out of date."""
        return self.directories.generation

    def packed_listing(self, parent: int) -> Listing | None:
        """The whole listing of big folder *parent* as the catalog packed it, or
        None (not packed: small, or changed since the last scan ended)."""
        return self.catalog.packed_listing(parent)

    def listing_builder(self, parent: int) -> ListingBuilder | None:
        """Collects a listing of *parent* read from its first entry, for L1
        (`keep_listing` once read to the end); None if L1 does not want it."""
        return self.directories.listing_builder(parent)

    def keep_listing(self, builder: ListingBuilder, listing: Listing | None = None) -> None:
        self.directories.keep_listing(builder, listing)

    # -- opening: plan (catalog, FUSE thread), open (the read policy), register ----------

    @property
    def content(self) -> ContentCache | None:
        return self.policy.content

    @content.setter
    def content(self, content: ContentCache | None) -> None:
        self.policy.content = content

    def open(self, node_id: int) -> int:
        """Plan, open and register in one go, on the calling thread (may block)."""
        opening = self.opening(node_id)
        opened = opening.now() or opening.finish()
        return self.register(opened)

    def opening(self, node_id: int) -> Opening:
        """The open request of a node: ``now()`` on the FUSE thread, else
        ``finish()`` in a worker (`openfile.in_worker`); then `register`."""
        return Opening(self.policy, self.plan_open(node_id), self.policy.deadline())

    def plan_open(self, node_id: int) -> OpenPlan:
        node = self.node(node_id)
        if node.file_id is None:
            raise LibraryError(errno.EISDIR, f"{node.name}: is a directory")
        track = self.catalog.track(node.file_id)
        if track is None:  # removed between lookup and open
            raise not_found(node.name)
        overlay = self.catalog.overlay(track.id, track.size, track.mtime_ns)
        if overlay is not None and overlay.header is not None:
            # The synthesized header fits this file's own header: read no other replica.
            return OpenPlan(node, [track], overlay)
        replicas = [track]
        _, key = self.catalog.replica_key_of(track.id)
        if key is not None:
            replicas += [t for t in self.catalog.replicas(key, besides=track.id)
                         if same_content(t, track)]  # fmt: skip
        return OpenPlan(node, replicas)

    def register(self, opened: OpenTrack) -> int:
        """Give an opened track its handle and pass on what opening found (FUSE thread)."""
        for track in opened.stale:
            if self.on_stale is not None:
                self.on_stale(track)
        if opened.wants_fill and self.on_fill is not None:
            self.on_fill(opened.track)
        handle = next(self._next_handle)
        self._handles[handle] = opened
        track = opened.track
        source = "cache" if opened.cached else "origin"
        self.events.publish(EventType.FILE_OPENED, origin=track.origin, path=track.relpath,
                            source=source)  # fmt: skip
        return handle

    # -- reading -------------------------------------------------------------------------

    def handle(self, handle: int) -> OpenTrack:
        """The open track behind *handle* (the one lookup a read makes)."""
        opened = self._handles.get(handle)
        if opened is None:
            raise LibraryError(errno.EBADF, f"handle {handle} is not open")
        return opened

    def read(self, handle: int, offset: int, size: int) -> bytes:
        """Bytes of an open track, on the calling thread (may block)."""
        reading = self.handle(handle).read(offset, size)
        data = reading.now()
        return reading.finish() if data is None else bytes(data)

    def close(self, handle: int) -> None:
        opened = self._handles.pop(handle, None)
        if opened is not None:
            opened.close()

    def totals(self, max_age: float = 10.0) -> tuple[int, int, int]:
        """(tracks + directories, total bytes, unreadable files), at most *max_age* s old.

        Counting a million rows takes a while, and ``df`` and file managers ask
        often: call this in a worker thread. It uses its own read-only
        connection, never the request handlers' one.
        """
        now = time.monotonic()
        cached = self._stats
        if cached is None or now - cached[0] > max_age:
            with Catalog.open(self.catalog.path, readonly=True) as catalog:
                tracks, dirs, unreadable = catalog.counts()
                cached = (now, (tracks + dirs, catalog.total_size(), unreadable))
            self._stats = cached
        return cached[1]

    def close_all(self) -> None:
        for handle in list(self._handles):
            self.close(handle)
