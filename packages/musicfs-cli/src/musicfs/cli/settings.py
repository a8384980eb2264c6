"""``musicfs config show|set``: settings of a running mount (FR-17.4).

``set`` changes a setting until the daemon stops; the config file is not
written (put the change there too to keep it).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from musicfs.cli.common import EXIT_OK, daemon_client


def add_parser(sub: Any, config_args: Any) -> None:
    config = sub.add_parser("config", help="show or change settings of a running mount")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="the settings that can change while mounted")
    set_ = actions.add_parser("set", help="change one until the daemon stops")
    set_.add_argument("key", help="log_level, cache.limit or template")
    set_.add_argument("value")
    for action in (show, set_):
        config_args(action)
        action.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_config(args: argparse.Namespace) -> int:
    with daemon_client(args) as client:
        if args.config_command == "set":
            result = client.set_config(args.key, args.value)
        else:
            result = client.get_config()
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        for key, value in sorted(result["values"].items()):
            print(f"{key} = {value}")
    return EXIT_OK
