"""``musicfs verify``: read every file whole and compare its content hash (FR-10.5).

Catches what size and mtime miss: a file rewritten in place whose mtime was put
back. The first run records each file's hash; later runs compare with it.
Changed files are scanned again by the daemon. Exit code 0 when every file was
read (changed or not), 1 when some could not be.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from musicfs.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CLIError,
    daemon_client,
)
from musicfs.cli.progress import follow, last


def add_parser(sub: Any, config_args: Any) -> None:
    verify = sub.add_parser(
        "verify", help="read every file whole and check its content hash (slow: reads it all)"
    )
    verify.add_argument(
        "mountpoint", type=Path, nargs="?", metavar="MOUNTPOINT", help="the mount (same as --mount)"
    )
    config_args(verify)
    verify.add_argument("--origin", default="", help="only this origin id")
    verify.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_verify(args: argparse.Namespace) -> int:
    with daemon_client(args) as client:
        updates = follow(client.verify_content(args.origin), "verifying", args.json,
                         total="files", completed="checked")  # fmt: skip
        final = last(updates)
    if not final.get("done"):
        raise CLIError("the daemon stopped before the verification finished")
    if args.json:
        print(json.dumps(final, indent=2))
    else:
        _print_summary(final)
    return EXIT_FAILED if final["failed"] else EXIT_OK


def _print_summary(final: dict[str, Any]) -> None:
    changed = len(final["changed"])
    print(f"{final['checked']} of {final['files']} files read ({final['bytes']} bytes); "
          f"{final['recorded']} hashed for the first time, {changed} changed")  # fmt: skip
    for path in final["changed"]:
        print(f"changed (being rescanned): {path}")
    for problem in final["failed"]:
        print(f"could not read: {problem}")
