"""The origin interface: what every place that holds audio files must answer.

An origin lists directories, stats files and reads byte ranges, by paths
relative to its root (``relpath``, ``/``-separated, no leading slash). That is
all (DESIGN §6): priority, health checks, retries, failover, bandwidth limits
and request bounds live once, in `musicfs.core.origins.federation`, above every origin.
Built-in origins (local folders and mounted shares, S3, SFTP, SMB) and origins
from plugins implement this same class.

Every method may block on the network and is called from worker threads, never
from the FUSE thread — except reads of an origin that declares ``inline``
(a local disk, where a thread hop costs more than the read).

Errors say what happened in terms the layers above act on:

- `FileNotFoundError`: the origin answered, and the file or folder is not
  there. Only this makes a file leave the tree.
- `PermissionError`: the origin refuses; the reader gets EACCES.
- `OriginUnavailable`: the origin did not answer (down, timed out, stale
  handle): its files are *offline*, not gone, and the caller may retry, fail
  over to another origin, or serve a cached copy.
"""

from __future__ import annotations

import abc
import errno
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from musicfs.core.errors import MusicFSError
from musicfs.core.model import FileStat

log = logging.getLogger(__name__)


class OriginUnavailable(MusicFSError, OSError):
    """The origin cannot be reached just now; its files are offline, not gone."""

    def __init__(self, origin_id: str, message: str, code: int = errno.EIO) -> None:
        super().__init__(code, f"origin {origin_id!r}: {message}")
        self.origin_id = origin_id


class FileChanged(MusicFSError, OSError):
    """The open file became another version (replaced on its origin) and cannot
    be read on without mixing two versions. Says nothing about the origin's
    health: the reader fails over to another copy of the version it was reading."""

    def __init__(self, origin_id: str, path: str) -> None:
        super().__init__(errno.ESTALE, f"origin {origin_id!r}: {path} was replaced while open")
        self.origin_id = origin_id


@dataclass(frozen=True, slots=True)
class DirListing:
    """One directory of an origin: its subdirectories and its files with their stat."""

    subdirs: list[str] = field(default_factory=list)
    files: list[tuple[str, FileStat]] = field(default_factory=list)


def listed_name(name: str, include_hidden: bool = False) -> bool:
    """Whether an origin's file or folder called *name* is listed at all.

    Names starting with a dot are hidden, and listed only with *include_hidden*
    (``[scan] include_hidden``). AppleDouble files (``._Song.flac``: the
    resource forks macOS writes beside each file on shares and FAT disks) are
    never listed: they carry an audio extension but hold no audio.
    """
    if name in (".", "..") or name.startswith("._"):
        return False
    return include_hidden or not name.startswith(".")


def wanted_file(name: str, extensions: frozenset[str], include_hidden: bool = False) -> bool:
    """Whether a directory entry called *name* is listed: not hidden (see
    `listed_name`), and with one of *extensions* (lower case, no dot)."""
    if not listed_name(name, include_hidden) or "." not in name:
        return False
    return name.rpartition(".")[2].lower() in extensions


def extension_set(extensions: Iterable[str]) -> frozenset[str]:
    return frozenset(e.lower().lstrip(".") for e in extensions)


class OriginFile(abc.ABC):
    """One file of an origin, open for ranged reads.

    *size* and *mtime_ns* are what the origin said when it was opened; a caller
    compares them with the catalog to notice a file that changed since its scan.
    """

    size: int
    mtime_ns: int
    #: Requests to the origin that opening it cost (a scan reports them: S3's
    #: HeadObject, SFTP's open; 0 for an S3 object opened from its listing).
    open_requests: int = 1
    #: `read_ranges` asks for all its ranges at once (one round trip), not in turn.
    ranges_at_once: bool = False

    @abc.abstractmethod
    def read(self, offset: int, size: int) -> bytes:
        """Up to *size* bytes at *offset*; fewer only at the end of the file."""

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of each ``(offset, size)`` of *ranges*, as `read` gives them.
        An origin that can ask for several ranges in one round trip does (SFTP
        pipelines them); the others read them in turn."""
        return [self.read(offset, size) for offset, size in ranges]

    def close(self) -> None:  # noqa: B027 - most files have nothing to release
        """Release what the open file holds (a descriptor, a pooled session)."""

    def __enter__(self) -> OriginFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Origin(abc.ABC):
    """A place that holds audio files. Subclasses set `kind` and implement the
    abstract methods; each instance has the *id* the configuration gave it."""

    kind: ClassVar[str]
    #: Reads are fast and never hang (a local disk): done on the FUSE thread.
    inline: ClassVar[bool] = False
    #: Changes can be followed with inotify (`musicfs.core.sync.watch`); others are polled.
    watchable: ClassVar[bool] = False
    #: List files and folders whose names start with a dot (``[scan] include_hidden``,
    #: set by the mount); `listed_name` says what is listed.
    include_hidden: bool = False
    #: `read_heads` has the requests of all its files in flight at once on one
    #: thread (SFTP); a scan then hands it a few files per call instead of
    #: reading each file in a thread of its own.
    heads_at_once: ClassVar[bool] = False

    def __init__(self, origin_id: str) -> None:
        self.id = origin_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, {self.location!r})"

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the origin is, for people and for the catalog (e.g.
        ``s3://bucket/prefix``). Never contains a secret."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise `OriginUnavailable` unless the origin answers now (a cheap probe)."""

    def reachable(self) -> bool:
        """True if `check` passes."""
        try:
            self.check()
        except OriginUnavailable:
            return False
        except OSError as exc:
            log.debug("origin %s: check failed: %s", self.id, exc)
            return False
        return True

    @abc.abstractmethod
    def list_dir(self, reldir: str, extensions: Iterable[str]) -> DirListing:
        """Subfolders of *reldir* ("" is the root) and its files whose extension is
        one of *extensions*, with their stat. Hidden entries are left out."""

    @abc.abstractmethod
    def stat(self, relpath: str) -> FileStat:
        """Size and modification time of one file."""

    @abc.abstractmethod
    def open(self, relpath: str) -> OriginFile:
        """Open one file for ranged reads."""

    def open_listed(self, relpath: str, stat: FileStat) -> OriginFile:
        """Open *relpath* as its listing described it (*stat*), for a scan: an
        origin may then skip asking for the stat again (S3 makes no HeadObject,
        SFTP no fstat). A read of a file that is no longer what was listed
        raises `FileChanged` (or returns what is there, if the origin cannot
        tell). By default, `open`."""
        return self.open(relpath)

    def read_heads(self, heads: Sequence[tuple[str, FileStat, int]]) -> list[bytes | OSError]:
        """The first *length* bytes of each ``(relpath, stat, length)`` of
        *heads*, each file opened as its listing described it (`open_listed`);
        all of a shorter file. A file that cannot be read has its error in its
        place; the origin failing as a whole (`OriginUnavailable`) raises. By
        default, one file after another."""
        read: list[bytes | OSError] = []
        for relpath, stat, length in heads:
            try:
                with self.open_listed(relpath, stat) as opened:
                    read.append(opened.read(0, min(length, opened.size)))
            except OriginUnavailable:
                raise
            except OSError as exc:
                read.append(exc)
        return read

    def local_path(self, relpath: str) -> str | None:
        """A path the local kernel can open for *relpath*, if there is one (tags of
        such files are read by worker processes straight from the path)."""
        return None

    def close(self) -> None:  # noqa: B027 - local origins hold nothing
        """Release pooled connections. The origin may be used again after."""


class SeekableReader(io.RawIOBase):
    """A file of *size* bytes read by ``readinto`` at a position kept here: the
    seekable binary file mutagen wants, over something that reads ranges."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}
        self._position = max(0, base[whence] + offset)
        return self._position


class RangeReader(SeekableReader):
    """An `OriginFile` as a seekable binary file, for mutagen.

    Tags sit at the start of a file (and sometimes at its end); wrapped in an
    `io.BufferedReader` this reads just those ranges, never the whole file.
    """

    def __init__(self, file: OriginFile) -> None:
        super().__init__(file.size)
        self._file = file

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), max(0, self._file.size - self._position))
        if want == 0:
            return 0
        data = self._file.read(self._position, want)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)
