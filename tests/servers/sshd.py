"""A real OpenSSH sshd on 127.0.0.1 for the SFTP origin tests.

`sshd_server` generates a host key and a client key (ssh-keygen) in a temporary
directory, writes a config that serves SFTP (OpenSSH's sftp-server, whose log
tells how many bytes each open file read) to the current user on a free port,
runs ``/usr/sbin/sshd -D -e -f CONFIG`` and waits until the port answers with an
SSH banner. The yielded `SSHServer` can be stopped and started again
(same port, same keys) to play a server that goes away and comes back, and
frozen/thawed (SIGSTOP/SIGCONT) to play one that hangs. Every sshd process it
started, the per-connection children included, is killed on exit.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.servers import free_port

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
_START_TIMEOUT = 15.0
#: A file the server refuses to open for reading even as root (a write-only
#: sysfs file; the test server runs as root, so a chmod would refuse nothing):
#: a symlink to it in a served folder plays a file the user may not read.
WRITE_ONLY = Path("/sys/bus/cpu/uevent")


def refused_to_root() -> bool:
    """Whether `WRITE_ONLY` is refused here (it may be missing in a container)."""
    try:
        with WRITE_ONLY.open("rb"):
            return False
    except PermissionError:
        return True
    except OSError:
        return False


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _children(pid: int) -> list[int]:
    """Every descendant of *pid* (sshd's per-connection processes call setsid,
    so they are not in its process group)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # pid (comm) state ppid ...: comm may contain spaces and parens.
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


class SSHServer:
    """One sshd: where it listens, how to log in, and how to stop it."""

    def __init__(
        self, directory: Path, root: Path, sftp_flags: str = "", wrapper: str = ""
    ) -> None:
        self.directory = directory
        self.root = root
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = directory / "host_ed25519"
        self.key_file = str(directory / "client_ed25519")
        self.known_hosts = str(directory / "known_hosts")
        self.config = directory / "sshd_config"
        self.log_file = directory / "sshd.log"
        self.sftp_log = directory / "sftp.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._frozen: list[int] = []

        _keygen(self.host_key, "musicfs-test-host")
        _keygen(Path(self.key_file), "musicfs-test-client")
        (directory / "authorized_keys").write_bytes(Path(f"{self.key_file}.pub").read_bytes())
        key_type, key_data = self.host_key.with_suffix(".pub").read_text().split()[:2]
        self.host_key_line = f"[{self.host}]:{self.port} {key_type} {key_data}\n"
        Path(self.known_hosts).write_text(self.host_key_line)
        self.config.write_text(
            f"ListenAddress {self.host}\n"
            f"Port {self.port}\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {directory / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PermitRootLogin yes\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication yes\n"
            "KbdInteractiveAuthentication no\n"
            "MaxStartups 100\n"
            "MaxSessions 100\n"
            "LogLevel INFO\n"
            # sftp-server (not internal-sftp, whose log goes nowhere here) run by the
            # user's shell, its log appended to sftp.log: it says what each open
            # file read ("close ... bytes read N").
            f"Subsystem sftp {wrapper} {SFTP_SERVER} -e -l INFO {sftp_flags} 2>>{self.sftp_log}\n"
        )

    def __repr__(self) -> str:
        return f"SSHServer({self.user}@{self.host}:{self.port}, root={self.root})"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Run sshd (again) and wait until it answers with its banner."""
        if self.running:
            return
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self._process.returncode}:\n{self.log()}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd did not answer within {_START_TIMEOUT}s:\n{self.log()}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                return sock.recv(8).startswith(b"SSH-")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill sshd and every connection it serves (clients see the connection
        drop; new connections are refused until `start`)."""
        process, self._process = self._process, None
        if process is None:
            return
        # Stopped, the listener cannot fork new connections while we collect them.
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGSTOP)
        for pid in [*_children(process.pid), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)
        self._frozen = []

    def freeze(self) -> None:
        """SIGSTOP sshd and its connections: the port stays open, nothing answers
        (a hung server)."""
        if self._process is None:
            return
        self._frozen = [self._process.pid, *_children(self._process.pid)]
        for pid in self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Undo `freeze`."""
        for pid in self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen = []

    def log(self, tail: int = 4000) -> str:
        """The end of sshd's log (all of it with ``tail=0``)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return text[-tail:] if tail else text

    def bytes_read(self, path: str | Path) -> list[int]:
        """What each closed SFTP handle of *path* read, from sftp-server's log."""
        pattern = re.compile(rf'close "{re.escape(str(path))}" bytes read (\d+)')
        try:
            text = self.sftp_log.read_text(errors="replace")
        except OSError:
            return []
        return [int(m.group(1)) for m in pattern.finditer(text)]


@contextlib.contextmanager
def sshd_server(root: Path, sftp_flags: str = "", wrapper: str = "") -> Iterator[SSHServer]:
    """A running sshd for the current user (root), for an origin reading *root*
    (the server itself does not confine it there); killed on exit, even on
    failure. *sftp_flags* go to sftp-server (e.g. ``-P open`` to refuse opening
    files); *wrapper* is a command sftp-server runs behind (e.g. sftpcap.py)."""
    with tempfile.TemporaryDirectory(prefix="musicfs-sshd-") as directory:
        server = SSHServer(Path(directory), root, sftp_flags, wrapper)
        try:
            server.start()
            yield server
        finally:
            server.thaw()
            server.stop()
