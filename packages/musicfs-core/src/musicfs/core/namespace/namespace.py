"""The namespace: every entry the mount shows, whatever its source, by inode.

One `Namespace` answers the frontend's questions about names and contents:
`resolve` (inode → `Entry`), `lookup`, `attributes`, directory listings
(`opendir` / `readdir` / `releasedir`), `readlink`, and open files (`open` /
`read` / `release`). Each dispatches once, here, over the five sources of
entries: the catalog tree (through the `Library`), the virtual folders of
`VirtualTree` (``.search``, ``.collections``), the ``.prefetch`` mirror, the
playlist files of `PlaylistFiles` (``.playlists``), and the cover files of
`CoverFiles`, spliced into the listings of folders of tracks after their
tracks. The inode ranges are `musicfs.core.namespace.inodes`'.

Failures are `LibraryError`s that carry the errno the caller should see. The
calls marked async may wait on worker threads (a search, a cover's art, an
origin); the rest answer on the calling thread from the catalog and memory.
"""

from __future__ import annotations

import errno
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import trio

from musicfs.core.catalog.layout import ChangeKind, TreeChange
from musicfs.core.catalog.listings import Row
from musicfs.core.catalog.store import ROOT_NODE, Listing, Node
from musicfs.core.config.collections import Collection
from musicfs.core.content.hotcache import ListingBuilder
from musicfs.core.content.library import Library, LibraryError, not_found
from musicfs.core.content.openfile import Reading
from musicfs.core.namespace.entries import (
    BLOCK,
    DIR_MODE,
    FILE_MODE,
    LINK_MODE,
    Attributes,
    CoverFile,
    Entry,
    Folder,
    Link,
    PlaylistFile,
    TrackFile,
    VirtualFolder,
    attributes_of,
    blocks,
)
from musicfs.core.namespace.files import OpenFiles
from musicfs.core.namespace.inodes import (
    COLLECTIONS_DIR,
    COVER_OFFSET,
    PLAYLISTS_DIR,
    PREFETCH_DIR,
    SEARCH_DIR,
    VIRTUAL_BASE,
    is_cover,
    is_cover_handle,
    is_playlist_file,
    is_playlist_handle,
    is_virtual,
    mirrored_node,
)
from musicfs.core.namespace.playlists import PlaylistFiles, Rendered
from musicfs.core.namespace.virtual import RESULTS_TTL, VirtualEntry, VirtualTree, mirror_entry

if TYPE_CHECKING:
    from musicfs.core.namespace.coverfiles import CoverFiles  # imported after READY (Pillow)


class StatFields(Protocol):
    """What a listing fills per entry: POSIX stat fields, and how long the kernel
    may keep them (any binding's attribute object has them; one is reused for a
    whole listing)."""

    st_ino: int
    st_mode: int
    st_nlink: int
    st_size: int
    st_blocks: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int
    entry_timeout: float
    attr_timeout: float


#: reply(name, fields, offset), per entry of a listing: False when the caller's
#: buffer is full (the entry was not taken).
Reply = Callable[[bytes, StatFields, int], bool]


class _DirHandle:
    """An open listing of folder *inode*."""

    __slots__ = ("builder", "ended_after", "inode", "packed", "packed_at", "tracks")

    def __init__(self, inode: int) -> None:
        self.inode = inode
        self.ended_after = -1  # the offset after which the listing ended
        self.tracks = False  # whether the folder holds tracks (then cover files follow)
        self.builder: ListingBuilder | None = None  # collecting the listing for L1
        self.packed: Listing | None = None  # the catalog's packed listing, read at offset 0
        self.packed_at = 0  # `Library.listings_generation` when it was read


class Namespace:
    """The entries of one mount."""

    def __init__(
        self,
        library: Library,
        *,
        entry_timeout: float = 60.0,
        attr_timeout: float = 60.0,
        collections: tuple[Collection, ...] = (),
        covers: CoverFiles | None = None,
        prefetch_hint: Callable[[int], None] | None = None,
        io_threads: int = 32,
    ) -> None:
        """*prefetch_hint(node)* is called when a folder of /.prefetch is listed;
        *covers* may be set later (before the first request that should show them)."""
        self.library = library
        self.entry_timeout = entry_timeout
        self.attr_timeout = attr_timeout
        # Results change as the catalog does: the kernel keeps virtual entries briefly.
        self.virtual_ttl = min(entry_timeout, RESULTS_TTL)
        self.started_ns = time.time_ns()  # the mtime of entries that have none
        self.virtual = VirtualTree(library.catalog.path, collections)  # /.search, /.collections
        self.playlists = PlaylistFiles(library.catalog.path, self.virtual.collections)
        self._configured = dict(self.virtual.collections)  # built in and from the config
        self.covers = covers  # cover.jpg & co. in folders of tracks
        self.prefetch_hint = prefetch_hint
        self.files = OpenFiles(library, io_threads=io_threads)
        self._readdir_fit = 64  # entries the caller took in the last readdir call
        self._dir_handles = itertools.count(1)
        self._listings: dict[int, _DirHandle] = {}  # open directory handles

    def set_catalog_collections(self, found: dict[str, Collection]) -> None:
        """Show the collections a shared catalog defines beside the built-in
        and configured ones (which win a name both use). Any thread: the
        folders see one whole new dict."""
        merged = {**found, **self._configured}
        self.virtual.collections = merged
        self.playlists.collections = merged

    # -- entries ---------------------------------------------------------------------------

    def resolve(self, inode: int) -> Entry:
        """The entry numbered *inode*; ENOENT if there is none (any more)."""
        if is_playlist_file(inode):
            # Made on this thread only when not made in the last seconds (a lookup,
            # a listing or an open makes it in a worker thread first).
            return _playlist(self.playlists.by_inode(self.library.catalog, inode), inode)
        if is_virtual(inode):
            return _entry(self._virtual(inode))
        return _node_entry(self.library.node(inode))

    async def lookup(self, parent: int, name: str) -> Entry:
        """The entry called *name* in folder *parent*."""
        if is_virtual(parent):
            found = await self._virtual_lookup(parent, name)
            return found if isinstance(found, PlaylistFile) else _entry(found)
        if parent == ROOT_NODE and (top := self.virtual.top(name)) is not None:
            return _entry(top)
        if self.covers is not None and name in self.covers.names:
            cover = await trio.to_thread.run_sync(self.covers.lookup, parent, name)
            if cover is None:
                raise not_found(name)
            return _entry(cover)
        return _node_entry(self.library.lookup(parent, name))

    def lookup_now(self, parent: int, name: str) -> Attributes | None:
        """``attributes(await lookup(parent, name))`` of a catalog entry, answered
        on this thread without making its `Entry` (a first ``stat`` is one lookup);
        None when *name* may be another kind of entry (the caller awaits `lookup`)."""
        if parent >= VIRTUAL_BASE or (parent == ROOT_NODE and self.virtual.top(name) is not None):
            return None
        covers = self.covers
        if covers is not None and name in covers.names:
            return None
        return self._node_attributes(self.library.lookup(parent, name))

    def attributes(self, entry: Entry) -> Attributes:
        """What stat shows of *entry*, and for how long the kernel may keep it."""
        # isinstance, not match: this runs once per lookup, and a class pattern
        # costs several times as much.
        if isinstance(entry, TrackFile):
            size = entry.size
            return attributes_of((entry.inode, FILE_MODE, 1, size, (size + BLOCK - 1) // BLOCK,
                                  entry.mtime_ns, self.entry_timeout,
                                  self.attr_timeout))  # fmt: skip
        if isinstance(entry, Folder):
            # A folder's mtime moves when its listing changes (indexers compare it).
            return attributes_of((entry.inode, DIR_MODE, 2, 0, 0, entry.mtime_ns or self.started_ns,
                                  self.entry_timeout, self.attr_timeout))  # fmt: skip
        if isinstance(entry, VirtualFolder):
            mode, nlink, size = DIR_MODE, 2, 0
        elif isinstance(entry, CoverFile):
            mode, nlink, size = FILE_MODE, 1, entry.size
        elif isinstance(entry, PlaylistFile):
            # Its attributes are never kept (attr_ttl 0): stat then asks each time and
            # gets the size of what an open just made, never that of an older version.
            size = entry.size
            return attributes_of(
                (entry.inode, FILE_MODE, 1, size, blocks(size), entry.mtime_ns,
                 self.virtual_ttl, 0.0)
            )  # fmt: skip
        else:
            mode, nlink, size = LINK_MODE, 1, len(entry.target.encode())
        ttl = self.virtual_ttl
        return attributes_of(
            (entry.inode, mode, nlink, size, blocks(size), self.started_ns, ttl, ttl)
        )

    def stat(self, inode: int) -> Attributes:
        """``attributes(resolve(inode))``, without making the entry of a catalog
        node (getattr is the most frequent request)."""
        if is_virtual(inode):
            return self.attributes(self.resolve(inode))
        return self._node_attributes(self.library.node(inode))

    def _node_attributes(self, node: Node) -> Attributes:
        """`attributes` of a catalog node, without its `Entry`."""
        if node.file_id is None:
            # A folder's mtime moves when its listing changes (indexers compare it).
            return attributes_of((node.id, DIR_MODE, 2, 0, 0, node.mtime_ns or self.started_ns,
                                  self.entry_timeout, self.attr_timeout))  # fmt: skip
        size = node.size
        return attributes_of((node.id, FILE_MODE, 1, size, (size + BLOCK - 1) // BLOCK,
                              node.mtime_ns, self.entry_timeout, self.attr_timeout))  # fmt: skip

    async def playlist_stat(self, inode: int) -> Attributes:
        """`stat` of a file of ``/.playlists``: made again (when due) in a worker
        thread, never on the FUSE thread (a big playlist takes thousands of queries)."""
        playlists = self.playlists
        made = playlists.fresh(inode)
        if made is None:
            made = await trio.to_thread.run_sync(
                playlists.in_own_catalog, lambda catalog: playlists.by_inode(catalog, inode)
            )
        return self.attributes(_playlist(made, inode))

    def readlink(self, inode: int) -> str:
        entry = self.resolve(inode)
        if not isinstance(entry, Link):
            raise LibraryError(errno.EINVAL, f"{entry.name}: not a symlink")
        return entry.target

    # -- listings --------------------------------------------------------------------------

    def opendir(self, inode: int) -> int:
        """A handle to list folder *inode* (ENOTDIR if it is none)."""
        entry = self.resolve(inode)
        if not isinstance(entry, Folder | VirtualFolder):
            raise LibraryError(errno.ENOTDIR, f"{entry.name}: not a directory")
        fh = next(self._dir_handles)
        self._listings[fh] = _DirHandle(inode)
        return fh

    def releasedir(self, fh: int) -> None:
        self._listings.pop(fh, None)

    async def readdir(self, fh: int, start: int, attr: StatFields, reply: Reply) -> None:
        """*reply* with the entries of listing *fh* after offset *start* (0: from
        the first), each written into *attr*, until it returns False or the
        listing ends."""
        # Offsets of a catalog folder are node ids, which grow monotonically,
        # so paging survives concurrent changes; its cover files follow at
        # COVER_OFFSET. The caller's buffer takes hundreds of entries per call:
        # fetch about as many as the last call took. A folder listed before is
        # sent from L1's copy of its listing (`Library.kept_listing`), a big one
        # from the catalog's packed listing; neither makes a row per entry.
        listing = self._listings[fh]
        inode = listing.inode
        if is_virtual(inode):
            await self._virtual_readdir(inode, start, attr, reply)
            return
        if start == listing.ended_after:
            return  # the last call reached the end: spare the query
        if start >= COVER_OFFSET:
            self._readdir_covers(listing, start, start, attr, reply)
            return
        attr.entry_timeout, attr.attr_timeout = self.entry_timeout, self.attr_timeout
        library = self.library
        if start == 0 or listing.packed_at != library.listings_generation:
            # A tree change since it was read: the next entries come from the rows
            # (the kernel was told to forget entries the snapshot still holds).
            listing.packed = None
        kept = listing.packed if listing.packed is not None else library.kept_listing(inode)
        if kept is None and start == 0:
            kept = self._packed(listing)
        if kept is not None:
            self._readdir_kept(listing, kept, start, attr, reply)
            return
        builder = listing.builder
        if start != 0 and builder is not None and start > builder.last:
            listing.builder = builder = None  # not read in order: not kept
        after, want, taken = start, self._readdir_fit + 1, 0
        while True:
            rows = library.listing(inode, after, want)
            if builder is not None:
                builder.add(rows)
            sent, last, full = self._send(listing, rows, attr, reply)
            taken += sent
            if full:
                self._readdir_fit = max(taken, 16)
                return
            after = last if sent else after
            if len(rows) < want:
                if builder is not None:
                    library.keep_listing(builder)
                    listing.builder = None
                self._readdir_covers(listing, COVER_OFFSET, after, attr, reply)
                return
            want *= 2

    def _packed(self, listing: _DirHandle) -> Listing | None:
        """The catalog's packed listing of a big folder, for this handle's calls
        (and for L1, at the folder's second listing); else None, and the handle
        is ready to collect the rows it reads for L1."""
        library = self.library
        # Asked before the read: a tree change in between voids them.
        builder = library.listing_builder(listing.inode)
        generation = library.listings_generation
        packed = library.packed_listing(listing.inode)
        if packed is None:
            listing.builder = builder
            return None
        listing.builder, listing.packed, listing.packed_at = None, packed, generation
        if builder is not None:
            library.keep_listing(builder, packed)
        return packed

    def _readdir_kept(
        self, listing: _DirHandle, kept: Listing, start: int, attr: StatFields, reply: Reply
    ) -> None:
        """`readdir` from a whole listing held in memory (L1's copy, or the
        catalog's packed one), a chunk of entries at a time."""
        ids, sizes, mtimes = kept.ids, kept.sizes, kept.mtimes
        index, end = kept.index_after(start), len(kept)
        step, after, taken = self._readdir_fit + 1, start, 0
        while index < end:
            stop = min(end, index + step)
            rows = zip(ids[index:stop], kept.names(index, stop), sizes[index:stop],
                       mtimes[index:stop], strict=True)  # fmt: skip
            sent, last, full = self._send(listing, rows, attr, reply)
            taken += sent
            if full:
                self._readdir_fit = max(taken, 16)
                return
            after = last if sent else after
            index, step = stop, step * 2
        self._readdir_covers(listing, COVER_OFFSET, after, attr, reply)

    def _send(
        self, listing: _DirHandle, rows: Iterable[Row], attr: StatFields, reply: Reply
    ) -> tuple[int, int, bool]:
        """*reply* with each of *rows* (id, name, size or -1 for a folder, mtime_ns):
        (entries taken, the id of the last one, whether the caller's buffer is full)."""
        # This loop runs once per entry of huge folders: only the fields that
        # differ from the entry before are set (a time costs three slow setters).
        started_ns, tracks = self.started_ns, False
        size_set = mtime_set = -2
        taken, last = 0, 0
        try:
            for node_id, name, size, mtime_ns in rows:
                attr.st_ino = node_id
                if size != size_set:
                    size_set = size
                    if size < 0:
                        attr.st_mode, attr.st_nlink, attr.st_size, attr.st_blocks = (
                            DIR_MODE,
                            2,
                            0,
                            0,
                        )
                    else:
                        tracks = True
                        attr.st_mode, attr.st_nlink, attr.st_size = FILE_MODE, 1, size
                        attr.st_blocks = (size + BLOCK - 1) // BLOCK
                # A folder that never changed has mtime 0: it shows the mount's start.
                mtime = mtime_ns if mtime_ns or size >= 0 else started_ns
                if mtime != mtime_set:
                    mtime_set = attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = mtime
                if not reply(name, attr, node_id):
                    return taken, last, True
                taken += 1
                last = node_id
            return taken, last, False
        finally:
            listing.tracks = listing.tracks or tracks

    def _readdir_covers(
        self, listing: _DirHandle, start: int, last: int, attr: StatFields, reply: Reply
    ) -> None:
        """After a folder's tracks: its cover files after offset *start* (their
        offsets count from COVER_OFFSET). *last* is the offset of the last entry
        taken so far; the listing notes it ended there once every cover is taken."""
        covers = (
            self.covers.entries(listing.inode) if self.covers is not None and listing.tracks else []
        )
        for offset, cover in enumerate(covers, COVER_OFFSET + 1):
            if offset <= start:
                continue
            if not reply(cover.name.encode(), _fill(attr, self.attributes(_entry(cover))), offset):
                return  # the next call goes on after *last*
            last = offset
        listing.ended_after = last

    async def _virtual_readdir(
        self, inode: int, start: int, attr: StatFields, reply: Reply
    ) -> None:
        folder = self._virtual(inode)
        node = mirrored_node(inode)
        if node is not None:
            if start == 0 and node != ROOT_NODE and self.prefetch_hint is not None:
                self.prefetch_hint(node)  # listing a folder of /.prefetch asks for it
            catalog = self.library.catalog
            children = self.library.children(node, 0, 1_000_000)
            entries = [e for child in children if (e := mirror_entry(catalog, child.id))]
        elif folder.inode == PLAYLISTS_DIR:
            playlists = self.playlists
            made = await trio.to_thread.run_sync(playlists.in_own_catalog, playlists.listing)
            for offset, file in enumerate(made[start:], start + 1):
                attributes = self.attributes(_playlist(file, file.inode))
                if not reply(file.name.encode(), _fill(attr, attributes), offset):
                    return
            return
        elif folder.inode in (SEARCH_DIR, COLLECTIONS_DIR):
            entries = self.virtual.folders(folder.inode)
        else:
            entries = list((await trio.to_thread.run_sync(self.virtual.results, folder)).values())
        for offset, entry in enumerate(entries[start:], start + 1):
            if not reply(entry.name.encode(), _fill(attr, self.attributes(_entry(entry))), offset):
                return

    # -- virtual entries -------------------------------------------------------------------

    def _virtual(self, inode: int) -> VirtualEntry:
        node = mirrored_node(inode)
        if node is not None and inode != PREFETCH_DIR:
            mirrored = mirror_entry(self.library.catalog, node)
            if mirrored is None:
                raise not_found(f"inode {inode}")
            return mirrored
        if is_cover(inode):
            cover = self.covers.get(inode) if self.covers is not None else None
            if cover is None:
                raise not_found(f"inode {inode}")
            return cover
        entry = self.virtual.get(inode)
        if entry is None:
            raise not_found(f"inode {inode}")
        return entry

    async def _virtual_lookup(self, parent: int, name: str) -> VirtualEntry | PlaylistFile:
        if parent == PLAYLISTS_DIR:
            playlists = self.playlists
            made = await trio.to_thread.run_sync(
                playlists.in_own_catalog, lambda catalog: playlists.get(catalog, name)
            )
            return _playlist(made, name)
        node = mirrored_node(parent)
        if node is not None:
            mirrored = mirror_entry(self.library.catalog, self.library.lookup(node, name).id)
            if mirrored is None:
                raise not_found(name)
            return mirrored
        folder = self._virtual(parent)
        if folder.inode in (SEARCH_DIR, COLLECTIONS_DIR):
            entry = self.virtual.folder(folder.inode, name)
            if entry is None:
                raise not_found(name)
            return entry
        if not folder.is_dir:
            raise LibraryError(errno.ENOTDIR, f"{folder.name}: not a directory")
        results = await trio.to_thread.run_sync(self.virtual.results, folder)
        entry = results.get(name)
        if entry is None:
            raise not_found(name)
        return entry

    # -- open files ------------------------------------------------------------------------

    async def open(self, inode: int) -> tuple[int, bool]:
        """A handle to read *inode*, and whether the kernel may keep its cached pages."""
        if not is_virtual(inode):
            # A catalog node: the track read path (OpenFiles.open_track / read_track,
            # over the Library) plugs in here; the catalog checks it is a file.
            return await self.files.open_track(inode)
        if is_playlist_file(inode):
            playlists = self.playlists
            fh = await trio.to_thread.run_sync(
                playlists.in_own_catalog, lambda catalog: playlists.open(catalog, inode)
            )
            if fh is None:
                raise not_found(f"inode {inode}")
            # Never the kernel's pages: the content follows the tree (see direct_io).
            return fh, False
        entry = self.resolve(inode)
        if isinstance(entry, CoverFile) and self.covers is not None:
            return self.files.open_cover(self.covers, inode), True
        if isinstance(entry, Link):
            raise LibraryError(errno.ELOOP, f"{entry.name}: a symlink")
        raise LibraryError(errno.EISDIR, f"{entry.name}: is a directory")

    def direct_io(self, fh: int) -> bool:
        """Whether reads of handle *fh* must bypass the kernel's page cache (and
        its idea of the size): files made from the catalog, which change with it."""
        return is_playlist_handle(fh)

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        data = self.read_now(fh, offset, size)
        return data if isinstance(data, (bytes, memoryview)) else await self.files.finish_read(data)

    def read_now(self, fh: int, offset: int, size: int) -> bytes | memoryview | Reading:
        """`read` on this thread: the bytes, or a track's read that must wait (a
        remote origin): ``await finish_read(it)``. A file read is a request per
        MiB: a local disk or the cache answers it with no coroutine."""
        if is_playlist_handle(fh):
            return self.playlists.read(fh, offset, size)
        covers = self.covers
        if covers is not None and is_cover_handle(fh):
            return self.files.read_cover(covers, fh, offset, size)
        return self.files.read_now(fh, offset, size)

    async def finish_read(self, reading: Reading) -> bytes:
        return await self.files.finish_read(reading)

    def release(self, fh: int) -> None:
        if is_playlist_handle(fh):
            self.playlists.release(fh)
        else:
            self.files.release(self.covers, fh)

    # -- change ----------------------------------------------------------------------------

    def forget(self, inodes: Iterable[int]) -> None:
        """The kernel forgot these inodes (and their cached pages)."""
        for inode in inodes:
            self.files.forget(inode)

    def changed(self, changes: Sequence[TreeChange]) -> list[int]:
        """The tree changed so (any thread): drop what is remembered of the
        listings it touched. Returns the inodes of files made from the tree
        (playlists) whose attributes the kernel should forget too. (The
        frontend tells its kernel.)"""
        touched = {c.parent for c in changes} | {
            c.node for c in changes if c.kind is ChangeKind.REMOVED
        }
        self.library.forget_directories(touched)
        return self.playlists.forget()


def _node_entry(node: Node) -> Folder | TrackFile:
    if node.file_id is None:
        return Folder(node.id, node.name, node.mtime_ns)
    return TrackFile(node.id, node.name, node.size, node.mtime_ns)


def _entry(entry: VirtualEntry) -> VirtualFolder | Link | CoverFile:
    if entry.is_file:
        return CoverFile(entry.inode, entry.name, entry.size)
    if entry.target:
        return Link(entry.inode, entry.name, entry.target)
    return VirtualFolder(entry.inode, entry.name)


def _playlist(made: Rendered | None, name: str | int) -> PlaylistFile:
    if made is None:
        raise not_found(str(name))
    return PlaylistFile(made.inode, made.name, len(made.content), made.mtime_ns)


def _fill(attr: StatFields, values: Attributes) -> StatFields:
    """*attr* with the fields of *values* (listings of virtual folders and covers)."""
    (attr.st_ino, attr.st_mode, attr.st_nlink, attr.st_size, attr.st_blocks, mtime,
     attr.entry_timeout, attr.attr_timeout) = values  # fmt: skip
    attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = mtime
    return attr
