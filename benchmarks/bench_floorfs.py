"""The pyfuse3 floor: the least a Python filesystem on pyfuse3 + trio can cost here.

A read-only mirror of a directory tree held entirely in memory (attributes built
once at start), answering with MusicFS's own mount options and cache timeouts and
reading with inline ``os.pread`` and ``keep_cache``. No SQLite, no layout, no
error translation: whatever this costs is pyfuse3 + trio + the kernel, so the
gap between it and MusicFS is what MusicFS's own code adds.

    python bench_floorfs.py ORIGIN MOUNTPOINT      # foreground; unmount with fusermount3 -u
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import pyfuse3
import trio

TIMEOUT = 60.0


class FloorOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, origin: str) -> None:
        super().__init__()
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: origin}
        self.attrs: dict[int, pyfuse3.EntryAttributes] = {}
        self.children: dict[int, list[tuple[bytes, int]]] = {}
        self.by_name: dict[tuple[int, bytes], int] = {}
        self._next = pyfuse3.ROOT_INODE + 1
        self._add_attr(pyfuse3.ROOT_INODE, os.stat(origin))
        stack = [pyfuse3.ROOT_INODE]
        while stack:
            parent = stack.pop()
            entries = []
            with os.scandir(self.paths[parent]) as it:
                for entry in sorted(it, key=lambda e: e.name):
                    ino = self._next
                    self._next += 1
                    self.paths[ino] = entry.path
                    st = entry.stat(follow_symlinks=False)
                    self._add_attr(ino, st)
                    name = entry.name.encode()
                    entries.append((name, ino))
                    self.by_name[(parent, name)] = ino
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(ino)
            self.children[parent] = entries

    def _add_attr(self, ino: int, st: os.stat_result) -> None:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.entry_timeout = a.attr_timeout = TIMEOUT
        a.st_mode = (stat.S_IFDIR | 0o555) if stat.S_ISDIR(st.st_mode) else (stat.S_IFREG | 0o444)
        a.st_nlink = 2 if stat.S_ISDIR(st.st_mode) else 1
        a.st_size = st.st_size
        a.st_uid, a.st_gid = st.st_uid, st.st_gid
        a.st_blksize = 128 * 1024
        a.st_blocks = (st.st_size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = st.st_mtime_ns
        self.attrs[ino] = a

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        ino = self.by_name.get((parent_inode, name))
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.attrs[ino]

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attrs[inode]

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self.children[fh]
        attrs = self.attrs
        for i in range(start_id, len(entries)):
            name, ino = entries[i]
            if not pyfuse3.readdir_reply(token, name, attrs[ino], i + 1):
                return

    async def releasedir(self, fh: int) -> None:
        return None

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=os.open(self.paths[inode], os.O_RDONLY), keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(fh, size, off)

    async def release(self, fh: int) -> None:
        os.close(fh)

    async def forget(self, inode_list: object) -> None:
        return None


def main() -> None:
    origin, mountpoint = sys.argv[1], sys.argv[2]
    from musicfs.core.fuse.fs import mount_options  # the same options as MusicFS

    ops = FloorOperations(origin)
    options = mount_options(fsname="pyfuse3-floor") - {"subtype=musicfs"} | {"subtype=floor"}
    pyfuse3.init(ops, mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    main()
