"""What `Namespace.resolve` answers: one small union over every kind of entry.

A catalog folder or track, a virtual folder (``.search``, a query, a
collection, a folder of the ``.prefetch`` mirror), a symlink (a search or
collection result, a file of the mirror), a cover file or a playlist file. The frontend turns
an entry's `Attributes` into its own stat structure; it never needs to know
which source an entry came from. Entries are values: nothing changes them
(not frozen only because a frozen dataclass costs twice as much to make, once
per lookup).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import NamedTuple

DIR_MODE = stat.S_IFDIR | 0o555
FILE_MODE = stat.S_IFREG | 0o444
LINK_MODE = stat.S_IFLNK | 0o777
BLOCK = 512  # st_blocks counts these


@dataclass(slots=True)
class Folder:
    """A folder of the catalog tree; *mtime_ns* 0 when it never changed."""

    inode: int
    name: str
    mtime_ns: int


@dataclass(slots=True)
class TrackFile:
    """A track of the catalog tree, *size* bytes as served (overlay included)."""

    inode: int
    name: str
    size: int
    mtime_ns: int


@dataclass(slots=True)
class VirtualFolder:
    """A folder that is no row of the tree (``.search`` and what is under it)."""

    inode: int
    name: str


@dataclass(slots=True)
class Link:
    """A symlink to *target* (relative, into the tree)."""

    inode: int
    name: str
    target: str


@dataclass(slots=True)
class CoverFile:
    """``cover.jpg`` & co. of a folder of tracks, *size* bytes."""

    inode: int
    name: str
    size: int


@dataclass(slots=True)
class PlaylistFile:
    """A file of ``/.playlists``: *size* bytes, made from the catalog."""

    inode: int
    name: str
    size: int
    mtime_ns: int


Entry = Folder | TrackFile | VirtualFolder | Link | CoverFile | PlaylistFile


class Attributes(NamedTuple):
    """An entry's stat values and how long the kernel may keep them (seconds).

    Made per request: the namespace builds them with `attributes_of`, much
    cheaper than the class call; a listing of the tree writes its entries'
    fields straight into the caller's object (`Namespace.readdir`)."""

    inode: int
    mode: int
    nlink: int
    size: int
    blocks: int
    mtime_ns: int
    entry_ttl: float
    attr_ttl: float


#: The fields of `Attributes`, in order, as a plain tuple (what listings pass).
AttrValues = tuple[int, int, int, int, int, int, float, float]


def attributes_of(values: AttrValues) -> Attributes:
    """`Attributes` of *values* without the NamedTuple call's cost (a third)."""
    return tuple.__new__(Attributes, values)


def blocks(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK
