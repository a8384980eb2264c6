"""SFTP origins: a folder on a server reached over SSH, read with paramiko.

Job: list folders, stat files and read byte ranges under *root* on an SSH
server, through a small pool of SFTP sessions, and report failures in the terms
of `musicfs.core.origins.base`: a missing file is `FileNotFoundError`, a refused
one `PermissionError`, and a server that does not answer (refused or dropped
connection, timeout, failed login, unknown host key) `OriginUnavailable`.

Boundaries: it never writes to the server, never retries beyond replacing one
dropped connection, and never waits on the network longer than *timeout* per
step: retries over time, failover, health checks and bandwidth limits belong to
`musicfs.core.origins.federation`. The pool of sessions and the deadline of a
connection being made are `musicfs.core.origins.sessions` (shared with SMB);
connecting, host keys and pipelined reads are `musicfs.core.origins.ssh`;
running OpenSSH's ``ssh`` as the wire is `musicfs.core.origins.openssh`.
paramiko is imported only when an `SFTPOrigin` is made. Secrets (the password)
are used to log in and appear in no message, `location` or ``repr``.

Connections
    Up to *max_connections* SSH connections, one SFTP session each, made when
    first needed. An open file holds one session until it is closed; a stat,
    listing or a scan's batch of heads (`read_heads`) borrows one for the
    call. A session no one holds is preferred; when
    all *max_connections* exist and are held, callers share the least busy one,
    so opening more files than there are connections never deadlocks. Files
    that share a session have their requests in flight together (multiplexed,
    `musicfs.core.origins.ssh.SFTPSession`): the scan's open (from a listing,
    without fstat), its reads and its close that is not waited for, its
    listings, and the reads of files open for playback. A stat, an open with
    its stat and a close that waits are paramiko's synchronous calls: each has the
    session to itself while it runs (the others' requests stay in flight and
    their replies are kept for them). If the connection breaks or stops
    answering, every call waiting on it fails at once. A session whose
    connection broke is dropped at once; the call that found it broken is
    tried once more on a new connection (an open file opens its file again
    there), unless the failure was a timeout or the connection was new: a
    server that hangs costs one *timeout*, not two. Making a connection is
    bounded as a whole by *timeout*: the origin's watchdog closes it if the
    server stops answering midway.

Host keys
    Checked like OpenSSH does with ``StrictHostKeyChecking yes``: against
    ``/etc/ssh/ssh_known_hosts`` and ``~/.ssh/known_hosts``, or only against the
    file *known_hosts* names. An unknown key is refused with a message that says
    how to add it. Two special values of *known_hosts*:
    ``"accept-new"`` checks the same files but accepts a host that is in none of
    them, remembering its key for the life of the origin (not written to disk);
    ``"insecure-ignore"`` checks nothing (test set-ups only: it allows a
    man-in-the-middle).

SSH client (*ssh_client*)
    ``"openssh"``: each connection is an ``ssh -s host sftp`` process (SSH's
    framing in C; `musicfs.core.origins.openssh`), with the same host keys and
    keys as below and no ssh config file; ``"paramiko"``: paramiko's own SSH;
    ``"auto"`` (the default): ssh, unless it is not installed or the origin
    needs what it cannot do here (a password or passphrase, ``accept-new``, a
    key file ssh refuses as readable by others).

Authentication
    With *key_file*: that key only (*password* is then its passphrase, and the
    login password if the key is refused). Without: the ssh agent and the
    default keys (``~/.ssh/id_*``), then *password* if one is given.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import posixpath
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

from musicfs.core.model import SSH_CLIENTS, FileStat
from musicfs.core.origins.base import (
    DirListing,
    Origin,
    OriginFile,
    OriginUnavailable,
    extension_set,
    listed_name,
    wanted_file,
)
from musicfs.core.origins.openssh import (
    SSHProcess,
    SSHRefused,
    find_ssh,
    ssh_argv,
    why_not_openssh,
)
from musicfs.core.origins.openssh import open_session as open_ssh_session
from musicfs.core.origins.sessions import Pooled, SessionLost, SessionPool, Verdict, Watchdog
from musicfs.core.origins.sftpheads import read_heads
from musicfs.core.origins.ssh import (
    ACCEPT_NEW,
    INSECURE_IGNORE,
    HostKeys,
    ReadAhead,
    SFTPSession,
    Wait,
    changed_key_message,
    close_client,
    fetch,
    open_session,
    read_ranges,
)

if TYPE_CHECKING:
    import paramiko

__all__ = ["ACCEPT_NEW", "INSECURE_IGNORE", "SSH_CLIENTS", "SFTPFile", "SFTPOrigin"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_Session = Pooled[SFTPSession]

# errnos of a network that failed (not of a server that answered "no").
_NETWORK_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
                   errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETUNREACH,
                   errno.ENETDOWN, errno.ENOTCONN, errno.ESHUTDOWN,
                   errno.EADDRNOTAVAIL}  # fmt: skip


class SFTPFile(OriginFile):
    """A file open on an SFTP server: holds one pooled session until closed.

    Reads of one file take turns (one lock per file); reads of files that share
    the session are in flight together. A read that continues the previous
    one fetches a growing read-ahead window (`musicfs.core.origins.ssh.ReadAhead`).
    """

    ranges_at_once = True

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
        self._ahead = ReadAhead(size)
        #: Opened from a listing, for a scan (`SFTPOrigin.open_listed`): closed
        #: without waiting for the server's reply.
        self.listed = False

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
            return self._ahead.read(offset, size, self._fetch)

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """All of *ranges* in one round trip (their requests pipelined); not
        kept in the read-ahead buffer."""
        with self._lock:
            if self._closed:
                raise ValueError(f"{self!r} is closed")
            return self._on_handle(lambda handle, wait: read_ranges(handle, ranges, wait))

    def _fetch(self, offset: int, length: int) -> bytes:
        """*length* bytes at *offset* from the server (fewer at its end), on a
        new connection if the one this file held has dropped (once per read,
        as `SessionPool.run` does for calls that do not hold a session)."""
        return self._on_handle(lambda handle, wait: fetch(handle, offset, length, wait))

    def _on_handle(self, operation: Callable[[paramiko.SFTPFile, Wait | None], _T]) -> _T:
        """*operation* on the open remote file (see `_fetch`), given how to wait
        for its replies: alongside the other files on the session when it is
        multiplexed (`SFTPSession.wait`), else alone on it."""
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
                if session.session.multiplexed:
                    if session.broken:
                        raise SessionLost
                    return operation(handle, session.session.wait)
                with session.lock, session.session.exclusive():
                    if session.broken:
                        raise SessionLost
                    return operation(handle, None)
            except Exception as exc:
                verdict = self.origin._judge(exc, session, path)
                if verdict.lost or session.broken:
                    self.origin._pool.drop(session)
                if reopened or not verdict.retry:
                    raise verdict.error from exc
            self._reopen()
            reopened = True

    def _reopen(self) -> None:
        """Open the file again on a new connection (after the old one dropped)."""
        session, self._session, self._handle = self._session, None, None
        if session is not None:
            self.origin._pool.release(session)
        self._ahead.clear()
        session, handle, st = self.origin._open_handle(self.relpath, with_stat=True)
        if st is None or (st.size, st.mtime_ns) != (self.size, self.mtime_ns):
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
            self._ahead.clear()
            session, handle = self._session, self._handle
            self._session = self._handle = None
        if session is not None and handle is not None:
            self.origin._close_handle(session, handle, wait=not self.listed)


class SFTPOrigin(Origin):
    """A folder *root* on an SSH server (see the module docstring)."""

    kind = "sftp"
    heads_at_once = True

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
        ssh_client: str = "auto",
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
        #: The ``ssh`` command connections are made with (None: paramiko's own SSH).
        self.ssh = self._choose_client(ssh_client)
        # auto: whether that ssh is OpenSSH's is asked (``ssh -V``) at the first
        # connection, not while the mount starts.
        self._ssh_known = ssh_client == "openssh"
        self._asking_ssh = threading.Lock()  # once, whoever connects first
        self._host_keys = HostKeys(origin_id, host, port, known_hosts)
        self._watchdog = Watchdog(f"sftp-watchdog-{origin_id}")
        self._pool: SessionPool[SFTPSession] = SessionPool(
            origin_id,
            self.location,
            self._connect,
            alive=SFTPSession.alive,
            close=SFTPSession.close,
            size=max_connections,
            timeout=timeout,
            grow_behind=True,  # callers share a session while the next is made
        )

    def _choose_client(self, wanted: str) -> str | None:
        """The ``ssh`` to connect with, or None for paramiko (see `SSH_CLIENTS`)."""
        if wanted not in SSH_CLIENTS:
            raise ValueError(
                f"origin {self.id!r}: ssh_client {wanted!r} is not one of {', '.join(SSH_CLIENTS)}"
            )
        if wanted == "paramiko":
            return None
        cannot = why_not_openssh(
            password=self._password, known_hosts=self.known_hosts, key_file=self.key_file
        )
        if wanted == "auto":
            return None if cannot else shutil.which("ssh")
        ssh = find_ssh()
        if wanted == "openssh":
            if cannot:
                raise ValueError(f"origin {self.id!r}: ssh_client = 'openssh' cannot be used: "
                                 f"{cannot}; use ssh_client = 'paramiko'")  # fmt: skip
            if ssh is None:
                raise ValueError(f"origin {self.id!r}: ssh_client = 'openssh' needs OpenSSH's "
                                 "ssh, which is not on PATH (apt install openssh-client); "
                                 "or use ssh_client = 'paramiko'")  # fmt: skip
        return ssh

    @property
    def client(self) -> str:
        """Which SSH client carries the connections: ``openssh`` or ``paramiko``
        (under auto, paramiko from the first connection on if the ``ssh`` on PATH
        turns out not to be OpenSSH's)."""
        return "paramiko" if self.ssh is None else "openssh"

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
        return self._pool.connections

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

        def on_session(pooled: _Session) -> DirListing:
            if not pooled.session.multiplexed:
                with pooled.lock, pooled.session.exclusive():
                    try:
                        return listing(pooled.session.sftp.listdir_attr(path), pooled)
                    except FileNotFoundError:
                        self._check_root(pooled.session.sftp)
                        raise
            try:
                entries = pooled.session.list_folder(path)  # among the others in flight
            except FileNotFoundError:
                with pooled.lock, pooled.session.exclusive():
                    self._check_root(pooled.session.sftp)
                raise
            return listing(entries, pooled)

        def listing(entries: list[paramiko.SFTPAttributes], pooled: _Session) -> DirListing:
            result = DirListing()
            for attrs in entries:
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
                        target = self._stat_link(pooled, posixpath.join(path, name))
                    except (FileNotFoundError, PermissionError) as exc:  # dangling
                        log.debug("skipping %s/%s: %s", path, name, exc)
                        continue
                    mode = target.st_mode or 0
                if stat.S_ISREG(mode):
                    result.files.append((name, _file_stat(target)))
            return result

        return self._pool.run(on_session, functools.partial(self._judge, path=path))

    def _stat_link(self, pooled: _Session, path: str) -> paramiko.SFTPAttributes:
        """What the symlink *path* points at (paramiko's wait for the reply)."""
        if pooled.session.multiplexed:
            with pooled.lock, pooled.session.exclusive():
                return pooled.session.sftp.stat(path)
        return pooled.session.sftp.stat(path)  # the listing holds the session already

    def stat(self, relpath: str) -> FileStat:
        path = self.remote_path(relpath)
        return _file_stat(self._run(path, lambda sftp: sftp.stat(path)))

    def open(self, relpath: str) -> SFTPFile:
        session, handle, st = self._open_handle(relpath, with_stat=True)
        assert st is not None
        return SFTPFile(self, relpath, session, handle, size=st.size, mtime_ns=st.mtime_ns)

    def open_listed(self, relpath: str, stat: FileStat) -> SFTPFile:
        """One round trip (the open), no fstat: the listing gave the size and
        modification time. (A file replaced since reads what is there now.)"""
        session, handle, _ = self._open_handle(relpath, with_stat=False)
        opened = SFTPFile(self, relpath, session, handle, size=stat.size, mtime_ns=stat.mtime_ns)
        opened.listed = True
        return opened

    def read_heads(self, heads: Sequence[tuple[str, FileStat, int]]) -> list[bytes | OSError]:
        """`Origin.read_heads` on one pooled session, every file's open, reads
        and close in flight together (`musicfs.core.origins.sftpheads`); other
        threads' requests share the session meanwhile. Retried once on a new
        connection like any call (the whole batch)."""
        read: list[bytes | OSError | None] = []
        wanted: list[tuple[str, int]] = []
        for relpath, st, length in heads:
            try:
                wanted.append((self.remote_path(relpath), min(length, st.size)))
                read.append(None)
            except OSError as exc:  # a name this origin cannot ask for
                read.append(exc)

        def on_session(pooled: _Session) -> list[bytes | OSError] | None:
            if not pooled.session.multiplexed:
                return None
            got = read_heads(pooled.session, wanted)
            if any(isinstance(head, FileNotFoundError) for head in got):
                with pooled.lock, pooled.session.exclusive():
                    self._check_root(pooled.session.sftp)  # a disk gone is not files gone
            return [
                self._file_error(head, pooled, path) if isinstance(head, OSError) else head
                for head, (path, _) in zip(got, wanted, strict=True)
            ]

        judge = functools.partial(self._judge, path=self.location)
        got = self._pool.run(on_session, judge) if wanted else []
        if got is None:  # paramiko without the calls that multiplex: one at a time
            return super().read_heads(heads)
        answers = iter(got)
        return [next(answers) if head is None else head for head in read]

    def _file_error(self, exc: OSError, session: _Session, path: str) -> OSError:
        """What the server's "no" to one file of a batch is to the caller; raises
        if it says the connection is lost (the batch fails as a whole)."""
        verdict = self._judge(exc, session, path)
        if verdict.lost or isinstance(verdict.error, OriginUnavailable):
            raise exc  # judged again by the pool, which drops the session
        error = verdict.error
        return error if isinstance(error, OSError) else OSError(errno.EIO, str(error), path)

    def close(self) -> None:
        """Close every connection. Open files reconnect on their next read; the
        origin connects again when used."""
        self._pool.close()
        self._watchdog.stop()

    # -- sessions ------------------------------------------------------------

    def _run(self, path: str, operation: Callable[[paramiko.SFTPClient], _T]) -> _T:
        """Run *operation* on a pooled session; once more on a new connection if
        a session that had been idle turns out to have dropped."""

        def on_session(pooled: _Session) -> _T:
            with pooled.session.exclusive():  # paramiko's calls wait for their reply
                try:
                    return operation(pooled.session.sftp)
                except FileNotFoundError:
                    self._check_root(pooled.session.sftp)
                    raise

        judge = functools.partial(self._judge, path=path)
        return self._pool.run(on_session, judge, exclusive=True)

    def _open_handle(
        self, relpath: str, *, with_stat: bool
    ) -> tuple[_Session, paramiko.SFTPFile, FileStat | None]:
        """Open *relpath* on a pooled session, which stays held (for `SFTPFile`);
        with *with_stat*, its stat too (a second round trip). Without, the open
        is one request among the others in flight on the session."""
        path = self.remote_path(relpath)

        def open_on(pooled: _Session) -> tuple[_Session, paramiko.SFTPFile, FileStat | None]:
            if not with_stat and pooled.session.multiplexed:
                try:
                    return pooled, pooled.session.open_for_reading(path), None
                except FileNotFoundError:
                    with pooled.lock, pooled.session.exclusive():
                        self._check_root(pooled.session.sftp)
                    raise
            with pooled.lock, pooled.session.exclusive():
                return open_waited(pooled)

        def open_waited(pooled: _Session) -> tuple[_Session, paramiko.SFTPFile, FileStat | None]:
            sftp = pooled.session.sftp
            # bufsize 0: paramiko asks exactly for what is read; SFTPFile does
            # its own read-ahead.
            try:
                handle = sftp.open(path, "rb", bufsize=0)
            except FileNotFoundError:
                self._check_root(sftp)
                raise
            if not with_stat:
                return pooled, handle, None
            try:
                attrs = handle.stat()
            except OSError as exc:
                if not isinstance(exc, TimeoutError):  # the server answered
                    self._close_quietly(handle)
                raise
            if stat.S_ISDIR(attrs.st_mode or 0):
                self._close_quietly(handle)
                raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
            return pooled, handle, _file_stat(attrs)

        judge = functools.partial(self._judge, path=path)
        return self._pool.run(open_on, judge, hold=True)

    def _check_root(self, sftp: paramiko.SFTPClient) -> None:
        """After "no such file": raise `OriginUnavailable` if root itself is gone
        (a disk not mounted on the server), which must not empty the tree."""
        try:
            sftp.stat(self.root)
        except FileNotFoundError:
            raise OriginUnavailable(
                self.id, f"{self.location}: the folder is not on the server", errno.ENOENT
            ) from None

    def _close_quietly(self, handle: paramiko.SFTPFile) -> None:
        try:
            handle.close()
        except Exception as exc:  # the error that made us close it is the one to report
            log.debug("origin %s: closing a remote file: %s", self.id, exc)

    def _close_handle(
        self, session: _Session, handle: paramiko.SFTPFile, *, wait: bool = True
    ) -> None:
        """Close a remote file (if its connection still works) and let go of its
        session. Without *wait*, the close is sent and its reply left for the
        session's next request to read past (a round trip saved per file a scan
        reads; the server handles requests in order); other files' requests on
        the session go on meanwhile."""
        try:
            if session.broken:
                pass
            elif wait or not hasattr(handle, "_close"):
                with session.lock, session.session.exclusive():
                    handle.close()
            else:
                handle._close(async_=True)  # sends only (sends are serialized)
        except Exception as exc:
            if self._judge(exc, session, "close").lost:
                self._pool.drop(session)
        finally:
            self._pool.release(session)

    def _connect(self, seconds: float) -> SFTPSession:
        """A new SSH connection with an SFTP session, all of it within *seconds*
        (the pool's share of *timeout*; the watchdog closes the connection if
        the server stops answering midway, which wakes every wait in paramiko)."""
        if not self._ssh_known:
            started = time.monotonic()
            with self._asking_ssh:
                if not self._ssh_known:
                    self.ssh = find_ssh() if self.ssh is not None else None
                    self._ssh_known = True
            seconds = max(0.0, seconds - (time.monotonic() - started))
        if self.ssh is not None:
            process = SSHProcess(
                ssh_argv(self.ssh, host=self.host, port=self.port, user=self.user,
                         key_file=self.key_file, known_hosts=self.known_hosts,
                         timeout=self.timeout),
                timeout=self.timeout, host_label=self.host, port=self.port,
                known_hosts=self.known_hosts, user=self.user,
            )  # fmt: skip
            return self._watchdog.call(
                seconds,
                functools.partial(open_ssh_session, process),
                cut=process.close,
                unavailable=lambda: self._unavailable(
                    f"no answer within {seconds:g}s", errno.ETIMEDOUT
                ),
            )
        client = self._paramiko.SSHClient()
        connect = functools.partial(
            open_session,
            client,
            self._host_keys,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self._password,
            key_file=self.key_file,
            timeout=self.timeout,
        )
        session = self._watchdog.call(
            seconds,
            connect,
            cut=functools.partial(close_client, client),
            unavailable=lambda: self._unavailable(
                f"no answer within {seconds:g}s", errno.ETIMEDOUT
            ),
        )
        log.debug("origin %s: connected to %s", self.id, self.location)
        return session

    # -- errors --------------------------------------------------------------

    def _unavailable(self, message: str, code: int = errno.EIO) -> OriginUnavailable:
        return OriginUnavailable(self.id, self._scrub(f"{self.location}: {message}"), code)

    def _judge(self, exc: BaseException, session: _Session | None, path: str) -> Verdict:
        """What *exc*, raised while working on remote *path* (or while connecting,
        without *session*), means: the error to raise, whether the connection is
        lost, and whether the call may be tried once more on a new one."""
        paramiko = self._paramiko
        unavailable = self._unavailable
        if isinstance(exc, OriginUnavailable):
            return Verdict(exc)  # made here, with no secret in it
        if isinstance(exc, SSHRefused):  # ssh ended before the session began
            return Verdict(unavailable(exc.message, exc.code))
        if session is None:  # while connecting: nothing the server said about a file
            what = str(exc) or type(exc).__name__
            if isinstance(exc, paramiko.AuthenticationException):
                who = self.user or "the current user"
                return Verdict(
                    unavailable(f"authentication failed for {who}: {what}", errno.EACCES)
                )
            if isinstance(exc, paramiko.BadHostKeyException):
                return Verdict(unavailable(changed_key_message(exc), errno.EACCES))
            if isinstance(exc, TimeoutError):
                return Verdict(unavailable(f"no answer within {self.timeout:g}s", errno.ETIMEDOUT))
            code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
            return Verdict(unavailable(f"cannot connect: {what}", code))
        if isinstance(exc, FileNotFoundError):
            return Verdict(FileNotFoundError(errno.ENOENT, "No such file or directory", path))
        if isinstance(exc, PermissionError):
            return Verdict(PermissionError(errno.EACCES, "Permission denied", path))
        if isinstance(exc, IsADirectoryError):
            return Verdict(exc)
        if isinstance(exc, UnicodeDecodeError):  # paramiko decodes names as UTF-8
            return Verdict(OSError(errno.EILSEQ, "a file name is not UTF-8", path))

        lost = session.broken or not session.session.alive()
        if isinstance(exc, TimeoutError):
            return Verdict(
                unavailable(f"no answer within {self.timeout:g}s", errno.ETIMEDOUT), True
            )
        if isinstance(exc, SessionLost | EOFError | ConnectionError | paramiko.SSHException):
            what = str(exc) or type(exc).__name__
            return Verdict(unavailable(f"connection lost ({what})", errno.ECONNRESET), True, True)
        if isinstance(exc, OSError) and (exc.errno in _NETWORK_ERRNOS or lost):
            error = unavailable(f"connection failed: {exc.strerror or exc}", exc.errno or errno.EIO)
            return Verdict(error, True, True)
        if isinstance(exc, OSError):  # the server answered with an error
            return Verdict(OSError(exc.errno or errno.EIO, self._scrub(str(exc)), path))
        # paramiko.SFTPError (a garbled reply) or anything unexpected
        if not isinstance(exc, paramiko.SFTPError):
            log.warning("origin %s: unexpected error on %s", self.id, path, exc_info=exc)
        return Verdict(unavailable(f"{type(exc).__name__}: {exc}"), True)

    def _scrub(self, message: str) -> str:
        if self._password:
            message = message.replace(self._password, "***")
        return message


def _file_stat(attrs: paramiko.SFTPAttributes) -> FileStat:
    """SFTP (version 3) has whole seconds only."""
    return FileStat(attrs.st_size or 0, (attrs.st_mtime or 0) * 1_000_000_000)
