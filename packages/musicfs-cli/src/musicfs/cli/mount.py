"""``musicfs mount``: check what can be checked, then mount in the foreground or
in a forked daemon.

``musicfs mount`` without ``--foreground`` validates everything it can, forks a
daemon and returns once the mountpoint answers (or prints why it did not);
with ``--wait``, once the first scan has finished, following its progress
lines on the same pipe (a progress bar on a terminal). The fork happens before
trio or gRPC are imported: neither survives a fork once started.

Boundaries: refuses a bad mountpoint or a cache dir in use before anything is
created; the daemon itself is `musicfs.control.daemon.run_daemon`.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from musicfs.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    check_not_inside_mount,
    load_args_config,
)
from musicfs.cli.launch import become_daemon, take_early_daemon
from musicfs.core.config.paths import CacheDirLock, cache_dir_for
from musicfs.core.config.settings import Config

READY_TIMEOUT = 600.0  # preparing may rebuild a huge tree after a template change


def cmd_mount(args: argparse.Namespace) -> int:
    config = load_args_config(
        args,
        cache_dir=args.cache_dir,
        template=args.template,
        log_level=args.log_level,
        **{"mount.allow_other": args.allow_other},
    )
    if not config.origins:
        raise CLIError(
            "no origin given: pass --origin DIR (or list [[origins]] in the config file)",
            EXIT_USAGE,
        )
    mountpoint = Path(os.path.abspath(args.mountpoint))
    _check_mountpoint(config, mountpoint)
    # Before anything is created or opened: a refused mount must leave the cache
    # dir (and log) of a mount already running there as they are.
    _check_cache_dir_free(cache_dir_for(config, mountpoint))
    _make_cache_dir(cache_dir_for(config, mountpoint))
    if args.foreground:
        from musicfs.control.daemon import run_daemon

        return run_daemon(config, mountpoint, foreground=True, wait_scan=args.wait)
    return _mount_in_background(config, mountpoint, wait=args.wait)


def _check_mountpoint(config: Config, mountpoint: Path) -> None:
    """Refuse a mountpoint that is missing, not a directory, already mounted, or
    that would hide files or make the mount list itself. (A dead FUSE mount
    left by a killed daemon is the daemon's to clear.)"""
    from musicfs.core.config.origins import MOUNTED_TYPES

    check_not_inside_mount(mountpoint)
    try:
        os.stat(mountpoint)
    except FileNotFoundError:
        raise CLIError(
            f"mountpoint {mountpoint} does not exist; create it with: mkdir -p {mountpoint}",
            EXIT_USAGE,
        ) from None
    except OSError:
        return  # a dead mount (ENOTCONN), or one we may not see: the daemon says
    if not os.path.isdir(mountpoint):
        raise CLIError(
            f"mountpoint {mountpoint} is not a directory; mount on an empty directory",
            EXIT_USAGE,
        )
    if os.path.ismount(mountpoint):
        raise CLIError(
            f"{mountpoint} is already a mount point; if MusicFS is mounted there, "
            f"run: musicfs unmount {mountpoint}",
            EXIT_USAGE,
        )
    for source in config.origins:
        if source.type not in MOUNTED_TYPES or not source.path:
            continue
        folder = Path(os.path.abspath(source.path))
        if folder == mountpoint or folder in mountpoint.parents:
            raise CLIError(
                f"mountpoint {mountpoint} is inside origin {source.id!r} ({folder}): the "
                "mount would list its own files; mount on a directory outside the origin",
                EXIT_USAGE,
            )
        if mountpoint in folder.parents:
            raise CLIError(
                f"origin {source.id!r} ({folder}) is inside mountpoint {mountpoint}: the "
                "mount would hide it; mount on a directory outside the origin",
                EXIT_USAGE,
            )
    try:
        with os.scandir(mountpoint) as entries:
            names = sorted(entry.name for entry in entries)
    except OSError:
        return  # the daemon says what is wrong with it
    if names:
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise CLIError(
            f"mountpoint {mountpoint} is not empty (it holds {names[0]!r}{more}), and what "
            "is in it would be hidden while mounted; mount on an empty directory",
            EXIT_USAGE,
        )


def _check_cache_dir_free(cache_dir: Path) -> None:
    holder = CacheDirLock(cache_dir).holder()
    if holder is not None:
        raise CLIError(
            f"cache directory {cache_dir} is in use by another MusicFS daemon (pid "
            f"{holder}); unmount it first or pass another --cache-dir",
            EXIT_USAGE,
        )


def _make_cache_dir(cache_dir: Path) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise CLIError(
            f"cache dir {cache_dir} is a file, not a directory; pass --cache-dir DIR "
            "naming a directory (it is created if missing)",
            EXIT_USAGE,
        ) from None
    except OSError as exc:
        raise CLIError(
            f"cannot create cache dir {cache_dir}: {exc.strerror}; pass --cache-dir DIR "
            "naming a directory you can write",
            EXIT_USAGE,
        ) from None
    if not os.access(cache_dir, os.W_OK | os.X_OK):
        raise CLIError(
            f"cache dir {cache_dir} is not writable; pass --cache-dir DIR naming a "
            "directory you can write",
            EXIT_USAGE,
        )


def _mount_in_background(config: Config, mountpoint: Path, *, wait: bool = False) -> int:
    cache_dir = cache_dir_for(config, mountpoint)
    daemon_log = cache_dir / "daemon.log"
    early = take_early_daemon()
    if early is not None and early.hand_over((config, mountpoint, wait, daemon_log)):
        pid, read_end = early.pid, early.ready_fd
    else:
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            become_daemon(config, mountpoint, wait, daemon_log, ready_fd=write_end)
        os.close(write_end)
    scans: dict[str, dict[str, Any]] = {}  # origin -> its last SCAN report (--wait)
    try:
        bar = wait and sys.stdout.isatty()  # rich is imported only then
        message = _await_ready(_pipe_lines(read_end, READY_TIMEOUT), scans, bar=bar)
    finally:
        os.close(read_end)
    if message == "READY":
        print(f"mounted {mountpoint} (daemon pid {pid}); "
              f"`musicfs status --mount {mountpoint}` shows it")  # fmt: skip
        if wait:
            seen = sum(r["seen"] for r in scans.values())
            print(f"first scan finished: {seen} files in {len(scans)} origin(s)")
        for report in scans.values():
            if not report["complete"]:
                print(
                    f"musicfs: warning: origin {report['origin']!r} was not scanned completely "
                    f"({report['error'] or 'some folders could not be listed'}); the tree "
                    "lacks what could not be read. "
                    f"`musicfs status --mount {mountpoint}` shows it; "
                    "it is scanned again when it answers",
                    file=sys.stderr,
                )
        return EXIT_OK
    if message.startswith("REFUSED "):
        raise CLIError(message.removeprefix("REFUSED "), EXIT_USAGE)
    if message.startswith("ERROR "):
        raise CLIError(message.removeprefix("ERROR "))
    tail = _tail(daemon_log)
    raise CLIError(
        f"the daemon exited before {mountpoint} was ready; its last output ({daemon_log}):\n{tail}"
    )


def _await_ready(lines: Iterator[str], scans: dict[str, dict[str, Any]], *, bar: bool) -> str:
    """The daemon's last line (``READY``, ``ERROR ...``, or "" if it died); the
    ``SCAN`` lines before it (``--wait``) go into *scans*, and a progress *bar*."""
    from musicfs.cli.progress import follow

    last = ""

    def updates() -> Iterator[dict[str, Any]]:
        nonlocal last
        for line in lines:
            if not line.startswith("SCAN "):
                last = line
                return
            report = json.loads(line.removeprefix("SCAN "))
            scans[report["origin"]] = report
            yield {"seen": sum(r["seen"] for r in scans.values()), "origin": report["origin"]}

    for _ in follow(updates(), "scanning", not bar, total="", completed="seen", describe="origin"):
        pass
    return last


def _pipe_lines(fd: int, timeout: float) -> Iterator[str]:
    """The lines the daemon writes on the pipe until it closes it; *timeout*
    seconds without a line is an error (a scan reports every folder)."""
    data = b""
    while True:
        deadline = time.monotonic() + timeout
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CLIError(f"the daemon did not get ready within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                if data.strip():
                    yield data.decode(errors="replace").strip()
                return
            data += chunk
        line, _, data = data.partition(b"\n")
        yield line.decode(errors="replace").strip()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"
