"""``musicfs events``: print a mount's events as they happen, until Ctrl-C.

One line per event for people (time, type, origin, path, details), or one JSON
object per line with ``--json`` for scripts (``jq`` reads it as a stream).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from musicfs.cli.common import EXIT_OK, daemon_client


def add_parser(sub: Any, config_args: Any) -> None:
    from musicfs.core.events import EventType

    events = sub.add_parser(
        "events",
        help="print events as they happen, until Ctrl-C",
        description="Event types: " + ", ".join(t.value for t in EventType),
    )
    events.add_argument(
        "mountpoint", type=Path, nargs="?", metavar="MOUNTPOINT", help="the mount (same as --mount)"
    )
    config_args(events)
    events.add_argument("--type", action="append", default=[], dest="types", metavar="TYPE",
                        help="only this event type (repeat for several)")  # fmt: skip
    events.add_argument("--origin", default="", help="only events about this origin id")
    events.add_argument("--json", action="store_true", help="one JSON object per line")


def cmd_events(args: argparse.Namespace) -> int:
    with daemon_client(args) as client:
        for event in client.events(args.types, args.origin):
            print(json.dumps(event, sort_keys=True) if args.json else _line(event), flush=True)
    print("musicfs: the daemon stopped", file=sys.stderr)
    return EXIT_OK


def _line(event: dict[str, Any]) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(event["time"]))
    details = " ".join(f"{k}={v}" for k, v in sorted(event.get("details", {}).items()))
    where = " ".join(part for part in (event["origin"], event["path"]) if part)
    return f"{when} {event['type']:<16} {where} {details}".rstrip()
