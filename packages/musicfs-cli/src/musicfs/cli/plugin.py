"""``musicfs plugin list|load|unload|reload``: a running mount's plugins (SPEC §8)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from musicfs.cli.common import EXIT_OK, daemon_client


def add_parser(sub: Any, config_args: Any) -> None:
    plugin = sub.add_parser("plugin", help="list, load, unload or reload plugins of a mount")
    actions = plugin.add_subparsers(dest="plugin_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="loaded plugins, and those that failed")
    load = actions.add_parser("load", help="load a .py file, package, .wasm/.wat, or a folder")
    load.add_argument("path", type=Path)
    unload = actions.add_parser("unload", help="unload a plugin by name")
    unload.add_argument("name")
    reload = actions.add_parser("reload", help="load a plugin's code again (all: no name)")
    reload.add_argument("name", nargs="?", default="")
    for action in (listing, load, unload, reload):
        config_args(action)
        action.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_plugin(args: argparse.Namespace) -> int:
    with daemon_client(args) as client:
        if args.plugin_command == "list":
            result = client.plugins()
        elif args.plugin_command == "load":
            result = client.load_plugin(str(args.path.resolve()))
        elif args.plugin_command == "unload":
            result = client.unload_plugin(args.name)
        else:
            result = client.reload_plugin(args.name)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        _print(result, args.plugin_command)
    return EXIT_OK


def _print(result: dict[str, Any], action: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if action != "list":
        done = {"load": "loaded", "unload": "unloaded", "reload": "reloaded"}[action]
        console.print(f"{done}: {', '.join(result['changed']) or 'nothing'}")
    table = Table(title="plugins")
    for column in ("name", "version", "api", "kinds", "host", "handles", "source"):
        table.add_column(column)
    for plugin in result["plugins"]:
        details = plugin.get("details", {})
        handles = details.get("extensions") or details.get("origin_type", "")
        kinds = ",".join(plugin["kinds"])
        table.add_row(plugin["name"], plugin["version"], plugin["api_version"], kinds,
                      plugin["host"], handles, plugin["source"])  # fmt: skip
    console.print(table)
    for failure in result.get("failures", []):
        console.print(f"[red]not loaded[/]: {failure['source']}: {failure['error']}")
