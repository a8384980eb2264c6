"""Origins: where the audio files really are. MusicFS only ever reads them.

An origin lists directories, stats and reads files by their path relative to
its root (``relpath``, ``/``-separated). This module has the local-folder origin;
remote origins and federation (priority, health, failover) build on the same
small interface (DESIGN §6).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from musicfs.core.model import FileStat

log = logging.getLogger(__name__)


class OriginUnavailable(OSError):
    """The origin cannot be reached just now; its files are offline, not gone."""


@dataclass(frozen=True, slots=True)
class DirListing:
    """One directory of an origin: its subdirectories and its files with their stat."""

    subdirs: list[str] = field(default_factory=list)
    files: list[tuple[str, FileStat]] = field(default_factory=list)


class LocalOrigin:
    """A folder on a locally mounted filesystem.

    *kind* is ``local`` for a local disk, ``nfs`` or ``smb`` for a network share
    mounted by the system: those are read the same way, but are polled for
    changes instead of watched (inotify does not see other clients' changes).
    """

    def __init__(self, origin_id: str, root: str | Path, kind: str = "local") -> None:
        self.id = origin_id
        self.root = Path(root)
        self.kind = kind

    @property
    def location(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"LocalOrigin({self.id!r}, {str(self.root)!r})"

    def check(self) -> None:
        """Raise `OriginUnavailable` unless the root is a readable directory."""
        try:
            st = os.stat(self.root)
        except OSError as exc:
            raise OriginUnavailable(
                exc.errno or errno.EIO, f"origin {self.id!r}: {self.root}: {exc.strerror}"
            ) from None
        if not stat.S_ISDIR(st.st_mode):
            raise OriginUnavailable(
                errno.ENOTDIR, f"origin {self.id!r}: {self.root} is not a directory"
            )

    def reachable(self) -> bool:
        """True if `check` passes. It stats the root: keep it off the FUSE thread."""
        try:
            self.check()
        except OriginUnavailable:
            return False
        return True

    def local_path(self, relpath: str) -> str:
        return os.path.join(self.root, relpath)

    def list_dir(self, reldir: str, extensions: Iterable[str]) -> DirListing:
        """List one directory. Only files with one of *extensions* are returned.

        Hidden entries (leading dot) are skipped; symlinks to files are followed,
        symlinks to directories are not (they could loop).
        """
        wanted = {e.lower().lstrip(".") for e in extensions}
        listing = DirListing()
        path = os.path.join(self.root, reldir) if reldir else str(self.root)
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        listing.subdirs.append(entry.name)
                        continue
                    ext = entry.name.rpartition(".")[2].lower()
                    if "." not in entry.name or ext not in wanted:
                        continue
                    st = entry.stat(follow_symlinks=True)
                except OSError as exc:  # a dangling symlink, a file that just vanished
                    log.debug("skipping %s/%s: %s", path, entry.name, exc)
                    continue
                if stat.S_ISREG(st.st_mode):
                    listing.files.append((entry.name, FileStat(st.st_size, st.st_mtime_ns)))
        return listing

    def open(self, relpath: str) -> int:
        """Open a file for reading; return the OS file descriptor."""
        return os.open(self.local_path(relpath), os.O_RDONLY | os.O_CLOEXEC)
