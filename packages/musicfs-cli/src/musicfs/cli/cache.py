"""``musicfs cache``: the content cache of a mount.

- ``verify``, ``backup``, ``restore`` work on the cache directory itself (also
  when nothing is mounted; restore only then). ``verify`` of a mounted cache is
  done by its daemon, which goes on serving and copies damaged files again;
- ``stats``, ``clear``, ``prefetch`` ask the running daemon;
- ``pin``, ``unpin``, ``pins``: pins for offline (tracks of folders, smart
  collections and searches kept in the cache, never evicted), in the daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from musicfs.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    check_not_inside_mount,
    client_for,
    daemon_client,
    daemon_unreachable,
    is_mounted,
    load_args_config,
    path_in_mount,
    socket_for,
)
from musicfs.core.config.paths import cache_dir_for
from musicfs.core.config.settings import Config

_OFFLINE = ("verify", "backup", "restore")

#: What each tier of ``cache stats`` holds (the JSON keeps "tier" and adds "name").
TIER_NAMES = {
    "l1": "metadata",  # directory listings and attributes, in memory
    "l2": "headers",  # each cached file's tag header
    "l3": "audio chunks",  # the audio, deduplicated, on disk
}


def add_parser(sub: Any, config_args: Any) -> None:
    cache = sub.add_parser("cache", help="the content cache of a mount")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    cache_verify = cache_sub.add_parser(
        "verify",
        help="check every cached chunk and the catalog; drop what is damaged (while "
        "mounted: in the daemon, which copies damaged files again from their origins)",
    )
    backup = cache_sub.add_parser("backup", help="write the catalog and cache to a tar file")
    backup.add_argument("file", type=Path, help="the backup file to write")
    restore = cache_sub.add_parser(
        "restore", help="replace the catalog and cache with a backup (mount must be down)"
    )
    restore.add_argument("file", type=Path, help="the backup file to read")
    stats = cache_sub.add_parser(
        "stats",
        help="entries, bytes, hits and misses of each tier",
        description="Tiers: l1 metadata (directory listings in memory), l2 headers (the tag "
        "header of each cached file), l3 audio chunks (the audio, deduplicated, on disk).",
    )
    clear = cache_sub.add_parser("clear", help="empty the cache (open files keep playing)")
    clear.add_argument("--scope", choices=["all", "metadata", "chunks", "origin"],
                       help="all (default), metadata (in memory), chunks (every cached copy), "
                       "origin (one origin's copies; the default with --origin)")  # fmt: skip
    clear.add_argument("--origin", default="", help="the origin, for --scope origin")
    for action in (cache_verify, backup, restore, stats, clear):
        action.add_argument(
            "mountpoint",
            type=Path,
            nargs="?",
            metavar="MOUNTPOINT",
            help="the mount (same as --mount)",
        )
        config_args(action)
        if action in (cache_verify, backup, restore):
            action.add_argument("--cache-dir", help="the cache dir (default: the mountpoint's)")
        action.add_argument("--json", action="store_true", help="machine-readable output")
    prefetch = cache_sub.add_parser(
        "prefetch", help="copy a folder or file of a mount into the cache now"
    )
    prefetch.add_argument(
        "path", type=Path, help="a folder or file inside a mount (with --mount: may be relative)"
    )
    config_args(prefetch)
    prefetch.add_argument("--json", action="store_true", help="machine-readable output")
    _add_pin_parsers(cache_sub, config_args)


def _add_pin_parsers(cache_sub: Any, config_args: Any) -> None:
    pin = cache_sub.add_parser(
        "pin",
        help="keep tracks in the cache for offline (never evicted)",
        description="Pin the tracks of files or folders of a mount, of smart collections "
        "or of searches: they are copied into the cache now and kept there (never evicted, "
        "copied again when they change on their origin), so they play with the origin gone. "
        "A pinned folder, collection or search also pins the tracks that match it after "
        "a rescan. All or nothing, within [cache] pin_limit.",
    )
    unpin = cache_sub.add_parser(
        "unpin",
        help="let pinned tracks be evicted again",
        description="Drop pins: a path drops the pins of that path and of paths below it.",
    )
    for action in (pin, unpin):
        action.add_argument("paths", type=Path, nargs="*", metavar="PATH",
                            help="a file or folder inside a mount (with --mount: may be "
                            "relative)")  # fmt: skip
        action.add_argument("--collection", action="append", default=[], metavar="NAME",
                            help="a smart collection (.collections/NAME); repeatable")  # fmt: skip
        action.add_argument("--search", action="append", default=[], metavar="QUERY",
                            help="what .search/QUERY finds; repeatable")  # fmt: skip
        config_args(action)
        action.add_argument("--json", action="store_true", help="machine-readable output")
    pin.add_argument("--wait", action="store_true",
                     help="copy the tracks now, with a progress bar, and return once they "
                     "are all in the cache (default: return once pinned; the daemon copies "
                     "them in the background)")  # fmt: skip
    unpin.add_argument("--all", action="store_true", help="drop every pin")
    pins = cache_sub.add_parser(
        "pins", help="what is pinned: tracks, size, and how much of it is in the cache"
    )
    pins.add_argument("mountpoint", type=Path, nargs="?", metavar="MOUNTPOINT",
                      help="the mount (same as --mount)")  # fmt: skip
    config_args(pins)
    pins.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_cache(args: argparse.Namespace) -> int:
    if args.cache_command not in _OFFLINE:
        return _online(args)
    config = load_args_config(args, cache_dir=args.cache_dir)
    action = args.cache_command
    if args.mountpoint is None and not config.cache_dir:
        raise CLIError(
            f"name the mount (musicfs cache {action} ... --mount MOUNTPOINT) or pass --cache-dir",
            EXIT_USAGE,
        )
    if args.mountpoint is not None and args.cache_dir is None:
        check_not_inside_mount(args.mountpoint)
    cache_dir = cache_dir_for(config, args.mountpoint or Path("/"))
    live = None  # the cache dir of the daemon serving the mountpoint, if one answers
    if args.cache_dir is None and args.mountpoint is not None and is_mounted(args.mountpoint):
        live = _daemon_cache_dir(args)
        cache_dir = live or cache_dir  # mounted with its own --cache-dir?
    if action == "verify" and live is not None:
        return _cache_verify_live(args, live)
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
    from musicfs.core.mount.facade import BackupError, backup_cache

    _check_backup_target(args.file)
    try:
        counts = backup_cache(cache_dir, args.file)
    except (BackupError, OSError) as exc:
        raise CLIError(f"backup failed: {exc}") from None
    except sqlite3.Error as exc:
        raise CLIError(
            f"backup failed: a database in {cache_dir} cannot be read ({exc}); "
            f"run musicfs cache verify --cache-dir {cache_dir}"
        ) from None
    if args.json:
        print(json.dumps({"file": str(args.file), **counts}, indent=2))
    else:
        print(f"wrote {args.file}: {counts['databases']} databases, {counts['chunks']} chunks "
              f"({counts['bytes']} bytes)")  # fmt: skip
    return EXIT_OK


def _check_backup_target(target: Path) -> None:
    """Refuse a backup file name that would fail half way or overwrite other data."""
    if target.is_dir():
        raise CLIError(
            f"{target} is a directory; name the backup file to write, e.g. "
            f"{target / 'musicfs-backup.tar'}",
            EXIT_USAGE,
        )
    folder = target.parent
    if not folder.is_dir():
        raise CLIError(
            f"cannot write {target}: folder {folder} does not exist (mkdir -p {folder})",
            EXIT_USAGE,
        )
    if target.exists() and not _is_backup(target):
        raise CLIError(
            f"{target} exists and is not a MusicFS backup; not overwriting it: "
            "name another file, or remove it first",
            EXIT_USAGE,
        )


def _is_backup(path: Path) -> bool:
    """Whether *path* is a tar file written by ``musicfs cache backup``."""
    import tarfile  # here: every `musicfs` command (mount too) imports this module

    try:
        with tarfile.open(path) as tar:
            return any(m.name == "musicfs-backup.json" for m in tar)
    except (tarfile.TarError, OSError):
        return False


# What a cache dir may hold before its first catalog (a mount that failed early).
_CACHE_DIR_NAMES = ("lock", "daemon.log", "musicfs.log", "content", "covers")


def _check_restore(source: Path, cache_dir: Path) -> None:
    """Refuse a source that is no backup, and a cache dir that holds other files:
    restore replaces the whole folder."""
    if source.is_dir():
        raise CLIError(
            f"{source} is a directory, not a backup file "
            "(usage: musicfs cache restore FILE --mount MOUNTPOINT)",
            EXIT_USAGE,
        )
    if not source.exists():
        raise CLIError(
            f"backup file {source} does not exist (write one with: musicfs cache backup FILE)",
            EXIT_USAGE,
        )
    if not _is_backup(source):
        raise CLIError(
            f"{source} is not a MusicFS backup (write one with: musicfs cache backup FILE)",
            EXIT_USAGE,
        )
    if cache_dir.exists() and not cache_dir.is_dir():
        raise CLIError(
            f"cache dir {cache_dir} is a file, not a directory; pass --cache-dir DIR "
            "naming a directory",
            EXIT_USAGE,
        )
    if not cache_dir.is_dir() or (cache_dir / "catalog.sqlite3").exists():
        return
    others = sorted(name for name in os.listdir(cache_dir) if not name.startswith(_CACHE_DIR_NAMES))
    if others:
        raise CLIError(
            f"{cache_dir} is not a MusicFS cache dir (it holds {others[0]!r}), and restore "
            "replaces the whole folder; pass --cache-dir naming a new or empty directory",
            EXIT_USAGE,
        )


def _cache_restore(args: argparse.Namespace, cache_dir: Path) -> int:
    from musicfs.core.config.paths import CacheDirLocked
    from musicfs.core.mount.facade import BackupError, restore_cache

    _check_restore(args.file, cache_dir)
    try:
        counts = restore_cache(args.file, cache_dir)
    except CacheDirLocked:
        mountpoint = args.mountpoint or "MOUNTPOINT"
        raise CLIError(
            f"cache dir {cache_dir} is in use by a running MusicFS daemon; "
            f"run musicfs unmount {mountpoint} first",
            EXIT_USAGE,
        ) from None
    except (BackupError, OSError) as exc:
        raise CLIError(f"restore failed, {cache_dir} is unchanged: {exc}") from None
    if args.json:
        print(json.dumps({"cache_dir": str(cache_dir), **counts}, indent=2))
    else:
        print(f"restored {args.file} into {cache_dir} ({counts['chunks']} chunks)")
    return EXIT_OK


def _cache_verify(args: argparse.Namespace, config: Config, cache_dir: Path) -> int:
    from musicfs.core.config.paths import CacheDirLock, CacheDirLocked

    # A running daemon is copying into this cache and evicting from it: checking
    # (and dropping) behind its back would race it. It checks what it reads, and
    # its cache at every mount.
    lock = CacheDirLock(cache_dir)
    try:
        lock.acquire()
    except CacheDirLocked:
        mountpoint = args.mountpoint or "MOUNTPOINT"
        raise CLIError(
            f"cache dir {cache_dir} is in use by a running MusicFS daemon; verify it "
            f"there, while it serves: musicfs cache verify {mountpoint}",
            EXIT_USAGE,
        ) from None
    try:
        return _verify_unlocked(args, config, cache_dir)
    finally:
        lock.release()


def _verify_unlocked(args: argparse.Namespace, config: Config, cache_dir: Path) -> int:
    from musicfs.core.mount.facade import check_cache_offline

    content_dir = cache_dir / "content"
    try:
        check = check_cache_offline(cache_dir, config.cache.limit)
    except sqlite3.Error as exc:
        raise CLIError(
            f"the content cache in {content_dir} cannot be read ({exc}); it only holds "
            f"copies: move {content_dir} away and the next mount starts an empty one"
        ) from None
    catalog_check, bad, chunks, files = (
        check.catalog,
        check.damaged_chunks,
        check.chunks,
        check.files,
    )
    damaged, dropped = check.damaged_files, check.incomplete
    report = {
        "cache_dir": str(cache_dir),
        "catalog": catalog_check,
        "chunks_kept": chunks,
        "cached_files_kept": files,
        "damaged_chunks_dropped": len(bad),
        "damaged_files_dropped": damaged,
        "cached_files_dropped": damaged + dropped,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"catalog: {catalog_check}")
        print(f"content cache: {chunks} chunks and {files} cached files kept; "
              f"{len(bad)} damaged chunks, {damaged} damaged cached files and {dropped} "
              "incomplete files dropped (damaged ones are copied again by the next "
              "mount once their origins answer, the others when next read)")  # fmt: skip
    healthy = catalog_check == "ok" and not bad and not damaged and not dropped
    return EXIT_OK if healthy else EXIT_FAILED


def _cache_verify_live(args: argparse.Namespace, cache_dir: Path) -> int:
    """Verify a mounted cache in its daemon, which goes on serving meanwhile:
    damaged chunks are dropped and their files copied again from their origins."""
    from musicfs.cli.progress import follow, last

    with daemon_client(args) as client:
        updates = follow(client.verify_cache(), "verifying the cache", args.json,
                         total="chunks", completed="checked")  # fmt: skip
        final = last(updates)
    if not final.get("finished"):
        raise CLIError("the daemon stopped before the cache verify finished; run it again")
    final["cache_dir"] = str(cache_dir)
    if args.json:
        print(json.dumps(final, indent=2))
    else:
        _print_live_verify(final)
    healthy = final["catalog"] == "ok" and not final["not_refetched"]
    return EXIT_OK if healthy else EXIT_FAILED


def _print_live_verify(final: dict[str, Any]) -> None:
    damaged = len(final["damaged_chunks"])
    print(f"catalog: {final['catalog']}")
    print(f"content cache: {final['checked']} chunks checked ({final['bytes']} bytes), "
          f"damaged: {damaged}")  # fmt: skip
    if final["incomplete_dropped"]:
        print(f"{final['incomplete_dropped']} cached copies that had lost chunks to eviction "
              "dropped (copied again when next read)")  # fmt: skip
    for digest in final["damaged_chunks"]:
        print(f"damaged chunk: {digest}")
    for name in final["refetched"]:
        print(f"re-fetched from its origin: {name}")
    for problem in final["not_refetched"]:
        print(f"not re-fetched (dropped; copied again by the mount once its origin "
              f"answers): {problem}")  # fmt: skip


def _online(args: argparse.Namespace) -> int:
    if args.cache_command in ("pin", "unpin", "pins"):
        return _pins(args)
    if args.cache_command == "prefetch":
        args.mountpoint, relpath = path_in_mount(args.path, args.mountpoint)
    elif args.cache_command == "clear":
        _clear_scope(args)  # usage errors before looking for the daemon
    with daemon_client(args) as client:
        if args.cache_command == "stats":
            result = client.cache_stats()
            for tier in result["tiers"]:
                tier["name"] = TIER_NAMES.get(tier["tier"], tier["tier"])
        elif args.cache_command == "clear":
            result = client.clear_cache(*_clear_scope(args))
        else:
            result = _prefetch(client, relpath, args.json)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif args.cache_command == "stats":
        _print_stats(result)
    elif args.cache_command == "clear":
        print(f"dropped {result['files_dropped']} cached files ({result['bytes_freed']} bytes) "
              f"and {result['entries_dropped']} directory entries")  # fmt: skip
    else:
        copied, already = result["bytes"], result["already_cached"]
        print(f"{result['done']} of {result['files']} files in the cache "
              f"({already} were already, {copied} bytes copied)")  # fmt: skip
        for problem in result["failed"]:
            print(f"failed: {problem}")
    failed = args.cache_command == "prefetch" and result["failed"]
    return EXIT_FAILED if failed else EXIT_OK


def _clear_scope(args: argparse.Namespace) -> tuple[str, str]:
    """(scope, origin) of ``cache clear``: --origin alone means that origin only."""
    if args.origin and args.scope not in (None, "origin"):
        raise CLIError(
            f"--origin {args.origin} clears one origin's copies; --scope {args.scope} "
            "is another scope: drop one of the two",
            EXIT_USAGE,
        )
    scope = args.scope or ("origin" if args.origin else "all")
    if scope == "origin" and not args.origin:
        raise CLIError("--scope origin needs --origin ID", EXIT_USAGE)
    return scope, args.origin


def _prefetch(client: Any, relpath: str, quiet: bool) -> dict[str, Any]:
    from musicfs.cli.progress import follow, last

    updates = follow(client.prefetch(relpath), "copying", quiet, total="files", completed="done")
    final = last(updates)
    if not final.get("finished"):
        raise CLIError("the daemon stopped before the prefetch finished")
    return final


def _print_stats(stats: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"content cache ({stats['mode']}, limit {stats['limit_bytes']} bytes)")
    for column in ("tier", "entries", "bytes", "hits", "misses", "hit ratio", "evictions",
                   "corrupt"):  # fmt: skip
        table.add_column(column, no_wrap=column == "tier")
    for tier in stats["tiers"]:
        table.add_row(f"{tier['tier']} {tier['name']}", str(tier["entries"]), str(tier["bytes"]),
                      str(tier["hits"]),
                      str(tier["misses"]), f"{tier['hit_ratio']:.2f}", str(tier["evictions"]),
                      str(tier["corrupt"]))  # fmt: skip
    console = Console()
    console.print(table)
    console.print(f"cached files: {stats['cached_files']}; dedup ratio {stats['dedup_ratio']:.2f}; "
                  f"read from origins to fill it: {stats['origin_bytes']} bytes")  # fmt: skip


# -- pins for offline ---------------------------------------------------------------------


def _pin_paths(args: argparse.Namespace) -> list[str]:
    """The paths *args* name, inside one mount (which becomes args.mountpoint)."""
    relpaths: list[str] = []
    for given in args.paths:
        mountpoint, relpath = path_in_mount(given, args.mountpoint)
        if args.mountpoint is not None and os.path.abspath(args.mountpoint) != str(mountpoint):
            raise CLIError(f"{given} is in the mount {mountpoint}, not in {args.mountpoint}: "
                           "pin the tracks of one mount at a time", EXIT_USAGE)  # fmt: skip
        args.mountpoint = mountpoint
        relpaths.append(relpath)
    return relpaths


def _pins(args: argparse.Namespace) -> int:
    action = args.cache_command
    paths = _pin_paths(args) if action != "pins" else []
    if action == "pin" and not (paths or args.collection or args.search):
        raise CLIError("name what to pin: PATH..., --collection NAME or --search QUERY",
                       EXIT_USAGE)  # fmt: skip
    if action == "unpin" and not (paths or args.collection or args.search or args.all):
        raise CLIError("name what to unpin: PATH..., --collection NAME, --search QUERY or --all",
                       EXIT_USAGE)  # fmt: skip
    with daemon_client(args) as client:
        if action == "pins":
            result = client.pins()
        elif action == "unpin":
            result = client.unpin(paths, args.collection, args.search, everything=args.all)
        else:
            result = _pin(client, paths, args)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif action == "pins":
        _print_pins(result)
    elif action == "unpin":
        print(f"dropped {result['requests']} pins: {result['tracks_unpinned']} tracks are "
              f"no longer pinned (they may be evicted), {result['pinned_tracks']} still "
              "are")  # fmt: skip
    else:
        _print_pinned(result, args.wait)
    return EXIT_FAILED if action == "pin" and result["failed"] else EXIT_OK


def _pin(client: Any, paths: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from musicfs.cli.progress import follow, last

    updates = client.pin(paths, args.collection, args.search, wait=args.wait)
    if args.wait:
        updates = follow(updates, "pinning", args.json, total="files", completed="done")
    final = last(updates)
    if not final.get("finished"):
        raise CLIError("the daemon stopped before the pin finished; run it again")
    return final


def size_text(size: int) -> str:
    """*size* bytes for people: 1.5 MiB."""
    value, unit = float(size), "bytes"
    for name in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, name
    return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def _print_pinned(result: dict[str, Any], waited: bool) -> None:
    print(f"pinned {result['tracks']} tracks ({size_text(result['bytes'])}); "
          f"{result['pinned_tracks']} tracks pinned in all, {size_text(result['pinned_bytes'])} "
          f"of pin_limit {size_text(result['pin_limit'])}")  # fmt: skip
    if waited:
        print(f"{result['done']} of {result['files']} in the cache ({result['already_cached']} "
              f"were already, {result['copied_bytes']} bytes copied)")  # fmt: skip
        for problem in result["failed"]:
            print(f"failed (copied once its origin answers): {problem}")
    else:
        print("the daemon copies them into the cache in the background "
              "(musicfs cache pins shows how far it got)")  # fmt: skip


def _print_pins(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"pins (pin_limit {size_text(result['pin_limit'])})")
    for column in ("pinned", "tracks", "size", "in the cache"):
        table.add_column(column, no_wrap=column != "pinned")
    for pin in result["pins"]:
        what = pin["value"] or "/" if pin["kind"] == "path" else f"{pin['kind']}: {pin['value']}"
        present = f"{pin['present_tracks']} tracks, {size_text(pin['present_bytes'])}"
        table.add_row(what, str(pin["tracks"]), size_text(pin["bytes"]), present)
    table.add_row("all pins", str(result["tracks"]), size_text(result["bytes"]),
                  f"{result['present_tracks']} tracks, {size_text(result['present_bytes'])}",
                  style="bold")  # fmt: skip
    console = Console()
    if not result["pins"]:
        console.print("nothing is pinned (musicfs cache pin PATH | --collection NAME | "
                      "--search QUERY)")  # fmt: skip
        return
    console.print(table)
