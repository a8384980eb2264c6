"""Mounting and unmounting the filesystems under test: MusicFS, mergerfs, rclone.

Every mount made here is recorded in `ACTIVE` and removed again by `cleanup_all`
(called from ``finally`` blocks, ``atexit`` and the signal handlers of bench.py),
so an exception or a Ctrl-C never leaves a mount or a daemon behind. Only
processes this module started (or the MusicFS daemon it asked for, whose pid
is in its cache directory's lock file) are ever signalled, and only by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_measure as bm

from musicfs.core.config.settings import MountSettings


class MountError(RuntimeError):
    """A filesystem under test did not come up (or go away) as expected."""


def musicfs_command() -> str:
    """The ``musicfs`` of the running interpreter's environment (else the one on PATH)."""
    beside = Path(sys.executable).parent / "musicfs"
    if beside.exists():
        return str(beside)
    found = shutil.which("musicfs")
    if found is None:
        raise MountError("no `musicfs` command: install the packages (nox -s bench does)")
    return found


def is_mounted(path: Path) -> bool:
    """True if *path* is a mount point (a dead FUSE mount, ENOTCONN, counts too)."""
    try:
        st = os.stat(path)
    except OSError:
        return True  # ENOTCONN and friends: something is mounted and dead
    try:
        parent = os.stat(path.parent)
    except OSError:
        return False
    return st.st_dev != parent.st_dev


def wait_listable(
    path: Path, timeout: float = 60.0, marks: dict[str, float] | None = None
) -> float:
    """Poll until *path* is a mount point whose root can be listed; return perf_counter().
    *marks* gets ``answered``: when the mount first answered (a stat of its root),
    before the listing (of 10,000 folders at 1,000,000 tracks) began."""
    parent_dev = os.stat(path.parent).st_dev
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.stat(path).st_dev != parent_dev:
                if marks is not None:
                    marks["answered"] = time.perf_counter()
                os.listdir(path)
                return time.perf_counter()
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise MountError(f"{path} did not become a listable mount within {timeout:.0f} s")
        time.sleep(0.0005)


def fusermount_u(path: Path) -> bool:
    """Unmount *path* with fusermount3 -u, then lazily if that fails. True if it is gone."""
    if not is_mounted(path):
        return True
    for args in (["-u"], ["-u", "-z"]):
        for _ in range(20):
            subprocess.run(["fusermount3", *args, str(path)], capture_output=True, check=False)
            if not is_mounted(path):
                return True
            time.sleep(0.1)
    return not is_mounted(path)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def cpu_ticks(pid: int) -> int | None:
    """User + system CPU time of a process (all its threads), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def wait_idle(pid: int | None, quiet: float = 0.3, timeout: float = 15.0) -> float:
    """Wait until *pid* has used no CPU for *quiet* seconds (a daemon done with its
    start-up work, e.g. MusicFS setting up its inotify watches); return the wait."""
    started = time.monotonic()
    if pid is None:
        return 0.0
    last = cpu_ticks(pid)
    still_since = time.monotonic()
    while time.monotonic() - started < timeout:
        time.sleep(0.05)
        now = cpu_ticks(pid)
        if now is None:
            break
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            break
    return time.monotonic() - started


def rss_kib(pid: int | None) -> dict[str, int] | None:
    """VmRSS and VmHWM (KiB) of a process, from /proc/PID/status."""
    if pid is None:
        return None
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0])
    except OSError:
        return None
    return out


@dataclass
class Mount:
    """One mounted filesystem under test."""

    kind: str  # "musicfs", "before" (another musicfs command), "mergerfs", "rclone", "floor"
    mountpoint: Path
    source: Path
    pid: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    cache_dir: Path | None = None
    started: float = 0.0  # perf_counter() before the mount command ran
    command_returned: float = 0.0  # perf_counter() when the mount command returned
    listable: float = 0.0  # perf_counter() when the root could first be listed
    answered: float = 0.0  # perf_counter() when the root first answered a stat
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def command_seconds(self) -> float:
        return self.command_returned - self.started

    @property
    def listable_seconds(self) -> float:
        return self.listable - self.started

    @property
    def answered_seconds(self) -> float:
        return self.answered - self.started

    def rss(self) -> dict[str, int] | None:
        return rss_kib(self.pid)


ACTIVE: dict[Path, Mount] = {}


class Mounter:
    """Starts the filesystems under test with the settings the benchmark needs."""

    def __init__(self, workdir: Path, pycache: Path) -> None:
        self.workdir = workdir
        self.pycache = pycache
        self.warnings: list[str] = []
        self.musicfs = musicfs_command()
        #: Another `musicfs` command (e.g. the previous commit's), mounted as kind "before".
        self.before: str | None = None
        self._n = 0
        self.rclone_conf = workdir / "rclone.conf"
        self.rclone_conf.write_text("")
        (workdir / "xdg-config").mkdir(exist_ok=True)

    def command_of(self, kind: str) -> str:
        if kind == "before":
            if self.before is None:
                raise MountError("no --before command given")
            return self.before
        return self.musicfs

    def fresh_mountpoint(self, kind: str) -> Path:
        self._n += 1
        path = self.workdir / f"mnt-{kind}-{self._n}"
        path.mkdir()
        return path

    def python_env(self) -> dict[str, str]:
        """The environment for Python processes under test: with a bytecode cache.

        An installed package has its .pyc files; a dev venv made with
        PYTHONDONTWRITEBYTECODE=1 (or by uv, which does not compile) has none, and
        every daemon start then compiles trio, gRPC and MusicFS from source. Bytecode
        goes to a private prefix under results/cache, never into the source tree.
        """
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        return env

    def no_bytecode_env(self) -> dict[str, str]:
        """Overrides that make Python find no .pyc at all (an empty prefix, no writing)."""
        empty = self.workdir / "no-pycache"
        empty.mkdir(exist_ok=True)
        return {"PYTHONPYCACHEPREFIX": str(empty), "PYTHONDONTWRITEBYTECODE": "1"}

    def musicfs_env(
        self, *, scan_on_start: bool, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        env = {k: v for k, v in self.python_env().items() if not k.startswith("MUSICFS_")}
        env["XDG_CONFIG_HOME"] = str(self.workdir / "xdg-config")  # no user config file
        env["MUSICFS_SCAN_ON_START"] = "true" if scan_on_start else "false"
        env.update(extra or {})
        return env

    # -- mounting -------------------------------------------------------------

    def mount(self, kind: str, source: Path, **kwargs: Any) -> Mount:
        mounters: dict[str, Callable[..., Mount]] = {
            "musicfs": self.mount_musicfs,
            "before": lambda source, **kw: self.mount_musicfs(source, kind="before", **kw),
            "mergerfs": self.mount_mergerfs,
            "rclone": self.mount_rclone,
            "floor": self.mount_floor,
        }
        return mounters[kind](source, **kwargs)

    def mount_musicfs(
        self,
        source: Path,
        *,
        cache_dir: Path,
        template: str | None = None,
        scan_on_start: bool = False,
        env: dict[str, str] | None = None,
        retry: bool = True,
        kind: str = "musicfs",
    ) -> Mount:
        mnt = self.fresh_mountpoint(kind)
        cmd = [
            self.command_of(kind),
            "mount",
            str(mnt),
            "--origin",
            str(source),
            "--cache-dir",
            str(cache_dir),
        ]
        if template is not None:
            cmd += ["--template", template]
        m = Mount(kind, mnt, source, cache_dir=cache_dir)
        ACTIVE[mnt] = m
        m.started = time.perf_counter()
        result = subprocess.run(
            cmd,
            env=self.musicfs_env(scan_on_start=scan_on_start, extra=env),
            capture_output=True,
            check=False,
        )
        m.command_returned = time.perf_counter()
        if result.returncode != 0:
            self.unmount(m)
            err = result.stderr.decode(errors="replace").strip()
            if retry:
                self.warnings.append(f"{kind} mount failed once, retried: {err}")
                print(f"warning: {kind} mount failed, retrying once: {err}", file=sys.stderr)
                time.sleep(1.0)
                return self.mount_musicfs(
                    source,
                    cache_dir=cache_dir,
                    template=template,
                    scan_on_start=scan_on_start,
                    env=env,
                    retry=False,
                    kind=kind,
                )
            raise MountError(f"{kind} mount failed ({result.returncode}): {err}")
        marks: dict[str, float] = {}
        m.listable = wait_listable(mnt, marks=marks)
        m.answered = marks.get("answered", m.listable)
        m.pid = _lock_pid(cache_dir)
        return m

    def mount_mergerfs(self, source: Path) -> Mount:
        mnt = self.fresh_mountpoint("mergerfs")
        cmd = [
            "mergerfs",
            "-f",
            "-o",
            "ro,cache.files=partial,fsname=bench-mergerfs",
            str(source),
            str(mnt),
        ]
        return self._mount_foreground("mergerfs", source, mnt, cmd)

    def mount_rclone(self, source: Path) -> Mount:
        mnt = self.fresh_mountpoint("rclone")
        cmd = [
            "rclone",
            "mount",
            str(source),
            str(mnt),
            "--read-only",
            "--config",
            str(self.rclone_conf),
            "--log-level",
            "ERROR",
        ]
        return self._mount_foreground(kind="rclone", source=source, mnt=mnt, cmd=cmd)

    def mount_floor(self, source: Path) -> Mount:
        """The in-memory pyfuse3 mirror of bench_floorfs.py (startup walks the whole tree).

        Given MusicFS's read-ahead (``[mount] read_ahead_kb``, which its daemon sets
        as root) once it answers, outside its mount time: with the kernel's 128 KiB
        the floor reads cold in 128 KiB requests, and would be a lower bar than the
        least a pyfuse3 filesystem with MusicFS's settings costs.
        """
        mnt = self.fresh_mountpoint("floor")
        cmd = [
            sys.executable,
            str(Path(__file__).with_name("bench_floorfs.py")),
            str(source),
            str(mnt),
        ]
        m = self._mount_foreground("floor", source, mnt, cmd)
        kib = MountSettings().read_ahead_kb
        if not bm.set_read_ahead_kb(mnt, kib):
            self.warnings.append(f"floor: could not set read_ahead_kb to {kib} (not root?)")
        return m

    def _mount_foreground(self, kind: str, source: Path, mnt: Path, cmd: list[str]) -> Mount:
        m = Mount(kind, mnt, source)
        ACTIVE[mnt] = m
        m.started = time.perf_counter()
        m.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.python_env(),
        )
        m.pid = m.proc.pid
        try:
            marks: dict[str, float] = {}
            m.listable = wait_listable(mnt, timeout=120, marks=marks)
            m.answered = marks.get("answered", m.listable)
        except MountError:
            err = b""
            if m.proc.poll() is not None and m.proc.stderr is not None:
                err = m.proc.stderr.read()
            self.unmount(m)
            raise MountError(f"{kind} did not mount: {err.decode(errors='replace')}") from None
        m.command_returned = m.listable  # a foreground process never "returns"
        return m

    # -- unmounting -----------------------------------------------------------

    def unmount(self, m: Mount) -> None:
        """Unmount and make sure the serving process is gone. Never raises."""
        try:
            if m.kind in ("musicfs", "before"):
                if is_mounted(m.mountpoint):
                    subprocess.run(
                        [self.command_of(m.kind), "unmount", str(m.mountpoint), "--timeout", "20"],
                        env=self.musicfs_env(scan_on_start=False),
                        capture_output=True,
                        check=False,
                        timeout=60,
                    )
                fusermount_u(m.mountpoint)
                if m.pid is not None and not _wait_pid_gone(m.pid, 20):
                    print(f"warning: musicfs daemon {m.pid} still alive; SIGKILL", file=sys.stderr)
                    with contextlib.suppress(OSError):
                        os.kill(m.pid, signal.SIGKILL)
                    _wait_pid_gone(m.pid, 5)
            else:
                fusermount_u(m.mountpoint)
                if m.proc is not None:
                    try:
                        m.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        m.proc.terminate()
                        try:
                            m.proc.wait(timeout=5)
                        except subprocess.TimeoutExpired:
                            m.proc.kill()
                            m.proc.wait()
                    if m.proc.stderr is not None:
                        m.proc.stderr.close()
        except Exception as exc:  # cleanup must go on
            print(f"warning: unmounting {m.mountpoint}: {exc}", file=sys.stderr)
        finally:
            if not is_mounted(m.mountpoint):
                with contextlib.suppress(OSError):
                    m.mountpoint.rmdir()
                ACTIVE.pop(m.mountpoint, None)
            else:
                print(f"warning: {m.mountpoint} is still mounted", file=sys.stderr)

    @contextlib.contextmanager
    def mounted(self, kind: str, source: Path, **kwargs: Any) -> Iterator[Mount]:
        m = self.mount(kind, source, **kwargs)
        try:
            yield m
        finally:
            self.unmount(m)

    def cleanup_all(self) -> None:
        for m in list(ACTIVE.values()):
            self.unmount(m)


def _lock_pid(cache_dir: Path) -> int | None:
    """The daemon writes its pid into <cache-dir>/lock while it holds the lock."""
    try:
        return int((cache_dir / "lock").read_text().strip())
    except (OSError, ValueError):
        return None


def musicfs_status(mountpoint: Path, timeout: float = 10.0) -> dict[str, Any]:
    """The daemon's status, through its control socket (imports gRPC once, in-process)."""
    from musicfs.control.client import ControlClient
    from musicfs.core.config.paths import socket_path_for
    from musicfs.core.config.settings import Config

    with ControlClient(socket_path_for(Config(), mountpoint), wait_for_socket=timeout) as client:
        return client.status()


def musicfs_status_cli(musicfs: str, mountpoint: Path, env: dict[str, str]) -> dict[str, Any]:
    """The same, through `musicfs status --json` (a new process: ~0.5 s)."""
    out = subprocess.run(
        [musicfs, "status", str(mountpoint), "--json"],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    status: dict[str, Any] = json.loads(out.stdout)
    return status
