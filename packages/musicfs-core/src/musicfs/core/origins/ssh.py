"""SSH for `musicfs.core.origins.sftp`: one connection, its host key, fast reads.

Job: the paramiko side of an SFTP origin: make one SSH connection with an SFTP
session (`open_session`), check the server's host key like OpenSSH does
(`HostKeys`), close a connection without waiting for the server
(`close_client`), and read a byte range with many requests in flight
(`read_pipelined`) behind a growing read-ahead window (`ReadAhead`). Pooling
and deadlines are `musicfs.core.origins.sessions`; mapping failures to the
origin's errors is `musicfs.core.origins.sftp`.
paramiko is imported when a connection is first made, never at import time.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, cast

from musicfs.core.origins.base import OriginUnavailable

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger(__name__)

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


class SFTPSession:
    """One SSH connection with its SFTP session."""

    def __init__(self, client: paramiko.SSHClient, sftp: paramiko.SFTPClient) -> None:
        self.client = client
        self.sftp = sftp

    def alive(self) -> bool:
        """False once the connection, or just its SFTP channel, has closed."""
        transport = self.client.get_transport()
        channel = self.sftp.get_channel()
        return (
            transport is not None
            and transport.is_active()
            and channel is not None
            and not channel.closed
            and not channel.eof_received
        )

    def close(self) -> None:
        close_client(self.client)


def close_client(client: paramiko.SSHClient) -> None:
    """Close a connection at once, never waiting for the server (from any thread)."""
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


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def open_session(
    client: paramiko.SSHClient,
    host_keys: HostKeys,
    *,
    host: str,
    port: int,
    user: str | None,
    password: str | None,
    key_file: str | None,
    timeout: float,
) -> SFTPSession:
    """Connect *client* and open an SFTP session on it, each step within
    *timeout* (the caller's watchdog closes *client* if the whole takes longer,
    which wakes every wait in paramiko). *client* is closed if this fails."""
    import paramiko

    try:
        host_keys.load(client)
        client.set_missing_host_key_policy(host_keys.policy)
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            # paramiko leaves Nagle on: a request written after a window
            # adjust then waits for the server's delayed ACK (40 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            use_keys = key_file is None
            client.connect(
                host,
                port=port,
                username=user,
                password=password,
                key_filename=key_file,
                allow_agent=use_keys,
                look_for_keys=use_keys,
                sock=sock,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
            )
        except BaseException:
            sock.close()
            raise
        transport = client.get_transport()
        if transport is None:  # the watchdog closed it midway
            raise paramiko.SSHException("connection closed")
        channel = transport.open_session(timeout=timeout)
        channel.settimeout(timeout)
        channel.invoke_subsystem("sftp")
        return SFTPSession(client, paramiko.SFTPClient(channel))
    except BaseException:
        close_client(client)
        raise


class HostKeys:
    """Host keys of one origin, checked like OpenSSH's ``StrictHostKeyChecking
    yes`` (see `musicfs.core.origins.sftp` for *known_hosts*)."""

    def __init__(self, origin_id: str, host: str, port: int, known_hosts: str | None) -> None:
        import paramiko

        self.origin_id = origin_id
        self.host = host
        self.port = port
        self.known_hosts = known_hosts
        self._lock = threading.Lock()
        self._accepted: dict[tuple[str, str], paramiko.PKey] = {}  # accept-new, in memory
        keys = self

        class _Policy(paramiko.MissingHostKeyPolicy):
            def missing_host_key(
                self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
            ) -> None:
                keys.missing(hostname, key)

        self.policy: paramiko.MissingHostKeyPolicy = _Policy()

    def load(self, client: paramiko.SSHClient) -> None:
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
                    self.origin_id, f"cannot read known_hosts file {path}: {exc.strerror or exc}"
                ) from None
        else:
            for path in (_SYSTEM_KNOWN_HOSTS, os.path.expanduser(_USER_KNOWN_HOSTS)):
                if os.path.exists(path):
                    try:
                        client.load_system_host_keys(path)
                    except OSError as exc:
                        log.warning("origin %s: cannot read %s: %s", self.origin_id, path, exc)
        with self._lock:
            accepted = list(self._accepted.items())
        keys = client.get_host_keys()
        for (hostname, key_type), key in accepted:
            keys.add(hostname, key_type, key)

    def missing(self, hostname: str, key: paramiko.PKey) -> None:
        """paramiko found no known key for *hostname*: accept or refuse it."""
        described = f"{key.get_name()} {fingerprint(key)}"
        oid = self.origin_id
        if self.known_hosts == INSECURE_IGNORE:
            log.debug("origin %s: not checking host key of %s (%s)", oid, hostname, described)
            return
        if self.known_hosts == ACCEPT_NEW:
            log.warning("origin %s: accepting new host key of %s: %s", oid, hostname, described)
            with self._lock:
                self._accepted[(hostname, key.get_name())] = key
            return
        files = self.known_hosts or f"{_SYSTEM_KNOWN_HOSTS} and {_USER_KNOWN_HOSTS}"
        scan = f"ssh-keyscan -p {self.port} {self.host}"
        target = self.known_hosts or _USER_KNOWN_HOSTS
        raise OriginUnavailable(
            oid,
            f"host key of {hostname} is unknown ({described}; not in {files}). If this is "
            f"the right server, add its key to known_hosts: `{scan} >> {target}` "
            f"(and check the fingerprint), or set known_hosts = {ACCEPT_NEW!r}",
            errno.EACCES,
        )


def changed_key_message(exc: paramiko.BadHostKeyException) -> str:
    return (
        f"host key of {exc.hostname} has changed (got {fingerprint(exc.key)}, "
        f"known_hosts has {fingerprint(exc.expected_key)}): someone may be "
        f"intercepting the connection, or the server was reinstalled (then "
        f"remove the old key: `ssh-keygen -R {exc.hostname}`)"
    )


# -- reading --------------------------------------------------------------------------

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
#   own pipelining (`read_pipelined`) of      90-145 MB/s (1 MiB max: 70-105, 2 MiB:
#   windows growing 256 KiB..4 MiB            90-130, 8 MiB: no better than 4)
# Random reads with it: 4 KiB 0.3 ms, 64 KiB 0.9 ms, 128 KiB 1.5 ms.
# So: a read that continues the previous one grows a read-ahead window (256 KiB,
# doubling up to 4 MiB, like the kernel's readahead), fetched with all its 32 KiB
# requests in flight; any other read fetches exactly what was asked (pipelined
# too). Random reads (tags, seeks in a player) never download more than they ask
# for, and an open file keeps at most one window in memory.
_WINDOW_FIRST = 256 * 1024
_WINDOW_MAX = 4 * 1024 * 1024


class ReadAhead:
    """The read-ahead of one open file of *size* bytes (see the comment above):
    what the last fetch brought, and how far a sequential run has grown."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._buffer = b""
        self._buffer_start = 0
        self._next = -1  # where the previous read ended
        self._window = 0

    def clear(self) -> None:
        self._buffer = b""

    def read(self, offset: int, size: int, fetch: Callable[[int, int], bytes]) -> bytes:
        """*size* bytes at *offset*, from the buffer as far as it has them, the
        rest with ``fetch(offset, length)`` (which may return fewer at the end)."""
        end = offset + size
        buffer, start = self._buffer, self._buffer_start
        head = b""
        fetch_from = offset
        if start <= offset < start + len(buffer):
            head = buffer[offset - start : end - start]
            if len(head) == size or start + len(buffer) >= self.size:
                # all of it, or the buffer ends at the end of the file
                self._next = offset + len(head)
                return head
            fetch_from = start + len(buffer)
        need = end - fetch_from
        if offset == self._next:  # sequential: grow the read-ahead window
            self._window = min(_WINDOW_MAX, max(_WINDOW_FIRST, self._window * 2))
            length = max(need, min(self._window, self.size - fetch_from))
        else:
            self._window = 0
            length = need
        data = fetch(fetch_from, length)
        self._buffer, self._buffer_start = data, fetch_from
        result = head + data[:need] if head else data[:need]
        self._next = offset + len(result)
        return result


def fetch(handle: paramiko.SFTPFile, offset: int, length: int) -> bytes:
    """*length* bytes at *offset* of a remote file (fewer only at its end)."""
    parts: list[bytes] = []
    got = 0
    eof = False
    while got < length and not eof:  # a server may answer with fewer bytes
        if can_pipeline(handle.sftp):
            part, eof = read_pipelined(handle, offset + got, length - got)
        else:
            handle.seek(offset + got)
            part = handle.read(length - got)
        eof = eof or not part
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class _Pipeline(Protocol):
    """The part of paramiko's `SFTPClient` that pipelines requests (private,
    unchanged since paramiko 1.5; `can_pipeline` checks it is there)."""

    def _async_request(self, fileobj: object, t: int, *args: object) -> int: ...
    def _read_response(self, waitfor: int | None = None) -> tuple[object, object]: ...


def can_pipeline(sftp: object) -> bool:
    return hasattr(sftp, "_async_request") and hasattr(sftp, "_read_response")


class _Replies:
    """Where paramiko puts the replies to pipelined reads: it hands each reply to
    the object its request was sent for, whichever caller reads it off the wire."""

    def __init__(self) -> None:
        self.replies: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.replies[num] = (t, msg)


def read_pipelined(handle: paramiko.SFTPFile, offset: int, length: int) -> tuple[bytes, bool]:
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


def read_ranges(handle: paramiko.SFTPFile, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """The bytes of each ``(offset, size)`` of *ranges* (fewer only at the end
    of the file), every 32 KiB request of all of them in flight at once: the
    head, middle and tail a scan reads cost one round trip, not three. A range
    the server answered short is completed with `fetch`."""
    if not can_pipeline(handle.sftp):
        return [fetch(handle, offset, size) for offset, size in ranges]
    from paramiko.sftp import CMD_DATA, CMD_READ, CMD_STATUS, SFTP_EOF, int64

    pipe = cast(_Pipeline, handle.sftp)
    remote_handle = cast(bytes, handle.handle)
    replies = _Replies()
    chunks = [
        (at, min(_REQUEST, offset + size - at))
        for offset, size in ranges
        for at in range(offset, offset + size, _REQUEST)
    ]
    todo = iter(chunks)
    waiting: dict[int, tuple[int, int]] = {}  # request number -> (offset, size)
    received: dict[tuple[int, int], bytes] = {}

    def send() -> bool:
        chunk = next(todo, None)
        if chunk is None:
            return False
        number = pipe._async_request(replies, CMD_READ, remote_handle, int64(chunk[0]), chunk[1])
        waiting[number] = chunk
        return True

    while len(waiting) < _IN_FLIGHT and send():
        pass
    while waiting:
        while not replies.replies:
            pipe._read_response()  # one reply; waits at most the channel timeout
        for number, (kind, msg) in replies.replies.items():
            chunk = waiting.pop(number)
            if kind == CMD_DATA:
                received[chunk] = msg.get_string()
            elif kind == CMD_STATUS and msg.get_int() == SFTP_EOF:
                received[chunk] = b""
            else:
                text = msg.get_text() if kind == CMD_STATUS else f"unexpected reply {kind}"
                raise OSError(errno.EIO, f"read failed: {text}")
            send()
        replies.replies.clear()
    out: list[bytes] = []
    for offset, size in ranges:
        parts: list[bytes] = []
        at = offset
        while at < offset + size:
            want = min(_REQUEST, offset + size - at)
            part = received.get((at, want), b"")
            parts.append(part)
            at += len(part)
            if len(part) < want:
                if part:  # answered short, not at the end: ask for the rest
                    parts.append(fetch(handle, at, offset + size - at))
                break
        out.append(b"".join(parts))
    return out
