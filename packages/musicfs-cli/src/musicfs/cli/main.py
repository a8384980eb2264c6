"""The ``musicfs`` command: mount, unmount, status, shutdown, events, verify,
cache verify|backup|restore, plugin list|load|unload|reload, tag show|set|clear.

Exit codes: 0 success, 1 the operation failed, 2 bad usage or configuration,
3 no daemon answers for that mount.

``musicfs mount`` without ``--foreground`` validates everything it can, forks a
daemon and returns once the mountpoint answers (or prints why it did not). The
fork happens before trio or gRPC are imported: neither survives a fork once
started.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from musicfs.cli import events, plugin, tag, verify
from musicfs.cli.common import (
    EXIT_FAILED,
    EXIT_NO_DAEMON,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    client_for,
    daemon_unreachable,
    is_mounted,
    load_args_config,
    print_error,
    socket_for,
)
from musicfs.core.config import Config, ConfigError
from musicfs.core.paths import cache_dir_for

READY_TIMEOUT = 600.0  # preparing may rebuild a huge tree after a template change


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musicfs",
        description="A read-only FUSE filesystem that shows a music collection organised by tags.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount = sub.add_parser("mount", help="mount a library (returns once it is ready)")
    mount.add_argument("mountpoint", type=Path, help="empty directory to mount on")
    mount.add_argument(
        "--origin", action="append", default=[], metavar="DIR",
        help="folder with music (repeat for several); replaces the config file's origins",
    )  # fmt: skip
    _config_args(mount)
    mount.add_argument("--cache-dir", help="where catalog and cache live")
    mount.add_argument("--template", help="path template, e.g. '$artist/$album/$title.$format'")
    mount.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    mount.add_argument("--allow-other", action="store_true", default=None,
                       help="let other users see the mount")  # fmt: skip
    mount.add_argument("--foreground", "-f", action="store_true",
                       help="stay in the foreground and log to stderr")  # fmt: skip

    unmount = sub.add_parser("unmount", help="unmount (drains open files first)")
    unmount.add_argument("mountpoint", type=Path)
    _config_args(unmount)
    unmount.add_argument("--timeout", type=float, default=30.0,
                         help="seconds to wait for the daemon to exit (default 30)")  # fmt: skip

    status = sub.add_parser("status", help="show the state of a mount")
    status.add_argument("mountpoint", type=Path, nargs="?")
    _config_args(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    cache = sub.add_parser("cache", help="the content cache of a mount")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    cache_verify = cache_sub.add_parser(
        "verify", help="check every cached chunk and the catalog; drop what is damaged"
    )
    backup = cache_sub.add_parser("backup", help="write the catalog and cache to a tar file")
    backup.add_argument("file", type=Path, help="the backup file to write")
    restore = cache_sub.add_parser(
        "restore", help="replace the catalog and cache with a backup (mount must be down)"
    )
    restore.add_argument("file", type=Path, help="the backup file to read")
    for action in (cache_verify, backup, restore):
        action.add_argument("mountpoint", type=Path, nargs="?")
        _config_args(action)
        action.add_argument("--cache-dir", help="the cache dir (default: the mountpoint's)")
        action.add_argument("--json", action="store_true", help="machine-readable output")

    events.add_parser(sub, _config_args)
    verify.add_parser(sub, _config_args)
    plugin.add_parser(sub, _config_args)
    tag.add_parser(sub, _config_args)

    shutdown = sub.add_parser("shutdown", help="stop a daemon (same as unmount)")
    shutdown.add_argument("mountpoint", type=Path, nargs="?")
    _config_args(shutdown)
    shutdown.add_argument("--timeout", type=float, default=30.0)
    return parser


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="config file (default $XDG_CONFIG_HOME/musicfs/config.toml)"
    )
    parser.add_argument("--socket", help="control socket (default: derived from the mountpoint)")


def _version() -> str:
    from importlib import metadata

    try:
        return "musicfs " + metadata.version("musicfs-cli")
    except metadata.PackageNotFoundError:
        return "musicfs (source tree)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "mount": cmd_mount,
        "unmount": cmd_unmount,
        "status": cmd_status,
        "shutdown": cmd_unmount,
        "cache": cmd_cache,
        "events": events.cmd_events,
        "verify": verify.cmd_verify,
        "plugin": plugin.cmd_plugin,
        "tag": tag.cmd_tag,
    }[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        print_error(f"configuration error: {exc}")
        return EXIT_USAGE
    except CLIError as exc:
        print_error(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return 130
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
    if args.foreground:
        from musicfs.control.daemon import run_daemon

        return run_daemon(config, mountpoint, foreground=True)
    return _mount_in_background(config, mountpoint)


def _mount_in_background(config: Config, mountpoint: Path) -> int:
    cache_dir = cache_dir_for(config, mountpoint)
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
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

            status = run_daemon(config, mountpoint, foreground=False, ready_fd=write_end)
        except BaseException:
            traceback.print_exc()  # into daemon.log: the parent shows its tail
        finally:
            os._exit(status)
    os.close(write_end)
    message = _read_line(read_end, READY_TIMEOUT)
    os.close(read_end)
    if message == "READY":
        print(f"mounted {mountpoint} (daemon pid {pid}); `musicfs status {mountpoint}` shows it")
        return EXIT_OK
    if message.startswith("ERROR "):
        raise CLIError(message.removeprefix("ERROR "))
    tail = _tail(daemon_log)
    raise CLIError(
        f"the daemon exited before {mountpoint} was ready; its last output ({daemon_log}):\n{tail}"
    )


def _read_line(fd: int, timeout: float) -> str:
    data = b""
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
            break
        data += chunk
    return data.decode(errors="replace").strip()


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
    console.print(table)
    origins = Table(title="origins")
    for column in ("id", "type", "location", "online", "last scan"):
        origins.add_column(column)
    for origin in status.get("origins", []):
        origins.add_row(
            origin["id"],
            origin["type"],
            origin["location"],
            "yes" if origin["online"] else "[red]no[/]",
            origin["last_scan"],
        )
    console.print(origins)


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


def cmd_cache(args: argparse.Namespace) -> int:
    config = load_args_config(args, cache_dir=args.cache_dir)
    action = args.cache_command
    if args.mountpoint is None and not config.cache_dir:
        raise CLIError(
            f"name the mount (musicfs cache {action} ... MOUNTPOINT) or pass --cache-dir",
            EXIT_USAGE,
        )
    cache_dir = cache_dir_for(config, args.mountpoint or Path("/"))
    if args.cache_dir is None and args.mountpoint is not None and is_mounted(args.mountpoint):
        cache_dir = _daemon_cache_dir(args) or cache_dir  # mounted with its own --cache-dir?
    if action == "restore":
        return _cache_restore(args, cache_dir)
    if not (cache_dir / "catalog.sqlite3").exists():
        raise CLIError(f"no MusicFS cache in {cache_dir} (never mounted with this cache dir?)")
    if action == "backup":
        return _cache_backup(args, cache_dir)
    return _cache_verify(args, config, cache_dir)


def _daemon_cache_dir(args: argparse.Namespace) -> Path | None:
    """The cache dir the daemon serving *args.mountpoint* uses, if one answers."""
    try:
        with client_for(socket_for(args), args.mountpoint) as client:
            return Path(client.status()["cache_dir"])
    except (CLIError, daemon_unreachable()):
        return None


def _cache_backup(args: argparse.Namespace, cache_dir: Path) -> int:
    from musicfs.core.backup import BackupError, backup_cache

    try:
        counts = backup_cache(cache_dir, args.file)
    except (BackupError, OSError) as exc:
        raise CLIError(f"backup failed: {exc}") from None
    if args.json:
        print(json.dumps({"file": str(args.file), **counts}, indent=2))
    else:
        print(f"wrote {args.file}: {counts['databases']} databases, {counts['chunks']} chunks "
              f"({counts['bytes']} bytes)")  # fmt: skip
    return EXIT_OK


def _cache_restore(args: argparse.Namespace, cache_dir: Path) -> int:
    from musicfs.core.backup import BackupError, restore_cache
    from musicfs.core.paths import CacheDirLocked

    try:
        counts = restore_cache(args.file, cache_dir)
    except CacheDirLocked as exc:
        raise CLIError(f"{exc}; run musicfs unmount first") from None
    except (BackupError, OSError) as exc:
        raise CLIError(f"restore failed, {cache_dir} is unchanged: {exc}") from None
    if args.json:
        print(json.dumps({"cache_dir": str(cache_dir), **counts}, indent=2))
    else:
        print(f"restored {args.file} into {cache_dir} ({counts['chunks']} chunks)")
    return EXIT_OK


def _cache_verify(args: argparse.Namespace, config: Config, cache_dir: Path) -> int:
    from musicfs.core.catalog import Catalog
    from musicfs.core.content import ContentCache

    with Catalog.open(cache_dir / "catalog.sqlite3", readonly=True) as catalog:
        catalog_check = catalog.integrity_check()
    content_dir = cache_dir / "content"
    bad: list[str] = []
    dropped = chunks = files = 0
    if content_dir.exists():
        content = ContentCache(content_dir, config.cache_limit)
        try:
            bad, dropped = content.verify(deep=True)
            chunks, files = content.store.stats.entries, content.headers.entries
        finally:
            content.close()
    report = {
        "cache_dir": str(cache_dir),
        "catalog": catalog_check,
        "chunks_kept": chunks,
        "cached_files_kept": files,
        "damaged_chunks_dropped": len(bad),
        "cached_files_dropped": dropped,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"catalog: {catalog_check}")
        print(f"content cache: {chunks} chunks and {files} cached files kept; "
              f"{len(bad)} damaged chunks and {dropped} incomplete files dropped "
              "(they are copied again when next read)")  # fmt: skip
    healthy = catalog_check == "ok" and not bad and not dropped
    return EXIT_OK if healthy else EXIT_FAILED


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
