"""``musicfs search QUERY``: find tracks by their tags (FR-14).

Typos and accents are forgiven ("metalica", "beyonce"); exact artist or title
matches come first. The same results are under ``MOUNTPOINT/.search/QUERY/``
as symlinks into the tree.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from musicfs.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CLIError, daemon_client


def add_parser(sub: Any, config_args: Any) -> None:
    search = sub.add_parser("search", help="find tracks by their tags")
    search.add_argument("query", nargs="+", help="words to look for")
    search.add_argument("--limit", type=_limit, default=50, help="at most this many (default 50)")
    config_args(search)
    search.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_search(args: argparse.Namespace) -> int:
    query = " ".join(args.query).strip()
    if not query:
        raise CLIError(
            "the query is empty: give words to look for, e.g. musicfs search metallica",
            EXIT_USAGE,
        )
    with daemon_client(args) as client:
        result = client.search(query, args.limit)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        for hit in result["hits"]:
            print(hit["path"])
        if not result["hits"]:
            print(f"musicfs: no track matches {query!r}", file=sys.stderr)
    return EXIT_OK if result["hits"] else EXIT_FAILED


def _limit(value: str) -> int:
    number = int(value) if value.isdigit() else 0
    if not 1 <= number <= 1000:
        raise argparse.ArgumentTypeError(f"limit must be between 1 and 1000, got {value!r}")
    return number
