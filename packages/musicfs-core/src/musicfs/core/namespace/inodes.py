"""Every inode range of the mount, in one place (and the numbers that go with them).

Catalog nodes keep their node ids as inode numbers (``ROOT_NODE`` is the
root), so a track's inode stays the same across tag edits and rescans. Every
other entry lives above `VIRTUAL_BASE`, far above any node id:

====================================  ==========================================
``SEARCH_DIR`` … ``PLAYLISTS_DIR``    the hidden top folders ``.search``,
                                      ``.collections``, ``.prefetch``, ``.playlists``
``TABLE_FIRST`` up                    query and collection folders and their
                                      symlinks (numbered in `VirtualTree`'s table)
``MIRROR_BASE + node``                folder *node* mirrored in ``/.prefetch``
``LINK_BASE + node``                  file *node* mirrored as a symlink there
``PLAYLIST_FIRST`` up                 files of ``/.playlists`` (numbered by `PlaylistFiles`)
``COVER_FIRST`` up                    cover files (numbered by `CoverFiles`)
====================================  ==========================================

Handles of open files follow the same split: the library's count from 1,
playlist files' from `PLAYLIST_HANDLE_FIRST`, cover files' from
`COVER_HANDLE_FIRST`. Readdir offsets of a catalog folder are node ids, then
`COVER_OFFSET` + n for its cover files.
"""

from __future__ import annotations

from musicfs.core.catalog.store import ROOT_NODE

VIRTUAL_BASE = 1 << 62
SEARCH_DIR = VIRTUAL_BASE + 1
COLLECTIONS_DIR = VIRTUAL_BASE + 2
PREFETCH_DIR = VIRTUAL_BASE + 3
PLAYLISTS_DIR = VIRTUAL_BASE + 4
TABLE_FIRST = VIRTUAL_BASE + 16
# /.prefetch mirrors the tree: node N's folder is MIRROR_BASE + N, its file a
# symlink LINK_BASE + N (no table: the numbers say which node they stand for).
MIRROR_BASE = VIRTUAL_BASE + (1 << 58)
LINK_BASE = VIRTUAL_BASE + (1 << 59)
PLAYLIST_FIRST = LINK_BASE + (1 << 58)  # after the mirror's symlinks
COVER_FIRST = VIRTUAL_BASE + (1 << 60)  # apart from the search/collection entries
COVER_HANDLE_FIRST = VIRTUAL_BASE  # above the library's handles, below COVER_FIRST
PLAYLIST_HANDLE_FIRST = 1 << 61  # above the library's handles, below COVER_HANDLE_FIRST
COVER_OFFSET = 1 << 62  # readdir offsets of cover files: after every node id


def is_virtual(inode: int) -> bool:
    """Whether *inode* is not a catalog node."""
    return inode >= VIRTUAL_BASE


def is_cover(number: int) -> bool:
    """Whether an inode is a cover file's."""
    return number >= COVER_FIRST


def is_cover_handle(handle: int) -> bool:
    return COVER_HANDLE_FIRST <= handle < COVER_FIRST


def is_playlist_file(inode: int) -> bool:
    """Whether an inode is a file of ``/.playlists``."""
    return PLAYLIST_FIRST <= inode < COVER_FIRST


def is_playlist_handle(handle: int) -> bool:
    return PLAYLIST_HANDLE_FIRST <= handle < COVER_HANDLE_FIRST


def mirrored_node(inode: int) -> int | None:
    """The node a /.prefetch folder or symlink stands for (None: not a mirror)."""
    if inode == PREFETCH_DIR:
        return ROOT_NODE
    if MIRROR_BASE <= inode < LINK_BASE:
        return inode - MIRROR_BASE
    if LINK_BASE <= inode < LINK_BASE + (1 << 58):
        return inode - LINK_BASE
    return None
