"""The ``musicfs`` command. Each command group has its module here (cache,
events, verify, plugin, tag, origin, settings, completion); this one parses,
dispatches, and holds mount, unmount, status and shutdown.

Exit codes: `musicfs.core.exitcodes` (0 done, 1 failed, 2 bad usage or
refused, 3 no daemon), shown by ``musicfs --help``.

Every command that talks to a mount names it with ``--mount MOUNTPOINT`` (see
`musicfs.cli.common`).

``musicfs mount`` without ``--foreground`` validates everything it can, forks a
daemon and returns once the mountpoint answers (or prints why it did not);
with ``--wait``, once the first scan has finished, following its progress
lines on the same pipe (a progress bar on a terminal). The fork happens before
trio or gRPC are imported: neither survives a fork once started.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import select
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from musicfs.cli import (
    cache,
    completion,
    events,
    origin,
    plugin,
    search,
    settings,
    tag,
    verify,
)
from musicfs.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_DAEMON,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    add_mount_option,
    check_not_inside_mount,
    client_for,
    daemon_unreachable,
    is_mounted,
    load_args_config,
    merge_mount_args,
    print_error,
    socket_for,
)
from musicfs.core.config.paths import CacheDirLock, cache_dir_for
from musicfs.core.config.settings import Config, ConfigError
from musicfs.core.errors import MusicFSError
from musicfs.core.exitcodes import exit_codes_help

READY_TIMEOUT = 600.0  # preparing may rebuild a huge tree after a template change


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musicfs",
        description="A read-only FUSE filesystem that shows a music collection organised by tags.",
        epilog="Commands that talk to a mount name it with --mount MOUNTPOINT (-m), which\n"
        "can be left out while a single mount runs.\n\n" + exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount = sub.add_parser("mount", help="mount a library (returns once it is ready)")
    mount.add_argument("mountpoint", type=Path, help="empty directory to mount on")
    mount.add_argument(
        "--origin", action="append", default=[], metavar="PATH|URL",
        help="where the music is (repeat for several): a folder, or a URL: "
        "nfs:///mnt/nas/music or smb:///mnt/share (a share the system mounted), "
        "smb://user@server/share/dir, s3://bucket/prefix, sftp://user@host:port/dir "
        "(docs/origins.md); replaces the config file's origins",
    )  # fmt: skip
    _config_args(mount)
    mount.add_argument("--cache-dir", help="where catalog and cache live")
    mount.add_argument("--template", help="path template, e.g. '$artist/$album/$title.$format'")
    mount.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    mount.add_argument("--allow-other", action="store_true", default=None,
                       help="let other users see the mount")  # fmt: skip
    mount.add_argument("--foreground", "-f", action="store_true",
                       help="stay in the foreground and log to stderr")  # fmt: skip
    mount.add_argument(
        "--wait", action="store_true",
        help="return only once the first scan has finished, so the tree is complete (a "
        "progress bar on a terminal); for scripts and systemd units. With --foreground, "
        "systemd is told READY=1 then",
    )  # fmt: skip

    unmount = sub.add_parser("unmount", help="unmount (drains open files first)")
    unmount.add_argument("mountpoint", type=Path, nargs="?", metavar="MOUNTPOINT",
                         help="the mount (same as --mount)")  # fmt: skip
    _daemon_args(unmount)
    unmount.add_argument("--timeout", type=_seconds, default=30.0,
                         help="seconds to wait for the daemon to exit (default 30)")  # fmt: skip

    status = sub.add_parser("status", help="show the state of a mount")
    status.add_argument("mountpoint", type=Path, nargs="?", metavar="MOUNTPOINT",
                        help="the mount (same as --mount)")  # fmt: skip
    _daemon_args(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    cache.add_parser(sub, _daemon_args)
    events.add_parser(sub, _daemon_args)
    verify.add_parser(sub, _daemon_args)
    plugin.add_parser(sub, _daemon_args)
    tag.add_parser(sub, _daemon_args)
    origin.add_parser(sub, _daemon_args)
    settings.add_parser(sub, _daemon_args)
    search.add_parser(sub, _daemon_args)
    completion.add_parser(sub)

    shutdown = sub.add_parser("shutdown", help="stop a daemon (same as unmount)")
    shutdown.add_argument("mountpoint", type=Path, nargs="?", metavar="MOUNTPOINT",
                          help="the mount (same as --mount)")  # fmt: skip
    _daemon_args(shutdown)
    shutdown.add_argument("--timeout", type=_seconds, default=30.0,
                          help="seconds to wait for the daemon to exit (default 30)")  # fmt: skip
    return parser


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {value!r}")
    return seconds


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="config file (default $XDG_CONFIG_HOME/musicfs/config.toml)"
    )
    parser.add_argument("--socket", help="control socket (default: derived from the mountpoint)")


def _daemon_args(parser: argparse.ArgumentParser) -> None:
    """The options of every command that talks to a mount: --mount, --config, --socket."""
    add_mount_option(parser)
    _config_args(parser)


def _version() -> str:
    from importlib import metadata

    try:
        return "musicfs " + metadata.version("musicfs-cli")
    except metadata.PackageNotFoundError:
        return "musicfs (source tree)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "mount": cmd_mount,
        "unmount": cmd_unmount,
        "status": cmd_status,
        "shutdown": cmd_unmount,
        "cache": cache.cmd_cache,
        "events": events.cmd_events,
        "verify": verify.cmd_verify,
        "plugin": plugin.cmd_plugin,
        "tag": tag.cmd_tag,
        "origin": origin.cmd_origin,
        "config": settings.cmd_config,
        "search": search.cmd_search,
        "completion": functools.partial(completion.cmd_completion, parser=parser),
    }
    handler = handlers[args.command]
    try:
        merge_mount_args(args)
        return handler(args)
    except ConfigError as exc:
        print_error(f"configuration error: {exc}")
        return EXIT_USAGE
    except CLIError as exc:
        print_error(str(exc))
        return exc.code
    except MusicFSError as exc:  # expected: its message says what to do; a bug keeps its traceback
        print_error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


# -- mount ---------------------------------------------------------------------


def cmd_mount(args: argparse.Namespace) -> int:
    config = load_args_config(
        args,
        cache_dir=args.cache_dir,
        template=args.template,
        log_level=args.log_level,
        allow_other=args.allow_other,
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
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(read_end)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        out = os.open(daemon_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        status = EXIT_FAILED
        try:
            from musicfs.control.daemon import run_daemon

            status = run_daemon(
                config, mountpoint, foreground=False, ready_fd=write_end, wait_scan=wait
            )
        except BaseException:
            traceback.print_exc()  # into daemon.log: the parent shows its tail
        finally:
            os._exit(status)
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


# -- talking to a daemon -----------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    socket_path = socket_for(args)
    try:
        with client_for(socket_path, args.mountpoint) as client:
            status = client.status()
    except daemon_unreachable() as exc:
        raise CLIError(str(exc), EXIT_NO_DAEMON) from None
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        _print_status(status)
    return EXIT_OK


def _print_status(status: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for label, key in (
        ("mountpoint", "mountpoint"),
        ("state", "state"),
        ("tracks", "tracks"),
        ("directories", "directories"),
        ("unreadable files", "unreadable_files"),
        ("open files", "open_handles"),
        ("cached files", "cached_files"),
        ("operations", "operations"),
        ("uptime (s)", "uptime_seconds"),
        ("cache dir", "cache_dir"),
        ("control socket", "socket"),
        ("daemon pid", "pid"),
        ("version", "version"),
    ):
        table.add_row(label, str(status.get(key, "")))
    quantiles = [status.get(f"latency_p{q}_ms", 0.0) for q in (50, 95, 99)]
    table.add_row("latency p50/p95/p99", " / ".join(f"{v:.3f}" for v in quantiles) + " ms")
    console.print(table)
    origins = Table(title="origins")
    for column in ("id", "type", "location", "online", "last scan"):
        origins.add_column(column)
    for entry in status.get("origins", []):
        origins.add_row(
            entry["id"],
            entry["type"],
            entry["location"],
            "yes" if entry["online"] else "[red]no[/]",
            entry["last_scan"],
        )
    console.print(origins)
    if status.get("loops"):  # background loops that failed: restarted, shown until unmount
        loops = Table(title="background tasks that failed (restarted; details in musicfs.log)")
        for column in ("task", "failures", "now", "last error"):
            loops.add_column(column)
        for entry in status["loops"]:
            now = "[red]failing[/]" if entry["failing"] else "recovered"
            loops.add_row(escape(entry["name"]), str(entry["failures"]), now,
                          escape(entry["last_error"]))  # fmt: skip
        console.print(loops)
    if status.get("op_latency"):
        latency = Table(title="FUSE operations (latency in ms)")
        for column in ("operation", "count", "p50", "p95", "p99"):
            latency.add_column(column, justify="left" if column == "operation" else "right")
        for op in status["op_latency"]:
            latency.add_row(op["op"], str(op["count"]),
                            *(f"{op[f'p{q}_ms']:.3f}" for q in (50, 95, 99)))  # fmt: skip
        console.print(latency)


def cmd_unmount(args: argparse.Namespace) -> int:
    socket_path = socket_for(args)
    mountpoint = Path(os.path.abspath(args.mountpoint)) if args.mountpoint else None
    try:
        with client_for(socket_path, mountpoint) as client:
            if mountpoint is None:
                mountpoint = Path(client.status()["mountpoint"])
            client.shutdown()
    except daemon_unreachable() as exc:
        if mountpoint is not None and is_mounted(mountpoint):
            return _force_unmount(mountpoint)
        raise CLIError(str(exc), EXIT_NO_DAEMON) from None
    deadline = time.monotonic() + args.timeout
    while is_mounted(mountpoint) or socket_path.exists():
        if time.monotonic() > deadline:
            raise CLIError(f"{mountpoint} is still mounted after {args.timeout:.0f} s")
        time.sleep(0.05)
    print(f"unmounted {mountpoint}")
    return EXIT_OK


def _force_unmount(mountpoint: Path) -> int:
    """No daemon answers but something is mounted: detach it with fusermount3."""
    for cmd in (
        ["fusermount3", "-u", str(mountpoint)],
        ["fusermount3", "-u", "-z", str(mountpoint)],
    ):
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            print(f"unmounted {mountpoint} (no daemon was answering)")
            return EXIT_OK
    raise CLIError(f"could not unmount {mountpoint}: {result.stderr.strip()}")


if __name__ == "__main__":
    sys.exit(main())
