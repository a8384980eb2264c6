"""``musicfs tag show|set|clear|rate|lookup``: the metadata overlay of a file in a mount (FR-5.3).

``musicfs tag set ~/mnt/music/Artist/Album/01.flac artist="New Name" year=1997``
changes what the file is served with (its header) and where it is in the tree;
the origin file is never written. ``FIELD=`` removes a tag; ``tag clear`` drops
overrides so the file's own tags show again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from musicfs.cli.common import EXIT_OK, EXIT_USAGE, CLIError, daemon_client, path_in_mount

_PATH_HELP = "a file inside a mount (with --mount: may be relative to it)"


def add_parser(sub: Any, config_args: Any) -> None:
    from musicfs.core.model import OVERRIDABLE_FIELDS

    fields = ", ".join(OVERRIDABLE_FIELDS)
    tag = sub.add_parser("tag", help="show or override the tags a file is served with")
    actions = tag.add_subparsers(dest="tag_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="the file's own tags, overrides and result")
    show.add_argument("path", type=Path, help=_PATH_HELP)
    set_ = actions.add_parser(
        "set",
        help="override tags: FIELD=VALUE (FIELD= removes it)",
        description="Override tags of a file as it is served (the origin file is never "
        "written). FIELD=VALUE sets a field, FIELD= removes it.",
        epilog=f"fields: {fields} (year, track, tracktotal, disc and disctotal are "
        "whole numbers; compilation is 1 or 0)",
    )
    set_.add_argument("path", type=Path, help=_PATH_HELP)
    set_.add_argument("assignments", nargs="+", metavar="FIELD=VALUE")
    clear = actions.add_parser(
        "clear", help="drop overrides (all, or the fields named)", epilog=f"fields: {fields}"
    )
    clear.add_argument("path", type=Path, help=_PATH_HELP)
    clear.add_argument("fields", nargs="*", metavar="FIELD")
    rate = actions.add_parser(
        "rate",
        help="rate a file 0-100 (20 a star), or 'none'",
        description="Rate a file 0-100 (20 a star; 'none' removes the rating). With a "
        "shared catalog every machine sees it.",
    )
    rate.add_argument("path", type=Path, help=_PATH_HELP)
    rate.add_argument("rating", help="0-100, or none")
    lookup = actions.add_parser("lookup", help="ask the metadata plugins about a file")
    lookup.add_argument("path", type=Path, help=_PATH_HELP)
    lookup.add_argument("--apply", action="store_true", help="make the first answer overrides")
    for action in (show, set_, clear, rate, lookup):
        config_args(action)
        action.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_tag(args: argparse.Namespace) -> int:
    if args.tag_command == "clear":
        args.fields = _fields(args.fields)
    args.mountpoint, relpath = path_in_mount(args.path, args.mountpoint)
    if not relpath:
        raise CLIError(f"{args.path} is the mount itself; name a file inside it", EXIT_USAGE)
    with daemon_client(args) as client:
        if args.tag_command == "show":
            info = client.get_tags(relpath)
        elif args.tag_command == "set":
            info = client.set_tags(relpath, _assignments(args.assignments))
        elif args.tag_command == "rate":
            client.set_ratings([(relpath, _rating(args.rating))])
            info = client.get_tags(relpath)
        elif args.tag_command == "lookup":
            return _lookup(client.lookup_tags(relpath, args.apply), args)
        else:
            info = client.set_tags(relpath, {}, args.fields or ["*"])
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        _print(info, args.mountpoint)
    return EXIT_OK


def _rating(text: str) -> int | None:
    if text.strip().lower() in ("none", "-"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise CLIError(f"{text!r}: a rating is 0-100 (20 a star), or none", EXIT_USAGE)
    return value


def _assignments(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CLIError(f"{item!r}: write FIELD=VALUE (FIELD= removes the tag)", EXIT_USAGE)
        values[name.strip().lower()] = value
    return values


def _fields(names: list[str]) -> list[str]:
    from musicfs.core.model import OVERRIDABLE_FIELDS

    fields = [name.strip().lower() for name in names]
    for name in fields:
        if name not in OVERRIDABLE_FIELDS:
            raise CLIError(
                f"{name!r} is not a tag field; the fields are: {', '.join(OVERRIDABLE_FIELDS)}",
                EXIT_USAGE,
            )
    return fields


def _print(info: dict[str, Any], mountpoint: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"{mountpoint / info['path']}")
    console.print(f"from {info['origin']}: {info['relpath']}")
    overlaid = "yes" if info["overlaid"] else "no (this format is served unchanged)"
    console.print(f"header rewritten: {overlaid}" if info["overrides"] else "no overrides")
    plays = int(info.get("plays") or 0)  # int64 comes as a string in JSON
    if plays:
        at = float(info["last_played"] or 0)  # 0: imported plays of unknown date
        last = time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if at else "an unknown date"
        console.print(f"played {plays} time{'s' if plays != 1 else ''}, last on {last}")
    for before in info.get("moved_from") or []:
        console.print(f"moved from {before} (its overrides and plays came along)")
    if info.get("audio_id"):
        console.print(f"audio identity: {info['audio_id']}", style="dim")
    rating = info.get("rating", -1)
    if rating >= 0:
        console.print(f"rating: {rating}/100 ({rating / 20:g} stars)")
    sources = info.get("sources", {})
    table = Table()
    for column in ("field", "file", "override", "served", "source"):
        table.add_column(column)
    fields = sorted({*info["own"], *info["overrides"], *info["effective"]})
    for name in fields:
        override = info["overrides"].get(name)
        shown = "(removed)" if override == "" else (override or "")
        table.add_row(name, info["own"].get(name, ""), shown, info["effective"].get(name, ""),
                      sources.get(name, "") if name in info["overrides"] else "")  # fmt: skip
    console.print(table)


def _lookup(result: dict[str, Any], args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return EXIT_OK
    for proposal in result["proposals"]:
        fields = ", ".join(f"{k}={v}" for k, v in sorted(proposal["fields"].items()))
        print(f"{proposal['plugin']} ({proposal['source'] or 'no source given'}, "
              f"confidence {proposal['confidence']:.2f}): {fields}")  # fmt: skip
    for error in result["errors"]:
        print(f"failed: {error}")
    if not result["proposals"]:
        print("no metadata plugin knows this file")
    elif args.apply:
        _print(result["tags"], args.mountpoint)
    return EXIT_OK
