"""The library: what is at a place in the tree, and what bytes it has.

This is the semantic core under the FUSE skin (DESIGN §9). It answers in terms
of catalog nodes and open handles, and signals failure with `LibraryError`s
that carry an errno; it knows nothing of pyfuse3 or inode bookkeeping, so the
binding can be swapped and everything here can be tested without a mount.

Reads of local origins are done inline with ``os.pread``: a thread hop per
request costs more than the read itself (see ENVIRONMENT.md).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from musicfs.core.cas import CorruptChunk
from musicfs.core.catalog import ROOT_NODE, Catalog, Node, Track
from musicfs.core.content import CachedFile, ContentCache, Version
from musicfs.core.hotcache import DirectoryCache
from musicfs.core.origins import LocalOrigin

log = logging.getLogger(__name__)


class LibraryError(OSError):
    """A failed request, with the errno the caller should see."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)


def version_of(track: Track) -> Version:
    return Version(track.origin, track.relpath, track.size, track.mtime_ns, track.format)


def not_found(what: str) -> LibraryError:
    return LibraryError(errno.ENOENT, f"{what}: no such entry")


@dataclass(slots=True)
class OpenFile:
    """An open track: the origin file descriptor and what the catalog promised."""

    node: Node
    track: Track
    fd: int  # -1 when reading from the cache
    cached: CachedFile | None = None


class Library:
    """Answers questions about the tree from one catalog connection."""

    def __init__(
        self,
        catalog: Catalog,
        origins: Mapping[str, LocalOrigin],
        *,
        on_stale: Callable[[Track], None] | None = None,
        content: ContentCache | None = None,
        on_fill: Callable[[Track], None] | None = None,
    ) -> None:
        """*on_stale* is called when an opened file no longer matches its catalog
        row; *on_fill* when a file opened from its origin is not in *content* yet."""
        self.catalog = catalog
        self.origins = dict(origins)
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

    def open(self, node_id: int) -> int:
        """Open a track for reading; return a handle for `read` and `close`.

        From the origin when it answers (and then, with a content cache, ask for
        a copy to be kept); from the cached copy when the origin does not.
        """
        node = self.node(node_id)
        if node.file_id is None:
            raise LibraryError(errno.EISDIR, f"{node.name}: is a directory")
        track = self.catalog.track(node.file_id)
        if track is None:  # removed between lookup and open
            raise not_found(node.name)
        origin = self.origins.get(track.origin)
        if origin is None:
            raise LibraryError(errno.EIO, f"{node.name}: origin {track.origin!r} is not configured")
        try:
            fd = origin.open(track.relpath)
        except FileNotFoundError:
            where = origin.local_path(track.relpath)
            if os.path.isdir(origin.location):
                # The origin is there but the file is not: the tree is behind (a
                # rescan is on its way); it is gone, not unavailable.
                if self.on_stale is not None:
                    self.on_stale(track)
                raise LibraryError(errno.ENOENT, f"{node.name}: {where} is gone") from None
            return self._open_cached(node, track, f"{where} is unreachable")
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise LibraryError(errno.EACCES, f"{node.name}: {exc}") from None
            return self._open_cached(node, track, str(exc))
        st = os.fstat(fd)
        if (st.st_size, st.st_mtime_ns) != (track.size, track.mtime_ns) and self.on_stale:
            # Changed behind our back: serve what is there now, and rescan so the
            # tree (and the size the kernel was told) catches up.
            self.on_stale(track)
        elif (
            self.content is not None
            and self.on_fill is not None
            and not self.content.has(version_of(track))
        ):
            self.on_fill(track)
        handle = next(self._next_handle)
        self._handles[handle] = OpenFile(node, track, fd)
        return handle

    def _open_cached(self, node: Node, track: Track, why: str) -> int:
        cached = self.content.open(version_of(track)) if self.content is not None else None
        if cached is None:
            raise LibraryError(errno.EIO, f"{node.name}: {why}, and it is not cached")
        handle = next(self._next_handle)
        self._handles[handle] = OpenFile(node, track, -1, cached)
        return handle

    def read(self, handle: int, offset: int, size: int) -> bytes:
        opened = self._handles.get(handle)
        if opened is None:
            raise LibraryError(errno.EBADF, f"handle {handle} is not open")
        if opened.cached is not None:
            try:
                return opened.cached.read(offset, size)
            except CorruptChunk as exc:  # never serve wrong bytes
                raise LibraryError(errno.EIO, f"{opened.node.name}: {exc}") from None
        try:
            return os.pread(opened.fd, size, offset)
        except OSError as exc:
            raise LibraryError(errno.EIO, f"{opened.node.name}: {exc}") from None

    def close(self, handle: int) -> None:
        opened = self._handles.pop(handle, None)
        if opened is None:
            return
        if opened.fd >= 0:
            os.close(opened.fd)
        if opened.cached is not None:
            opened.cached.close()

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
