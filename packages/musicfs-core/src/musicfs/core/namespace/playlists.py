"""``/.playlists/NAME.m3u8``: every stored playlist and every smart collection as
an M3U8 file with the tracks' current paths in the tree (issue 15.3).

A stored playlist (found on an origin, or imported) keeps its entries as file
ids (`musicfs.core.catalog.playlists`), so its file is written afresh from the
tree as it is now: each matched entry as ``#EXTINF:<seconds>,<artist> - <title>``
and its path relative to ``/.playlists`` (``../Artist/Album/01 - Title.flac``,
names as the tree shows them, overrides applied); an entry that matches no
track as a ``# not found: <original text>`` comment, never dropped. A smart
collection (`musicfs.core.namespace.collections`) is the same list of its
tracks. A collection whose name a stored playlist has already is listed as
``NAME (collection).m3u8``.

Contents are made on demand and kept `CONTENT_TTL` seconds, and forgotten
whenever the tree changes (`PlaylistFiles.forget`, whose inodes the frontend
invalidates). An open makes the content afresh and reads that snapshot (a read
never mixes two versions); the kernel keeps no attributes of these files, so
stat (also fstat of the open file) shows that snapshot's size. Files are opened
without the kernel's page cache (direct I/O): no stale page is ever served.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import sanitize, template_values
from musicfs.core.config.collections import Collection
from musicfs.core.namespace.collections import file_ids
from musicfs.core.namespace.inodes import PLAYLIST_FIRST, PLAYLIST_HANDLE_FIRST

EXTENSION = ".m3u8"
CONTENT_TTL = 2.0  # seconds a playlist's content is reused
PARENT = "../"  # from /.playlists to the root of the tree

T = TypeVar("T")


class PlaylistLine(NamedTuple):
    """One entry of a playlist as it is rendered. *path* is relative to
    ``/.playlists``; None when the entry matches no track (then *text*, its
    original text, goes into a comment)."""

    path: str | None
    seconds: int = -1
    artist: str = ""
    title: str = ""
    text: str = ""


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def render_m3u8(lines: Sequence[PlaylistLine]) -> bytes:
    """The M3U8 text of *lines*: ``#EXTM3U``, then ``#EXTINF`` and the path of
    each matched entry, a ``# not found:`` comment for each other."""
    out = ["#EXTM3U"]
    for line in lines:
        if line.path is None:
            out.append(f"# not found: {_one_line(line.text)}")
        else:
            out.append(f"#EXTINF:{line.seconds},{_one_line(line.artist)} - {_one_line(line.title)}")
            out.append(line.path)
    return ("\n".join(out) + "\n").encode("utf-8", errors="replace")


def track_line(catalog: Catalog, file_id: int | None, text: str) -> PlaylistLine:
    """The line of one entry: the track *file_id* as the tree shows it now, or
    not found (no file, or one that is not in the tree: unreadable, hidden)."""
    if file_id is None:
        return PlaylistLine(None, text=text)
    track, node = catalog.track(file_id), catalog.node_of_file(file_id)
    if track is None or node is None:
        return PlaylistLine(None, text=text)
    tags = catalog.effective_tags(track.id, track.tags)
    values = template_values(tags, track.relpath, track.format)
    seconds = -1 if tags.duration is None else round(tags.duration)
    path = PARENT + catalog.path_of(node.id)
    return PlaylistLine(path, seconds, values["artist"], values["title"], text)


class Rendered(NamedTuple):
    """A file of ``/.playlists`` as made: its inode, name, content and mtime."""

    inode: int
    name: str
    content: bytes
    mtime_ns: int


class _Source(NamedTuple):
    collection: bool
    name: str


class PlaylistFiles:
    """The files of ``/.playlists`` of one mount, and their open handles.

    Methods taking a *catalog* run on the caller's thread with that connection;
    the namespace calls them in a worker thread with `in_own_catalog` where it can.
    """

    def __init__(
        self,
        catalog_path: str | Path,
        collections: dict[str, Collection],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog_path = Path(catalog_path)
        self.collections = collections
        self._clock = clock
        self._lock = threading.Lock()
        self._inodes: dict[str, int] = {}  # file name -> inode, never reused
        self._names: dict[int, str] = {}
        self._next_inode = itertools.count(PLAYLIST_FIRST)
        self._made: dict[str, tuple[float, Rendered]] = {}  # name -> (when, file)
        self._versions: dict[str, tuple[bytes, int]] = {}  # name -> (digest, mtime_ns)
        self._handles: dict[int, bytes] = {}
        self._next_handle = itertools.count(PLAYLIST_HANDLE_FIRST)

    def in_own_catalog(self, call: Callable[[Catalog], T]) -> T:
        """*call* with a read-only connection of its own (from a worker thread)."""
        with Catalog.open(self.catalog_path, readonly=True) as catalog:
            return call(catalog)

    # -- names -------------------------------------------------------------------------

    def _sources(self, catalog: Catalog) -> dict[str, _Source]:
        """File name -> what it shows, for every stored playlist and collection."""
        sources: dict[str, _Source] = {}
        for name in catalog.playlist_names():
            sources.setdefault(sanitize(name + EXTENSION), _Source(False, name))
        for name in self.collections:
            filename = sanitize(name + EXTENSION)
            if filename in sources:
                filename = sanitize(f"{name} (collection){EXTENSION}")
            sources.setdefault(filename, _Source(True, name))
        return sources

    def _inode(self, filename: str) -> int:
        with self._lock:
            inode = self._inodes.get(filename)
            if inode is None:
                inode = self._inodes[filename] = next(self._next_inode)
                self._names[inode] = filename
            return inode

    def name_of(self, inode: int) -> str | None:
        with self._lock:
            return self._names.get(inode)

    # -- contents ----------------------------------------------------------------------

    def listing(self, catalog: Catalog) -> list[Rendered]:
        """Every file of ``/.playlists``, sorted by name."""
        sources = self._sources(catalog)
        return [self._make(catalog, name, sources[name]) for name in sorted(sources)]

    def get(self, catalog: Catalog, filename: str) -> Rendered | None:
        """The file called *filename* (None: there is none), made at most
        `CONTENT_TTL` seconds ago."""
        with self._lock:
            made = self._made.get(filename)
        if made is not None and self._clock() - made[0] < CONTENT_TTL:
            return made[1]
        source = self._sources(catalog).get(filename)
        return None if source is None else self._make(catalog, filename, source)

    def fresh(self, inode: int) -> Rendered | None:
        """*inode*'s file if it was made less than `CONTENT_TTL` seconds ago (no
        catalog needed: for the FUSE thread)."""
        filename = self.name_of(inode)
        with self._lock:
            made = self._made.get(filename) if filename is not None else None
        if made is not None and self._clock() - made[0] < CONTENT_TTL:
            return made[1]
        return None

    def by_inode(self, catalog: Catalog, inode: int) -> Rendered | None:
        filename = self.name_of(inode)
        return None if filename is None else self.get(catalog, filename)

    def _make(self, catalog: Catalog, filename: str, source: _Source) -> Rendered:
        if source.collection:
            lines = [track_line(catalog, file_id, "") for file_id in
                     file_ids(catalog, self.collections[source.name])]  # fmt: skip
            lines = [line for line in lines if line.path is not None]  # not in the tree
        else:
            lines = [track_line(catalog, f, text) for f, text in catalog.playlist(source.name)]
        content = render_m3u8(lines)
        digest = hashlib.blake2b(content, digest_size=16).digest()
        now = self._clock()
        with self._lock:
            version = self._versions.get(filename)
            if version is None or version[0] != digest:
                # A new mtime whenever the content changes: players and indexers go by it.
                mtime_ns = max(time.time_ns(), (version[1] + 1_000_000_000) if version else 0)
                version = self._versions[filename] = (digest, mtime_ns)
        made = Rendered(self._inode(filename), filename, content, version[1])
        with self._lock:
            self._made[filename] = (now, made)
        return made

    def forget(self) -> list[int]:
        """The tree changed: make every file afresh on next use. Returns the
        inodes of the files made so far (the kernel should forget them)."""
        with self._lock:
            self._made.clear()
            return list(self._names)

    # -- open files --------------------------------------------------------------------

    def open(self, catalog: Catalog, inode: int) -> int | None:
        """A handle reading *inode*'s content as it is now (None: no such file)."""
        filename = self.name_of(inode)
        if filename is None:
            return None
        source = self._sources(catalog).get(filename)
        if source is None:
            return None
        made = self._make(catalog, filename, source)  # fresh: the size stat shows from now on
        with self._lock:
            handle = next(self._next_handle)
            self._handles[handle] = made.content
            return handle

    def read(self, handle: int, offset: int, size: int) -> bytes:
        with self._lock:
            content = self._handles.get(handle, b"")
        return content[offset : offset + size]

    def release(self, handle: int) -> None:
        with self._lock:
            self._handles.pop(handle, None)
