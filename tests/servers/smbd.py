"""A real Samba server (smbd) on 127.0.0.1, for the SMB origin tests.

`smb_server` writes an ``smb.conf`` that keeps every state, lock, cache, pid and
private dir (and the tdbsam password database) in a temporary directory, shares
one folder read-only as ``music``, adds the user ``root`` with a generated
password, and runs ``smbd --foreground`` on a free port (never 445). It waits
until the server accepts connections and kills it and all its children on exit.

`SMBServer.stop` / `start` take the server away and bring it back on the same
port (for the "origin goes offline and comes back" tests); `freeze` / `thaw`
stop it with SIGSTOP so it accepts nothing and answers nothing (a hung server).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import free_port

SMBD = shutil.which("smbd") or "/usr/sbin/smbd"
SMBPASSWD = shutil.which("smbpasswd") or "/usr/bin/smbpasswd"
# smbd gets SIGKILL if the test process dies, even by SIGKILL when no cleanup runs
# (setpriv, from util-linux, sets the parent-death signal and execs smbd).
_SETPRIV = shutil.which("setpriv")
_DIE_WITH_PARENT = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []
SHARE = "music"
USER = "root"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def _config(workdir: Path, port: int, share_root: Path) -> str:
    state = {
        name: workdir / name
        for name in ("lock", "state", "cache", "private", "pid", "ncalrpc", "log")
    }
    for path in state.values():
        path.mkdir(parents=True, exist_ok=True)
    return f"""\
[global]
    workgroup = WORKGROUP
    netbios name = MUSICFSTEST
    server role = standalone server
    smb ports = {port}
    interfaces = 127.0.0.1
    bind interfaces only = yes
    disable netbios = yes
    server min protocol = SMB2_10
    lock directory = {state["lock"]}
    state directory = {state["state"]}
    cache directory = {state["cache"]}
    private dir = {state["private"]}
    pid directory = {state["pid"]}
    ncalrpc dir = {state["ncalrpc"]}
    log file = {state["log"]}/log.%m
    passdb backend = tdbsam:{state["private"]}/passdb.tdb
    map to guest = never
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    usershare max shares = 0
    log level = 1

[{SHARE}]
    path = {share_root}
    read only = yes
    browseable = yes
    guest ok = no
    valid users = {USER}
"""


@dataclass
class SMBServer:
    """A running smbd; *host*, *port*, *share*, *user* and *password* reach it."""

    host: str
    port: int
    share: str
    user: str
    password: str
    config: Path
    output: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start smbd (again, on the same port) and wait until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return
        with self.output.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    *_DIE_WITH_PARENT,
                    SMBD,
                    "--foreground",
                    "--no-process-group",
                    "--debug-stdout",
                    "-s",
                    str(self.config),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() kills every child too
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"smbd exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"smbd did not listen on {self.port} in {START_TIMEOUT}s:\n{self.log()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill smbd and every process it started (the ones serving connections)."""
        process, self.process = self.process, None
        if process is None:
            return
        for sig in (signal.SIGCONT, signal.SIGTERM):  # SIGCONT: a frozen server must see the TERM
            _signal_group(process.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT)
        _signal_group(process.pid, signal.SIGKILL)  # children that outlived their parent
        process.wait()
        self._wait_port_closed()

    def freeze(self) -> None:
        """SIGSTOP every smbd process: connections stay open, nothing answers."""
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGCONT)

    def log(self) -> str:
        try:
            return self.output.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _wait_port_closed(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    pass
            except OSError:
                return
            time.sleep(0.05)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


@contextmanager
def smb_server(share_root: Path) -> Iterator[SMBServer]:
    """Run smbd sharing *share_root* (read-only, as `SHARE`) until the block ends."""
    with tempfile.TemporaryDirectory(prefix="musicfs-smbd-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        config = workdir / "smb.conf"
        config.write_text(_config(workdir, port, Path(share_root).resolve()))
        password = "pw-" + secrets.token_hex(8)
        subprocess.run(
            [SMBPASSWD, "-c", str(config), "-s", "-a", USER],
            input=f"{password}\n{password}\n".encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )
        server = SMBServer("127.0.0.1", port, SHARE, USER, password, config, workdir / "smbd.out")
        try:
            server.start()
            yield server
        finally:
            server.stop()
