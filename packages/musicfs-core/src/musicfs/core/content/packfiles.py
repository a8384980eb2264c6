"""Pack files of the chunk store (L3) on disk: append-only files of chunk bytes.

Writes bytes at an offset, frees the bytes of a dropped chunk by punching a
hole (they read back as zeros; the file keeps its size), and cuts off a tail
no index row names. Plain file operations: which bytes go where, and when a
pack is deleted, is the store's decision (`musicfs.core.content.cas`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os

log = logging.getLogger("musicfs.core.content.cas")  # reported as the store's

_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def write_at(path: str, data: bytes, offset: int) -> None:
    """Write all of *data* at *offset* of the file *path* (created if missing)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        view, written = memoryview(data), 0
        while written < len(data):
            written += os.pwrite(fd, view[written:], offset + written)
    finally:
        os.close(fd)


def punch_hole(path: str, offset: int, size: int) -> bool:
    """Free *size* bytes at *offset* of the file *path* on disk. False: this file
    system cannot punch holes (no use trying again); a missing file is fine."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return True
    try:
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        failed = _libc.fallocate(fd, mode, offset, size) != 0
        if failed and ctypes.get_errno() in (errno.EOPNOTSUPP, errno.ENOSYS):
            log.info("this file system cannot punch holes: a pack's space is "
                     "freed only when all its chunks are gone")  # fmt: skip
            return False
        return True
    finally:
        os.close(fd)


def trim(path: str, end: int) -> None:
    """Cut the file *path* to *end* bytes if it is longer (a missing file is fine):
    bytes there were written by a copy that was never indexed."""
    with contextlib.suppress(FileNotFoundError):
        size = os.stat(path).st_size
        if size > end:
            log.info("dropping %d unindexed bytes at the end of %s (an interrupted copy)",
                     size - end, path)  # fmt: skip
            os.truncate(path, end)
