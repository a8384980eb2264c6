"""Driving the real ``musicfs`` command from tests: mount, status, wait, unmount.

Everything here talks to MusicFS the way a user does — through the ``musicfs``
command and the mounted directory — so the end-to-end tests check what people
see. `mounted` is the one way tests mount: it waits for the first scan with a
deadline (never a fixed sleep) and always unmounts, falling back to
``fusermount3 -u -z`` and, last, to killing the daemon it started.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

#: The ``musicfs`` command of the virtualenv running the tests (else the one on PATH).
_VENV_MUSICFS = Path(sys.executable).with_name("musicfs")
MUSICFS = (
    str(_VENV_MUSICFS) if _VENV_MUSICFS.exists() else shutil.which("musicfs") or str(_VENV_MUSICFS)
)

#: Exit status of ``musicfs status`` when no daemon answers.
EXIT_NO_DAEMON = 3

#: Upper bound for one scan of the (small) test libraries; generous for slow CI.
SCAN_TIMEOUT = 60.0


def musicfs_env() -> dict[str, str]:
    """The environment for ``musicfs``: no user config file, no MUSICFS_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICFS_")}
    env["XDG_CONFIG_HOME"] = "/nonexistent/musicfs-e2e-config"  # never read a user's config
    return env


def run_musicfs(
    *args: str | os.PathLike[str],
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``musicfs ARGS`` and return the finished process (never raises on exit status)."""
    return subprocess.run(
        [MUSICFS, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**musicfs_env(), **(env or {})},
        check=False,
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """A process's command, exit status and output, for assertion messages."""
    cmd = " ".join(map(str, result.args))
    return f"`{cmd}` exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"


def status(mountpoint: Path) -> dict[str, Any]:
    """``musicfs status MOUNTPOINT --json`` as a dict; fails the test if it does not answer."""
    result = run_musicfs("status", mountpoint, "--json")
    assert result.returncode == 0, describe(result)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def try_status(mountpoint: Path) -> dict[str, Any] | None:
    """Like `status`, but None when no daemon answers (exit status 3)."""
    result = run_musicfs("status", mountpoint, "--json")
    if result.returncode == EXIT_NO_DAEMON:
        return None
    assert result.returncode == 0, describe(result)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Call *probe* until it returns a true value (not None/False); fail after *timeout* s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _last_scans(data: dict[str, Any]) -> list[str]:
    return [str(o.get("last_scan", "")) for o in data.get("origins", [])]


def wait_for_scan(
    mountpoint: Path,
    *,
    after: dict[str, Any] | None = None,
    timeout: float = SCAN_TIMEOUT,
) -> dict[str, Any]:
    """Poll the daemon's status until a scan of every origin has finished; return the status.

    Finished means: state READY, not scanning, and every origin has a
    ``last_scan`` report from this daemon. With *after* (an earlier status), the
    reports must also differ from that status's ones, i.e. a *new* scan (after
    a SIGHUP) has finished, not the one before it.

    The first answer comes from ``musicfs status --json``; later polls ask the
    same control socket through `musicfs.control.client.ControlClient` (what
    the command uses), which saves starting a process per poll.
    """
    from musicfs.control.client import ControlClient

    previous = _last_scans(after) if after is not None else None
    last: dict[str, Any] = {}
    client: ControlClient | None = None

    def finished() -> dict[str, Any] | None:
        nonlocal last, client
        if client is None:
            last = status(mountpoint)
            client = ControlClient(last["socket"])
        else:
            last = client.status()
        scans = _last_scans(last)
        done = (
            last["state"] == "READY"
            and not last["scanning"]
            and bool(scans)
            and all(scans)
            and (previous is None or scans != previous)
        )
        return last if done else None

    try:
        return wait_until(finished, timeout=timeout, what=f"the scan of {mountpoint} to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status: {json.dumps(last, indent=1)}") from None
    finally:
        if client is not None:
            client.close()


def _unescape_mount_field(field: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal (``\\040``)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mounts."""

    source: str
    mountpoint: str
    fstype: str
    options: frozenset[str]


def mount_entry(mountpoint: Path) -> MountEntry | None:
    """The (last) /proc/self/mounts entry for *mountpoint*, or None if nothing is mounted there."""
    found = None
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            source, target, fstype, options, *_ = line.split()
            if _unescape_mount_field(target) == str(mountpoint):
                found = MountEntry(source, str(mountpoint), fstype, frozenset(options.split(",")))
    return found


def is_mounted(mountpoint: Path) -> bool:
    return mount_entry(mountpoint) is not None


def pid_alive(pid: int) -> bool:
    """True while process *pid* exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def children_of(pid: int) -> set[int]:
    """Processes whose parent is *pid* (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                    fields = fh.read().rpartition(")")[2].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == pid:  # after the command name: state, ppid
                found.add(int(entry))
    return found


def force_unmount(mountpoint: Path) -> None:
    """Detach whatever is mounted on *mountpoint* (lazy unmount); never raises."""
    if is_mounted(mountpoint):
        subprocess.run(
            ["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True, check=False
        )


def unmount(mountpoint: Path, pid: int | None = None) -> None:
    """Unmount politely (``musicfs unmount``), else lazily, and make sure *pid* is gone.

    Used in teardown: it never raises, so the test's own failure is what gets reported.
    """
    if is_mounted(mountpoint):
        with contextlib.suppress(subprocess.TimeoutExpired):
            run_musicfs("unmount", mountpoint, "--timeout", "20", timeout=30)
    force_unmount(mountpoint)
    if pid is None:
        return
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):  # the daemon this test started hangs: stop it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Mount:
    """A running MusicFS mount, as `mounted` yields it."""

    mountpoint: Path
    cache_dir: Path
    pid: int
    #: ``musicfs status`` once the mount was up (after the first scan if that was awaited).
    ready_status: dict[str, Any]

    def status(self) -> dict[str, Any]:
        return status(self.mountpoint)

    def wait_for_scan(self, after: dict[str, Any] | None = None) -> dict[str, Any]:
        return wait_for_scan(self.mountpoint, after=after)

    def files(self) -> set[str]:
        """Relative paths of every file in the mounted tree (os.walk through FUSE)."""
        return walk_files(self.mountpoint)


def mount_command(
    origins: Sequence[Path | str], mountpoint: Path, cache_dir: Path, *extra_args: str
) -> list[str]:
    """The arguments of ``musicfs mount`` for these origins, mountpoint and cache."""
    args = ["mount", str(mountpoint)]
    for origin in origins:
        args += ["--origin", str(origin)]
    return [*args, "--cache-dir", str(cache_dir), *extra_args]


@contextlib.contextmanager
def mounted(
    origins: Sequence[Path | str],
    mountpoint: Path,
    cache_dir: Path,
    *extra_args: str,
    wait_scan: bool = True,
    env: dict[str, str] | None = None,
) -> Iterator[Mount]:
    """Mount in daemon mode, wait for the first scan (unless *wait_scan* is false), yield, unmount.

    The mount is always undone, also when mounting or the test fails. Skips the
    test when FUSE is not available.
    """
    require_fuse()
    mountpoint.mkdir(parents=True, exist_ok=True)
    pid: int | None = None
    try:
        result = run_musicfs(*mount_command(origins, mountpoint, cache_dir, *extra_args), env=env)
        assert result.returncode == 0, describe(result)
        first = status(mountpoint)
        pid = int(first["pid"])
        ready = wait_for_scan(mountpoint) if wait_scan else first
        yield Mount(mountpoint, cache_dir, pid, ready)
    finally:
        unmount(mountpoint, pid)


def toml_value(value: object) -> str:
    """*value* as TOML: strings, numbers and booleans are written as JSON writes them."""
    return json.dumps(value)


def write_config(
    path: Path,
    origins: Sequence[Mapping[str, object]],
    sections: Mapping[str, Mapping[str, object]] | None = None,
    **top: object,
) -> Path:
    """A config file: top-level keys, then [sections], then the [[origins]] tables."""
    lines = [f"{key} = {toml_value(value)}" for key, value in top.items()]
    for name, table in (sections or {}).items():
        lines += [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    for origin in origins:
        lines += ["[[origins]]", *(f"{k} = {toml_value(v)}" for k, v in origin.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def what_the_daemon_shows(mount: Mount) -> dict[str, str]:
    """Every text a user (or another user, for the process list) can see of a
    running mount: its log, ``musicfs status`` with and without ``--json``,
    and the daemon's command line. For checks that no secret leaks."""
    shown = {"the daemon log": (mount.cache_dir / "musicfs.log").read_text(errors="replace")}
    for args in (("status",), ("status", "--json")):
        result = run_musicfs(*args, mount.mountpoint)
        assert result.returncode == 0, describe(result)
        assert result.stdout, describe(result)
        shown[f"musicfs {' '.join(args)}"] = result.stdout + result.stderr
    cmdline = Path(f"/proc/{mount.pid}/cmdline").read_bytes()
    shown[f"/proc/{mount.pid}/cmdline"] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return shown


def assert_no_secret_shown(mount: Mount, *secrets: str) -> None:
    """Fail if any of *secrets* is in the mount's log, status or process list
    (the message names where, never the secret)."""
    shown = what_the_daemon_shows(mount)
    assert shown["the daemon log"], "the daemon log is empty: nothing was checked"
    for where, text in shown.items():
        for number, secret in enumerate(secrets, 1):
            leaked = secret in text  # not in the assert: pytest would print both
            assert not leaked, f"secret #{number} appears in {where}"


def forget_pages(path: Path) -> None:
    """Drop the kernel's cached pages of *path*, so the next read reaches the daemon."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def walk_files(root: Path) -> set[str]:
    """Relative POSIX paths of all files below *root*."""
    found: set[str] = set()
    for dirpath, _dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        found.update((rel / name).as_posix() for name in files)
    return found


def walk_dirs(root: Path) -> set[str]:
    """Relative POSIX paths of all directories below *root* (not *root* itself)."""
    found: set[str] = set()
    for dirpath, dirs, _files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        found.update((rel / name).as_posix() for name in dirs)
    return found


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def errno_of(call: Callable[[], object]) -> int | None:
    """The errno *call* fails with, or None if it succeeds."""
    try:
        call()
    except OSError as exc:
        return exc.errno
    return None


def errno_name(code: int | None) -> str:
    return "success" if code is None else errno.errorcode.get(code, str(code))


def require_fuse() -> None:
    """Skip the calling test unless a FUSE mount can be made here."""
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing: FUSE mounts are not possible here")
    if shutil.which("fusermount3") is None:
        pytest.skip("fusermount3 is not installed (apt-get install fuse3)")
    if not os.path.exists(MUSICFS):
        pytest.skip(f"the musicfs command is not installed at {MUSICFS}")


def require_tools(*tools: str) -> None:
    """Skip the calling test unless every command-line tool in *tools* is installed."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (see ENVIRONMENT.md, 'Media tools')")
