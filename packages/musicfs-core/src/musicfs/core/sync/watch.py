"""Live change detection for local origins (FR-10, seed ``OriginInstance.watch()``).

`LocalWatch` puts an inotify watch on every folder of an origin and turns what
the kernel reports into `WatchEvent`s (added, modified, removed, renamed).
`WatchEvent`s are grouped into `ScanRequest`s (both in `musicfs.core.sync.changes`):
the folders whose files changed (rescanned one level), the folders that appeared
(walked completely) and the folders that went away (their files dropped). The
scanner does the rest, so a change reaches the tree through the same code as a
full rescan.

inotify does not see changes other machines make on a network share: NFS/SMB
origins are polled instead (`[scan] poll_interval`). When the kernel's event
queue overflows, or a watch cannot be added (``fs.inotify.max_user_watches``),
the watcher asks for a full rescan rather than miss a change.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as F

from musicfs.core.catalog.store import join_relpath
from musicfs.core.model import catalog_name
from musicfs.core.origins.base import listed_name
from musicfs.core.sync.changes import WatchEvent, WatchKind

__all__ = ["LocalWatch"]

log = logging.getLogger(__name__)

_DIR_MASK = (
    F.CREATE | F.DELETE | F.CLOSE_WRITE | F.MOVED_FROM | F.MOVED_TO | F.ATTRIB
    | F.DELETE_SELF | F.MOVE_SELF | F.ONLYDIR
)  # fmt: skip


def _as_listed(event: WatchEvent) -> WatchEvent:
    old = None if event.old_relpath is None else catalog_name(event.old_relpath)
    return WatchEvent(event.kind, catalog_name(event.relpath), event.is_dir, old)


class LocalWatch:
    """inotify watches over one local origin folder, read from one thread.

    Use `events` in a worker thread; `close` from any thread ends it.
    """

    def __init__(self, root: str | Path, include_hidden: bool = False) -> None:
        """*include_hidden*: follow files and folders named ``.*`` too (AppleDouble
        ``._*`` never), as the origin lists them (`listed_name`)."""
        self.root = str(root)
        self.include_hidden = include_hidden
        self._inotify = INotify()
        self._dirs: dict[int, str] = {}  # watch descriptor -> relative folder
        self._closed = threading.Event()
        self.overflowed = False
        self.add_tree("")

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._inotify.close()

    @property
    def watched(self) -> int:
        """Folders watched; 0 once the origin's own folder is gone or moved."""
        return len(self._dirs)

    def add_tree(self, reldir: str) -> None:
        """Watch *reldir* and every folder below it (hidden ones only with `include_hidden`)."""
        stack = [reldir]
        while stack:
            current = stack.pop()
            path = os.path.join(self.root, current) if current else self.root
            try:
                wd = self._inotify.add_watch(path, _DIR_MASK)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    log.warning(
                        "cannot watch %s: inotify watch limit reached (raise "
                        "fs.inotify.max_user_watches); changes there need a rescan",
                        path,
                    )
                    self.overflowed = True
                    return
                continue  # vanished meanwhile, or unreadable: the scan reports it
            self._dirs[wd] = current
            try:
                with os.scandir(path) as entries:
                    for entry in entries:
                        if listed_name(entry.name, self.include_hidden) and entry.is_dir(
                            follow_symlinks=False
                        ):
                            stack.append(join_relpath(current, entry.name))
            except OSError:
                continue

    def events(self, timeout_ms: int = 1000, settle_ms: int = 200) -> list[WatchEvent]:
        """Wait up to *timeout_ms* for changes; return them after *settle_ms* of quiet.

        Returns [] on timeout or after `close`. Sets `overflowed` when the
        kernel dropped events (the caller should then rescan everything).
        """
        try:
            raw = self._inotify.read(timeout=timeout_ms, read_delay=settle_ms)
        except (OSError, ValueError):  # closed from another thread
            return []
        out: list[WatchEvent] = []
        moved_from: dict[int, WatchEvent] = {}
        for event in raw:
            if event.mask & F.Q_OVERFLOW:
                log.warning("inotify queue overflowed under %s; rescanning it all", self.root)
                self.overflowed = True
                continue
            reldir = self._dirs.get(event.wd)
            if reldir is None:
                continue
            if event.mask & (F.DELETE_SELF | F.MOVE_SELF | F.IGNORED):
                if event.mask & F.IGNORED:
                    del self._dirs[event.wd]
                elif not reldir:
                    # The origin's own folder was moved away (a disk unmounted, a
                    # folder renamed): what is watched is no longer the origin.
                    log.warning("%s was moved or deleted", self.root)
                    self._dirs.clear()
                    return out
                continue
            if not listed_name(event.name, self.include_hidden):
                continue
            relpath = join_relpath(reldir, event.name)
            is_dir = bool(event.mask & F.ISDIR)
            if event.mask & F.MOVED_FROM:
                moved_from[event.cookie] = WatchEvent(WatchKind.REMOVED, relpath, is_dir)
                out.append(moved_from[event.cookie])
            elif event.mask & F.MOVED_TO:
                origin_event = moved_from.pop(event.cookie, None)
                if origin_event is not None:
                    out.remove(origin_event)
                    out.append(WatchEvent(WatchKind.RENAMED, relpath, is_dir, origin_event.relpath))
                else:
                    out.append(WatchEvent(WatchKind.ADDED, relpath, is_dir))
                if is_dir:
                    self.add_tree(relpath)
            elif event.mask & F.CREATE:
                out.append(WatchEvent(WatchKind.ADDED, relpath, is_dir))
                if is_dir:
                    self.add_tree(relpath)
            elif event.mask & F.DELETE:
                out.append(WatchEvent(WatchKind.REMOVED, relpath, is_dir))
            elif event.mask & (F.CLOSE_WRITE | F.ATTRIB) and not is_dir:
                out.append(WatchEvent(WatchKind.MODIFIED, relpath, is_dir))
        # Paths here are the OS's own (watched by them); the scanner's are as
        # the origin lists them (names that are not UTF-8 as `catalog_name`).
        return [_as_listed(event) for event in out]
