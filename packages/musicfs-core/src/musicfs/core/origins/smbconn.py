"""SMB connections for `musicfs.core.origins.smb`, and what a server's answers mean.

Job: the smbprotocol side of an SMB origin: make one connection with a
logged-on session (`SMBServer.connect`), cut or close connections without
waiting for the server, and map an exception raised by ``smbclient`` or
``smbprotocol`` to the error the origin interface promises
(`musicfs.core.origins.base`, `origin_error`): a missing file or folder is
`FileNotFoundError`, access denied `PermissionError`, and no connection, a
timeout, a lost session, a failed logon or a missing share `OriginUnavailable`.
Pooling and deadlines are `musicfs.core.origins.sessions`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import socket
from collections.abc import Callable
from typing import Any

from musicfs.core.origins.base import OriginUnavailable
from musicfs.core.origins.sessions import Watchdog

log = logging.getLogger(__name__)

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


class SMBServer:
    """How to reach one origin's server, and its ``smbclient`` connection cache.

    The session pool and the watchdog hold this, never the origin, so that an
    origin nobody closed is still collected (and hangs up).
    """

    def __init__(
        self,
        smbclient: Any,
        connection_class: Any,
        server: str,
        port: int,
        *,
        user: str | None,
        password: str | None,
        timeout: float,
        watchdog: Watchdog,
    ) -> None:
        self.smbclient = smbclient
        self.connection_class = connection_class
        self.server, self.port = server, port
        self.user, self.password = user, password
        self.timeout = timeout
        self.watchdog = watchdog
        #: smbclient's connection cache of this origin; holds the pooled
        #: connection (and any smbclient made itself, see `connect`).
        self.cache: dict[str, Any] = {}
        self.key = f"{server.lower()}:{port}"

    def connect(self, seconds: float) -> Any:
        """A connection with a logged-on session, within *seconds* (at most
        *timeout*; the watchdog cuts it if the server stops answering while it
        negotiates)."""
        seconds = min(seconds, self.timeout)
        if seconds <= 0:
            raise TimeoutError(errno.ETIMEDOUT, "no time left to connect")
        connection = self.connection_class(
            self.smbclient.ClientConfig().client_guid, self.server, self.port
        )
        with self.watchdog.bound(seconds, functools.partial(_shutdown, connection)) as limit:
            try:
                connection.connect(timeout=max(0.1, seconds))
                # One smbclient made itself (a request that found the pooled one
                # gone) would otherwise be left open behind this one.
                stray = self.cache.pop(self.key, None)
                if stray is not None:
                    self.close(stray)
                self.cache[self.key] = connection
                self.smbclient.register_session(
                    self.server,
                    username=self.user,
                    password=self.password,
                    port=self.port,
                    connection_timeout=max(0.1, limit.remaining()),
                    connection_cache=self.cache,
                )
            except BaseException:
                self.close(connection)
                raise
        if limit.expired:  # cut just as it was done
            self.close(connection)
            raise TimeoutError(errno.ETIMEDOUT, "connecting timed out")
        return connection

    def alive(self, connection: Any) -> bool:
        return bool(connection.transport.connected) and self.cache.get(self.key) is connection

    def close(self, connection: Any) -> None:
        """Forget *connection* and close what is left of it, without logging off."""
        if self.cache.get(self.key) is connection:
            del self.cache[self.key]
        _shutdown(connection)
        _disconnect_quietly(connection, logoff=False, timeout=None)

    def cut(self) -> None:
        """Shut down every socket at once, without locks, from any thread. Every
        request waiting on them wakes up and fails; the pool drops them."""
        for connection in list(self.cache.values()):
            _shutdown(connection)

    def log_off(self) -> None:
        """Log off and close every connection. Each stays in the cache until it
        is closed, so that the watchdog can cut one whose server does not answer."""
        for key, connection in list(self.cache.items()):
            _disconnect_quietly(connection, logoff=True, timeout=self.timeout)
            self.cache.pop(key, None)

    def drop(self) -> None:
        """Forget every connection left in the cache, closing what is left of them."""
        while self.cache:
            with contextlib.suppress(KeyError):
                _, connection = self.cache.popitem()
                self.close(connection)


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


def origin_error(
    exc: BaseException,
    *,
    origin_id: str,
    where: str,
    user: str | None,
    timed_out: bool,
    timeout_message: str,
    scrub: Callable[[str], str],
) -> BaseException:
    """The exception the interface promises for *exc*, raised by smbclient while
    working on *where* (a location, never a secret). *timed_out*: the call
    outlived its deadline and was cut; *scrub* takes the password out of a
    message, should a library ever have put it there."""
    from smbprotocol.exceptions import (  # type: ignore[import-untyped]
        SMBAuthenticationError,
        SMBException,
        SMBOSError,
        SMBResponseException,
    )

    def unavailable(message: str, code: int = errno.EIO) -> OriginUnavailable:
        return OriginUnavailable(origin_id, scrub(message), code)

    if isinstance(exc, OriginUnavailable):
        return exc
    # smbprotocol's own limits (negotiate, logoff) raise a bare SMBException.
    if timed_out or (type(exc) is SMBException and str(exc).startswith("Connection timeout")):
        return OriginUnavailable(origin_id, timeout_message, errno.ETIMEDOUT)
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
            message = f"{where}: logon failed for user {user!r} (status {status:#x})"
            return unavailable(message, errno.EACCES)
        if status in _UNAVAILABLE:
            return unavailable(f"{where}: {name} (status {status:#x})")
        if isinstance(exc, OSError) and exc.errno:
            return OSError(exc.errno, scrub(f"{exc.strerror} (status {status:#x})"), where)
        return OSError(errno.EIO, scrub(f"SMB error {name} (status {status:#x})"), where)
    if isinstance(exc, SMBAuthenticationError):
        return unavailable(f"{where}: authentication failed: {exc}", errno.EACCES)
    if isinstance(exc, SMBException | ConnectionError | TimeoutError | socket.gaierror):
        return unavailable(f"{where}: {exc}")
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError):
        return unavailable(f"{where}: {exc}", exc.errno or errno.EIO)
    if isinstance(exc, ValueError) and isinstance(exc.__cause__, OSError):
        # smbprotocol's "Failed to connect to 'host:port': ..."
        return unavailable(f"{where}: {exc}", errno.EHOSTUNREACH)
    return exc
