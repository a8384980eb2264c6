"""The ``musicfs`` command's entry point.

Job: for ``musicfs mount`` in the background, fork the daemon-to-be before
anything else loads (`musicfs.cli.launch`), then run the command
(`musicfs.cli.main.main`) and kill that process if the command did not hand
it a mount; a mount command then ends without tearing its modules down.
Imports nothing but `musicfs.cli.launch` before the fork.
"""

from __future__ import annotations

import contextlib
import os
import sys

from musicfs.cli import launch

#: Arguments after which the command does not mount in the background.
_NOT_IN_BACKGROUND = frozenset({"-f", "--foreground", "-h", "--help"})


def main() -> int:
    """The ``musicfs`` command."""
    argv = sys.argv[1:]
    mounting = bool(argv) and argv[0] == "mount" and not _NOT_IN_BACKGROUND.intersection(argv)
    if mounting:
        launch.fork_early()
    try:
        from musicfs.cli.main import main as cli_main

        code = cli_main()
    finally:
        unused = launch.take_early_daemon()
        if unused is not None:
            unused.discard()
    if mounting:
        # The daemon runs (or the refusal is printed): nothing of this process is
        # left to tidy, and tearing down its modules takes 15-20 ms that a script
        # running `musicfs mount && ls` waits for.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    return code
