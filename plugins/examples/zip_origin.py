"""Example origin plugin: the tracks inside a ZIP archive (an album download).

Configure it as an origin of type ``zip``::

    [plugins]
    paths = ["/usr/share/musicfs/plugins/examples/zip_origin.py"]

    [[origins]]
    id = "downloads"
    type = "zip"
    path = "/home/me/Downloads/album.zip"

The archive is opened read-only; its folders are the origin's folders. Reads
are ranged: a stored (uncompressed) member is read at any offset directly, a
deflated one is decompressed from its start (zipfile seeks by reading), which
is fine for the small archives this example is meant for.
"""

from __future__ import annotations

import errno
import os
import threading
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

from musicfs.core.model import FileStat
from musicfs.core.origins.base import (
    DirListing,
    Origin,
    OriginFile,
    OriginUnavailable,
    extension_set,
    wanted_file,
)
from musicfs.plugins.api import OriginPlugin


class ZipMember(OriginFile):
    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, mtime_ns: int) -> None:
        self._lock = threading.Lock()
        self._file = archive.open(info)
        self.size, self.mtime_ns = info.file_size, mtime_ns

    def read(self, offset: int, size: int) -> bytes:
        with self._lock:  # one member handle, readers on several threads
            self._file.seek(offset)
            return self._file.read(size)

    def close(self) -> None:
        self._file.close()


class ZipOrigin(Origin):
    kind = "zip"

    def __init__(self, origin_id: str, path: str) -> None:
        super().__init__(origin_id)
        self.path = os.path.abspath(os.path.expanduser(path))
        self._archive: zipfile.ZipFile | None = None
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return f"zip://{self.path}"

    def _zip(self) -> zipfile.ZipFile:
        with self._lock:
            if self._archive is None:
                try:
                    self._archive = zipfile.ZipFile(self.path)
                except FileNotFoundError:
                    raise OriginUnavailable(self.id, f"{self.path} is not there") from None
                except (OSError, zipfile.BadZipFile) as exc:
                    raise OriginUnavailable(self.id, f"{self.path}: {exc}", errno.EIO) from None
            return self._archive

    def _mtime_ns(self) -> int:
        return os.stat(self.path).st_mtime_ns  # members change only with the archive

    def check(self) -> None:
        if not os.path.isfile(self.path):
            raise OriginUnavailable(self.id, f"{self.path} is not there")
        self._zip()

    def list_dir(self, reldir: str, extensions: Iterable[str]) -> DirListing:
        wanted, prefix = extension_set(extensions), f"{reldir}/" if reldir else ""
        listing, subdirs = DirListing(), set()
        found = not reldir
        mtime = self._mtime_ns()
        for info in self._zip().infolist():
            if not info.filename.startswith(prefix):
                continue
            found = True
            rest = info.filename[len(prefix) :]
            head, slash, _ = rest.partition("/")
            if slash:
                if head and not head.startswith("."):
                    subdirs.add(head)
            elif rest and not info.is_dir() and wanted_file(rest, wanted):
                listing.files.append((rest, FileStat(info.file_size, mtime)))
        if not found:
            raise FileNotFoundError(errno.ENOENT, f"{reldir}: no such folder in {self.path}")
        listing.subdirs.extend(sorted(subdirs))
        return listing

    def _info(self, relpath: str) -> zipfile.ZipInfo:
        try:
            return self._zip().getinfo(relpath)
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, f"{relpath}: not in {self.path}") from None

    def stat(self, relpath: str) -> FileStat:
        return FileStat(self._info(relpath).file_size, self._mtime_ns())

    def open(self, relpath: str) -> OriginFile:
        return ZipMember(self._zip(), self._info(relpath), self._mtime_ns())

    def close(self) -> None:
        with self._lock:
            if self._archive is not None:
                self._archive.close()
                self._archive = None


class ZipOriginPlugin(OriginPlugin):
    name = "zip-origin"
    version = "1.0.0"
    api_version = "1.0"
    origin_type = "zip"

    def create(self, origin_id: str, config: Mapping[str, Any]) -> Origin:
        path = config.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError("set 'path' to the ZIP archive")
        return ZipOrigin(origin_id, path)
