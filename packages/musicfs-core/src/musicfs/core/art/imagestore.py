"""The disk cache of rendered cover images, apart from the audio tiers.

Under its folder, ``<h[:2]>/<h>/`` holds the three images (`ART_NAMES`) of
the source picture whose xxh3-128 is *h* (two albums with one picture share
them), made in a temporary folder and renamed into place whole. The store
keeps under its limit by dropping the least recently used pictures (the
folder's mtime is the use time, refreshed at most once a minute, so the order
survives a restart; one picture larger than the limit alone is kept). At start
the images on disk are indexed and leftovers of a crash removed.

Boundaries: stores and hands out images by picture hash; knows nothing of
albums, origins or rendering. Thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from musicfs.core.art.rendering import ART_NAMES, COVER

log = logging.getLogger(__name__)

_TOUCH_EVERY = 60.0  # seconds between two mtime refreshes of one image folder


class AlbumArt:
    """The three images of one album, on disk. *sizes* maps each name of
    `ART_NAMES` to its true size in bytes, *mtime_ns* is when they were made."""

    __slots__ = ("_dir", "digest", "mtime_ns", "sizes")

    def __init__(self, digest: str, directory: str, sizes: dict[str, int], mtime_ns: int) -> None:
        self.digest = digest
        self._dir = directory
        self.sizes = sizes
        self.mtime_ns = mtime_ns

    def __repr__(self) -> str:
        return f"AlbumArt({self.digest!r}, {self.sizes!r})"

    def read(self, name: str, offset: int, size: int) -> bytes:
        """Up to *size* bytes of image *name* at *offset* (fewer only at its end).

        Raises `FileNotFoundError` for a name not in `ART_NAMES`, or when the
        images were evicted since this object was handed out (ask again).
        """
        if name not in self.sizes:
            raise FileNotFoundError(f"no cover image called {name!r}")
        fd = os.open(os.path.join(self._dir, name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)


@dataclass(slots=True)
class _Entry:
    """One picture's three images in the store."""

    sizes: dict[str, int]
    mtime_ns: int
    touched: float  # when the folder's mtime was last set

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


class ImageStore:
    """Rendered images by picture hash under *root*, within *limit* bytes."""

    def __init__(self, root: Path, limit: int) -> None:
        self.root = root
        self.limit = limit
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._load()

    def usage(self) -> tuple[int, int]:
        """(pictures, bytes) in the store."""
        with self._lock:
            return len(self._entries), self._bytes

    def has(self, digest: str) -> bool:
        """Whether the images of *digest* are indexed (no disk access)."""
        with self._lock:
            return digest in self._entries

    def art(self, digest: str) -> AlbumArt | None:
        """The images of *digest*, counted as a use; None if not stored."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            self._entries.move_to_end(digest)
            now = time.time()
            directory = self._dir_of(digest)
            if now - entry.touched >= _TOUCH_EVERY:  # the use time that survives a restart
                entry.touched = now
                with contextlib.suppress(OSError):
                    os.utime(directory, (now, now))
            return AlbumArt(digest, str(directory), dict(entry.sizes), entry.mtime_ns)

    def present(self, digest: str) -> AlbumArt | None:
        """`art`, if its three files are still on disk (one stat each); images
        removed behind the store's back are dropped (to be made again)."""
        art = self.art(digest)
        if art is None:
            return None
        try:
            for name in ART_NAMES:
                os.stat(os.path.join(self._dir_of(digest), name))
        except OSError:
            with self._lock:
                self._drop_locked(digest)
            return None
        return art

    def put(self, digest: str, images: dict[str, bytes]) -> bool:
        """Keep *images* (name -> JPEG bytes) under *digest*, whole or not at all,
        and evict down to the limit (never the new one). False if they could not
        be indexed after all."""
        final = self._dir_of(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.parent / f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp"
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
        try:
            for name, blob in images.items():
                (temp / name).write_bytes(blob)
            with self._lock:
                if digest not in self._entries:
                    with contextlib.suppress(FileNotFoundError):
                        shutil.rmtree(final)  # a half-gone leftover
                    os.rename(temp, final)
                    entry = _entry_at(final)
                    if entry is None:
                        return False
                    self._entries[digest] = entry
                    self._bytes += entry.total
                    self._evict_locked(keep=digest)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        return True

    def _evict_locked(self, keep: str) -> None:
        """Drop least recently used pictures until the store is under its limit
        (*keep*, just made, stays even if it alone is over)."""
        freed = 0
        for digest in list(self._entries):
            if self._bytes <= self.limit:
                break
            if digest == keep:
                continue
            freed += self._drop_locked(digest)
        if freed:
            log.info("evicted %d bytes of cover art (limit %d)", freed, self.limit)

    def _drop_locked(self, digest: str) -> int:
        entry = self._entries.pop(digest, None)
        shutil.rmtree(self._dir_of(digest), ignore_errors=True)
        if entry is None:
            return 0
        self._bytes -= entry.total
        return entry.total

    def _dir_of(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def _load(self) -> None:
        """Index the images on disk, oldest use first; drop leftovers of a crash."""
        found: list[tuple[float, str, _Entry]] = []
        for shard in _subdirs(self.root):
            for directory in _subdirs(shard):
                entry = None if directory.name.startswith(".") else _entry_at(directory)
                if entry is None:
                    shutil.rmtree(directory, ignore_errors=True)
                    continue
                found.append((entry.touched, directory.name, entry))
        found.sort(key=lambda item: item[0])
        for _, digest, entry in found:
            self._entries[digest] = entry
            self._bytes += entry.total


def _entry_at(directory: Path) -> _Entry | None:
    """The entry of an image folder, None unless all three images are there."""
    try:
        stats = {name: os.stat(directory / name) for name in ART_NAMES}
        touched = os.stat(directory).st_mtime
    except OSError:
        return None
    sizes = {name: st.st_size for name, st in stats.items()}
    return _Entry(sizes, stats[COVER].st_mtime_ns, touched)


def _subdirs(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
