"""``musicfs origin list|health|rescan``: the origins of a running mount."""

from __future__ import annotations

import argparse
import json
from typing import Any

from musicfs.cli.common import EXIT_FAILED, EXIT_OK, CLIError, daemon_client


def add_parser(sub: Any, config_args: Any) -> None:
    origin = sub.add_parser("origin", help="origins of a mount: list, health, rescan")
    actions = origin.add_subparsers(dest="origin_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="origins with their settings, health and tracks")
    health = actions.add_parser("health", help="one origin's health: failures, last error...")
    health.add_argument("origin", help="the origin id")
    rescan = actions.add_parser("rescan", help="scan an origin (all: no id) again, with progress")
    rescan.add_argument("origin", nargs="?", default="")
    for action in (listing, health, rescan):
        config_args(action)
        action.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_origin(args: argparse.Namespace) -> int:
    with daemon_client(args) as client:
        if args.origin_command == "list":
            result: Any = client.origins()
        elif args.origin_command == "health":
            result = client.origin_health(args.origin)
        else:
            return _rescan(client.rescan(args.origin), args.json)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif args.origin_command == "list":
        _print_list(result)
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
    return EXIT_OK


def _rescan(updates: Any, quiet: bool) -> int:
    from musicfs.cli.progress import follow

    finished = [u for u in follow(updates, "scanning", quiet, total="", completed="seen",
                                  describe="origin") if u["finished"]]  # fmt: skip
    if not finished:
        raise CLIError("the daemon stopped before the rescan finished")
    if quiet:
        print(json.dumps(finished, indent=2, sort_keys=True))
    for report in [] if quiet else finished:
        if report.get("forwarded"):  # another mount scans it (a shared catalog)
            print(f"{report['origin']}: {report['forwarded']}")
            continue
        state = "complete" if report["complete"] else f"INCOMPLETE: {report['error']}"
        print(f"{report['origin']}: {report['seen']} files, {report['added']} added, "
              f"{report['changed']} changed, {report['removed']} removed ({state})")  # fmt: skip
    return EXIT_OK if all(r["complete"] for r in finished) else EXIT_FAILED


def _print_list(origins: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="origins")
    for column in ("id", "type", "location", "priority", "online", "tracks", "limits"):
        table.add_column(column)
    for o in origins:
        limits = f"{o['max_requests']} requests, timeout {o['timeout_seconds']:g} s"
        if o["bandwidth"]:
            limits += f", {o['bandwidth']} B/s"
        table.add_row(o["id"], o["type"], o["location"], str(o["priority"]),
                      "yes" if o["online"] else "[red]no[/]", str(o["tracks"]), limits)  # fmt: skip
    Console().print(table)
