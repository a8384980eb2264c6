"""Open files of the mount: tracks through the `Library`, cover images through `CoverFiles`.

Handles say which kind they are (`musicfs.core.namespace.inodes`), so a read
or release dispatches on the handle alone.

Tracks: the read policy (`musicfs.core.content.openfile`) answers what it can
without waiting (a local disk, a cached copy) on the FUSE thread, where a thread
hop would cost more than the read (ENVIRONMENT.md); the rest goes on in a worker
thread, bounded in number and by the request's budget (`in_worker`).
"""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING, TypeVar

import trio

from musicfs.core.content.library import Library, LibraryError
from musicfs.core.content.openfile import Reading, in_worker
from musicfs.core.namespace.inodes import is_cover_handle

if TYPE_CHECKING:
    from musicfs.core.namespace.coverfiles import CoverFiles  # imported after READY (Pillow)

log = logging.getLogger(__name__)

R = TypeVar("R")


class OpenFiles:
    """The open files of one mount."""

    def __init__(self, library: Library, *, io_threads: int) -> None:
        self.library = library
        self._io_threads = trio.CapacityLimiter(io_threads)
        # (size, mtime) each file was last opened with, while the kernel knows it:
        # its cached pages are of that content (see `open_track`).
        self._opened_as: dict[int, tuple[int, int]] = {}

    def forget(self, inode: int) -> None:
        """The kernel forgot *inode*: it has no cached pages of it left."""
        self._opened_as.pop(inode, None)

    # -- cover files ---------------------------------------------------------------------

    @staticmethod
    def open_cover(covers: CoverFiles, inode: int) -> int:
        try:
            return covers.open(inode)
        except FileNotFoundError:
            raise LibraryError(errno.ENOENT, "cover file changed since it was listed") from None

    async def read(
        self, covers: CoverFiles | None, fh: int, off: int, size: int
    ) -> bytes | memoryview:
        if covers is not None and is_cover_handle(fh):
            return self.read_cover(covers, fh, off, size)
        return await self.read_track(fh, off, size)

    def read_cover(self, covers: CoverFiles, fh: int, off: int, size: int) -> bytes:
        try:
            return covers.read(fh, off, size)
        except FileNotFoundError:  # evicted meanwhile
            raise LibraryError(errno.EIO, "cover file evicted while open") from None

    def release(self, covers: CoverFiles | None, fh: int) -> None:
        if covers is not None and is_cover_handle(fh):
            covers.release(fh)
        else:
            self.release_track(fh)

    # -- tracks: the read policy (content/openfile.py) says what runs here ---------------

    async def open_track(self, inode: int) -> tuple[int, bool]:
        """A handle to track *inode*, and whether the kernel may keep its pages."""
        opening = self.library.opening(inode)
        opened = opening.now()  # a local disk or an exact cached copy: on this thread
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
        return handle, keep

    async def read_track(self, fh: int, off: int, size: int) -> bytes | memoryview:
        reading = self.library.handle(fh).read(off, size)
        data = reading.now()  # a local disk or the cache answers on this thread
        if data is None:
            data = await in_worker(reading, self._io_threads)
        return data

    def read_now(self, fh: int, off: int, size: int) -> bytes | memoryview | Reading:
        """A read of track handle *fh*: its bytes if they need no waiting (a local
        disk, the cache), else the read to finish with `finish_read`."""
        reading = self.library.handle(fh).read(off, size)
        data = reading.now()
        return reading if data is None else data

    async def finish_read(self, reading: Reading) -> bytes:
        return await in_worker(reading, self._io_threads)

    def release_track(self, fh: int) -> None:
        self.library.close(fh)
