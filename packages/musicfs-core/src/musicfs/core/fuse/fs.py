"""The FUSE skin: pyfuse3 operations over the `Namespace`.

This module only translates (DESIGN §9): each pyfuse3 call becomes one
namespace call, namespace `Attributes` become ``EntryAttributes``, and every
`LibraryError` becomes a ``FUSEError`` with its errno. Which source an inode
comes from, and what it looks like, is the namespace's business. Nothing
raises out of a handler: an unexpected exception is logged once and answered
with EIO (DESIGN §8).

The kernel is told to cache names, attributes and file pages (DESIGN §4);
`invalidate` makes it forget entries the scanner changed. Every write-type call
answers EROFS — the kernel does this itself on a ``ro`` mount, the handlers are
here so the answer does not depend on a mount option.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import pyfuse3
import trio

from musicfs.core.catalog.layout import ChangeKind, TreeChange
from musicfs.core.config.collections import Collection
from musicfs.core.content.library import Library, LibraryError
from musicfs.core.fuse.latency import LatencyRecorder
from musicfs.core.namespace.entries import BLOCK, AttrValues
from musicfs.core.namespace.inodes import is_playlist_file
from musicfs.core.namespace.namespace import Namespace

if TYPE_CHECKING:
    from musicfs.core.namespace.coverfiles import CoverFiles  # imported after READY (Pillow)

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_IO_SIZE = 128 * 1024
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
# Answers to a request that names something wrong: the caller's doing, not worth a log line.
_QUIET = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EINVAL, errno.ELOOP})


def _fuse_op(func: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Count and time the call and turn every failure into a FUSEError with an errno."""
    name = func.__name__

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ops: MusicFSOperations = args[0]  # type: ignore[assignment]
        ops.op_counts[name] += 1
        started = perf_counter()
        try:
            return await func(*args, **kwargs)
        except Exception as exc:
            raise _fuse_error(name, exc) from None
        finally:
            ops.latency.record(name, perf_counter() - started)

    return wrapper


def _fuse_error(name: str, exc: Exception) -> pyfuse3.FUSEError:
    """What the kernel is answered when operation *name* raised *exc* (logged
    unless it is the caller's doing)."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc
    if isinstance(exc, LibraryError):
        if exc.errno not in _QUIET:
            log.warning("%s: %s", name, exc.strerror)
        return pyfuse3.FUSEError(exc.errno or errno.EIO)
    log.error("%s failed unexpectedly; answering EIO", name, exc_info=exc)
    return pyfuse3.FUSEError(errno.EIO)


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
        self.namespace = Namespace(
            library,
            entry_timeout=entry_timeout,
            attr_timeout=attr_timeout,
            collections=collections,
            covers=covers,
            prefetch_hint=prefetch_hint,
            io_threads=io_threads,
        )
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.op_counts: Counter[str] = Counter()
        self.latency = LatencyRecorder()  # per operation, read by status and metrics
        # The answer of every lookup and getattr of a catalog node: pyfuse3 copies
        # it before the next request runs, so one object is filled again and again,
        # only in the fields that differ from the last answer (each setter is a
        # call; a time costs three). _last: mode, nlink, mtime, timeouts filled.
        self._answer = self._attr((0, 0, 0, 0, 0, 0, 0.0, 0.0))
        self._last: list[int | float] = [0, 0, 0, 0.0, 0.0]

    @property
    def covers(self) -> CoverFiles | None:
        """cover.jpg & co. in folders of tracks (set before READY)."""
        return self.namespace.covers

    @covers.setter
    def covers(self, covers: CoverFiles | None) -> None:
        self.namespace.covers = covers

    def _attr(self, attrs: AttrValues) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_uid, attr.st_gid, attr.st_blksize = self.uid, self.gid, _IO_SIZE
        (attr.st_ino, attr.st_mode, attr.st_nlink, attr.st_size, attr.st_blocks, mtime,
         attr.entry_timeout, attr.attr_timeout) = attrs  # fmt: skip
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = mtime
        return attr

    # -- names and directories ----------------------------------------------------

    def _answer_with(self, attrs: AttrValues) -> pyfuse3.EntryAttributes:
        """The shared answer object filled with *attrs* (return it at once, with
        no await in between: the next request refills it)."""
        attr, last = self._answer, self._last
        ino, mode, nlink, attr.st_size, attr.st_blocks, mtime, entry_ttl, attr_ttl = attrs
        attr.st_ino = ino
        if mode != last[0] or nlink != last[1]:
            attr.st_mode = last[0] = mode
            attr.st_nlink = last[1] = nlink
        if mtime != last[2]:
            attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = last[2] = mtime
        if entry_ttl != last[3] or attr_ttl != last[4]:
            attr.entry_timeout = last[3] = entry_ttl
            attr.attr_timeout = last[4] = attr_ttl
        return attr

    # lookup and getattr are the most frequent requests (a first stat is one
    # lookup): counted and timed inline rather than by _fuse_op's second coroutine.

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        started = perf_counter()
        try:
            try:
                text = name.decode()
            except UnicodeDecodeError:
                raise pyfuse3.FUSEError(errno.ENOENT) from None
            namespace = self.namespace
            found = namespace.lookup_now(parent_inode, text)
            if found is not None:
                return self._answer_with(found)
            return self._attr(namespace.attributes(await namespace.lookup(parent_inode, text)))
        except Exception as exc:
            raise _fuse_error("lookup", exc) from None
        finally:
            self.op_counts["lookup"] += 1
            self.latency.record("lookup", perf_counter() - started)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        started = perf_counter()
        try:
            if is_playlist_file(inode):  # made from the catalog: in a worker thread
                return self._attr(await self.namespace.playlist_stat(inode))
            return self._answer_with(self.namespace.stat(inode))
        except Exception as exc:
            raise _fuse_error("getattr", exc) from None
        finally:
            self.op_counts["getattr"] += 1
            self.latency.record("getattr", perf_counter() - started)

    @_fuse_op
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return self.namespace.opendir(inode)

    @_fuse_op
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        # One attribute object for the whole call (readdir_reply copies it).
        attr = self._attr((0, 0, 0, 0, 0, 0, 0.0, 0.0))
        reply = functools.partial(pyfuse3.readdir_reply, token)
        await self.namespace.readdir(fh, start_id, attr, reply)

    @_fuse_op
    async def releasedir(self, fh: int) -> None:
        self.namespace.releasedir(fh)

    @_fuse_op
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        self.namespace.forget(inode for inode, _ in inode_list)

    @_fuse_op
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return self.namespace.readlink(inode).encode()

    # -- file contents --------------------------------------------------------------

    @_fuse_op
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        fh, keep_cache = await self.namespace.open(inode)
        return pyfuse3.FileInfo(
            fh=fh, keep_cache=keep_cache, direct_io=self.namespace.direct_io(fh)
        )

    # pyfuse3 replies from any buffer (PyObject_GetBuffer), though typed bytes:
    # a view of the cache's pread goes out with no copy.
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        # A request per MiB of a file (the read-ahead the mount sets): timed
        # inline like lookup, and what a local disk or the cache answers at
        # once is not awaited.
        started = perf_counter()
        try:
            namespace = self.namespace
            data = namespace.read_now(fh, off, size)
            if isinstance(data, (bytes, memoryview)):
                return data
            return await namespace.finish_read(data)
        except Exception as exc:
            raise _fuse_error("read", exc) from None
        finally:
            self.op_counts["read"] += 1
            self.latency.record("read", perf_counter() - started)

    @_fuse_op
    async def release(self, fh: int) -> None:
        self.namespace.release(fh)

    @_fuse_op
    async def flush(self, fh: int) -> None:
        return None

    # -- everything else ---------------------------------------------------------------

    @_fuse_op
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        entries, total_bytes, _ = await trio.to_thread.run_sync(self.library.totals)
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK
        data.f_blocks = total_bytes // BLOCK
        data.f_bfree = data.f_bavail = 0
        data.f_files = entries
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    @_fuse_op
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        self.namespace.resolve(inode)  # ENOENT for an unknown inode
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    @_fuse_op
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        self.namespace.resolve(inode)
        return []

    @_fuse_op
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        self.namespace.resolve(inode)
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
        made_from_tree = self.namespace.changed(changes)
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
        for inode in made_from_tree:  # playlists: their size and mtime follow the tree
            try:
                pyfuse3.invalidate_inode(inode)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTCONN):
                    log.debug("invalidating playlist inode %d: %s", inode, exc)
