"""SSH for `musicfs.core.origins.sftp`: one connection, its host key, fast reads.

Job: the paramiko side of an SFTP origin: make one SSH connection with an SFTP
session (`open_session`), check the server's host key like OpenSSH does
(`HostKeys`), close a connection without waiting for the server
(`close_client`), share one session between many threads with all their
requests in flight at once (`SFTPSession`: opens, reads and closes of several
files multiplexed on one connection), and read a byte range with many requests
in flight (`read_pipelined`) behind a growing read-ahead window (`ReadAhead`). Pooling
and deadlines are `musicfs.core.origins.sessions`; mapping failures to the
origin's errors is `musicfs.core.origins.sftp`.
paramiko is imported when a connection is first made, never at import time.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import logging
import os
import socket
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
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

SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
USER_KNOWN_HOSTS = "~/.ssh/known_hosts"

# SFTP read requests ask for 64 KiB: OpenSSH's sftp-server answers that much in
# every version, and half as many requests as paramiko's 32 KiB cost both ends
# less CPU a byte (a loopback scan: 495 -> 545 tracks/s; its 64 KiB head is one
# request). A server with a lower cap answers less: the connection asks for
# that much from then on (`request_size`).
_REQUEST = 64 * 1024
# Bytes asked for and not yet answered at once: paramiko's 2 MiB channel window
# (64 requests of 32 KiB, as OpenSSH's sftp client keeps in flight).
_IN_FLIGHT_BYTES = 2 * 1024 * 1024
#: The read size each connection's server was found to cap its answers at.
_CAPPED: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()


def request_size(sftp: object) -> int:
    """The bytes one read request on *sftp* (an SFTP client) asks for."""
    return _CAPPED.get(sftp, _REQUEST)


def learn_cap(sftp: object, request: int, replies: Sequence[tuple[int, int]]) -> None:
    """Note what one batch of reads on *sftp* says of the server's cap:
    *replies* are (bytes asked, bytes got). Two or more requests of the full
    *request* size answered with the same fewer bytes mean the server answers
    no more (asking for more would cost a second request each time); one
    short answer may be the file's end (it shrank since it was listed) or a
    server's hiccup, which must not slow the connection for good."""
    shorts = [got for asked, got in replies if asked == request and 0 < got < asked]
    if len(shorts) >= 2 and len(set(shorts)) == 1:
        _CAPPED[sftp] = shorts[0]


class Connection(Protocol):
    """What carries an SFTP session: paramiko's own SSH (`PythonSSH`) or an
    ``ssh`` process (`musicfs.core.origins.openssh.SSHProcess`)."""

    def alive(self) -> bool:
        """False once the connection, or just its SFTP channel, has closed."""

    def close(self) -> None:
        """Close at once, never waiting for the server (from any thread)."""


class PythonSSH:
    """An SFTP channel on paramiko's own SSH connection."""

    def __init__(self, client: paramiko.SSHClient, channel: paramiko.Channel) -> None:
        self.client = client
        self.channel = channel

    def alive(self) -> bool:
        transport = self.client.get_transport()
        channel = self.channel
        return (
            transport is not None
            and transport.is_active()
            and not channel.closed
            and not channel.eof_received
        )

    def close(self) -> None:
        close_client(self.client)


class SFTPSession:
    """One SSH connection with its SFTP session, shared by many threads at once.

    Multiplexed: threads that share the session have their requests in flight
    together (an open, a file's pipelined reads, a close that is not waited
    for), each request's reply handed to the thread that sent it. paramiko's
    `SFTPClient` pipelines within one thread only, so three rules make it safe
    for many:

    - sending: every packet is written under one lock (paramiko writes a
      request outside its own lock, and two threads writing at once would
      interleave their bytes);
    - reading: one thread at a time reads replies off the wire (`wait`): it
      reads ONE reply, which paramiko hands to the receiver its request was
      sent with, and lets the others look whether theirs has come;
    - a synchronous paramiko call (stat, open with stat, a close waited for,
      a listing where the session is not multiplexed) drops any reply it
      reads that is not its own, and another thread reading its reply would
      drop it: such calls run in `exclusive`,
      which keeps every other reader out from their first request to their
      last reply (senders may go on: their replies are handed over).

    A reader that fails (the connection dropped, or no reply within the
    channel's timeout) leaves the wire in an unknown state: the session is
    `failed` from then on and every thread waiting on it fails at once
    (`TimeoutError` after a timeout, else `ConnectionResetError`), so a dead
    connection costs each waiter nothing more and a hung one one timeout.
    """

    def __init__(self, connection: Connection, sftp: paramiko.SFTPClient) -> None:
        self.connection = connection
        self.sftp = sftp
        #: What broke the wire (set once; see the class docstring).
        self.failed: BaseException | None = None
        self._cond = threading.Condition()
        self._reading = False  # a thread reads a reply, or an exclusive call runs
        self._exclusive_waiting = 0  # exclusive calls waiting for their turn
        #: Whether paramiko has the (private) calls `wait` and
        #: `open_for_reading` use; if not, every call is `exclusive`.
        self.multiplexed = can_pipeline(sftp) and hasattr(sftp, "_send_packet")
        if self.multiplexed:
            send = cast(Pipeline, sftp)._send_packet
            lock = threading.Lock()

            def send_packet(t: int, packet: object) -> None:
                with lock:
                    send(t, packet)

            # Every write of this client, paramiko's own too (sync calls, closes).
            sftp.__dict__["_send_packet"] = send_packet

    def alive(self) -> bool:
        """False once the connection, or just its SFTP channel, has closed."""
        return self.failed is None and self.connection.alive()

    def close(self) -> None:
        self.connection.close()

    def wait(self, done: Callable[[], bool]) -> None:
        """Read replies off the wire (taking turns with the other threads)
        until ``done()`` says this thread's have come (see the class docstring)."""
        pipe = cast(Pipeline, self.sftp)
        cond = self._cond
        while True:
            with cond:
                while True:
                    if done():
                        return
                    self._raise_failed()
                    # An exclusive call waiting goes first (a listing is not
                    # starved by a scan's reads): it hands over what it reads.
                    if not self._reading and not self._exclusive_waiting:
                        self._reading = True
                        break
                    cond.wait()  # woken after each reply the reader hands over
            try:
                pipe._read_response()  # one reply; waits at most the channel timeout
            except BaseException as exc:
                self._fail(exc)
                raise
            finally:
                self._done_reading()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The block (synchronous paramiko calls) is the only reader of the
        wire; other threads' replies it reads are still handed to them."""
        cond = self._cond
        with cond:
            self._exclusive_waiting += 1
            try:
                while self._reading:
                    self._raise_failed()
                    cond.wait()
                self._raise_failed()
            finally:
                self._exclusive_waiting -= 1
            self._reading = True
        try:
            yield
        except (TimeoutError, EOFError, ConnectionError) as exc:
            self._fail(exc)
            raise
        except Exception as exc:
            import paramiko

            if isinstance(exc, paramiko.SSHException):  # the connection dropped
                self._fail(exc)
            raise
        finally:
            self._done_reading()

    def _done_reading(self) -> None:
        """Let the next thread read the wire; wake every waiter to look whether
        its replies have come."""
        with self._cond:
            self._reading = False
            self._cond.notify_all()

    def open_for_reading(self, path: str) -> paramiko.SFTPFile:
        """Open remote *path* to read (one request; other threads' requests stay
        in flight meanwhile). A server's "no" raises like paramiko's own open:
        `FileNotFoundError`, `PermissionError`, else `OSError`."""
        import paramiko
        from paramiko.sftp import CMD_HANDLE, CMD_OPEN, CMD_STATUS, SFTP_FLAG_READ

        pipe = cast(Pipeline, self.sftp)
        replies = Replies()
        number = pipe._async_request(
            replies,
            CMD_OPEN,
            pipe._adjust_cwd(path),
            SFTP_FLAG_READ,
            paramiko.SFTPAttributes(),
        )
        self.wait(lambda: number in replies.replies)
        kind, msg = replies.replies.pop(number)
        if kind == CMD_HANDLE:
            # bufsize 0: paramiko asks exactly for what is read; SFTPFile does
            # its own read-ahead.
            return paramiko.SFTPFile(self.sftp, msg.get_binary(), "rb", 0)
        if kind == CMD_STATUS:
            raise status_error(msg, path)
        raise paramiko.SFTPError(f"expected a handle, got reply {kind}")

    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes]:
        """The entries of remote folder *path* but ``.`` and ``..`` (as
        paramiko's ``listdir_attr``), other threads' requests in flight
        meanwhile: the open, then two reads of entries at once (a folder of a
        few hundred entries is read in one round trip, and the second read
        finds its end), and a close not waited for. Two round trips where
        paramiko's takes four. A server's "no" raises as `open_for_reading`."""
        import paramiko
        from paramiko.sftp import (
            CMD_CLOSE,
            CMD_HANDLE,
            CMD_NAME,
            CMD_OPENDIR,
            CMD_READDIR,
            CMD_STATUS,
            SFTP_EOF,
        )

        pipe = cast(Pipeline, self.sftp)
        replies = Replies()
        number = pipe._async_request(replies, CMD_OPENDIR, pipe._adjust_cwd(path))
        self.wait(lambda: number in replies.replies)
        kind, msg = replies.replies.pop(number)
        if kind == CMD_STATUS:
            raise status_error(msg, path)
        if kind != CMD_HANDLE:
            raise paramiko.SFTPError(f"expected a handle, got reply {kind}")
        handle = msg.get_binary()
        entries: list[paramiko.SFTPAttributes] = []
        try:
            at_end = False
            while not at_end:
                numbers = [pipe._async_request(replies, CMD_READDIR, handle) for _ in range(2)]
                self.wait(functools.partial(_all_in, replies, numbers))
                for n in numbers:  # the server answers in order: once at the end, it stays
                    kind, msg = replies.replies.pop(n)
                    if at_end:  # past the end (some servers answer it with another status)
                        continue
                    if kind == CMD_STATUS:
                        code = msg.get_int()
                        if code != SFTP_EOF:
                            raise coded_status_error(code, msg.get_text(), path)
                        at_end = True
                    elif kind == CMD_NAME:
                        for _ in range(msg.get_int()):
                            name, longname = msg.get_text(), msg.get_text()
                            attrs = paramiko.SFTPAttributes._from_msg(msg, name, longname)  # type: ignore[attr-defined]
                            if name not in (".", ".."):
                                entries.append(attrs)
                    else:
                        raise paramiko.SFTPError(f"expected entries, got reply {kind}")
        finally:
            # Not waited for: its reply is read past, as a scan's file closes are.
            with contextlib.suppress(Exception):
                pipe._async_request(type(None), CMD_CLOSE, handle)
        return entries

    def _raise_failed(self) -> None:
        failed = self.failed
        if failed is None:
            return
        if isinstance(failed, TimeoutError):
            raise TimeoutError(errno.ETIMEDOUT, "no reply from the server")
        raise ConnectionResetError(errno.ECONNRESET, "the connection dropped")

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self.failed is None:
                self.failed = exc
            self._cond.notify_all()


def status_error(msg: paramiko.Message, path: str) -> OSError:
    """The error of an SFTP status reply, as paramiko's ``_convert_status``
    makes it (no such file: `FileNotFoundError`, denied: `PermissionError`)."""
    code = msg.get_int()
    return coded_status_error(code, msg.get_text(), path)


def coded_status_error(code: int, text: str, path: str) -> OSError:
    """`status_error` of a reply whose code was read already."""
    from paramiko.sftp import SFTP_NO_SUCH_FILE, SFTP_PERMISSION_DENIED

    if code == SFTP_NO_SUCH_FILE:
        return FileNotFoundError(errno.ENOENT, text, path)
    if code == SFTP_PERMISSION_DENIED:
        return PermissionError(errno.EACCES, text, path)
    return OSError(errno.EIO, text, path)


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
        return SFTPSession(PythonSSH(client, channel), paramiko.SFTPClient(channel))
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
            for path in (SYSTEM_KNOWN_HOSTS, os.path.expanduser(USER_KNOWN_HOSTS)):
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
        raise OriginUnavailable(
            oid, unknown_key_message(hostname, described, self.known_hosts, self.host, self.port),
            errno.EACCES,
        )  # fmt: skip


def unknown_key_message(
    hostname: str, described: str, known_hosts: str | None, host: str, port: int
) -> str:
    """What to say of a server whose key (*described*) no known_hosts file lists."""
    files = known_hosts or f"{SYSTEM_KNOWN_HOSTS} and {USER_KNOWN_HOSTS}"
    target = known_hosts or USER_KNOWN_HOSTS
    return (
        f"host key of {hostname} is unknown ({described}; not in {files}). If this is "
        f"the right server, add its key to known_hosts: `ssh-keyscan -p {port} {host} >> "
        f"{target}` (and check the fingerprint), or set known_hosts = {ACCEPT_NEW!r}"
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
# doubling up to 4 MiB, like the kernel's readahead), fetched with all its
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


#: How a reader waits for its replies: ``wait(done)`` reads replies off the
#: wire until ``done()`` (`SFTPSession.wait` when threads share the session).
Wait = Callable[[Callable[[], bool]], None]


def fetch(
    handle: paramiko.SFTPFile,
    offset: int,
    length: int,
    wait: Wait | None = None,
) -> bytes:
    """*length* bytes at *offset* of a remote file (fewer only at its end);
    replies read with *wait* (default: this thread alone reads the wire)."""
    parts: list[bytes] = []
    got = 0
    eof = False
    while got < length and not eof:  # a server may answer with fewer bytes
        if can_pipeline(handle.sftp):
            part, eof = read_pipelined(handle, offset + got, length - got, wait)
        else:
            handle.seek(offset + got)
            part = handle.read(length - got)
        eof = eof or not part
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class Pipeline(Protocol):
    """The part of paramiko's `SFTPClient` that pipelines requests (private,
    unchanged since paramiko 1.5; `can_pipeline` checks it is there)."""

    def _async_request(self, fileobj: object, t: int, *args: object) -> int: ...
    def _read_response(self, waitfor: int | None = None) -> tuple[object, object]: ...
    def _send_packet(self, t: int, packet: object) -> None: ...
    def _adjust_cwd(self, path: str) -> bytes: ...


def can_pipeline(sftp: object) -> bool:
    return hasattr(sftp, "_async_request") and hasattr(sftp, "_read_response")


def _alone(pipe: Pipeline) -> Wait:
    """The wait of a thread that has the session to itself."""

    def wait(done: Callable[[], bool]) -> None:
        while not done():
            pipe._read_response()  # one reply; waits at most the channel timeout

    return wait


class Replies:
    """Where paramiko puts the replies to one caller's pipelined requests: it
    hands each reply to the object its request was sent for, whichever thread
    reads it off the wire (`SFTPSession.wait`)."""

    def __init__(self) -> None:
        self.replies: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.replies[num] = (t, msg)


def _all_in(replies: Replies, numbers: Sequence[int]) -> bool:
    """Whether the replies to all of *numbers* have come."""
    return all(n in replies.replies for n in numbers)


def read_reply(kind: int, msg: paramiko.Message) -> bytes | None:
    """The bytes a read request was answered with; None where the server said
    the file ends there. Any other answer raises OSError."""
    from paramiko.sftp import CMD_DATA, CMD_STATUS, SFTP_EOF

    if kind == CMD_DATA:
        return msg.get_string()
    if kind == CMD_STATUS and msg.get_int() == SFTP_EOF:
        return None
    text = msg.get_text() if kind == CMD_STATUS else f"unexpected reply {kind}"
    raise OSError(errno.EIO, f"read failed: {text}")


def read_pipelined(
    handle: paramiko.SFTPFile,
    offset: int,
    length: int,
    wait: Wait | None = None,
) -> tuple[bytes, bool]:
    """Up to *length* bytes at *offset*, asked for in `request_size` requests of
    which up to `_IN_FLIGHT_BYTES` wait for their reply at once (paramiko's own
    read sends one and waits; its readv/prefetch use a helper thread that races
    with replies).
    Returns the bytes up to the first short reply, and whether the server said
    the file ends there (else it sent less than asked: ask again from there;
    `learn_cap` looks at every reply)."""
    from paramiko.sftp import CMD_READ, int64

    pipe = cast(Pipeline, handle.sftp)
    remote_handle = cast(bytes, handle.handle)
    replies = Replies()
    request = request_size(pipe)
    in_flight = max(1, _IN_FLIGHT_BYTES // request)
    end = offset + length
    next_offset = offset
    waiting: dict[int, tuple[int, int]] = {}  # request number -> (offset, size)
    received: dict[int, bytes] = {}  # offset -> data
    asked: dict[int, int] = {}  # offset -> size
    eof = False

    def send() -> None:
        nonlocal next_offset
        size = min(request, end - next_offset)
        number = pipe._async_request(replies, CMD_READ, remote_handle, int64(next_offset), size)
        waiting[number] = (next_offset, size)
        asked[next_offset] = size
        next_offset += size

    while next_offset < end and len(waiting) < in_flight:
        send()
    wait = wait or _alone(pipe)
    while waiting:
        wait(lambda: bool(replies.replies))
        while replies.replies:  # popitem: another thread may be adding to it
            number, (kind, msg) = replies.replies.popitem()
            at, _ = waiting.pop(number)
            data = read_reply(kind, msg)
            received[at] = data or b""
            eof = eof or data is None
            if next_offset < end and not eof:
                send()
    learn_cap(pipe, request, [(n, len(received.get(at, b""))) for at, n in asked.items()])
    parts: list[bytes] = []
    at = offset
    while at < end:
        size = min(request, end - at)
        part = received.get(at, b"")
        parts.append(part)
        if len(part) < size:
            break
        at += size
    return b"".join(parts), eof


def read_ranges(
    handle: paramiko.SFTPFile,
    ranges: Sequence[tuple[int, int]],
    wait: Wait | None = None,
) -> list[bytes]:
    """The bytes of each ``(offset, size)`` of *ranges* (fewer only at the end
    of the file), every request of all of them in flight at once: the
    head, middle and tail a scan reads cost one round trip, not three. A range
    the server answered short is completed with `fetch` (`learn_cap` looks
    at every reply)."""
    if not can_pipeline(handle.sftp):
        return [fetch(handle, offset, size, wait) for offset, size in ranges]
    from paramiko.sftp import CMD_READ, int64

    pipe = cast(Pipeline, handle.sftp)
    remote_handle = cast(bytes, handle.handle)
    replies = Replies()
    request = request_size(pipe)
    in_flight = max(1, _IN_FLIGHT_BYTES // request)
    chunks = [
        (at, min(request, offset + size - at))
        for offset, size in ranges
        for at in range(offset, offset + size, request)
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

    while len(waiting) < in_flight and send():
        pass
    wait = wait or _alone(pipe)
    while waiting:
        wait(lambda: bool(replies.replies))
        while replies.replies:  # popitem: another thread may be adding to it
            number, (kind, msg) = replies.replies.popitem()
            chunk = waiting.pop(number)
            received[chunk] = read_reply(kind, msg) or b""
            send()
    learn_cap(pipe, request, [(n, len(received.get((at, n), b""))) for at, n in chunks])
    out: list[bytes] = []
    for offset, size in ranges:
        parts: list[bytes] = []
        at = offset
        while at < offset + size:
            want = min(request, offset + size - at)
            part = received.get((at, want), b"")
            parts.append(part)
            at += len(part)
            if len(part) < want:
                if part:  # answered short, not at the end: ask for the rest
                    parts.append(fetch(handle, at, offset + size - at, wait))
                break
        out.append(b"".join(parts))
    return out
