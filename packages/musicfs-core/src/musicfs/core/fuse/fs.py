"""The FUSE skin: pyfuse3 operations over the `Library`.

This module only maps inodes and handles and translates errors (DESIGN §9):
node ids are inode numbers (the root node is ``pyfuse3.ROOT_INODE``), and every
`LibraryError` becomes a ``FUSEError`` with its errno. Nothing raises out of a
handler: an unexpected exception is logged once and answered with EIO (DESIGN §8).

The kernel is told to cache names, attributes and file pages (DESIGN §4);
`invalidate` makes it forget entries the scanner changed. Every write-type call
answers EROFS — the kernel does this itself on a ``ro`` mount, the handlers are
here so the answer does not depend on a mount option.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import pyfuse3
import trio

from musicfs.core.catalog.layout import ChangeKind, TreeChange
from musicfs.core.catalog.store import ROOT_NODE, Node
from musicfs.core.config.collections import Collection
from musicfs.core.content.library import Library, LibraryError
from musicfs.core.content.openfile import in_worker
from musicfs.core.fuse.latency import LatencyRecorder
from musicfs.core.namespace.virtual import (
    COLLECTIONS_DIR,
    PREFETCH_DIR,
    RESULTS_TTL,
    SEARCH_DIR,
    VirtualEntry,
    VirtualTree,
    is_virtual,
    mirror_entry,
    mirrored_node,
)

if TYPE_CHECKING:
    from musicfs.core.namespace.coverfiles import CoverFiles  # imported after READY (Pillow)

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_IO_SIZE = 128 * 1024
_DIR_MODE = stat.S_IFDIR | 0o555
_FILE_MODE = stat.S_IFREG | 0o444
_LINK_MODE = stat.S_IFLNK | 0o777
_COVER_OFFSET = 1 << 62  # readdir offsets of cover files: after every node id
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
_BLOCK = 512


def _fuse_op(func: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Count and time the call and turn every failure into a FUSEError with an errno."""
    name = func.__name__

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ops: MusicFSOperations = args[0]  # type: ignore[assignment]
        ops.op_counts[name] += 1
        started = time.perf_counter()
        try:
            return await func(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except LibraryError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("%s: %s", name, exc.strerror)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed unexpectedly; answering EIO", name)
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            ops.latency.record(name, time.perf_counter() - started)

    return wrapper


def mount_options(*, allow_other: bool = False, fsname: str = "musicfs") -> set[str]:
    """The pyfuse3 mount options MusicFS uses (see ENVIRONMENT.md for ones that break)."""
    options = {f"fsname={fsname}", "subtype=musicfs", "ro", "auto_unmount", "noatime"}
    if allow_other:
        options.add("allow_other")
    return options


class MusicFSOperations(pyfuse3.Operations):
    """pyfuse3 request handlers for one mounted library."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        library: Library,
        *,
        entry_timeout: float = 60.0,
        attr_timeout: float = 60.0,
        uid: int | None = None,
        gid: int | None = None,
        io_threads: int = 32,
        collections: tuple[Collection, ...] = (),
        covers: CoverFiles | None = None,
        prefetch_hint: Callable[[int], None] | None = None,
    ) -> None:
        """*prefetch_hint(node)* is called when a folder of /.prefetch is listed."""
        super().__init__()
        self.library = library
        self._io_threads = trio.CapacityLimiter(io_threads)
        self.entry_timeout = entry_timeout
        self.attr_timeout = attr_timeout
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.started_ns = time.time_ns()
        self.op_counts: Counter[str] = Counter()
        self.latency = LatencyRecorder()  # per operation, read by status and metrics
        self._readdir_fit = 64  # entries the kernel took in the last readdir call
        self._dir_handles = itertools.count(1)
        self._listings: dict[int, list[int]] = {}  # open directory handles
        # (size, mtime) each file was last opened with, while the kernel knows it:
        # its cached pages are of that content (see `open`).
        self._opened_as: dict[int, tuple[int, int]] = {}
        self.virtual = VirtualTree(library.catalog.path, collections)  # /.search, /.collections
        self.covers = covers  # cover.jpg & co. in folders of tracks (set before READY)
        self.prefetch_hint = prefetch_hint

    # -- attributes ------------------------------------------------------------

    def _attr_template(self) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.entry_timeout = self.entry_timeout
        attr.attr_timeout = self.attr_timeout
        attr.st_uid = self.uid
        attr.st_gid = self.gid
        attr.st_blksize = _IO_SIZE
        return attr

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        # Called once per entry in readdir: keep it to plain assignments.
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = node.id
        attr.entry_timeout = self.entry_timeout
        attr.attr_timeout = self.attr_timeout
        attr.st_uid = self.uid
        attr.st_gid = self.gid
        attr.st_blksize = _IO_SIZE
        if node.file_id is None:
            attr.st_mode = _DIR_MODE
            attr.st_nlink = 2
            mtime = node.mtime_ns or self.started_ns  # moves when its listing changes
        else:
            attr.st_mode = _FILE_MODE
            attr.st_nlink = 1
            attr.st_size = size = node.size
            attr.st_blocks = (size + _BLOCK - 1) // _BLOCK
            mtime = node.mtime_ns
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = mtime
        return attr

    # -- names and directories ----------------------------------------------------

    @_fuse_op
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        try:
            text = name.decode()
        except UnicodeDecodeError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        if is_virtual(parent_inode):
            return self._virtual_attr(await self._virtual_lookup(parent_inode, text))
        if parent_inode == ROOT_NODE and (top := self.virtual.top(text)) is not None:
            return self._virtual_attr(top)
        if self.covers is not None and text in self.covers.names:
            cover = await trio.to_thread.run_sync(self.covers.lookup, parent_inode, text)
            if cover is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self._virtual_attr(cover)
        return self._attr(self.library.lookup(parent_inode, text))

    @_fuse_op
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if is_virtual(inode):
            return self._virtual_attr(self._virtual(inode))
        return self._attr(self.library.node(inode))

    @_fuse_op
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if is_virtual(inode):
            if not self._virtual(inode).is_dir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
        elif not self.library.node(inode).is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = next(self._dir_handles)
        # directory, offset after which the listing ended, whether it holds tracks
        self._listings[fh] = [inode, -1, 0]
        return fh

    @_fuse_op
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        # start_id is the id of the last entry already returned (0 at the start);
        # ids grow monotonically, so paging survives concurrent changes. The
        # kernel's buffer takes a few hundred entries per call: fetch about as
        # many as the last call took. This loop runs once per entry of huge
        # directories, so it works on plain tuples and one reused attribute
        # object (readdir_reply copies it).
        listing = self._listings[fh]
        inode, ended_after, _ = listing
        if is_virtual(inode):
            await self._virtual_readdir(inode, start_id, token)
            return
        if start_id == ended_after:
            return  # the last call reached the end: spare the query
        if start_id >= _COVER_OFFSET:
            self._readdir_covers(listing, start_id, token)
            return
        attr = self._attr_template()
        reply = pyfuse3.readdir_reply
        after, want, taken = start_id, self._readdir_fit + 1, 0
        while True:
            rows = self.library.listing(inode, after, want)
            for node_id, name, file_id, size, mtime_ns in rows:
                attr.st_ino = node_id
                listing[2] |= file_id is not None
                if file_id is None:
                    attr.st_mode, attr.st_nlink, attr.st_size, attr.st_blocks = _DIR_MODE, 2, 0, 0
                    mtime = mtime_ns or self.started_ns
                else:
                    attr.st_mode, attr.st_nlink, attr.st_size = _FILE_MODE, 1, size
                    attr.st_blocks = (size + _BLOCK - 1) // _BLOCK
                    mtime = mtime_ns
                attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = mtime
                if not reply(token, name.encode(), attr, node_id):
                    self._readdir_fit = max(taken, 16)
                    return
                taken += 1
                after = node_id
            if len(rows) < want:
                listing[1] = after
                self._readdir_covers(listing, _COVER_OFFSET, token)
                return
            want *= 2

    @_fuse_op
    async def releasedir(self, fh: int) -> None:
        self._listings.pop(fh, None)

    @_fuse_op
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        # Every answer comes from the catalog; only what `open` noted is kept
        # per inode, and a forgotten inode has no cached pages left.
        for inode, _ in inode_list:
            self._opened_as.pop(inode, None)

    # -- virtual folders (/.search) ---------------------------------------------------

    def _known(self, inode: int) -> None:
        """ENOENT unless *inode* is a node or a virtual entry."""
        if is_virtual(inode):
            self._virtual(inode)
        else:
            self.library.node(inode)

    def _readdir_covers(self, listing: list[int], start: int, token: pyfuse3.ReaddirToken) -> None:
        """After a folder's tracks: its cover files (offsets from _COVER_OFFSET)."""
        if self.covers is None or not listing[2]:
            return
        for offset, entry in enumerate(self.covers.entries(listing[0]), _COVER_OFFSET + 1):
            if offset <= start:
                continue
            if not pyfuse3.readdir_reply(token, entry.name.encode(), self._virtual_attr(entry),
                                         offset):  # fmt: skip
                return
            listing[1] = offset

    def _virtual(self, inode: int) -> VirtualEntry:
        node = mirrored_node(inode)
        if node is not None and inode != PREFETCH_DIR:
            mirrored = mirror_entry(self.library.catalog, node)
            if mirrored is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return mirrored
        if self.covers is not None and self.covers.owns(inode):
            cover = self.covers.get(inode)
            if cover is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return cover
        entry = self.virtual.get(inode)
        if entry is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return entry

    def _virtual_attr(self, entry: VirtualEntry) -> pyfuse3.EntryAttributes:
        attr = self._attr_template()
        # Results change as the catalog does: let the kernel keep them briefly.
        attr.entry_timeout = attr.attr_timeout = min(self.entry_timeout, RESULTS_TTL)
        attr.st_ino = entry.inode
        if entry.is_dir:
            attr.st_mode, attr.st_nlink = _DIR_MODE, 2
        elif entry.is_file:
            attr.st_mode, attr.st_nlink, attr.st_size = _FILE_MODE, 1, entry.size
            attr.st_blocks = (entry.size + _BLOCK - 1) // _BLOCK
        else:
            attr.st_mode, attr.st_nlink = _LINK_MODE, 1
            attr.st_size = len(entry.target.encode())
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self.started_ns
        return attr

    async def _virtual_lookup(self, parent: int, name: str) -> VirtualEntry:
        node = mirrored_node(parent)
        if node is not None:
            mirrored = mirror_entry(self.library.catalog, self.library.lookup(node, name).id)
            if mirrored is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return mirrored
        folder = self._virtual(parent)
        if folder.inode in (SEARCH_DIR, COLLECTIONS_DIR):
            entry = self.virtual.folder(folder.inode, name)
            if entry is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return entry
        if not folder.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        results = await trio.to_thread.run_sync(self.virtual.results, folder)
        entry = results.get(name)
        if entry is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return entry

    async def _virtual_readdir(self, inode: int, start: int, token: pyfuse3.ReaddirToken) -> None:
        folder = self._virtual(inode)
        node = mirrored_node(inode)
        if node is not None:
            if start == 0 and node != ROOT_NODE and self.prefetch_hint is not None:
                self.prefetch_hint(node)  # listing a folder of /.prefetch asks for it
            catalog = self.library.catalog
            children = self.library.children(node, 0, 1_000_000)
            entries = [e for child in children if (e := mirror_entry(catalog, child.id))]
        elif folder.inode in (SEARCH_DIR, COLLECTIONS_DIR):
            entries = self.virtual.folders(folder.inode)
        else:
            entries = list((await trio.to_thread.run_sync(self.virtual.results, folder)).values())
        for offset, entry in enumerate(entries[start:], start + 1):
            if not pyfuse3.readdir_reply(
                token, entry.name.encode(), self._virtual_attr(entry), offset
            ):
                return

    # -- file contents --------------------------------------------------------------

    @_fuse_op
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        if self.covers is not None and self.covers.owns(inode):
            try:
                return pyfuse3.FileInfo(fh=self.covers.open(inode), keep_cache=True)
            except FileNotFoundError:
                raise pyfuse3.FUSEError(errno.ENOENT) from None
        # The read policy says what can be done here and what needs a worker
        # (content/openfile.py); a worker's request is bounded by its budget.
        opening = self.library.opening(inode)
        opened = opening.now()
        if opened is None:
            opened = await in_worker(opening, self._io_threads)
        handle = self.library.register(opened)
        # keep_cache while the node serves what it served at the last open: its
        # content only changes with its mtime (a rescan, a tag edit), and the
        # kernel's pages may be older than that change's invalidation, which
        # comes after the catalog shows it; then they are dropped here.
        served = (opened.node.size, opened.node.mtime_ns)
        keep = self._opened_as.get(inode) == served
        self._opened_as[inode] = served
        return pyfuse3.FileInfo(fh=handle, keep_cache=keep)

    @_fuse_op
    async def read(self, fh: int, off: int, size: int) -> bytes:
        if self.covers is not None and self.covers.owns_handle(fh):
            try:
                return self.covers.read(fh, off, size)
            except FileNotFoundError:  # evicted meanwhile
                raise pyfuse3.FUSEError(errno.EIO) from None
        reading = self.library.handle(fh).read(off, size)
        data = reading.now()  # a local disk or the cache answers on this thread
        if data is None:
            data = await in_worker(reading, self._io_threads)
        return data

    @_fuse_op
    async def release(self, fh: int) -> None:
        if self.covers is not None and self.covers.owns_handle(fh):
            self.covers.release(fh)
            return
        self.library.close(fh)

    @_fuse_op
    async def flush(self, fh: int) -> None:
        return None

    # -- everything else ---------------------------------------------------------------

    @_fuse_op
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        entries, total_bytes, _ = await trio.to_thread.run_sync(self.library.totals)
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = _BLOCK
        data.f_blocks = total_bytes // _BLOCK
        data.f_bfree = data.f_bavail = 0
        data.f_files = entries
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    @_fuse_op
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        if is_virtual(inode) and (target := self._virtual(inode).target):
            return target.encode()
        self._known(inode)
        raise pyfuse3.FUSEError(errno.EINVAL)  # the tree itself has no symlinks

    @_fuse_op
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        self._known(inode)
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    @_fuse_op
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        self._known(inode)
        return []

    @_fuse_op
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        self._known(inode)
        if mode & os.W_OK:
            raise pyfuse3.FUSEError(errno.EROFS)
        return True

    async def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        self.op_counts["write_refused"] += 1
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _read_only
    create = write = setxattr = removexattr = fsync = fsyncdir = _read_only

    # -- change notification ------------------------------------------------------------

    def invalidate(self, changes: Sequence[TreeChange]) -> None:
        """Make the kernel forget what *changes* made stale.

        Call this from a worker thread, never from a request handler: both
        invalidations block until the kernel has done them.
        """
        touched = {c.parent for c in changes} | {
            c.node for c in changes if c.kind is ChangeKind.REMOVED
        }
        self.library.forget_directories(touched)
        for change in changes:
            try:
                if change.kind is ChangeKind.REMOVED:
                    # Synchronous, so that once a rescan is done the kernel has
                    # forgotten every name it removed (safe off the trio thread).
                    pyfuse3.invalidate_entry(change.parent, change.name.encode())
                elif change.kind is ChangeKind.CHANGED:
                    # New content or attributes (a folder whose listing changed has
                    # a new mtime, which indexers compare): ask for them again.
                    pyfuse3.invalidate_inode(change.node)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTCONN):
                    log.debug("invalidating %s: %s", change, exc)
