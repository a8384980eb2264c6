"""The control server and client over a real Unix socket, without a mount.

A stand-in for a mount's facade (`MountControl`) answers status and shutdown
inside a real trio loop, so the trio↔gRPC thread hop, the socket's mode and the
error mapping are real.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from musicfs.control.client import ControlClient, DaemonUnreachable
from musicfs.control.server import ControlServer
from musicfs.control.socketfile import SocketInUse, claim_socket_path
from musicfs.core.config.paths import UnsafeSocketDir, runtime_dir
from musicfs.core.mount.facade import MountState


class FakeMount:
    """Answers like `musicfs.core.mount.facade.MountControl` does, from the trio thread."""

    def __init__(self) -> None:
        self.shutdowns: list[float] = []
        self.stopped = trio.Event()
        self.mount_state = MountState.SYNCING

    def state(self) -> MountState:
        return self.mount_state  # any thread, as the facade's

    def origins_online(self) -> dict[str, bool]:
        with pytest.raises(RuntimeError):
            trio.lowlevel.current_trio_token()  # stat'ing origins must not run in trio
        return {"lib": True}

    def status(self, online: dict[str, bool]) -> dict[str, Any]:
        trio.lowlevel.current_trio_token()  # raises unless called in the trio thread
        return {
            "version": "9.9", "pid": 42, "state": "SYNCING", "mountpoint": "/mnt/x",
            "cache_dir": "/c", "uptime_seconds": 1.5, "open_handles": 4, "operations": 5,
            "scanning": True,
            "origins": [{"id": "lib", "type": "local", "location": "/m", "online": online["lib"],
                         "last_scan": "ok"}],
        }  # fmt: skip

    def counts(self) -> dict[str, int]:
        with pytest.raises(RuntimeError):
            trio.lowlevel.current_trio_token()  # counting must not run in the trio thread
        return {"tracks": 123_456_789_012, "directories": 2, "unreadable_files": 3}

    def latency(self) -> dict[str, Any]:
        with pytest.raises(RuntimeError):
            trio.lowlevel.current_trio_token()  # a snapshot: no need to hop into trio
        return {
            "latency_p50_ms": 0.02, "latency_p95_ms": 0.5, "latency_p99_ms": 3.0,
            "op_latency": [{"op": "read", "count": 10_000_000_000, "p50_ms": 0.05,
                            "p95_ms": 0.6, "p99_ms": 3.5}],
        }  # fmt: skip

    async def shutdown(self, drain_timeout: float = 5.0) -> None:
        self.shutdowns.append(drain_timeout)
        self.stopped.set()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, FakeMount]]:
    path = tmp_path / "ctl.sock"
    fake = FakeMount()
    started = threading.Event()

    async def main() -> None:
        server = ControlServer(fake, path)  # type: ignore[arg-type]
        server.start(trio.lowlevel.current_trio_token())
        started.set()
        await fake.stopped.wait()
        await server.stop()

    thread = threading.Thread(target=trio.run, args=(main,))
    thread.start()
    assert started.wait(10)
    try:
        yield path, fake
    finally:
        if not fake.stopped.is_set():
            with ControlClient(path) as client:
                client.shutdown()
        thread.join(10)


def test_status_round_trip_and_socket_is_private(served: tuple[Path, FakeMount]) -> None:
    path, _ = served
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with ControlClient(path) as client:
        status = client.status()
    assert status["state"] == "SYNCING"
    assert status["tracks"] == 123_456_789_012
    assert status["socket"] == str(path)
    assert status["origins"][0]["id"] == "lib"
    assert (status["latency_p50_ms"], status["latency_p99_ms"]) == (0.02, 3.0)
    assert status["op_latency"] == [
        {"op": "read", "count": 10_000_000_000, "p50_ms": 0.05, "p95_ms": 0.6, "p99_ms": 3.5}
    ]


def test_shutdown_reaches_the_mount_and_removes_the_socket(served: tuple[Path, FakeMount]) -> None:
    path, fake = served
    with ControlClient(path) as client:
        client.shutdown(drain_timeout=2.5)
    deadline = time.monotonic() + 10
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a condition, with a deadline
    assert fake.shutdowns == [2.5]
    assert not path.exists()


def test_health_follows_the_mount_state(served: tuple[Path, FakeMount]) -> None:
    """Before READY and while unmounting a probe hears NOT_SERVING, for the whole
    server and for our service; READY, SYNCING and DEGRADED still serve files."""
    path, fake = served
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    with grpc.insecure_channel(f"unix:{path}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def check(service: str) -> int:
            status: int = stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=10
            ).status
            return status

        for state, want in [
            (MountState.MOUNTING, not_serving),
            (MountState.READY, serving),
            (MountState.SYNCING, serving),
            (MountState.DEGRADED, serving),
            (MountState.UNMOUNTING, not_serving),
        ]:
            fake.mount_state = state
            assert check("") == want, state
            assert check("musicfs.control.v1.MusicFS") == want, state


def test_a_second_server_on_a_live_socket_is_refused(served: tuple[Path, FakeMount]) -> None:
    path, _ = served
    with pytest.raises(SocketInUse, match="in use by another MusicFS daemon"):
        ControlServer(FakeMount(), path).start(None)  # type: ignore[arg-type]


def test_a_stale_socket_from_a_crash_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a killed daemon leaves
    fake = FakeMount()
    done = threading.Event()

    async def main() -> None:
        server = ControlServer(fake, path)  # type: ignore[arg-type]
        server.start(trio.lowlevel.current_trio_token())
        with ControlClient(path) as client:
            status = await trio.to_thread.run_sync(client.status)
        assert status["pid"] == 42
        await server.stop()
        done.set()

    trio.run(main)
    assert done.is_set()


def test_no_socket_means_no_daemon(tmp_path: Path) -> None:
    with (
        pytest.raises(DaemonUnreachable, match="is it mounted"),
        ControlClient(tmp_path / "x.sock") as c,
    ):
        c.status()


# -- the runtime dir: a folder no other user can use (issue 13.9) ---------------------


def _other_users(folder: Path) -> None:
    os.chown(folder, 65534, 65534)  # "nobody" made it first


def _open_to_all(folder: Path) -> None:
    folder.chmod(0o777)


def _a_symlink(folder: Path) -> None:
    folder.rmdir()
    target = folder.with_name("elsewhere")
    target.mkdir(mode=0o700)
    folder.symlink_to(target)


def _a_file(folder: Path) -> None:
    folder.rmdir()
    folder.write_text("")


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (_other_users, "belongs to uid 65534, not to you"),
        (_open_to_all, "has mode 0777: other users may use it"),
        (_a_symlink, "is a symbolic link"),
        (_a_file, "is not a folder"),
    ],
)
def test_a_runtime_dir_another_user_could_use_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spoil: Any, problem: str
) -> None:
    """The folder of the default socket path (/tmp/musicfs-<uid> without
    XDG_RUNTIME_DIR; here $XDG_RUNTIME_DIR/musicfs) is ours and 0700, or no
    socket is made in it: its owner would receive the CLI's connections."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = runtime_dir()
    folder.mkdir(mode=0o700)
    spoil(folder)
    socket_path = folder / "mnt.sock"
    with pytest.raises(UnsafeSocketDir) as refused:
        claim_socket_path(socket_path)
    message = str(refused.value)
    assert f"the control socket folder {folder} {problem}" in message
    assert f"rm -r {folder}" in message
    assert "XDG_RUNTIME_DIR" in message
    assert not socket_path.exists()


def test_a_missing_runtime_dir_is_made_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    claim_socket_path(runtime_dir() / "mnt.sock")
    info = os.lstat(runtime_dir())
    assert stat.S_ISDIR(info.st_mode)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (os.getuid(), 0o700)
    claim_socket_path(runtime_dir() / "mnt.sock")  # and then used as it is
