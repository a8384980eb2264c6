"""``musicfs catalog``: the catalog shared by several machines (issue 16,
docs/shared-catalog.md), from the ops side.

- ``migrate --to postgresql://user@host:port/db``: move this machine's SQLite
  catalog (tracks with their audio identity, overrides, plays, and the user
  data of departed tracks) into an empty shared catalog, then keep it as a
  replica of it. The cache dir must not be mounted (its lock is held for the
  whole run, so no mount starts meanwhile); ``--dry-run`` only reads, and may
  run beside a mount. Prints what to add to the config;
- ``status``: shared or not, the server, whether it answers, the replica's
  lag. Reads the cache dir's catalog read-only and asks the server directly,
  so it works with the mount down.

The server's password and TLS settings come from the credentials store
(``[catalog]``), never from the command line. Both work on a cache dir, named
by ``--cache-dir`` or by the mountpoint it belongs to (``--mount``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from musicfs.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    check_not_inside_mount,
    check_socket_access,
    client_for,
    daemon_unreachable,
    is_mounted,
)
from musicfs.core.config.catalog import CATALOG
from musicfs.core.config.paths import (
    CacheDirLock,
    CacheDirLocked,
    UnsafeSocketDir,
    cache_dir_for,
    check_socket_dir,
    socket_path_for,
)
from musicfs.core.config.settings import Config, load_config

_CATALOG_FILE = "catalog.sqlite3"


def add_parser(sub: Any, daemon_args: Callable[[argparse.ArgumentParser], None]) -> None:
    catalog = sub.add_parser(
        "catalog", help="the catalog shared by several machines on PostgreSQL (migrate, status)"
    )
    actions = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    migrate = actions.add_parser(
        "migrate",
        help="move this machine's catalog into an empty shared catalog on PostgreSQL",
        description="Copy the catalog of a cache dir (tracks with their audio identity, "
        "overrides, plays, the user data of removed tracks) into an empty shared catalog in "
        "one transaction, then make the local catalog a replica of it. Ratings, imported "
        "play counts, playlists, pins and history are not held by the shared catalog yet: "
        "they stay with this machine. The mount must be down. The password comes from the "
        "credentials store: MUSICFS_SECRET_CATALOG_PASSWORD or [catalog] password in "
        "credentials.toml.",
    )
    migrate.add_argument("--to", required=True, metavar="URL",
                         help="the shared catalog: postgresql://user@host:port/database "
                         "(no password in it)")  # fmt: skip
    migrate.add_argument(
        "--dry-run", action="store_true",
        help="write nothing: check the server and say what would move",
    )  # fmt: skip
    status = actions.add_parser(
        "status",
        help="shared or not, the server, the replica's lag (works with the mount down)",
    )
    status.add_argument("mountpoint", type=Path, nargs="?", metavar="MOUNTPOINT",
                        help="the mount (same as --mount)")  # fmt: skip
    for action in (migrate, status):
        daemon_args(action)
        action.add_argument("--cache-dir", help="the cache dir (default: the mountpoint's)")
        action.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_catalog(args: argparse.Namespace) -> int:
    if args.catalog_command == "migrate":
        return _migrate(args)
    return _status(args)


def _config(args: argparse.Namespace) -> Config:
    from musicfs.control.config import SECTIONS

    overrides: dict[str, Any] = {"cache_dir": args.cache_dir, "control.socket": args.socket}
    return load_config(args.config, overrides=overrides, sections=(*SECTIONS, CATALOG))


def _cache_dir(args: argparse.Namespace, config: Config) -> Path:
    """The cache dir the command works on: --cache-dir, the mountpoint's (the
    running daemon's own if it answers), or the config's."""
    if args.cache_dir is not None and args.mountpoint is not None:
        raise CLIError(
            f"name the mount (--mount {args.mountpoint}) or the cache dir "
            f"(--cache-dir {args.cache_dir}), not both",
            EXIT_USAGE,
        )
    if args.mountpoint is None and not config.cache_dir:
        raise CLIError(
            f"name the mount (musicfs catalog {args.catalog_command} --mount MOUNTPOINT) "
            "or its cache dir (--cache-dir DIR)",
            EXIT_USAGE,
        )
    if args.mountpoint is not None:
        check_not_inside_mount(args.mountpoint)
        if is_mounted(args.mountpoint):
            live = _daemon_cache_dir(args, config)
            if live is not None:
                return live
    cache_dir = cache_dir_for(config, args.mountpoint or Path("/"))
    if not (cache_dir / _CATALOG_FILE).is_file():
        raise CLIError(
            f"no MusicFS catalog in {cache_dir} (never mounted with this cache dir?); "
            "name the mount with --mount MOUNTPOINT or the cache dir with --cache-dir DIR",
            EXIT_USAGE,
        )
    return cache_dir


def _daemon_cache_dir(args: argparse.Namespace, config: Config) -> Path | None:
    """The cache dir the daemon serving *args.mountpoint* uses, if one answers.
    (The socket is found with this command's config, which knows ``[catalog]``.)"""
    socket_path = Path(args.socket) if args.socket else socket_path_for(config, args.mountpoint)
    try:
        check_socket_access(socket_path)
        check_socket_dir(socket_path)
        with client_for(socket_path, args.mountpoint) as client:
            return Path(client.status()["cache_dir"])
    except (CLIError, UnsafeSocketDir, daemon_unreachable()):
        return None


def _credentials() -> Any:
    from musicfs.core.secrets.credentials import CredentialError, Credentials

    try:
        return Credentials.load()
    except CredentialError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None


def _check_url(url: str) -> str:
    from musicfs.core.shared.connect import parse_url
    from musicfs.core.shared.errors import SharedCatalogError

    try:
        return str(parse_url(url))
    except SharedCatalogError as exc:
        raise CLIError(f"--to: {exc}", EXIT_USAGE) from None


# -- migrate ---------------------------------------------------------------------------


def _migrate(args: argparse.Namespace) -> int:
    server = _check_url(args.to)  # usage errors before touching anything
    config = _config(args)
    cache_dir = _cache_dir(args, config)
    lock = CacheDirLock(cache_dir)
    try:
        lock.acquire()
        locked = True
    except CacheDirLocked:
        if not args.dry_run:
            where = args.mountpoint or "MOUNTPOINT"
            raise CLIError(
                f"cache dir {cache_dir} is in use by a running MusicFS mount; its catalog "
                f"must not change while it is copied: run musicfs unmount {where} first, "
                "then migrate (or --dry-run, which only reads, to see what would move)",
                EXIT_USAGE,
            ) from None
        locked = False
    try:
        report = _run_migration(args, cache_dir, server)
    finally:
        if locked:
            lock.release()
    if args.json:
        print(json.dumps({**report, "read_only_beside_mount": not locked}, indent=2))
    else:
        _print_migration(args, report, server, mounted=not locked)
    return EXIT_OK


def _run_migration(args: argparse.Namespace, cache_dir: Path, server: str) -> dict[str, Any]:
    from musicfs.cli.progress import steps
    from musicfs.core.shared.errors import SharedCatalogError
    from musicfs.core.shared.migrate import migrate_catalog

    credentials = _credentials()
    try:
        with steps(f"copying to {server}", quiet=args.json or args.dry_run) as progress:
            report = migrate_catalog(
                cache_dir / _CATALOG_FILE, args.to, credentials,
                dry_run=args.dry_run, progress=progress,
            )  # fmt: skip
    except SharedCatalogError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    return report.as_dict()


def _print_migration(
    args: argparse.Namespace, report: dict[str, Any], server: str, *, mounted: bool
) -> None:
    moved = (
        f"{report['tracks']:,} tracks (with their audio identity), {report['overrides']:,} "
        f"overrides, {report['plays']:,} plays"
    )
    for what, n in report.get("more", {}).items():
        if n:
            moved += f", {n:,} {what}"
    if report["departed"]:
        moved += f", the user data of {report['departed']:,} removed tracks"
    kept = ", ".join(f"{n:,} {what}" for what, n in report["local_only"].items() if n)
    if args.dry_run:
        print(f"dry run: nothing was written. Would move {report['catalog']} to shared catalog "
              f"{server}: {moved}.")  # fmt: skip
        if mounted:
            print("(read read-only beside the running mount: unmount it before migrating)")
    elif report["already"]:
        print(f"{report['catalog']} is already a replica of shared catalog {server} "
              f"(at change {report['applied_seq']}); nothing to do.")  # fmt: skip
    else:
        verb = "finished the migration of" if report["resumed"] else "migrated"
        print(f"{verb} {report['catalog']} to shared catalog {server} in "
              f"{report['seconds']:.1f} s: {moved}.")  # fmt: skip
        print(f"The local catalog is now a replica of it (at change {report['applied_seq']}).")
    if report["origins"]:
        named = ", ".join(f"{origin} ({n:,} tracks)" for origin, n in report["origins"].items())
        print(f"Origins, by id: {named}. Every machine that shares the catalog names these "
              'origins by the same ids ([[origins]] id = "..."), whatever path it reaches '
              "them by.")  # fmt: skip
    if kept:
        print(f"Not in the shared catalog (it does not hold them yet), kept on this machine "
              f"only: {kept}.")  # fmt: skip
    if args.dry_run:
        return
    print("\nAdd to the config file of this machine and of every machine that shares it:\n")
    print("    [catalog]")
    print(f'    shared = "{args.to}"')
    print("\nThe password, if the server asks for one, goes in the credentials store: "
          "MUSICFS_SECRET_CATALOG_PASSWORD, or password under [catalog] in "
          "~/.config/musicfs/credentials.toml (chmod 600).")  # fmt: skip


# -- status ----------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from musicfs.core.shared.errors import SharedCatalogError
    from musicfs.core.shared.migrate import catalog_status

    config = _config(args)
    cache_dir = _cache_dir(args, config)
    url = config.section(CATALOG).shared
    try:
        status = catalog_status(cache_dir / _CATALOG_FILE, url, _credentials() if url else None)
    except SharedCatalogError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    report = status.as_dict()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_status(report)
    healthy = not report["shared"] or (report["reachable"] and not report["error"])
    return EXIT_OK if healthy else EXIT_FAILED


def _print_status(s: dict[str, Any]) -> None:
    def n(value: Any) -> str:
        return "—" if value is None else f"{value:,}" if isinstance(value, int) else str(value)

    print(f"catalog:     {s['catalog']}")
    if not s["shared"]:
        print("shared:      no ([catalog] shared is not set: this machine's own SQLite catalog)")
        if s["replica_of"]:
            print(f"             (it is a replica of shared catalog {s['replica_of']}: set "
                  "[catalog] shared to that catalog's URL)")  # fmt: skip
        print(f"tracks:      {n(s['replica_tracks'])}")
        return
    state = {True: "reachable", False: "UNREACHABLE", None: "not asked"}[s["reachable"]]
    print(f"shared:      yes, {s['server']} ({state})")
    if s["copying"]:
        print("replica:     first copy under way (not finished)")
    elif s["replica_of"] is None:
        print("replica:     not yet (the first mount with [catalog] shared copies the shared "
              "catalog; musicfs catalog migrate moves this one there)")  # fmt: skip
    print(f"applied:     change {n(s['applied_seq'])}; server at change {n(s['server_seq'])}")
    lag = "—"
    if s["lag_changes"] is not None:
        lag = f"{s['lag_changes']:,} changes, {s['lag_seconds'] or 0:.1f} s"
    print(f"lag:         {lag}")
    print(f"tracks:      {n(s['replica_tracks'])} in the replica, "
          f"{n(s['server_tracks'])} on the server")  # fmt: skip
    if s["error"]:
        print(f"problem:     {s['error']}")
