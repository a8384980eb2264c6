"""SFTP origins: a folder on a server reached over SSH, read with paramiko.

Job: list folders, stat files and read byte ranges under *root* on an SSH
server, through a small pool of SFTP sessions, and report failures in the terms
of `musicfs.core.origins.base`: a missing file is `FileNotFoundError`, a refused
one `PermissionError`, and a server that does not answer (refused or dropped
connection, timeout, failed login, unknown host key) `OriginUnavailable`.

Boundaries: it never writes to the server, never retries beyond replacing one
dropped connection, and never waits on the network longer than *timeout* per
step: retries over time, failover, health checks and bandwidth limits belong to
`musicfs.core.origins.federation`. paramiko is imported only when an `SFTPOrigin` is
made. Secrets (the password) are used to log in and appear in no message,
`location` or ``repr``.

Connections
    Up to *max_connections* SSH connections, one SFTP session each, made when
    first needed. An open file holds one session until it is closed; a stat or
    listing borrows one for the call. A session no one holds is preferred; when
    all *max_connections* exist and are held, callers share the least busy one
    (operations on one session take turns), so opening more files than there
    are connections never deadlocks. A session whose connection broke is
    dropped at once; the call that found it broken is tried once more on a new
    connection (an open file opens its file again there), unless the failure
    was a timeout: a server that hangs costs one *timeout*, not two.

Host keys
    Checked like OpenSSH does with ``StrictHostKeyChecking yes``: against
    ``/etc/ssh/ssh_known_hosts`` and ``~/.ssh/known_hosts``, or only against the
    file *known_hosts* names. An unknown key is refused with a message that says
    how to add it. Two special values of *known_hosts*:
    ``"accept-new"`` checks the same files but accepts a host that is in none of
    them, remembering its key for the life of the origin (not written to disk);
    ``"insecure-ignore"`` checks nothing (test set-ups only: it allows a
    man-in-the-middle).

Authentication
    With *key_file*: that key only (*password* is then its passphrase, and the
    login password if the key is refused). Without: the ssh agent and the
    default keys (``~/.ssh/id_*``), then *password* if one is given.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import logging
import os
import posixpath
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from musicfs.core.errors import MusicFSError
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

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: *known_hosts* value: accept and remember the key of a host no known_hosts file
#: lists (trust on first use, in memory); a changed key is still refused.
ACCEPT_NEW = "accept-new"
#: *known_hosts* value: check no host key at all (tests and labs only).
INSECURE_IGNORE = "insecure-ignore"

_SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
_USER_KNOWN_HOSTS = "~/.ssh/known_hosts"

# SFTP read requests are 32 KiB: every server takes that much (paramiko and
# OpenSSH's sftp use it too).
_REQUEST = 32 * 1024
# Requests waiting for their reply at once: 64 x 32 KiB fills paramiko's 2 MiB
# channel window (OpenSSH's sftp client also keeps 64 in flight).
_IN_FLIGHT = 64

# Reading. Measured on 127.0.0.1 (OpenSSH 9.2, paramiko 5.1, a 20 MB file read
# sequentially in 128 KiB requests, 2 cores busy with other tests, so +-30%):
#   paramiko seek+read, as is                 ~5 MB/s: Nagle + the server's delayed
#                                             ACK stall a request every few (40 ms)
#   the same with TCP_NODELAY (set here)      ~50 MB/s: 4 serial round trips each
#   paramiko prefetch() of the whole file     70-85 MB/s, but it asks for the whole
#                                             rest of the file and keeps what is
#                                             not read in memory until close
#   paramiko readv() of bounded windows       45-75 MB/s, and stale data kept: its
#                                             helper thread races with the replies
#                                             (prefetch "done" too early; late
#                                             replies pile up, unread)
#   own pipelining (`_read_pipelined`) of     90-145 MB/s (1 MiB max: 70-105, 2 MiB:
#   windows growing 256 KiB..4 MiB            90-130, 8 MiB: no better than 4)
# Random reads with it: 4 KiB 0.3 ms, 64 KiB 0.9 ms, 128 KiB 1.5 ms.
# So: a read that continues the previous one grows a read-ahead window (256 KiB,
# doubling up to 4 MiB, like the kernel's readahead), fetched with all its 32 KiB
# requests in flight; any other read fetches exactly what was asked (pipelined
# too). Random reads (tags, seeks in a player) never download more than they ask
# for, and an open file keeps at most one window in memory.
_WINDOW_FIRST = 256 * 1024
_WINDOW_MAX = 4 * 1024 * 1024

# errnos of a network that failed (not of a server that answered "no").
_NETWORK_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
                   errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETUNREACH,
                   errno.ENETDOWN, errno.ENOTCONN, errno.ESHUTDOWN,
                   errno.EADDRNOTAVAIL}  # fmt: skip


class _Broken(MusicFSError):
    """The session was found dropped before it was used."""


class _Session:
    """One SSH connection with its SFTP session."""

    def __init__(self, client: paramiko.SSHClient, sftp: paramiko.SFTPClient) -> None:
        self.client = client
        self.sftp = sftp
        #: Held for each operation: an SFTP session serves one caller at a time.
        self.lock = threading.Lock()
        #: How many callers (open files, running calls) hold the session.
        self.users = 0
        self.broken = False

    def alive(self) -> bool:
        """False once the connection, or just its SFTP channel, has closed."""
        transport = self.client.get_transport()
        channel = self.sftp.get_channel()
        return (
            not self.broken
            and transport is not None
            and transport.is_active()
            and channel is not None
            and not channel.closed
            and not channel.eof_received
        )

    def close(self) -> None:
        _close_client(self.client)


class _Pipeline(Protocol):
    """The part of paramiko's `SFTPClient` that pipelines requests (private,
    unchanged since paramiko 1.5; `_can_pipeline` checks it is there)."""

    def _async_request(self, fileobj: object, t: int, *args: object) -> int: ...
    def _read_response(self, waitfor: int | None = None) -> tuple[object, object]: ...


def _can_pipeline(sftp: object) -> bool:
    return hasattr(sftp, "_async_request") and hasattr(sftp, "_read_response")


class _Replies:
    """Where paramiko puts the replies to pipelined reads: it hands each reply to
    the object its request was sent for, whichever caller reads it off the wire."""

    def __init__(self) -> None:
        self.replies: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.replies[num] = (t, msg)


def _read_pipelined(handle: paramiko.SFTPFile, offset: int, length: int) -> tuple[bytes, bool]:
    """Up to *length* bytes at *offset*, asked for in 32 KiB requests of which up
    to `_IN_FLIGHT` wait for their reply at once (paramiko's own read sends one
    and waits; its readv/prefetch use a helper thread that races with replies).
    Returns the bytes up to the first short reply, and whether the server said
    the file ends there (else it sent less than asked: ask again from there)."""
    from paramiko.sftp import CMD_DATA, CMD_READ, CMD_STATUS, SFTP_EOF, int64

    pipe = cast(_Pipeline, handle.sftp)
    remote_handle = cast(bytes, handle.handle)
    replies = _Replies()
    end = offset + length
    next_offset = offset
    waiting: dict[int, tuple[int, int]] = {}  # request number -> (offset, size)
    received: dict[int, bytes] = {}  # offset -> data
    eof = False

    def send() -> None:
        nonlocal next_offset
        size = min(_REQUEST, end - next_offset)
        number = pipe._async_request(replies, CMD_READ, remote_handle, int64(next_offset), size)
        waiting[number] = (next_offset, size)
        next_offset += size

    while next_offset < end and len(waiting) < _IN_FLIGHT:
        send()
    while waiting:
        while not replies.replies:
            pipe._read_response()  # one reply; waits at most the channel timeout
        for number, (kind, msg) in replies.replies.items():
            at, _ = waiting.pop(number)
            if kind == CMD_DATA:
                received[at] = msg.get_string()
            elif kind == CMD_STATUS and msg.get_int() == SFTP_EOF:
                received[at] = b""
                eof = True
            else:
                text = msg.get_text() if kind == CMD_STATUS else f"unexpected reply {kind}"
                raise OSError(errno.EIO, f"read failed: {text}")
            if next_offset < end and not eof:
                send()
        replies.replies.clear()
    parts: list[bytes] = []
    at = offset
    while at < end:
        size = min(_REQUEST, end - at)
        part = received.get(at, b"")
        parts.append(part)
        if len(part) < size:
            break
        at += size
    return b"".join(parts), eof


def _close_client(client: paramiko.SSHClient) -> None:
    """Close a connection at once, never waiting for the server."""
    transport = client.get_transport()
    sock = transport.sock if transport is not None else None
    if isinstance(sock, socket.socket):
        # Ends the TCP connection now: a plain close() leaves it open until
        # paramiko's thread comes out of the recv() it waits in.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    try:
        client.close()
    except Exception as exc:  # a half-dead connection
        log.debug("closing SFTP connection: %s", exc)


def _fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class SFTPFile(OriginFile):
    """A file open on an SFTP server: holds one pooled session until closed.

    Reads take turns (one lock per file). A read that continues the previous
    one fetches a growing read-ahead window; see the comment on ``_WINDOW_MAX``.
    """

    def __init__(
        self,
        origin: SFTPOrigin,
        relpath: str,
        session: _Session,
        handle: paramiko.SFTPFile,
        *,
        size: int,
        mtime_ns: int,
    ) -> None:
        self.origin = origin
        self.relpath = relpath
        self.size = size
        self.mtime_ns = mtime_ns
        self._session: _Session | None = session
        self._handle: paramiko.SFTPFile | None = handle
        self._lock = threading.Lock()
        self._closed = False
        self._buffer = b""
        self._buffer_start = 0
        self._next = -1  # where the previous read ended
        self._window = 0

    def __repr__(self) -> str:
        return f"SFTPFile({self.origin.id!r}, {self.relpath!r})"

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise ValueError("negative offset or size")
        if size == 0:
            return b""
        with self._lock:
            if self._closed:
                raise ValueError(f"{self!r} is closed")
            data = self._read(offset, size)
            self._next = offset + len(data)
            return data

    def _read(self, offset: int, size: int) -> bytes:
        end = offset + size
        buffer, start = self._buffer, self._buffer_start
        head = b""
        fetch_from = offset
        if start <= offset < start + len(buffer):
            head = buffer[offset - start : end - start]
            if len(head) == size:
                return head
            fetch_from = start + len(buffer)
            if fetch_from >= self.size:  # the buffer ends at the end of the file
                return head
        need = end - fetch_from
        if offset == self._next:  # sequential: grow the read-ahead window
            self._window = min(_WINDOW_MAX, max(_WINDOW_FIRST, self._window * 2))
            length = max(need, min(self._window, self.size - fetch_from))
        else:
            self._window = 0
            length = need
        data = self._fetch(fetch_from, length)
        self._buffer, self._buffer_start = data, fetch_from
        return head + data[:need] if head else data[:need]

    def _fetch(self, offset: int, length: int) -> bytes:
        """*length* bytes at *offset* from the server (fewer at its end), on a
        new connection if the one this file held has dropped."""
        path = self.origin.remote_path(self.relpath)
        reopened = False
        while True:
            if self._session is None or self._handle is None:
                self._reopen()  # a read before this one lost the connection
                reopened = True
            session, handle = self._session, self._handle
            assert session is not None
            assert handle is not None
            try:
                with session.lock:
                    if session.broken:
                        raise _Broken
                    return self._fetch_on(handle, offset, length)
            except Exception as exc:
                error, retry = self.origin._failure(exc, session, path)
                if reopened or not retry:
                    raise error from exc
            self._reopen()
            reopened = True

    def _fetch_on(self, handle: paramiko.SFTPFile, offset: int, length: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        eof = False
        while got < length and not eof:  # a server may answer with fewer bytes
            if _can_pipeline(handle.sftp):
                part, eof = _read_pipelined(handle, offset + got, length - got)
            else:
                handle.seek(offset + got)
                part = handle.read(length - got)
            eof = eof or not part
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _reopen(self) -> None:
        """Open the file again on a new connection (after the old one dropped)."""
        session, self._session, self._handle = self._session, None, None
        if session is not None:
            self.origin._release(session)
        self._buffer = b""
        session, handle, st = self.origin._open_handle(self.relpath)
        if (st.size, st.mtime_ns) != (self.size, self.mtime_ns):
            self.origin._close_handle(session, handle)
            raise OriginUnavailable(
                self.origin.id,
                f"{self.origin.remote_path(self.relpath)} changed on the server while open",
                errno.ESTALE,
            )
        self._session, self._handle = session, handle

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._buffer = b""
            session, handle = self._session, self._handle
            self._session = self._handle = None
        if session is not None and handle is not None:
            self.origin._close_handle(session, handle)


class SFTPOrigin(Origin):
    """A folder *root* on an SSH server (see the module docstring)."""

    kind = "sftp"

    def __init__(
        self,
        origin_id: str,
        host: str,
        root: str,
        *,
        port: int = 22,
        user: str | None = None,
        key_file: str | None = None,
        password: str | None = None,
        known_hosts: str | None = None,
        timeout: float = 10.0,
        max_connections: int = 4,
    ) -> None:
        super().__init__(origin_id)
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        try:
            import paramiko
        except ImportError as exc:
            raise ImportError(
                f"origin {origin_id!r}: SFTP origins need paramiko (pip install paramiko)"
            ) from exc
        self._paramiko = paramiko
        self.host = host
        self.port = port
        self.user = user
        if root.startswith("~/"):  # SFTP paths without a leading / start at home
            root = root[2:]
        self.root = posixpath.normpath(root) if root else "."
        if self.root.startswith("//"):
            self.root = self.root[1:]
        self.key_file = os.path.expanduser(key_file) if key_file else None
        self._password = password
        self.known_hosts = known_hosts
        self.timeout = timeout
        self.max_connections = max_connections
        self._sessions: list[_Session] = []
        self._connecting = 0
        self._pool = threading.Condition()
        self._accepted: dict[tuple[str, str], paramiko.PKey] = {}  # accept-new, in memory

        origin = self

        class _Policy(paramiko.MissingHostKeyPolicy):
            def missing_host_key(
                self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
            ) -> None:
                origin._missing_host_key(hostname, key)

        self._policy = _Policy()

    @property
    def location(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        if self.root.startswith("/"):
            path = self.root
        else:
            path = "/~" if self.root == "." else f"/~/{self.root}"
        return f"sftp://{user}{host}:{self.port}{path}"

    @property
    def connections(self) -> int:
        """How many SSH connections are open or being opened now."""
        with self._pool:
            return len(self._sessions) + self._connecting

    def remote_path(self, relpath: str) -> str:
        """The path on the server of *relpath* (which may not climb out of root)."""
        if not relpath:
            return self.root
        if relpath.startswith("/") or ".." in relpath.split("/"):
            raise FileNotFoundError(errno.ENOENT, "not a path inside the origin", relpath)
        return posixpath.join(self.root, relpath)

    # -- the origin interface ------------------------------------------------

    def check(self) -> None:
        """Raise `OriginUnavailable` unless the server answers and root is a folder."""
        try:
            attrs = self._run(self.root, lambda sftp: sftp.stat(self.root))
        except OriginUnavailable:
            raise
        except OSError as exc:
            raise OriginUnavailable(
                self.id, f"{self.location}: {exc.strerror or exc}", exc.errno or errno.EIO
            ) from None
        if not stat.S_ISDIR(attrs.st_mode or 0):
            raise OriginUnavailable(self.id, f"{self.location} is not a directory", errno.ENOTDIR)

    def list_dir(self, reldir: str, extensions: Iterable[str]) -> DirListing:
        """Subfolders and wanted files of *reldir*. Hidden entries are skipped (see
        `listed_name`);
        symlinks to files are followed (one stat each), symlinks to folders are
        not (they could loop)."""
        wanted = extension_set(extensions)
        path = self.remote_path(reldir)

        def listing(sftp: paramiko.SFTPClient) -> DirListing:
            result = DirListing()
            for attrs in sftp.listdir_attr(path):
                name = attrs.filename
                if not listed_name(name, self.include_hidden):
                    continue
                mode = attrs.st_mode or 0
                if stat.S_ISDIR(mode):
                    result.subdirs.append(name)
                    continue
                if not wanted_file(name, wanted, self.include_hidden):
                    continue
                target = attrs
                if stat.S_ISLNK(mode):
                    try:
                        target = sftp.stat(posixpath.join(path, name))
                    except (FileNotFoundError, PermissionError) as exc:  # dangling
                        log.debug("skipping %s/%s: %s", path, name, exc)
                        continue
                    mode = target.st_mode or 0
                if stat.S_ISREG(mode):
                    result.files.append((name, _file_stat(target)))
            return result

        return self._run(path, listing)

    def stat(self, relpath: str) -> FileStat:
        path = self.remote_path(relpath)
        return _file_stat(self._run(path, lambda sftp: sftp.stat(path)))

    def open(self, relpath: str) -> SFTPFile:
        session, handle, st = self._open_handle(relpath)
        return SFTPFile(self, relpath, session, handle, size=st.size, mtime_ns=st.mtime_ns)

    def close(self) -> None:
        """Close every connection. Open files reconnect on their next read; the
        origin connects again when next used."""
        with self._pool:
            sessions, self._sessions = self._sessions, []
            for session in sessions:
                session.broken = True
            self._pool.notify_all()
        for session in sessions:
            session.close()

    # -- the pool ------------------------------------------------------------

    def _run(self, path: str, operation: Callable[[paramiko.SFTPClient], _T]) -> _T:
        """Run *operation* on a pooled session; once more on a new connection if
        a session that had been idle turns out to have dropped."""
        for attempt in range(2):
            session, fresh = self._lease()
            try:
                with session.lock:
                    if session.broken:
                        raise _Broken
                    try:
                        return operation(session.sftp)
                    except FileNotFoundError:
                        self._check_root(session.sftp)
                        raise
            except Exception as exc:
                error, retry = self._failure(exc, session, path)
                if not (retry and not fresh and attempt == 0):
                    raise error from exc
            finally:
                self._release(session)
        raise AssertionError("unreachable")

    def _open_handle(self, relpath: str) -> tuple[_Session, paramiko.SFTPFile, FileStat]:
        """Open *relpath* on a pooled session, which stays held (for `SFTPFile`)."""
        path = self.remote_path(relpath)
        for attempt in range(2):
            session, fresh = self._lease()
            try:
                with session.lock:
                    if session.broken:
                        raise _Broken
                    # bufsize 0: paramiko asks exactly for what is read; SFTPFile
                    # does its own read-ahead.
                    try:
                        handle = session.sftp.open(path, "rb", bufsize=0)
                    except FileNotFoundError:
                        self._check_root(session.sftp)
                        raise
                    try:
                        attrs = handle.stat()
                    except OSError as exc:
                        if not isinstance(exc, TimeoutError):  # the server answered
                            with contextlib.suppress(Exception):
                                handle.close()
                        raise
                if stat.S_ISDIR(attrs.st_mode or 0):
                    self._close_handle(session, handle)
                    raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
                return session, handle, _file_stat(attrs)
            except IsADirectoryError:
                raise
            except Exception as exc:
                self._release(session)
                error, retry = self._failure(exc, session, path)
                if not (retry and not fresh and attempt == 0):
                    raise error from exc
        raise AssertionError("unreachable")

    def _check_root(self, sftp: paramiko.SFTPClient) -> None:
        """After "no such file": raise `OriginUnavailable` if root itself is gone
        (a disk not mounted on the server), which must not empty the tree."""
        try:
            sftp.stat(self.root)
        except FileNotFoundError:
            raise OriginUnavailable(
                self.id, f"{self.location}: the folder is not on the server", errno.ENOENT
            ) from None

    def _close_handle(self, session: _Session, handle: paramiko.SFTPFile) -> None:
        """Close a remote file (if its connection still works) and let go of its session."""
        try:
            with session.lock:
                if not session.broken:
                    handle.close()
        except Exception as exc:
            self._failure(exc, session, "close")
        finally:
            self._release(session)

    def _lease(self) -> tuple[_Session, bool]:
        """A session to use, and whether it was just made: an idle one, else a
        new connection if there is room, else the least busy one, shared."""
        deadline = time.monotonic() + self.timeout
        dead: list[_Session] = []
        try:
            with self._pool:
                while True:
                    for session in [s for s in self._sessions if s.users == 0 and not s.alive()]:
                        self._sessions.remove(session)
                        dead.append(session)
                    idle = [s for s in self._sessions if s.users == 0]
                    if idle:
                        idle[-1].users += 1
                        return idle[-1], False
                    if len(self._sessions) + self._connecting < self.max_connections:
                        self._connecting += 1
                        break
                    if self._sessions:
                        session = min(self._sessions, key=lambda s: s.users)
                        session.users += 1
                        return session, False
                    # Every slot is a connection being made: wait for one.
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise OriginUnavailable(
                            self.id, f"{self.location}: no connection within {self.timeout:g}s"
                        )
                    self._pool.wait(remaining)
        finally:
            for session in dead:
                session.close()
        try:
            session = self._connect()
        except BaseException as exc:
            with self._pool:
                self._connecting -= 1
                self._pool.notify_all()
            if isinstance(exc, Exception):
                raise self._failure(exc, None, self.root)[0] from exc
            raise
        with self._pool:
            self._connecting -= 1
            session.users = 1
            self._sessions.append(session)
            self._pool.notify_all()
        return session, True

    def _release(self, session: _Session) -> None:
        with self._pool:
            session.users = max(0, session.users - 1)
            self._pool.notify_all()

    def _drop(self, session: _Session) -> None:
        """Forget a session whose connection broke, and close it."""
        with self._pool:
            session.broken = True
            if session in self._sessions:
                self._sessions.remove(session)
            self._pool.notify_all()
        session.close()

    def _connect(self) -> _Session:
        """A new SSH connection with an SFTP session, all of it within *timeout*
        (a watchdog closes the connection if the server stops answering midway,
        which wakes every wait in paramiko)."""
        paramiko = self._paramiko
        client = paramiko.SSHClient()
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _close_client(client)

        watchdog = threading.Timer(self.timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            self._load_host_keys(client)
            client.set_missing_host_key_policy(self._policy)
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            try:
                # paramiko leaves Nagle on: a request written after a window
                # adjust then waits for the server's delayed ACK (40 ms).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                use_keys = self.key_file is None
                client.connect(
                    self.host,
                    port=self.port,
                    username=self.user,
                    password=self._password,
                    key_filename=self.key_file,
                    allow_agent=use_keys,
                    look_for_keys=use_keys,
                    sock=sock,
                    timeout=self.timeout,
                    banner_timeout=self.timeout,
                    auth_timeout=self.timeout,
                    channel_timeout=self.timeout,
                )
            except BaseException:
                sock.close()
                raise
            transport = client.get_transport()
            if expired.is_set() or transport is None:  # the watchdog fired early
                raise paramiko.SSHException("connection closed")
            channel = transport.open_session(timeout=self.timeout)
            channel.settimeout(self.timeout)
            channel.invoke_subsystem("sftp")
            sftp = paramiko.SFTPClient(channel)
        except BaseException as exc:
            _close_client(client)
            if expired.is_set() and not isinstance(exc, OriginUnavailable):
                raise TimeoutError(errno.ETIMEDOUT, "connecting timed out") from exc
            raise
        finally:
            watchdog.cancel()
        if expired.is_set():  # the watchdog fired just as we finished
            _close_client(client)
            raise TimeoutError(errno.ETIMEDOUT, "connecting timed out")
        log.debug("origin %s: connected to %s", self.id, self.location)
        return _Session(client, sftp)

    # -- host keys -----------------------------------------------------------

    def _load_host_keys(self, client: paramiko.SSHClient) -> None:
        """Load the known_hosts files (again for each connection: a key the
        user just added counts at once)."""
        if self.known_hosts == INSECURE_IGNORE:
            return
        if self.known_hosts and self.known_hosts != ACCEPT_NEW:
            path = os.path.expanduser(self.known_hosts)
            try:
                client.load_system_host_keys(path)
            except OSError as exc:
                raise OriginUnavailable(
                    self.id, f"cannot read known_hosts file {path}: {exc.strerror or exc}"
                ) from None
        else:
            for path in (_SYSTEM_KNOWN_HOSTS, os.path.expanduser(_USER_KNOWN_HOSTS)):
                if os.path.exists(path):
                    try:
                        client.load_system_host_keys(path)
                    except OSError as exc:
                        log.warning("origin %s: cannot read %s: %s", self.id, path, exc)
        with self._pool:
            accepted = list(self._accepted.items())
        keys = client.get_host_keys()
        for (hostname, key_type), key in accepted:
            keys.add(hostname, key_type, key)

    def _missing_host_key(self, hostname: str, key: paramiko.PKey) -> None:
        """paramiko found no known key for *hostname*: accept or refuse it."""
        described = f"{key.get_name()} {_fingerprint(key)}"
        if self.known_hosts == INSECURE_IGNORE:
            log.debug("origin %s: not checking host key of %s (%s)", self.id, hostname, described)
            return
        if self.known_hosts == ACCEPT_NEW:
            log.warning("origin %s: accepting new host key of %s: %s", self.id, hostname, described)
            with self._pool:
                self._accepted[(hostname, key.get_name())] = key
            return
        files = self.known_hosts or f"{_SYSTEM_KNOWN_HOSTS} and {_USER_KNOWN_HOSTS}"
        scan = f"ssh-keyscan -p {self.port} {self.host}"
        target = self.known_hosts or _USER_KNOWN_HOSTS
        raise OriginUnavailable(
            self.id,
            f"host key of {hostname} is unknown ({described}; not in {files}). If this is "
            f"the right server, add its key to known_hosts: `{scan} >> {target}` "
            f"(and check the fingerprint), or set known_hosts = {ACCEPT_NEW!r}",
            errno.EACCES,
        )

    # -- errors --------------------------------------------------------------

    def _failure(
        self, exc: BaseException, session: _Session | None, path: str
    ) -> tuple[OSError, bool]:
        """The error to raise for *exc*, raised while working on remote *path*,
        and whether the call may be tried once more on a new connection. A
        session whose connection failed is dropped."""
        paramiko = self._paramiko

        def unavailable(message: str, code: int = errno.EIO) -> OriginUnavailable:
            return OriginUnavailable(self.id, self._scrub(f"{self.location}: {message}"), code)

        if isinstance(exc, OriginUnavailable):
            return exc, False  # made here, with no secret in it
        if session is None:  # while connecting: nothing the server said about a file
            what = str(exc) or type(exc).__name__
            if isinstance(exc, paramiko.AuthenticationException):
                who = self.user or "the current user"
                return unavailable(f"authentication failed for {who}: {what}", errno.EACCES), False
            if isinstance(exc, paramiko.BadHostKeyException):
                return unavailable(self._changed_key(exc), errno.EACCES), False
            if isinstance(exc, TimeoutError):
                return unavailable(f"no answer within {self.timeout:g}s", errno.ETIMEDOUT), False
            code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
            return unavailable(f"cannot connect: {what}", code), False
        if isinstance(exc, FileNotFoundError):
            return FileNotFoundError(errno.ENOENT, "No such file or directory", path), False
        if isinstance(exc, PermissionError):
            return PermissionError(errno.EACCES, "Permission denied", path), False
        if isinstance(exc, IsADirectoryError):
            return exc, False
        if isinstance(exc, UnicodeDecodeError):  # paramiko decodes names as UTF-8
            return OSError(errno.EILSEQ, "a file name is not UTF-8", path), False

        lost_connection = not session.alive()
        retry = False
        if isinstance(exc, TimeoutError):
            error = unavailable(f"no answer within {self.timeout:g}s", errno.ETIMEDOUT)
            lost_connection = True
        elif isinstance(exc, _Broken | EOFError | ConnectionError | paramiko.SSHException):
            what = str(exc) or type(exc).__name__
            error = unavailable(f"connection lost ({what})", errno.ECONNRESET)
            lost_connection = retry = True
        elif isinstance(exc, OSError) and (exc.errno in _NETWORK_ERRNOS or lost_connection):
            error = unavailable(f"connection failed: {exc.strerror or exc}", exc.errno or errno.EIO)
            lost_connection = retry = True
        elif isinstance(exc, OSError):  # the server answered with an error
            return OSError(exc.errno or errno.EIO, self._scrub(str(exc)), path), False
        else:  # paramiko.SFTPError (a garbled reply) or anything unexpected
            if not isinstance(exc, paramiko.SFTPError):
                log.warning("origin %s: unexpected error on %s", self.id, path, exc_info=exc)
            error = unavailable(f"{type(exc).__name__}: {exc}")
            lost_connection = True
        if lost_connection or session.broken:
            self._drop(session)
        return error, retry

    def _changed_key(self, exc: paramiko.BadHostKeyException) -> str:
        return (
            f"host key of {exc.hostname} has changed (got {_fingerprint(exc.key)}, "
            f"known_hosts has {_fingerprint(exc.expected_key)}): someone may be "
            f"intercepting the connection, or the server was reinstalled (then "
            f"remove the old key: `ssh-keygen -R {exc.hostname}`)"
        )

    def _scrub(self, message: str) -> str:
        if self._password:
            message = message.replace(self._password, "***")
        return message


def _file_stat(attrs: paramiko.SFTPAttributes) -> FileStat:
    """SFTP (version 3) has whole seconds only."""
    return FileStat(attrs.st_size or 0, (attrs.st_mtime or 0) * 1_000_000_000)
