"""SMB origins read directly: the client speaks SMB 2/3 itself (``smbprotocol``).

This is the origin for a share that is *not* mounted by the system (kind
``smbclient``): MusicFS connects to ``\\\\server\\share`` with a user and
password, lists folders, stats files and reads byte ranges over its own
connection. A share the system mounted is a plain folder and belongs to
`musicfs.core.origins.local` (kind ``smb``).

What this module does, and nothing more:

- **one connection per origin**, from the shared `SessionPool`
  (`musicfs.core.origins.sessions`) with room for one: smbprotocol multiplexes
  every request of every thread over it. It lives in this origin's own
  ``smbclient`` connection cache, not the process-wide one, so closing or
  resetting one origin never touches another that talks to the same server.
- **a deadline on every request**, from the shared `Watchdog`.
  ``smbprotocol`` waits for most answers without a time limit, so a server that
  stops answering (hung, or a network that drops packets) would block a worker
  thread forever. The watchdog cuts this origin's connections when a request
  outlives ``timeout``; the request then fails with `OriginUnavailable` at
  once, and the next one connects afresh.
- **reconnecting.** A connection that died (server restarted, watchdog cut it)
  is dropped and a new one made with the same credentials on the next request;
  an open `SMBFile` reopens its handle the same way (if the file did not change
  meanwhile), so the origin object survives outages.
- **error mapping** (`musicfs.core.origins.smbconn.origin_error`): a missing file or
  folder is `FileNotFoundError` while the root is there; access denied is
  `PermissionError`; no connection, a timeout, a lost session, a failed logon
  or a missing share or root is `OriginUnavailable`.

Retries, failover, health checks and limits are not here: they live in
`musicfs.core.origins.federation`. The password is kept only in memory for logons and
never appears in `location`, messages or logs.

Modification times come from SMB FILETIMEs (100 ns) but directory listings
only carry them to the microsecond, so every ``mtime_ns`` of this origin is
truncated to whole microseconds: listing, `SMBOrigin.stat` and an open file
agree on it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import quote

from musicfs.core.model import FileStat
from musicfs.core.origins.base import (
    DirListing,
    Origin,
    OriginFile,
    OriginUnavailable,
    extension_set,
    listed_name,
    wanted_file,
)
from musicfs.core.origins.sessions import (
    ArmedDeadline,
    Pooled,
    SessionLost,
    SessionPool,
    Verdict,
    Watchdog,
)
from musicfs.core.origins.smbconn import SMBServer, origin_error

log = logging.getLogger(__name__)

T = TypeVar("T")

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

# FILE_ATTRIBUTE_* bits of directory entries.
_ATTR_HIDDEN = 0x2
_ATTR_DIRECTORY = 0x10
_ATTR_REPARSE_POINT = 0x400


def _ns_from_datetime(value: datetime.datetime) -> int:
    """Nanoseconds since the epoch of a FILETIME that smbprotocol made a datetime."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _whole_us(ns: int) -> int:
    return ns // 1000 * 1000


class SMBOrigin(Origin):
    """A folder *root* of the share *share* on the SMB server *server*.

    *user* and *password* log on (NTLM or Kerberos through SPNEGO; without a
    user, Kerberos from the credential cache). No request waits longer than
    *timeout* seconds. The origin may be used from many threads at once.
    """

    kind = "smbclient"

    def __init__(
        self,
        origin_id: str,
        server: str,
        share: str,
        root: str = "",
        *,
        port: int = 445,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(origin_id)
        try:
            import smbclient  # type: ignore[import-untyped]
            from smbprotocol.connection import Connection  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError(
                "SMB origins need the smbprotocol package (pip install smbprotocol)"
            ) from exc
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._smbclient: Any = smbclient
        self.server = server
        self.share = share.strip("\\/")
        self.root = "/".join(p for p in root.replace("\\", "/").split("/") if p not in ("", "."))
        self.port = port
        self.user = user
        self._password = password
        self.timeout = timeout
        self._watchdog = Watchdog(f"smb-watchdog-{origin_id}")
        self._server = SMBServer(
            smbclient,
            Connection,
            server,
            port,
            user=user,
            password=password,
            timeout=timeout,
            watchdog=self._watchdog,
        )
        self._pool: SessionPool[Any] = SessionPool(
            origin_id,
            self.location,
            self._server.connect,
            alive=self._server.alive,
            close=self._server.close,
            size=1,  # smbprotocol multiplexes every request over one connection
            timeout=timeout,
        )
        self._unc_root = "\\".join(
            ["\\\\" + server, self.share, *(p for p in self.root.split("/") if p)]
        )
        # An origin nobody closed still hangs up when it is collected.
        weakref.finalize(self, _finalize, self._server, self._pool, self._watchdog)

    # -- the interface ------------------------------------------------------------------

    @property
    def location(self) -> str:
        host = f"[{self.server}]" if ":" in self.server else self.server
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        path = "/".join(quote(p) for p in (self.share, *self.root.split("/")) if p)
        return f"smb://{user}{host}:{self.port}/{path}"

    def check(self) -> None:
        """Raise `OriginUnavailable` unless the root answers as a directory."""
        try:
            st = self._call(
                "", functools.partial(self._smbclient.stat, self._unc_root, **self._kwargs())
            )
        except OriginUnavailable:
            raise
        except OSError as exc:
            raise OriginUnavailable(
                self.id, f"{self.location}: {exc.strerror or exc}", exc.errno or errno.EIO
            ) from exc
        if not int(st.st_file_attributes) & _ATTR_DIRECTORY:
            raise OriginUnavailable(self.id, f"{self.location} is not a directory", errno.ENOTDIR)

    def list_dir(self, reldir: str, extensions: Iterable[str]) -> DirListing:
        """List one directory: subfolders, and files with one of *extensions*.

        Hidden entries (a leading dot, or the hidden attribute, which Samba gives
        dot files) are left out unless `include_hidden`, AppleDouble ``._*`` files
        always (`listed_name`), and so are folders that are reparse points (links
        and junctions, which can loop).
        """
        wanted = extension_set(extensions)
        path = self._unc(reldir)
        entries = self._call(reldir, functools.partial(self._scan, path), root_check=True)
        listing = DirListing()
        for name, attributes, listed_size, listed_mtime_ns in entries:
            if not listed_name(name, self.include_hidden):
                continue
            if attributes & _ATTR_HIDDEN and not self.include_hidden:
                continue
            if attributes & _ATTR_DIRECTORY:
                if not attributes & _ATTR_REPARSE_POINT:
                    listing.subdirs.append(name)
                continue
            if not wanted_file(name, wanted, self.include_hidden):
                continue
            st = FileStat(listed_size, listed_mtime_ns)
            if attributes & _ATTR_REPARSE_POINT:  # a link to a file: stat its target
                try:
                    st = self.stat(f"{reldir}/{name}" if reldir else name)
                except (FileNotFoundError, PermissionError) as exc:
                    log.debug("skipping %s\\%s: %s", path, name, exc)
                    continue
            listing.files.append((name, st))
        return listing

    def stat(self, relpath: str) -> FileStat:
        path = self._unc(relpath)
        st = self._call(
            relpath,
            functools.partial(self._smbclient.stat, path, **self._kwargs()),
            root_check=True,
        )
        return FileStat(int(st.st_size), _whole_us(int(st.st_mtime_ns)))

    def open(self, relpath: str) -> SMBFile:
        raw, size, mtime_ns = self._open_raw(relpath)
        return SMBFile(self, relpath, raw, size, mtime_ns)

    def close(self) -> None:
        """Log off and close the connections; the origin connects again when used."""
        with self._watchdog.bound(self.timeout, self._server.cut):
            self._server.log_off()
        self._pool.close()
        self._server.drop()
        self._watchdog.stop()

    # -- requests -----------------------------------------------------------------------

    def _kwargs(self) -> dict[str, Any]:
        """The session arguments every smbclient call takes: with the credentials, a
        call that finds its connection gone makes a new one that can log on."""
        return {
            "username": self.user,
            "password": self._password,
            "port": self.port,
            "connection_timeout": self.timeout,
            "connection_cache": self._server.cache,
        }

    def _unc(self, relpath: str) -> str:
        parts = [p for p in relpath.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise FileNotFoundError(errno.ENOENT, "no such file (.. in path)", relpath)
        return "\\".join([self._unc_root, *parts])

    def _call(
        self,
        relpath: str,
        request: Callable[[], T],
        *,
        root_check: bool = False,
        pooled: bool = True,
    ) -> T:
        """Run one smbclient request on the origin's connection (made first if
        there is none), under the deadline, with its errors mapped.

        *root_check*: a missing *relpath* is `FileNotFoundError` only if the root
        is there (a share or root that went away makes every path vanish).
        *pooled* False: a request on an open file's handle, which lives on its own
        connection: run it as it is, never connecting first (that could close the
        very connection the handle is on).
        """
        try:
            with self._watchdog.bound(self.timeout, self._server.cut) as deadline:
                if not pooled:
                    try:
                        return request()
                    except Exception as exc:
                        error = self._error(exc, relpath, timed_out=deadline.expired)
                        if error is exc:
                            raise
                        raise error from exc
                judge = functools.partial(self._judge, relpath=relpath, deadline=deadline)
                return self._pool.run(lambda _: request(), judge, deadline=deadline.at)
        except FileNotFoundError as miss:
            if root_check:
                self._check_root_after_miss(miss, relpath)
            raise

    def _judge(
        self,
        exc: BaseException,
        pooled: Pooled[Any] | None,
        *,
        relpath: str,
        deadline: ArmedDeadline,
    ) -> Verdict:
        """A connection that failed to answer is dropped; nothing is retried here
        but a request that never reached the server (the federation retries an
        origin that did not answer)."""
        if isinstance(exc, SessionLost):  # dropped by another request before this one used it
            message = f"{self.location}: connection lost"
            return Verdict(OriginUnavailable(self.id, message, errno.ECONNRESET), True, True)
        error = self._error(exc, relpath, timed_out=deadline.expired)
        return Verdict(error, lost=isinstance(error, OriginUnavailable))

    def _check_root_after_miss(self, miss: FileNotFoundError, relpath: str) -> None:
        """Raise `OriginUnavailable` if the root is not there: *relpath* was the
        root, or the share or the root went away."""
        if relpath.strip("/"):
            stat_root = functools.partial(self._smbclient.stat, self._unc_root, **self._kwargs())
            try:
                self._call("", stat_root)
            except FileNotFoundError:
                pass
            except OriginUnavailable:
                raise
            except OSError as exc:  # the root answers, if oddly: the file is just missing
                log.debug("%s: checking the root after a miss: %s", self.location, exc)
                return
            else:
                return
        raise OriginUnavailable(
            self.id, f"{self.location} is not there (no such share or root)", errno.ENOENT
        ) from miss

    def _scan(self, path: str) -> list[tuple[str, int, int, int]]:
        """(name, attributes, size, mtime_ns) of every entry of the folder *path*."""
        found: list[tuple[str, int, int, int]] = []
        with contextlib.closing(self._smbclient.scandir(path, **self._kwargs())) as entries:
            for entry in entries:
                info = entry.smb_info
                mtime_ns = _whole_us(_ns_from_datetime(info.last_write_time))
                found.append(
                    (str(entry.name), int(info.file_attributes), int(info.end_of_file), mtime_ns)
                )
        return found

    def _open_raw(self, relpath: str) -> tuple[Any, int, int]:
        """Open *relpath* for reading: the raw smbclient file, its size and mtime_ns."""
        path = self._unc(relpath)

        def request() -> tuple[Any, int, int]:
            raw = self._smbclient.open_file(
                path, mode="rb", buffering=0, share_access="rwd", **self._kwargs()
            )
            handle = raw.fd  # the SMB Open: the CREATE answer already has size and mtime
            return (
                raw,
                int(handle.end_of_file),
                _whole_us(_ns_from_datetime(handle.last_write_time)),
            )

        return self._call(relpath, request, root_check=True)

    def _error(self, exc: BaseException, relpath: str, *, timed_out: bool) -> BaseException:
        """The exception the interface promises for *exc*, raised by smbclient."""
        where = f"{self.location}/{relpath}" if relpath else self.location
        return origin_error(
            exc,
            origin_id=self.id,
            where=where,
            user=self.user,
            timed_out=timed_out,
            timeout_message=self._timeout_message(where),
            scrub=self._scrub,
        )

    def _timeout_message(self, where: str | None = None) -> str:
        return f"{where or self.location}: no answer within {self.timeout:g} s"

    def _scrub(self, message: str) -> str:
        """*message* without the password, should a library ever have put it there."""
        if self._password:
            message = message.replace(self._password, "***")
        return message


def _finalize(server: SMBServer, pool: SessionPool[Any], watchdog: Watchdog) -> None:
    watchdog.stop()
    pool.close()
    server.drop()


class SMBFile(OriginFile):
    """One file of an `SMBOrigin`, open for ranged reads.

    Calls are serialized (one SMB handle, one position). A handle whose connection
    died is reopened on the next read, if the file still has the size and mtime it
    had when first opened; if it changed, reads fail with ESTALE.
    """

    def __init__(self, origin: SMBOrigin, relpath: str, raw: Any, size: int, mtime_ns: int) -> None:
        self.origin = origin
        self.relpath = relpath
        self.size, self.mtime_ns = size, mtime_ns
        self._raw: Any = raw
        self._lock = threading.Lock()
        self._closed = False

    def read(self, offset: int, size: int) -> bytes:
        want = min(size, max(0, self.size - offset))
        if want <= 0:
            return b""
        buffer = bytearray(want)
        view = memoryview(buffer)
        got = 0
        with self._lock:
            if self._closed:
                raise ValueError("read of a closed SMB file")
            while got < want:
                raw = self._handle()
                chunk = functools.partial(_read_into, raw, offset + got, view[got:])
                try:
                    # Each chunk gets its own deadline: a long read that makes
                    # progress is not a server that stopped answering.
                    n = self.origin._call(self.relpath, chunk, pooled=False)
                except OriginUnavailable:
                    self._discard()
                    raise
                if n == 0:
                    break
                got += n
        return bytes(view[:got]) if got < want else bytes(buffer)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            raw, self._raw = self._raw, None
            if raw is not None:
                self._release(raw)

    def _handle(self) -> Any:
        """The raw file, reopened if its connection is gone."""
        if self._raw is not None and _alive(self._raw):
            return self._raw
        if self._raw is not None:
            self._release(self._raw)
            self._raw = None
        raw, size, mtime_ns = self.origin._open_raw(self.relpath)
        if (size, mtime_ns) != (self.size, self.mtime_ns):
            self._release(raw)
            raise OSError(errno.ESTALE, "changed on the server since it was opened", self.relpath)
        self._raw = raw
        return raw

    def _discard(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            self._release(raw)

    def _release(self, raw: Any) -> None:
        """Close *raw* on the server if its connection still lives (a server gone
        took the handle with it)."""
        if _alive(raw):
            try:
                self.origin._call(self.relpath, raw.close, pooled=False)
            except Exception as exc:
                log.debug("closing %s: %s", self.relpath, exc)
        # smbclient warns of a handle left open if it still looks connected; one that
        # died with its connection is closed as far as anybody can tell.
        with contextlib.suppress(AttributeError):
            if raw.fd.connected:
                raw.fd._connected = False


def _alive(raw: Any) -> bool:
    """Whether the raw smbclient file is open on a live connection."""
    try:
        handle = raw.fd
        return bool(handle.connected) and bool(handle.connection.transport.connected)
    except AttributeError:
        return False


def _read_into(raw: Any, position: int, view: memoryview) -> int:
    """One SMB read (at most the negotiated maximum) at *position* into *view*."""
    raw.seek(position)
    return int(raw.readinto(view))
