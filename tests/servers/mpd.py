"""A real MPD (apt ``mpd``) on 127.0.0.1 for the notify tests.

`mpd_server` writes a config of its own into a temp dir (database, log, state
there; ``music_directory`` = the folder given, e.g. a mountpoint; a free
port; ``auto_update "no"``, so MPD learns of changes only when told; a null
audio output), starts ``mpd --no-daemon``, waits until it answers, and stops
it on the way out, also when the test fails. `MpdServer.command` speaks the
MPD protocol over TCP, as any client does.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port


class MpdError(Exception):
    """MPD answered ACK."""


class MpdServer:
    def __init__(self, port: int, home: Path, password: str | None = None) -> None:
        self.port = port
        self.home = home
        self.password = password  # sent before each command when set

    def command(self, line: str) -> list[str]:
        """Send one command; the lines MPD answered before its OK."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            stream = sock.makefile("rwb")
            greeting = stream.readline().decode()
            assert greeting.startswith("OK MPD "), greeting
            if self.password is not None:
                stream.write(f'password "{self.password}"\n'.encode())
                stream.flush()
                assert stream.readline() == b"OK\n"
            stream.write(line.encode() + b"\n")
            stream.flush()
            lines: list[str] = []
            while True:
                answer = stream.readline().decode("utf-8")
                if not answer:
                    raise MpdError(f"MPD hung up after {line!r}")
                answer = answer.rstrip("\n")
                if answer == "OK":
                    return lines
                if answer.startswith("ACK"):
                    raise MpdError(answer)
                lines.append(answer)

    def files(self) -> list[str]:
        """Every song file in MPD's database (``listall``)."""
        return sorted(
            line.removeprefix("file: ")
            for line in self.command("listall")
            if line.startswith("file: ")
        )

    def updating(self) -> bool:
        return any(line.startswith("updating_db:") for line in self.command("status"))

    def update_and_wait(self, timeout: float = 120) -> None:
        """``update`` (the whole library), then wait until MPD is done."""
        self.command("update")
        deadline = time.monotonic() + timeout
        while self.updating():
            if time.monotonic() > deadline:
                raise AssertionError(f"MPD still updating after {timeout} s")
            time.sleep(0.1)

    def log(self) -> str:
        path = self.home / "log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def mpd_server(
    music: Path,
    home: Path,
    port: int | None = None,
    *,
    unix_socket: Path | None = None,
    password: str | None = None,
) -> Iterator[MpdServer]:
    """An MPD of its own indexing *music*, listening on 127.0.0.1:*port* (free if
    None) and, if given, on the Unix socket *unix_socket* too. With *password*,
    clients without it may only read (``update`` needs it)."""
    if shutil.which("mpd") is None:
        pytest.skip("needs mpd (apt mpd)")
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = home / "mpd.conf"
    config.write_text(
        f'music_directory "{music}"\n'
        f'db_file "{home / "database"}"\n'
        f'log_file "{home / "log"}"\n'
        f'state_file "{home / "state"}"\n'
        f'pid_file "{home / "pid"}"\n'
        f'bind_to_address "127.0.0.1"\n'
        + (f'bind_to_address "{unix_socket}"\n' if unix_socket else "")
        + f'port "{port}"\n'
        + (
            f'password "{password}@read,add,control,admin"\ndefault_permissions "read"\n'
            if password
            else ""
        )
        + 'auto_update "no"\n'
        'zeroconf_enabled "no"\n'
        'audio_output {\n  type "null"\n  name "null"\n}\n',
        encoding="utf-8",
    )
    process = subprocess.Popen(
        ["mpd", "--no-daemon", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = MpdServer(port, home, password)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"mpd exited with {process.returncode}: {server.log()}")
            with contextlib.suppress(OSError, MpdError, AssertionError):
                server.command("ping")
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"mpd did not answer within 30 s: {server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
