"""Cover images as files of the tree (FR-16): ``cover.jpg``, ``cover-medium.jpg``
and ``cover-thumb.jpg`` in every folder of tracks that has art.

The FUSE-facing side of `musicfs.core.art.covers.CoverStore`: it gives the images
inode numbers (see `musicfs.core.namespace.inodes`), true sizes for stat, and
handles for reads. A folder whose art is not known yet is looked at in the
background the first time it is listed; the kernel is then told to forget the
listing (*on_found*), so the next ``ls`` shows the covers. A lookup of
``cover.jpg`` waits for the answer instead (call `lookup` in a worker thread).
After a scan, `warm` looks ahead, in the same background, at the folders it
changed that hold a track with a picture in its tags (the catalog knows which),
while the store has room: their covers are then listed from the first ``ls``,
also in the next session.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from musicfs.core.art.covers import CoverStore
from musicfs.core.art.imagestore import AlbumArt
from musicfs.core.art.rendering import ART_NAMES
from musicfs.core.catalog.store import Catalog
from musicfs.core.namespace.inodes import COVER_FIRST, COVER_HANDLE_FIRST
from musicfs.core.namespace.virtual import VirtualEntry

log = logging.getLogger(__name__)


class CoverFiles:
    """Cover files of the tree's folders, over one `CoverStore`."""

    names = ART_NAMES

    def __init__(
        self,
        store: CoverStore,
        catalog_path: str | Path,
        on_found: Callable[[int], None] | None = None,
        on_error: Callable[[Exception], object] | None = None,
    ) -> None:
        """*on_error*: told of each look for art that failed (the mount counts them
        for ``musicfs status``); else it is logged."""
        self.store = store
        self.catalog_path = Path(catalog_path)
        self.on_found = on_found
        self.on_error = on_error
        self._lock = threading.Lock()
        self._inodes: dict[tuple[int, str], int] = {}
        self._entries: dict[int, tuple[VirtualEntry, int]] = {}  # inode -> entry, folder
        self._handles: dict[int, tuple[AlbumArt, str]] = {}
        self._next_inode = itertools.count(COVER_FIRST)
        self._next_handle = itertools.count(COVER_HANDLE_FIRST)
        self._pending: set[int] = set()
        self._workers = ThreadPoolExecutor(2, thread_name_prefix="musicfs-covers")
        # Looking ahead has its own thread and queue: a listing never waits behind it.
        self._warming: set[int] = set()
        self._warmer = ThreadPoolExecutor(1, thread_name_prefix="musicfs-covers-ahead")

    def close(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._warmer.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    def entries(self, folder: int) -> list[VirtualEntry]:
        """The cover files of a folder of tracks, if its art is known (cheap: the
        FUSE thread). Unknown art is looked for in the background."""
        art = self.store.known(_key(folder))
        if art is None:
            if not self.store.has_answer(_key(folder)):
                self._look_later(folder)
            return []
        return self._files(folder, art)

    def warm(self, folders: Iterable[int]) -> None:
        """Look in the background for the art of those *folders* whose art is
        not known and that hold a track with embedded art, while the store is
        under its limit (the images would be evicted again otherwise)."""
        for folder in folders:
            if not self.store.has_answer(_key(folder)):
                self._look_later(folder, embedded_only=True)

    def lookup(self, folder: int, name: str) -> VirtualEntry | None:
        """The cover file *name* of *folder* (blocking: a worker thread)."""
        if name not in ART_NAMES:
            return None
        art = self._art(folder)
        return None if art is None else next(e for e in self._files(folder, art) if e.name == name)

    def get(self, inode: int) -> VirtualEntry | None:
        with self._lock:
            found = self._entries.get(inode)
        return None if found is None else found[0]

    def open(self, inode: int) -> int:
        """A handle to read cover file *inode*; FileNotFoundError if it is gone."""
        with self._lock:
            found = self._entries.get(inode)
        if found is None:
            raise FileNotFoundError(inode)
        entry, folder = found
        art = self.store.known(_key(folder))
        if art is None or art.sizes.get(entry.name) != entry.size:
            raise FileNotFoundError(inode)  # changed since it was listed: look again
        handle = next(self._next_handle)
        with self._lock:
            self._handles[handle] = (art, entry.name)
        return handle

    def read(self, handle: int, offset: int, size: int) -> bytes:
        art, name = self._handles[handle]
        return art.read(name, offset, size)

    def release(self, handle: int) -> None:
        with self._lock:
            self._handles.pop(handle, None)

    def _art(self, folder: int, *, embedded_only: bool = False) -> AlbumArt | None:
        key = _key(folder)
        art = self.store.known(key)
        if art is not None or self.store.has_answer(key):
            return art
        with Catalog.open(self.catalog_path, readonly=True) as catalog:
            tracks = [
                track
                for node in catalog.children(folder, 0, 10_000)
                if node.file_id is not None and (track := catalog.track(node.file_id))
            ]
        if embedded_only:
            if not any(track.tags.has_art for track in tracks):
                return None
            if self.store.usage()[1] >= self.store.limit:
                return None
        return self.store.album_art(key, tracks) if tracks else None

    def _look_later(self, folder: int, *, embedded_only: bool = False) -> None:
        pending = self._warming if embedded_only else self._pending
        with self._lock:
            if folder in pending:
                return
            pending.add(folder)

        def look() -> None:
            try:
                art = self._art(folder, embedded_only=embedded_only)
                if art is not None and self.on_found is not None:
                    self.on_found(folder)
            except Exception as exc:  # a cover is a nicety: never more than a log line
                if self.on_error is None:
                    log.exception("looking for the art of folder %d failed", folder)
                else:
                    self.on_error(exc)
            finally:
                with self._lock:
                    pending.discard(folder)

        (self._warmer if embedded_only else self._workers).submit(look)

    def _files(self, folder: int, art: AlbumArt) -> list[VirtualEntry]:
        out = []
        with self._lock:
            for name in ART_NAMES:
                inode = self._inodes.get((folder, name))
                if inode is None:
                    inode = self._inodes[(folder, name)] = next(self._next_inode)
                entry = VirtualEntry(inode, folder, name, size=art.sizes[name])
                self._entries[inode] = (entry, folder)
                out.append(entry)
        return out


def _key(folder: int) -> str:
    return f"node:{folder}"
