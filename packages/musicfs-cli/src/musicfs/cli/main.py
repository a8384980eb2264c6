"""The ``musicfs`` command. Each command group has its module here (mount,
cache, events, verify, plugin, tag, origin, settings, completion); this one
parses, dispatches, and holds unmount, status and shutdown.

Exit codes: `musicfs.core.exitcodes` (0 done, 1 failed, 2 bad usage or
refused, 3 no daemon), shown by ``musicfs --help``.

Every command that talks to a mount names it with ``--mount MOUNTPOINT`` (see
`musicfs.cli.common`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from musicfs.cli import (
    cache,
    catalog,
    collection,
    completion,
    events,
    mount,
    origin,
    plugin,
    search,
    settings,
    tag,
    transfer,
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
    client_for,
    daemon_unreachable,
    is_mounted,
    merge_mount_args,
    print_error,
    socket_for,
)
from musicfs.core.config.settings import ConfigError
from musicfs.core.errors import MusicFSError
from musicfs.core.exitcodes import exit_codes_help


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musicfs",
        description="A read-only FUSE filesystem that shows a music collection organised by tags.",
        epilog="Commands that talk to a mount name it with --mount MOUNTPOINT (-m), which\n"
        "can be left out while a single mount runs.\n\n" + exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction)
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
    catalog.add_parser(sub, _daemon_args)
    events.add_parser(sub, _daemon_args)
    verify.add_parser(sub, _daemon_args)
    plugin.add_parser(sub, _daemon_args)
    tag.add_parser(sub, _daemon_args)
    collection.add_parser(sub, _daemon_args)
    origin.add_parser(sub, _daemon_args)
    settings.add_parser(sub, _daemon_args)
    search.add_parser(sub, _daemon_args)
    transfer.add_parser(sub, _daemon_args)
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


class _VersionAction(argparse.Action):
    """``--version``: the version is looked up only when asked (importlib.metadata
    takes ~20 ms to import, which every ``musicfs mount`` would pay)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show program's version number and exit")  # fmt: skip

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(_version())
        parser.exit()


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
        "mount": mount.cmd_mount,
        "unmount": cmd_unmount,
        "status": cmd_status,
        "shutdown": cmd_unmount,
        "cache": cache.cmd_cache,
        "catalog": catalog.cmd_catalog,
        "events": events.cmd_events,
        "verify": verify.cmd_verify,
        "plugin": plugin.cmd_plugin,
        "tag": tag.cmd_tag,
        "collection": collection.cmd_collection,
        "origin": origin.cmd_origin,
        "config": settings.cmd_config,
        "search": search.cmd_search,
        "export": transfer.cmd_export,
        "import": transfer.cmd_import,
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
    catalog = status.get("catalog") or {}
    if catalog.get("shared"):  # a replica of a shared catalog (issue 16)
        if not catalog.get("online"):
            table.add_row("state", f"{status.get('state', '')} (catalog)")
        shown = "online" if catalog.get("online") else f"[red]unreachable[/]: {catalog['error']}"
        table.add_row("shared catalog", f"{escape(catalog['server'])}: {shown}")
        table.add_row("catalog changes", f"applied {catalog['applied_seq']}, lag {catalog['lag']}"
                      + (f", copying ({catalog['bootstrap_copied']} tracks)"
                         if catalog.get("bootstrapping") else ""))  # fmt: skip
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
