"""``musicfs collection list|add|remove``: the smart collections of /.collections.

``musicfs collection add "90s rock" genre=Rock year_from=1990 year_to=1999``
defines a collection in the shared catalog (``[catalog] shared``): every mount
of it shows it in /.collections beside the collections of its own config file.
The keys are those of a ``[[collections]]`` table; ``add`` again changes it,
``remove`` drops it. Without a shared catalog, collections live in the config
file only.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from musicfs.cli.common import EXIT_OK, EXIT_USAGE, CLIError, daemon_client

_KEYS = (
    "artist, albumartist, album, genre, format, year_from, year_to, added_within_days, "
    "played_within_days, min_plays, order (artist, year, added, played, plays), limit"
)


def add_parser(sub: Any, config_args: Any) -> None:
    collection = sub.add_parser("collection", help="list, define or remove smart collections")
    actions = collection.add_subparsers(dest="collection_command", required=True, metavar="ACTION")
    list_ = actions.add_parser("list", help="the collections /.collections shows")
    add = actions.add_parser(
        "add",
        help="define a collection in the shared catalog: NAME KEY=VALUE...",
        description="Define (or change) a collection in the shared catalog; every mount "
        "of it shows it in /.collections.",
        epilog=f"keys: {_KEYS}",
    )
    add.add_argument("name")
    add.add_argument("rule", nargs="*", metavar="KEY=VALUE")
    remove = actions.add_parser("remove", help="drop a collection of the shared catalog")
    remove.add_argument("name")
    for action in (list_, add, remove):
        config_args(action)
        action.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_collection(args: argparse.Namespace) -> int:
    with daemon_client(args) as client:
        if args.collection_command == "add":
            listed = client.set_collection(args.name, _rule(args.rule))
        elif args.collection_command == "remove":
            listed = client.set_collection(args.name, remove=True)
        else:
            listed = client.collections()
    if args.json:
        print(json.dumps(listed, indent=2, sort_keys=True))
        return EXIT_OK
    for item in listed:
        rule = " ".join(f"{k}={v}" for k, v in sorted(item.get("rule", {}).items()))
        print(f"{item['name']}  ({item['source']}) {rule}".rstrip())
    return EXIT_OK


def _rule(items: list[str]) -> dict[str, str]:
    rule = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"{item!r}: write KEY=VALUE; keys: {_KEYS}", EXIT_USAGE)
        rule[key.strip().lower()] = value
    return rule
