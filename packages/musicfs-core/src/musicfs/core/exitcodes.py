"""Exit statuses of ``musicfs`` and its daemon: the one table of them.

The command (`musicfs.cli`) returns these, the daemon (`musicfs.control.daemon`)
returns them from ``musicfs mount --foreground`` (and so to systemd), and the
``musicfs --help`` epilog and the README print `EXIT_CODES`. Scripts rely on
them: a new meaning gets a new number, never an old one.
"""

from __future__ import annotations

import enum
import textwrap


class ExitCode(enum.IntEnum):
    OK = 0
    #: The operation was tried and did not succeed (or found nothing / damage).
    FAILED = 1
    #: Bad usage or configuration, or a request refused before anything changed.
    USAGE = 2
    #: No daemon answers for the mount named (or none is running).
    NO_DAEMON = 3
    #: Interrupted with Ctrl-C.
    INTERRUPTED = 130


#: What each status means, in the words of ``musicfs --help``.
EXIT_CODES: dict[ExitCode, str] = {
    ExitCode.OK: "done",
    ExitCode.FAILED: "the operation failed, or found nothing or damage: search without a "
    "match, verify that could not read every file, cache verify dropping damaged chunks, "
    "a rescan that could not list everything, a mount whose daemon stopped before ready",
    ExitCode.USAGE: "bad usage or configuration, or refused before anything changed: a "
    "mountpoint that is missing, not empty or already mounted, an origin that does not "
    "exist, a cache dir in use, a control socket of another user or in a folder other "
    "users could use, a request the daemon refused (the message says why)",
    ExitCode.NO_DAEMON: "no daemon answers for that mount (none is running)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


def exit_codes_help(width: int = 79) -> str:
    """The exit code table as wrapped lines of text, for ``--help``."""
    lines = ["exit codes:"]
    for code, meaning in EXIT_CODES.items():
        lines += textwrap.wrap(
            meaning, width, initial_indent=f"  {int(code):<4}", subsequent_indent=" " * 6
        )
    return "\n".join(lines)
