"""SMB origins read directly: the client speaks SMB 2/3 itself (``smbprotocol``).

This is the origin for a share that is *not* mounted by the system (kind
``smbclient``): MusicFS connects to ``\\\\server\\share`` with a user and
password, lists folders, stats files and reads byte ranges over its own
connection. A share the system mounted is a plain folder and belongs to
`musicfs.core.origins.local` (kind ``smb``).

What this module does, and nothing more:

- **one connection pool per origin.** Connections live in this origin's own
  ``smbclient`` connection cache, not the process-wide one, so closing or
  resetting one origin never touches another that talks to the same server.
- **a deadline on every request.** ``smbprotocol`` waits for most answers
  without a time limit, so a server that stops answering (hung, or a network
  that drops packets) would block a worker thread forever. A watchdog thread
  cuts this origin's connections when a request outlives ``timeout``; the
  request then fails with `OriginUnavailable` at once, and the next one
  connects afresh.
- **reconnecting.** A connection that died (server restarted, watchdog cut it)
  is dropped and a new one made with the same credentials on the next request;
  an open `SMBFile` reopens its handle the same way (if the file did not change
  meanwhile), so the origin object survives outages.
- **error mapping** (see `musicfs.core.origins.base`): a missing file or folder
  is `FileNotFoundError` while the root is there; access denied is
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
import socket
import threading
import time
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

log = logging.getLogger(__name__)

T = TypeVar("T")

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

# FILE_ATTRIBUTE_* bits of directory entries.
_ATTR_HIDDEN = 0x2
_ATTR_DIRECTORY = 0x10
_ATTR_REPARSE_POINT = 0x400

# NTSTATUS codes, by what they mean to the layers above.
_NOT_FOUND = {
    0xC000000F,  # STATUS_NO_SUCH_FILE
    0xC0000033,  # STATUS_OBJECT_NAME_INVALID
    0xC0000034,  # STATUS_OBJECT_NAME_NOT_FOUND
    0xC0000039,  # STATUS_OBJECT_PATH_INVALID
    0xC000003A,  # STATUS_OBJECT_PATH_NOT_FOUND
    0xC0000056,  # STATUS_DELETE_PENDING
    0xC0000225,  # STATUS_NOT_FOUND
}
_DENIED = {
    0xC0000022,  # STATUS_ACCESS_DENIED
    0xC0000043,  # STATUS_SHARING_VIOLATION (another client holds it exclusively)
    0xC0000061,  # STATUS_PRIVILEGE_NOT_HELD
}
_UNAVAILABLE = {
    0xC000006A,  # STATUS_WRONG_PASSWORD
    0xC000006D,  # STATUS_LOGON_FAILURE
    0xC000006E,  # STATUS_ACCOUNT_RESTRICTION
    0xC0000071,  # STATUS_PASSWORD_EXPIRED
    0xC0000072,  # STATUS_ACCOUNT_DISABLED
    0xC0000234,  # STATUS_ACCOUNT_LOCKED_OUT
    0xC0000008,  # STATUS_INVALID_HANDLE (a handle of a session that is gone)
    0xC0000128,  # STATUS_FILE_CLOSED
    0xC000009A,  # STATUS_INSUFFICIENT_RESOURCES
    0xC00000B5,  # STATUS_IO_TIMEOUT
    0xC00000C9,  # STATUS_NETWORK_NAME_DELETED
    0xC00000CC,  # STATUS_BAD_NETWORK_NAME (no such share)
    0xC00000D0,  # STATUS_REQUEST_NOT_ACCEPTED
    0xC000020C,  # STATUS_CONNECTION_DISCONNECTED
    0xC000020D,  # STATUS_CONNECTION_RESET
    0xC0000203,  # STATUS_USER_SESSION_DELETED
    0xC0000205,  # STATUS_INSUFF_SERVER_RESOURCES
    0xC000026D,  # STATUS_DFS_UNAVAILABLE
    0xC000035C,  # STATUS_NETWORK_SESSION_EXPIRED
    0xC0000466,  # STATUS_SERVER_UNAVAILABLE
}
_LOGON_FAILED = {0xC000006A, 0xC000006D, 0xC000006E, 0xC0000071, 0xC0000072, 0xC0000234}

# How long the watchdog thread lingers without requests before it exits.
_WATCHDOG_IDLE = 30.0


def _ns_from_datetime(value: datetime.datetime) -> int:
    """Nanoseconds since the epoch of a FILETIME that smbprotocol made a datetime."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _whole_us(ns: int) -> int:
    return ns // 1000 * 1000


class _Pool:
    """The SMB connections of one origin (an ``smbclient`` connection cache), and
    the one being set up, so that the watchdog can cut them all."""

    def __init__(self) -> None:
        self.connections: dict[str, Any] = {}
        self.connecting: Any = None
        self.lock = threading.Lock()  # one thread at a time sets up a connection

    def cut(self) -> None:
        """Shut down every socket at once, without locks, from any thread. Every
        request waiting on them wakes up and fails; the connections are dropped."""
        for connection in [*self.connections.values(), self.connecting]:
            if connection is not None:
                _shutdown(connection)

    def drop(self) -> None:
        """Forget every connection, closing what is left of them."""
        while self.connections:
            with contextlib.suppress(KeyError):
                _, connection = self.connections.popitem()
                _shutdown(connection)
                _disconnect_quietly(connection, logoff=False, timeout=None)

    def close(self, timeout: float) -> None:
        """Log off and close every connection. Each stays in the pool until it is
        closed, so that the watchdog can cut one whose server does not answer."""
        for key, connection in list(self.connections.items()):
            _disconnect_quietly(connection, logoff=True, timeout=timeout)
            self.connections.pop(key, None)


def _shutdown(connection: Any) -> None:
    transport = getattr(connection, "transport", None)
    sock = getattr(transport, "_sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _disconnect_quietly(connection: Any, *, logoff: bool, timeout: float | None) -> None:
    try:
        if getattr(connection, "transport", None) is not None:
            connection.disconnect(close=logoff, timeout=timeout)
    except Exception as exc:  # a dead connection has nothing left to close
        log.debug("closing an SMB connection: %s", exc)
        _shutdown(connection)


class _Watchdog:
    """Cuts the connections of a `_Pool` when a request outlives its deadline.

    ``arm`` registers a deadline and returns a token; ``disarm`` removes it and
    tells whether it expired. One daemon thread per origin checks the deadlines;
    it exits after `_WATCHDOG_IDLE` seconds without requests and starts again on
    the next one. It holds the pool, never the origin.
    """

    def __init__(self, pool: _Pool, name: str, poll: float) -> None:
        self._pool = pool
        self._name = name
        self._poll = poll
        self._cond = threading.Condition()
        self._deadlines: dict[int, float] = {}
        self._expired: set[int] = set()
        self._tokens = 0
        self._thread: threading.Thread | None = None
        self._stopping = False

    def arm(self, deadline: float) -> int:
        with self._cond:
            self._tokens += 1
            self._deadlines[self._tokens] = deadline
            self._stopping = False  # a thread told to stop and not gone yet goes on
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            return self._tokens

    def rearm(self, token: int, deadline: float) -> None:
        with self._cond:
            if token in self._deadlines:
                self._deadlines[token] = deadline

    def disarm(self, token: int) -> bool:
        """Forget *token*; True if its deadline passed and the connections were cut."""
        with self._cond:
            self._deadlines.pop(token, None)
            if token in self._expired:
                self._expired.discard(token)
                return True
            return False

    def expired(self, token: int) -> bool:
        with self._cond:
            return token in self._expired

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._cond:
                now = time.monotonic()
                due = [token for token, deadline in self._deadlines.items() if deadline <= now]
                for token in due:
                    del self._deadlines[token]
                    self._expired.add(token)
                if self._deadlines or due:
                    idle_since = now
                if self._stopping or (not self._deadlines and now - idle_since > _WATCHDOG_IDLE):
                    self._thread = None
                    return
                if not due:
                    # Until the earliest deadline, but at most `poll`: arm() does not
                    # wake this thread, so a deadline armed meanwhile waits that long.
                    earliest = min(self._deadlines.values(), default=now + self._poll)
                    self._cond.wait(max(0.0, min(earliest - now, self._poll)))
                    continue
            log.debug("%s: a request outlived its deadline; cutting the connections", self._name)
            self._pool.cut()


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
        self._connection_class: Any = Connection
        self.server = server
        self.share = share.strip("\\/")
        self.root = "/".join(p for p in root.replace("\\", "/").split("/") if p not in ("", "."))
        self.port = port
        self.user = user
        self._password = password
        self.timeout = timeout
        self._pool = _Pool()
        self._watchdog = _Watchdog(
            self._pool, f"smb-watchdog-{origin_id}", poll=min(1.0, timeout / 4)
        )
        self._unc_root = "\\".join(
            ["\\\\" + server, self.share, *(p for p in self.root.split("/") if p)]
        )
        # An origin nobody closed still hangs up when it is collected.
        weakref.finalize(self, _finalize, self._pool, self._watchdog)

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
        deadline = time.monotonic() + self.timeout
        token = self._watchdog.arm(deadline)
        try:
            self._pool.close(self.timeout)
        finally:
            self._watchdog.disarm(token)
            self._pool.drop()
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
            "connection_cache": self._pool.connections,
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
        session: bool = True,
        root_check: bool = False,
        token: int | None = None,
    ) -> T:
        """Run one smbclient request under the deadline, with its errors mapped.

        *session*: make sure a connection and a logged-on session exist first.
        *root_check*: a missing *relpath* is `FileNotFoundError` only if the root
        is there (a share or root that went away makes every path vanish).
        """
        deadline = time.monotonic() + self.timeout
        own = token is None
        if token is None:
            token = self._watchdog.arm(deadline)
        else:
            self._watchdog.rearm(token, deadline)
        try:
            if session:
                self._session(deadline)
            return request()
        except Exception as exc:
            caught: Exception = exc
            error = self._error(exc, relpath, timed_out=self._watchdog.expired(token))
        finally:
            if own:
                self._watchdog.disarm(token)
        if isinstance(error, OriginUnavailable):
            self._pool.drop()
        elif isinstance(error, FileNotFoundError) and root_check:
            self._check_root_after_miss(error, relpath)
        if error is caught:
            raise error
        raise error from caught

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

    def _session(self, deadline: float) -> None:
        """Connect and log on unless this origin already has a live session."""
        pool = self._pool
        if not pool.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise OriginUnavailable(self.id, self._timeout_message(), errno.ETIMEDOUT)
        try:
            key = f"{self.server.lower()}:{self.port}"
            connection = pool.connections.get(key)
            if connection is not None and not connection.transport.connected:
                del pool.connections[key]
                _disconnect_quietly(connection, logoff=False, timeout=None)
                connection = None
            if connection is None:
                # Made here rather than by register_session so that the watchdog can
                # cut it while it negotiates, and a failed one is not left behind.
                connection = self._connection_class(
                    self._smbclient.ClientConfig().client_guid, self.server, self.port
                )
                pool.connecting = connection
                try:
                    connection.connect(timeout=max(0.1, deadline - time.monotonic()))
                except BaseException:
                    _shutdown(connection)
                    _disconnect_quietly(connection, logoff=False, timeout=None)
                    raise
                finally:
                    pool.connecting = None
                pool.connections[key] = connection
            self._smbclient.register_session(
                self.server,
                username=self.user,
                password=self._password,
                port=self.port,
                connection_timeout=max(0.1, deadline - time.monotonic()),
                connection_cache=pool.connections,
            )
        finally:
            pool.lock.release()

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

    def _open_raw(self, relpath: str, token: int | None = None) -> tuple[Any, int, int]:
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

        return self._call(relpath, request, root_check=True, token=token)

    def _error(self, exc: BaseException, relpath: str, *, timed_out: bool) -> BaseException:
        """The exception the interface promises for *exc*, raised by smbclient."""
        from smbprotocol.exceptions import (  # type: ignore[import-untyped]
            SMBAuthenticationError,
            SMBException,
            SMBOSError,
            SMBResponseException,
        )

        where = f"{self.location}/{relpath}" if relpath else self.location
        if isinstance(exc, OriginUnavailable):
            return exc
        # smbprotocol's own limits (negotiate, logoff) raise a bare SMBException.
        if timed_out or (type(exc) is SMBException and str(exc).startswith("Connection timeout")):
            return OriginUnavailable(self.id, self._timeout_message(where), errno.ETIMEDOUT)
        status = None
        if isinstance(exc, SMBOSError):
            status = exc.ntstatus
        elif isinstance(exc, SMBResponseException):
            status = exc.status
        if status is not None:
            name = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            if status in _NOT_FOUND:
                return FileNotFoundError(errno.ENOENT, "No such file or directory", where)
            if status in _DENIED:
                return PermissionError(errno.EACCES, "Permission denied", where)
            if status in _LOGON_FAILED:
                return OriginUnavailable(
                    self.id,
                    self._scrub(
                        f"{where}: logon failed for user {self.user!r} (status {status:#x})"
                    ),
                    errno.EACCES,
                )
            if status in _UNAVAILABLE:
                return OriginUnavailable(
                    self.id, self._scrub(f"{where}: {name} (status {status:#x})")
                )
            if isinstance(exc, OSError) and exc.errno:
                return OSError(
                    exc.errno, self._scrub(f"{exc.strerror} (status {status:#x})"), where
                )
            return OSError(errno.EIO, self._scrub(f"SMB error {name} (status {status:#x})"), where)
        if isinstance(exc, SMBAuthenticationError):
            return OriginUnavailable(
                self.id, self._scrub(f"{where}: authentication failed: {exc}"), errno.EACCES
            )
        if isinstance(exc, SMBException | ConnectionError | TimeoutError | socket.gaierror):
            return OriginUnavailable(self.id, self._scrub(f"{where}: {exc}"))
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError):
            return OriginUnavailable(
                self.id, self._scrub(f"{where}: {exc}"), exc.errno or errno.EIO
            )
        if isinstance(exc, ValueError) and isinstance(exc.__cause__, OSError):
            # smbprotocol's "Failed to connect to 'host:port': ..."
            return OriginUnavailable(self.id, self._scrub(f"{where}: {exc}"), errno.EHOSTUNREACH)
        return exc

    def _timeout_message(self, where: str | None = None) -> str:
        return f"{where or self.location}: no answer within {self.timeout:g} s"

    def _scrub(self, message: str) -> str:
        """*message* without the password, should a library ever have put it there."""
        if self._password:
            message = message.replace(self._password, "***")
        return message


def _finalize(pool: _Pool, watchdog: _Watchdog) -> None:
    watchdog.stop()
    pool.drop()


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
            token = self.origin._watchdog.arm(time.monotonic() + self.origin.timeout)
            try:
                while got < want:
                    raw = self._handle(token)
                    chunk = functools.partial(_read_into, raw, offset + got, view[got:])
                    try:
                        # Each chunk gets its own deadline: a long read that makes
                        # progress is not a server that stopped answering.
                        n = self.origin._call(self.relpath, chunk, session=False, token=token)
                    except OriginUnavailable:
                        self._discard()
                        raise
                    if n == 0:
                        break
                    got += n
            finally:
                self.origin._watchdog.disarm(token)
        return bytes(view[:got]) if got < want else bytes(buffer)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            raw, self._raw = self._raw, None
            if raw is not None:
                self._release(raw)

    def _handle(self, token: int) -> Any:
        """The raw file, reopened if its connection is gone."""
        if self._raw is not None and _alive(self._raw):
            return self._raw
        if self._raw is not None:
            self._release(self._raw)
            self._raw = None
        raw, size, mtime_ns = self.origin._open_raw(self.relpath, token)
        if (size, mtime_ns) != (self.size, self.mtime_ns):
            self._release(raw, token)
            raise OSError(errno.ESTALE, "changed on the server since it was opened", self.relpath)
        self._raw = raw
        return raw

    def _discard(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            self._release(raw)

    def _release(self, raw: Any, token: int | None = None) -> None:
        """Close *raw* on the server if its connection still lives (a server gone
        took the handle with it)."""
        if _alive(raw):
            try:
                self.origin._call(self.relpath, raw.close, session=False, token=token)
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
