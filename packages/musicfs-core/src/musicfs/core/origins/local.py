"""Local origins: a folder on a disk, or on a network share the system mounted.

Reads are plain ``os.pread`` on a descriptor, done on the FUSE thread for a
local disk. NFS and SMB/CIFS mounts (kind ``nfs``/``smb``) are read the same
way but are not ``inline``: a share can hang, so their reads go to worker
threads under a timeout, and they are polled for changes instead of watched
(inotify does not see what other clients of a share change).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from musicfs.core.model import FileStat, catalog_name, has_escaped_bytes, origin_name
from musicfs.core.origins.base import (
    DirListing,
    FileChanged,
    Origin,
    OriginFile,
    OriginUnavailable,
    extension_set,
    listed_name,
    wanted_file,
)

log = logging.getLogger(__name__)

# errnos that mean "the share did not answer", not "the file is not there".
_UNAVAILABLE = {errno.ESTALE, errno.EIO, errno.ETIMEDOUT, errno.EHOSTDOWN, errno.EHOSTUNREACH,
                errno.ENOTCONN, errno.ECONNRESET, errno.ENETDOWN, errno.ENETUNREACH}  # fmt: skip


class LocalFile(OriginFile):
    """An open local file: a descriptor read with ``os.pread``.

    On a share, a descriptor can go stale (NFS ESTALE after a server restart):
    the file is opened again by path, once, if it is still the same version.
    """

    def __init__(self, origin_id: str, path: str, fd: int) -> None:
        self.origin_id, self.path, self.fd = origin_id, path, fd
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        self.size, self.mtime_ns = st.st_size, st.st_mtime_ns

    @classmethod
    def at(cls, path: str | os.PathLike[str], origin_id: str = "local") -> LocalFile:
        """Open the file at *path* (for tools and tests that have no origin)."""
        return cls(origin_id, os.fspath(path), os.open(path, os.O_RDONLY | os.O_CLOEXEC))

    def read(self, offset: int, size: int) -> bytes:
        try:
            return os.pread(self.fd, size, offset)
        except OSError as exc:
            if exc.errno not in _UNAVAILABLE:
                raise
            error = exc
        if error.errno == errno.ESTALE and self._reopen():
            try:
                return os.pread(self.fd, size, offset)
            except OSError as exc:
                error = exc
        raise OriginUnavailable(self.origin_id, f"{self.path}: {error.strerror}", error.errno or 0)

    def _reopen(self) -> bool:
        """Open the path again after ESTALE. False if the share does not answer;
        `FileChanged` if another version is there now (reading on would mix two)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return False
        if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
            os.close(fd)
            raise FileChanged(self.origin_id, self.path)
        os.close(self.fd)
        self.fd = fd
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LocalOrigin(Origin):
    """A folder on a locally mounted filesystem.

    *kind* is ``local`` for a local disk, ``nfs`` or ``smb`` for a network share
    mounted by the system (see the module docstring for what differs).
    """

    kind = "local"
    inline = True
    watchable = True

    def __init__(self, origin_id: str, root: str | Path, kind: str = "local") -> None:
        super().__init__(origin_id)
        self.root = Path(root)
        if kind != "local":
            # An instance attribute shadows the class default: a share is neither
            # read inline nor watched.
            self.kind = kind  # type: ignore[misc]
            self.inline = self.watchable = False  # type: ignore[misc]

    @property
    def location(self) -> str:
        return str(self.root)

    def check(self) -> None:
        """Raise `OriginUnavailable` unless the root is a readable directory."""
        try:
            st = os.stat(self.root)
        except OSError as exc:
            raise OriginUnavailable(
                self.id, f"{self.root}: {exc.strerror}", exc.errno or errno.EIO
            ) from None
        if not stat.S_ISDIR(st.st_mode):
            raise OriginUnavailable(self.id, f"{self.root} is not a directory", errno.ENOTDIR)

    def local_path(self, relpath: str) -> str:
        """Where *relpath* (as listed: `catalog_name`) lies on this machine."""
        path = os.path.join(self.root, relpath)
        if has_escaped_bytes(relpath) and not os.path.lexists(path):
            # A name that was not UTF-8: the bytes it really has (a name that
            # holds those private-use characters itself is found as it is).
            return os.path.join(self.root, origin_name(relpath))
        return path

    def list_dir(self, reldir: str, extensions: Iterable[str]) -> DirListing:
        """List one directory. Only files with one of *extensions* are returned.

        Hidden entries (leading dot) are skipped unless `include_hidden`, AppleDouble
        ``._*`` files always (`listed_name`); symlinks to files are followed,
        symlinks to directories are not (they could loop). Names that are not
        UTF-8 are listed as `catalog_name` makes them.
        """
        wanted = extension_set(extensions)
        listing = DirListing()
        path = self.local_path(reldir) if reldir else str(self.root)
        with self._errors(reldir), os.scandir(path) as entries:
            for entry in entries:
                if not listed_name(entry.name, self.include_hidden):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        listing.subdirs.append(catalog_name(entry.name))
                        continue
                    if not wanted_file(entry.name, wanted, self.include_hidden):
                        continue
                    st = entry.stat(follow_symlinks=True)
                except OSError as exc:
                    if exc.errno in _UNAVAILABLE:  # the share, not the file: not gone
                        raise OriginUnavailable(
                            self.id, f"{path}/{entry.name}: {exc.strerror}", exc.errno or 0
                        ) from None
                    # A dangling symlink, a file that just vanished.
                    log.debug("skipping %s/%s: %s", path, entry.name, exc)
                    continue
                if stat.S_ISREG(st.st_mode):
                    listing.files.append(
                        (
                            catalog_name(entry.name),
                            FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns),
                        )
                    )
        return listing

    def stat(self, relpath: str) -> FileStat:
        with self._errors(relpath):
            st = os.stat(self.local_path(relpath))
        return FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def open(self, relpath: str) -> LocalFile:
        path = self.local_path(relpath)
        with self._errors(relpath):
            return LocalFile(self.id, path, os.open(path, os.O_RDONLY | os.O_CLOEXEC))

    @contextlib.contextmanager
    def _errors(self, relpath: str) -> Iterator[None]:
        """Turn the errnos of a share that stopped answering into `OriginUnavailable`.

        A missing file stays `FileNotFoundError` only while the root is there:
        a share that went away makes every path under it vanish.
        """
        try:
            yield
        except OriginUnavailable:
            raise
        except OSError as exc:
            where = self.local_path(relpath)
            if exc.errno in _UNAVAILABLE:
                raise OriginUnavailable(self.id, f"{where}: {exc.strerror}", exc.errno) from exc
            if isinstance(exc, FileNotFoundError) and not os.path.isdir(self.root):
                raise OriginUnavailable(self.id, f"{self.root} is unreachable") from exc
            raise
