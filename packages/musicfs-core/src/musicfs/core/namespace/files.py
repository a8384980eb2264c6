"""Open files of the mount: tracks through the `Library`, cover images through `CoverFiles`.

Handles say which kind they are (`musicfs.core.namespace.inodes`), so a read
or release dispatches on the handle alone.

Tracks: reads of a local disk are done inline on the FUSE thread (a thread
hop costs more than the read, see ENVIRONMENT.md); everything that may touch
a network runs in a worker thread, bounded in number and in time. This is
where the track read path plugs in: `open_track`, `read_track` and
`release_track` are the only callers of the `Library`'s open and read calls.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from musicfs.core.content.library import Library, LibraryError, NeedsThread, OpenFile, OpenPlan
from musicfs.core.namespace.inodes import is_cover_handle

if TYPE_CHECKING:
    from musicfs.core.namespace.coverfiles import CoverFiles  # imported after READY (Pillow)

log = logging.getLogger(__name__)

R = TypeVar("R")


class OpenFiles:
    """The open files of one mount."""

    def __init__(self, library: Library, *, request_timeout: float, io_threads: int) -> None:
        self.library = library
        self.request_timeout = request_timeout
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

    async def read(self, covers: CoverFiles | None, fh: int, off: int, size: int) -> bytes:
        if covers is not None and is_cover_handle(fh):
            try:
                return covers.read(fh, off, size)
            except FileNotFoundError:  # evicted meanwhile
                raise LibraryError(errno.EIO, "cover file evicted while open") from None
        return await self.read_track(fh, off, size)

    def release(self, covers: CoverFiles | None, fh: int) -> None:
        if covers is not None and is_cover_handle(fh):
            covers.release(fh)
        else:
            self.release_track(fh)

    # -- tracks: the track read path plugs in here (issue 14, "one read policy") -------

    async def open_track(self, inode: int) -> tuple[int, bool]:
        """A handle to track *inode*, and whether the kernel may keep its pages."""
        plan = self.library.plan_open(inode)
        if plan.inline:
            opened = self.library.open_plan(plan)
        else:
            opened = await self._open_in_thread(plan)
        handle = self.library.register(opened)
        # keep_cache while the node serves what it served at the last open: its
        # content only changes with its mtime (a rescan, a tag edit), and the
        # kernel's pages may be older than that change's invalidation, which
        # comes after the catalog shows it; then they are dropped here.
        served = (plan.node.size, plan.node.mtime_ns)
        keep = self._opened_as.get(inode) == served
        self._opened_as[inode] = served
        return handle, keep

    async def read_track(self, fh: int, off: int, size: int) -> bytes:
        if self.library.inline(fh):
            try:
                return self.library.read(fh, off, size, in_thread=False)
            except NeedsThread:
                pass  # failing over to an origin: not on this thread
        origin = self.library.reading_from(fh)
        return await self._in_thread(self.library.read, fh, off, size, origin=origin)

    def release_track(self, fh: int) -> None:
        self.library.close(fh)

    async def _in_thread(self, work: Callable[..., R], *args: Any, origin: str | None = None) -> R:
        """Run blocking origin I/O in a worker thread, bounded in number and time.

        The origins time out on their own; this is the backstop that keeps a
        FUSE request from hanging on one that does not: after `request_timeout`
        the caller gets EIO, the thread is left to finish alone, and *origin*
        counts as offline, so the next requests fail over (or fail) at once
        instead of waiting as long again.
        """
        with trio.move_on_after(self.request_timeout):
            return await trio.to_thread.run_sync(
                work, *args, limiter=self._io_threads, abandon_on_cancel=True
            )
        if origin is not None:
            self.library.timed_out(origin, self.request_timeout)
        raise LibraryError(
            errno.EIO,
            f"{work.__name__} took more than {self.request_timeout:.0f} s; answering EIO",
        )

    async def _open_in_thread(self, plan: OpenPlan) -> OpenFile:
        """`_in_thread` for opens: an open that finishes after its caller got EIO
        closes what it opened (else it stays open on the origin for good)."""
        lock = threading.Lock()
        gave_up = False

        def open_plan() -> OpenFile:  # the name the timeout warning shows
            opened = self.library.open_plan(plan)
            with lock:
                if gave_up:
                    opened.release()
            return opened

        try:
            return await self._in_thread(open_plan, origin=plan.replicas[0].origin)
        except LibraryError:
            with lock:
                gave_up = True
            raise
