"""The library: what is at a place in the tree, and what bytes it has.

This is the semantic core under the FUSE skin (DESIGN §9). It answers in terms
of catalog nodes and open handles, and signals failure with `LibraryError`s
that carry an errno; it knows nothing of pyfuse3 or inode bookkeeping, so the
binding can be swapped and everything here can be tested without a mount.

Opening a track picks one of its replicas (the same track on several
origins) through the `Federation`: online origins first, by priority. A read
that fails because its origin stopped answering fails over to another replica
of the same size, or to the cached copy, in the middle of the file; wrong
bytes are never served. Remote files are served from the content cache when a
copy of that exact version is there, without touching the network.

Reads of a local disk are done inline with ``os.pread`` on the FUSE thread (a
thread hop per request costs more than the read itself, see ENVIRONMENT.md);
everything that may touch a network runs in worker threads: the FUSE skin asks
`Library.inline` and calls `open_plan` / `read` accordingly.
"""

from __future__ import annotations

import errno
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from musicfs.core.catalog.store import ROOT_NODE, Catalog, Node, Overlay, Track
from musicfs.core.content.cache import CachedFile, ContentCache, Version
from musicfs.core.content.chunks import CorruptChunk
from musicfs.core.content.hotcache import DirectoryCache
from musicfs.core.errors import MusicFSError
from musicfs.core.events import EventBus, EventType
from musicfs.core.origins.base import FileChanged, Origin, OriginFile, OriginUnavailable
from musicfs.core.origins.federation import Federation

log = logging.getLogger(__name__)


class LibraryError(MusicFSError, OSError):
    """A failed request, with the errno the caller should see."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)


def version_of(track: Track) -> Version:
    return Version(track.origin, track.relpath, track.size, track.mtime_ns, track.format)


def same_content(a: Track, b: Track) -> bool:
    """Whether two replicas (same tags and duration) may be read in place of each
    other: the same size, and the same content hash where both were hashed."""
    if a.size != b.size:
        return False
    return a.content_hash is None or b.content_hash is None or a.content_hash == b.content_hash


class NeedsThread(MusicFSError):
    """A read on the FUSE thread must fail over to an origin: do it again in a
    worker thread (`Library.read` with ``in_thread=True``)."""


def not_found(what: str) -> LibraryError:
    return LibraryError(errno.ENOENT, f"{what}: no such entry")


@dataclass(slots=True)
class OpenPlan:
    """What opening a node needs, gathered from the catalog (on the FUSE thread)."""

    node: Node
    replicas: list[Track]  # the node's track first, then its other replicas
    inline: bool  # every origin involved is a local disk
    overlay: Overlay | None = None  # the metadata overlay of the node's file


@dataclass(slots=True)
class OpenFile:
    """An open track: the replica being read, from its origin or from the cache."""

    node: Node
    track: Track
    replicas: list[Track]
    file: OriginFile | None = None
    cached: CachedFile | None = None
    inline: bool = False
    stale: list[Track] = field(default_factory=list)  # replicas found changed or gone
    wants_fill: bool = False  # read from its origin, and not cached yet
    overlay: Overlay | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def size(self) -> int:
        if self.file is not None:
            return self.file.size
        return self.cached.size if self.cached is not None else 0

    def release(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.cached is not None:
            self.cached.close()
            self.cached = None


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
        self.on_stale = on_stale
        self.content = content
        self.on_fill = on_fill
        self.directories = DirectoryCache()
        self._stats: tuple[float, tuple[int, int, int]] | None = None
        self._handles: dict[int, OpenFile] = {}
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

    def listing(
        self, parent: int, after: int, limit: int
    ) -> list[tuple[int, str, int | None, int, int]]:
        """Entries of directory *parent* after id *after* as (id, name, file_id, size,
        mtime_ns), without checking *parent* again (`children` does)."""
        return self.catalog.child_rows(parent, after, limit)

    # -- opening: plan (catalog, FUSE thread), open (maybe network), register ----------

    def open(self, node_id: int) -> int:
        """Plan, open and register in one go, on the calling thread."""
        return self.register(self.open_plan(self.plan_open(node_id)))

    def plan_open(self, node_id: int) -> OpenPlan:
        node = self.node(node_id)
        if node.file_id is None:
            raise LibraryError(errno.EISDIR, f"{node.name}: is a directory")
        track = self.catalog.track(node.file_id)
        if track is None:  # removed between lookup and open
            raise not_found(node.name)
        replicas = [track]
        _, key = self.catalog.replica_key_of(track.id)
        if key is not None:
            replicas += [t for t in self.catalog.replicas(key, besides=track.id)
                         if same_content(t, track)]  # fmt: skip
        origins = self.federation.origins
        inline = all(t.origin in origins and origins[t.origin].inline for t in replicas)
        overlay = self.catalog.overlay(track.id, track.size, track.mtime_ns)
        if overlay is not None and overlay.header is not None:
            # The synthesized header fits this file's own header: read no other replica.
            return OpenPlan(node, [track], inline and track.origin in origins, overlay)
        return OpenPlan(node, replicas, inline)

    def open_plan(self, plan: OpenPlan) -> OpenFile:
        """Open the best replica of a planned node (blocking: may touch the network).

        Touches neither the catalog nor the handle table, so it can run in a
        worker thread; `register` finishes the job on the FUSE thread.
        """
        name = plan.node.name
        federation = self.federation
        by_id = {t.id: t for t in plan.replicas}
        ranked = [by_id[tid] for tid in self._ranked_ids(plan.replicas)]
        unknown = [t.origin for t in plan.replicas if t.origin not in federation.origins]
        if not ranked:
            raise LibraryError(errno.EIO, f"{name}: origin {unknown[0]!r} is not configured")
        opened = OpenFile(
            plan.node, ranked[0], plan.replicas, inline=plan.inline, overlay=plan.overlay
        )
        problems: list[str] = []
        denied = gone = 0
        for track in ranked:
            origin = federation[track.origin]
            if not origin.inline:
                cached = self._cached(track)
                if cached is not None:  # the exact version is here: no network needed
                    opened.track, opened.cached = track, cached
                    return opened
            if not federation.online(track.origin):
                problems.append(f"origin {track.origin!r} is offline")
                continue
            try:
                file = self._open_file(origin, track.relpath)
            except FileNotFoundError:
                gone += 1
                opened.stale.append(track)
                problems.append(f"{track.relpath} is gone from origin {track.origin!r}")
                continue
            except PermissionError as exc:
                denied += 1
                problems.append(str(exc))
                continue
            except OSError as exc:
                problems.append(str(exc))
                continue
            opened.track, opened.file = track, file
            if (file.size, file.mtime_ns) != (track.size, track.mtime_ns):
                # Changed behind our back: serve what is there now, and rescan so the
                # tree (and the size the kernel was told) catches up. The overlay was
                # made for the old header: not for this one.
                opened.stale.append(track)
                opened.overlay = None
            elif self.content is not None and not self.content.has(version_of(track)):
                opened.wants_fill = True
            return opened
        for track in ranked:  # no origin answers: a cached copy of any replica will do
            cached = self._cached(track)
            if cached is not None:
                opened.track, opened.cached = track, cached
                return opened
        if gone == len(ranked):
            raise LibraryError(errno.ENOENT, f"{name}: {'; '.join(problems)}")
        if denied and denied + gone == len(ranked):
            raise LibraryError(errno.EACCES, f"{name}: {'; '.join(problems)}")
        raise LibraryError(errno.EIO, f"{name}: {'; '.join(problems)}, and it is not cached")

    def register(self, opened: OpenFile) -> int:
        """Give an opened file its handle and pass on what opening found (FUSE thread)."""
        for track in opened.stale:
            if self.on_stale is not None:
                self.on_stale(track)
        if opened.wants_fill and self.on_fill is not None:
            self.on_fill(opened.track)
        handle = next(self._next_handle)
        self._handles[handle] = opened
        track = opened.track
        source = "cache" if opened.cached is not None else "origin"
        self.events.publish(EventType.FILE_OPENED, origin=track.origin, path=track.relpath,
                            source=source)  # fmt: skip
        return handle

    def _ranked_ids(self, replicas: list[Track]) -> list[int]:
        ranked_origins = self.federation.ranked(dict.fromkeys(t.origin for t in replicas))
        order = {oid: i for i, oid in enumerate(ranked_origins)}
        known = [t for t in replicas if t.origin in order]
        return [t.id for t in sorted(known, key=lambda t: order[t.origin])]

    def _open_file(self, origin: Origin, relpath: str) -> OriginFile:
        if origin.inline:  # a local disk: no limits or retries worth their cost
            try:
                return origin.open(relpath)
            except OriginUnavailable as exc:
                self.federation.failed(origin.id, exc)
                raise
        return self.federation.open(origin.id, relpath)

    def _cached(self, track: Track) -> CachedFile | None:
        return self.content.open(version_of(track)) if self.content is not None else None

    # -- reading -------------------------------------------------------------------------

    def reading_from(self, handle: int) -> str | None:
        """The origin a handle reads from now (None: the cache, or not open)."""
        opened = self._handles.get(handle)
        return opened.track.origin if opened is not None and opened.file is not None else None

    def timed_out(self, origin_id: str, seconds: float) -> None:
        """A request to *origin_id* got no answer in *seconds*: it is offline until
        a health check finds it again."""
        if origin_id in self.federation.origins:
            error = OriginUnavailable(
                origin_id, f"no answer within {seconds:.0f} s", errno.ETIMEDOUT
            )
            self.federation.failed(origin_id, error)

    def inline(self, handle: int) -> bool:
        """Whether reads of *handle* are quick enough for the FUSE thread: it reads
        a local disk, or the cache (until a failure needs an origin: `NeedsThread`)."""
        opened = self._handles.get(handle)
        return opened is None or opened.inline or opened.cached is not None

    def read(self, handle: int, offset: int, size: int, *, in_thread: bool = True) -> bytes:
        """Bytes of an open file. On the FUSE thread (*in_thread* False), a read
        that would have to reach a remote origin raises `NeedsThread` instead."""
        opened = self._handles.get(handle)
        if opened is None:
            raise LibraryError(errno.EBADF, f"handle {handle} is not open")
        overlay = opened.overlay
        if overlay is None or overlay.header is None:
            return self._read(opened, offset, size, in_thread)
        # Overlay: the synthesized header, then the file's bytes after its own.
        header = overlay.header
        start = b""
        if offset < len(header):
            start = header[offset : offset + size]
            if len(start) == size:
                return start
            offset, size = len(header), size - len(start)
        skip = offset - len(header) + overlay.header_length
        return start + self._read(opened, skip, size, in_thread)

    def _read(self, opened: OpenFile, offset: int, size: int, in_thread: bool) -> bytes:
        cached, file = opened.cached, opened.file
        try:
            if cached is not None:
                return cached.read(offset, size)
            if file is not None:
                return file.read(offset, size)
        except (CorruptChunk, OSError) as exc:
            if not in_thread and not opened.inline:
                raise NeedsThread from exc  # a cached copy keeps failing the same way
            error: Exception = exc
        else:  # no copy open: another reader is failing over, or found none
            with opened.lock:
                current = opened.cached or opened.file
            if current is None:
                raise LibraryError(errno.EIO, f"{opened.node.name}: no copy of it can be read")
            if not in_thread and not opened.inline and opened.cached is None:
                raise NeedsThread  # switched to a remote origin meanwhile
            return current.read(offset, size)
        with opened.lock:
            current = opened.cached or opened.file
            if current is not None and current is not (cached or file):
                return current.read(offset, size)  # another reader failed over meanwhile
            if isinstance(error, CorruptChunk) and cached is not None and opened.cached is cached:
                # Never wrong bytes: reported once, by the reader that fails over.
                self.events.publish(EventType.CHUNK_CORRUPT, origin=opened.track.origin,
                                    path=opened.track.relpath, error=str(error))  # fmt: skip
            return self._fail_over(opened, offset, size, error)

    def _fail_over(self, opened: OpenFile, offset: int, size: int, error: Exception) -> bytes:
        """Finish a read whose source failed from another replica of the same size,
        or from the cache; switch the handle to whatever worked."""
        name, failed, expected = opened.node.name, opened.track, opened.size
        origin = self.federation.origins.get(failed.origin)
        # Reads of a local disk bypass the federation, which counts the others.
        local = opened.file is not None and origin is not None and origin.inline
        if local and not isinstance(error, CorruptChunk | FileNotFoundError | FileChanged):
            self.federation.failed(failed.origin, error)
        # A damaged cached copy says nothing about its origin: fetch it again there.
        failed_id = failed.id if opened.cached is None else None
        log.warning("%s: reading from origin %r failed (%s); failing over", name,
                    failed.origin, error)  # fmt: skip
        opened.release()
        opened.inline = False  # whatever comes next may be remote
        for track_id in self._ranked_ids(opened.replicas):
            track = next(t for t in opened.replicas if t.id == track_id)
            if track.id == failed_id or not self.federation.online(track.origin):
                continue
            try:
                file = self._open_file(self.federation[track.origin], track.relpath)
                if (file.size, file.mtime_ns) != (expected, track.mtime_ns):
                    file.close()  # another version than the one catalogued: bytes may differ
                    continue
                data = file.read(offset, size)
            except OSError as exc:
                log.info("%s: replica on %r failed too: %s", name, track.origin, exc)
                continue
            opened.track, opened.file = track, file
            log.info("%s: now reading from origin %r", name, track.origin)
            return data
        for track in opened.replicas:
            cached = self._cached(track)
            if cached is None:
                continue
            if cached.size != expected:
                cached.close()  # releases its pins
                continue
            try:
                data = cached.read(offset, size)
            except (CorruptChunk, OSError):
                cached.close()
                continue
            opened.track, opened.cached = track, cached
            log.info("%s: now reading the cached copy", name)
            return data
        raise LibraryError(errno.EIO, f"{name}: {error}; no other copy can be read")

    def close(self, handle: int) -> None:
        opened = self._handles.pop(handle, None)
        if opened is not None:
            opened.release()

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
