"""OpenSSH's ``ssh`` as the wire of an SFTP session: ``ssh -s host sftp``.

Job: run the system's ``ssh`` client for one SFTP connection (`SSHProcess`),
with the origin's host, port, user, key and host-key rules turned into ssh
options (`ssh_argv`), and hand paramiko's SFTP client a socket to speak SFTP
over (`SSHProcess.start`). When ssh gives up before the session begins (an
unknown or changed host key, a refused login, nothing listening), what it
printed becomes the origin's message (`SSHRefused`).

Why: paramiko does SSH's framing, MAC and window bookkeeping in Python, on the
thread that parses tags. Measured on 127.0.0.1 (OpenSSH 9.2, 8 connections, a
bare client): reads of an open file 1,200/s through paramiko's transport, 7,700-9,800/s
through ssh; open + 64 KiB read + close 610/s against 2,600/s. rclone
(``--sftp-ssh``) and sshfs use the same split.

Boundaries: the SFTP protocol, multiplexing and reads stay paramiko's and
`musicfs.core.origins.ssh`'s; pooling and deadlines are
`musicfs.core.origins.sessions`; which client an origin uses is
`musicfs.core.origins.sftp`'s choice. No ssh configuration file is read
(``-F /dev/null``): an origin means the same with either client. ssh cannot
type a password, nor keep a key accepted only for the life of the origin,
so those set-ups use paramiko.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading

from musicfs.core.errors import MusicFSError
from musicfs.core.origins.ssh import (
    ACCEPT_NEW,
    INSECURE_IGNORE,
    SYSTEM_KNOWN_HOSTS,
    USER_KNOWN_HOSTS,
    SFTPSession,
    unknown_key_message,
)

#: The keys paramiko looks for when no key file is named (OpenSSH's defaults but
#: the security-key ones).
_DEFAULT_KEYS = ("id_rsa", "id_dsa", "id_ecdsa", "id_ed25519")

_OPENSSH: dict[str, bool] = {}  # ssh's path: whether it is OpenSSH's (asked once)


def find_ssh() -> str | None:
    """The path of OpenSSH's client, if it is installed (not another ``ssh``:
    dropbear's and busybox's take other options)."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return None
    if ssh not in _OPENSSH:
        try:
            said = subprocess.run([ssh, "-V"], capture_output=True, timeout=5, check=False)
            _OPENSSH[ssh] = b"OpenSSH" in said.stdout + said.stderr
        except (OSError, subprocess.SubprocessError):
            _OPENSSH[ssh] = False
    return ssh if _OPENSSH[ssh] else None


def default_keys() -> list[str]:
    """The default private keys in ``~/.ssh`` (``~`` as this process sees it)."""
    found = (os.path.expanduser(f"~/.ssh/{name}") for name in _DEFAULT_KEYS)
    return [path for path in found if os.path.exists(path)]


def refused_key(path: str) -> str | None:
    """Why ssh would not use the private key *path* (paramiko would), or None:
    missing or unreadable, or readable by others (ssh's own rule)."""
    try:
        st = os.stat(path)
        with open(path, "rb"):
            pass
    except OSError as exc:
        return f"cannot read key file {path}: {exc.strerror or exc}"
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        return f"key file {path} is readable by others (mode {st.st_mode & 0o777:o})"
    return None


def why_not_openssh(
    *, password: str | None, known_hosts: str | None, key_file: str | None
) -> str | None:
    """What in an origin's set-up ssh cannot do (None: it can do all of it)."""
    for path in (known_hosts, key_file):
        if path and ('"' in path or "\n" in path):
            return f"ssh cannot be given the path {path!r}"
    for key in [key_file] if key_file else default_keys():
        if why := refused_key(key):
            return f"{why}, which ssh refuses (chmod 600 it)"
    if password is not None:
        return "it cannot type a password or a key's passphrase"
    if known_hosts == ACCEPT_NEW:
        return "known_hosts = 'accept-new' keeps a new key in memory only, and ssh writes it"
    return None


class SSHRefused(MusicFSError):
    """ssh ended before the SFTP session began; *message* says why, *code* is an errno."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _config_path(path: str) -> str:
    """*path* as one value of an ssh option (which splits on blanks and expands ``%``)."""
    if '"' in path or "\n" in path:
        raise ValueError(f"ssh cannot be given the path {path!r}")
    return '"' + path.replace("%", "%%") + '"'


def ssh_argv(
    ssh: str,
    *,
    host: str,
    port: int,
    user: str | None,
    key_file: str | None,
    known_hosts: str | None,
    timeout: float,
) -> list[str]:
    """The command line of one SFTP connection: host keys checked as
    `musicfs.core.origins.ssh.HostKeys` checks them, the key *key_file* only
    (else the agent and ``~/.ssh/id_*``), never a prompt."""
    argv = [ssh, "-F", "/dev/null", "-x", "-a", "-T", "-p", str(port)]
    options = {
        "BatchMode": "yes",  # never a prompt: a question is a refusal
        "ClearAllForwardings": "yes",
        "ControlMaster": "no",  # one TCP connection each: the pool's to count
        "ControlPath": "none",
        "Compression": "no",
        "GSSAPIAuthentication": "no",
        "CheckHostIP": "no",  # the host's key, not its address's (as paramiko checks)
        "ConnectTimeout": str(max(1, round(timeout))),
        "LogLevel": "ERROR",
    }
    if known_hosts == INSECURE_IGNORE:
        options.update(StrictHostKeyChecking="no", UserKnownHostsFile="/dev/null",
                       GlobalKnownHostsFile="/dev/null")  # fmt: skip
    elif known_hosts:
        readable(known_hosts)
        options.update(StrictHostKeyChecking="yes",
                       UserKnownHostsFile=_config_path(os.path.expanduser(known_hosts)),
                       GlobalKnownHostsFile="/dev/null")  # fmt: skip
    else:  # ~ as this process sees it ($HOME), as paramiko's
        options.update(StrictHostKeyChecking="yes",
                       UserKnownHostsFile=_config_path(os.path.expanduser(USER_KNOWN_HOSTS)),
                       GlobalKnownHostsFile=_config_path(SYSTEM_KNOWN_HOSTS))  # fmt: skip
    # As IdentityFile options, not -i: ssh looks for a -i file before it
    # expands "%", so a path with "%" in it could not be named at all.
    keys = [key_file] if key_file else default_keys()
    if key_file:
        options["IdentitiesOnly"] = "yes"  # not the agent's keys either
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    for key in keys:
        argv += ["-o", f"IdentityFile={_config_path(key)}"]
    if user:
        argv += ["-l", user]
    return [*argv, "-s", "--", host, "sftp"]


def readable(known_hosts: str) -> None:
    """Raise `SSHRefused` unless the known_hosts file can be read (ssh would
    take a missing file for an empty one and blame the server's key)."""
    path = os.path.expanduser(known_hosts)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise SSHRefused(
            f"cannot read known_hosts file {path}: {exc.strerror or exc}", exc.errno or errno.EIO
        ) from None


class Wire:
    """What paramiko's `SFTPClient` needs of a channel: a socket to ssh,
    whose reads and writes give up after the timeout (`TimeoutError`)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def get_name(self) -> str:
        return "ssh"


class SSHProcess:
    """One ``ssh`` process carrying one SFTP session (see the module docstring).

    `close` may come from any thread at any time (the connect watchdog, the
    pool): it kills the process, which ends every wait on the socket."""

    def __init__(self, argv: list[str], *, timeout: float, host_label: str, port: int,
                 known_hosts: str | None, user: str | None) -> None:  # fmt: skip
        self.argv = argv
        self.timeout = timeout
        self._host_label = host_label  # how the origin names the server in messages
        self._port = port
        self._known_hosts = known_hosts
        self._user = user
        self._lock = threading.Lock()
        self._closed = False
        self._process: subprocess.Popen[bytes] | None = None
        self._wire: Wire | None = None
        # A file, not a pipe: never fills up while no one reads it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())

    def start(self) -> Wire:
        """Run ssh; the socket SFTP is spoken over. Raises `SSHRefused` if ssh
        cannot be run, `ConnectionAbortedError` if closed meanwhile."""
        ours, theirs = socket.socketpair()
        try:
            with self._lock:
                if self._closed:
                    raise ConnectionAbortedError(errno.ECONNABORTED, "closed while connecting")
                try:
                    self._process = subprocess.Popen(
                        self.argv,
                        stdin=theirs.fileno(),
                        stdout=theirs.fileno(),
                        stderr=self._stderr,
                        start_new_session=True,  # a Ctrl-C for the daemon is not ssh's
                    )
                except OSError as exc:
                    raise SSHRefused(
                        f"cannot run {self.argv[0]}: {exc.strerror or exc}", exc.errno or errno.EIO
                    ) from None
                ours.settimeout(self.timeout)
                self._wire = Wire(ours)
                return self._wire
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()

    def alive(self) -> bool:
        process = self._process
        return not self._closed and process is not None and process.poll() is None

    def close(self) -> None:
        """Kill ssh and reap it (a read-only session has nothing to finish)."""
        with self._lock:
            self._closed = True
            process, wire = self._process, self._wire
        if wire is not None:
            wire.close()
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
        self._stderr.close()

    def refusal(self) -> SSHRefused | None:
        """Why ssh ended before the session began, from what it printed (None
        if it has not ended within the timeout: then it was not ssh that gave up)."""
        process = self._process
        if process is None:
            return None
        try:
            status = process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return None
        try:
            self._stderr.seek(0)
            said = self._stderr.read(16384).decode(errors="replace")
        except (OSError, ValueError):  # closed meanwhile
            said = ""
        return explain(said, status, host_label=self._host_label, port=self._port,
                       known_hosts=self._known_hosts, user=self._user)  # fmt: skip


def open_session(process: SSHProcess) -> SFTPSession:
    """Start *process* and open an SFTP session over it; *process* is closed
    if this fails. ssh giving up (a host key, a login) raises `SSHRefused`."""
    import paramiko

    try:
        wire = process.start()
        try:
            sftp = paramiko.SFTPClient(wire)  # type: ignore[arg-type]  # a channel's duck
        except (EOFError, paramiko.SSHException, ConnectionError):
            refusal = process.refusal()  # ssh closed the socket: it says why
            if refusal is not None:
                raise refusal from None
            raise
        return SFTPSession(process, sftp)
    except BaseException:
        process.close()
        raise


_UNKNOWN = re.compile(r"No (\S+) host key is known for (\S+)")
_CHANGED = re.compile(r"fingerprint for the (\S+) key sent by the remote host is\s+(\S+?)\.?\s")
_DENIED = re.compile(r"Permission denied \(([^)]*)\)")
_BAD_KEY = re.compile(r'Load key "(.+?)": (.+)|Identity file (.+?) not accessible: (.+?)\.?$', re.M)
_CONNECT = re.compile(r"ssh: connect to host \S+ port \d+: (.+)")
_CONNECT_ERRNOS = {
    "Connection refused": errno.ECONNREFUSED,
    "Connection timed out": errno.ETIMEDOUT,
    "No route to host": errno.EHOSTUNREACH,
    "Network is unreachable": errno.ENETUNREACH,
}


def explain(said: str, status: int, *, host_label: str, port: int, known_hosts: str | None,
            user: str | None) -> SSHRefused:  # fmt: skip
    """The origin's message for ssh's stderr *said* and exit *status*."""
    lines = [line.strip() for line in said.replace("\r", "").splitlines() if line.strip()]
    if found := _UNKNOWN.search(said):
        key_type, hostname = found.groups()
        described = f"{key_type} key"
        return SSHRefused(
            unknown_key_message(hostname, described, known_hosts, host_label, port), errno.EACCES
        )
    if found := _CHANGED.search(said):
        key_type, fingerprint = found.groups()
        host = re.search(r"Host key for (\S+) has changed", said)
        hostname = host.group(1) if host else host_label
        return SSHRefused(
            f"host key of {hostname} has changed (got {key_type} {fingerprint}, known_hosts "
            f"has another): someone may be intercepting the connection, or the server was "
            f"reinstalled (then remove the old key: `ssh-keygen -R {hostname}`)",
            errno.EACCES,
        )
    if found := _DENIED.search(said):
        who = user or "the current user"
        why = f"the server accepts {found.group(1)}"
        if bad := _BAD_KEY.search(said.replace("\r", "")):  # the key was not even offered
            key, reason = bad.group(1) or bad.group(3), bad.group(2) or bad.group(4)
            why = (f"ssh did not use the key file {key} ({reason.strip()}; "
                   "chmod 600 it, or fix key_file)")  # fmt: skip
        return SSHRefused(f"authentication failed for {who}: {why}", errno.EACCES)
    if found := _CONNECT.search(said):
        reason = found.group(1).strip()
        return SSHRefused(f"cannot connect: {reason}", _CONNECT_ERRNOS.get(reason, errno.EIO))
    last = lines[-1] if lines else f"no message, exit status {status}"
    return SSHRefused(f"ssh failed: {last}", errno.EIO)
