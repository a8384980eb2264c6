"""The one root of MusicFS's errors, and the line between expected errors and bugs.

Every exception class MusicFS defines (in all four packages) derives from
`MusicFSError`. A `MusicFSError` is *expected*: bad input, an unreachable
origin, a refused config, a damaged cache file... Its message is for a person:
it names the thing and, where there is one, the fix. Where an error reaches a
person (the CLI, the daemon's log and readiness report) a `MusicFSError` is
shown as its message alone, never with a traceback.

Anything else that escapes (a `KeyError`, an `AttributeError`...) is a bug: it
is logged or printed with its traceback, so it can be reported and fixed.

A few exceptions are no errors at all but signals inside one module (a
"stop", a "cannot do this here, fall back"): they derive from `Signal`, which
is not a `MusicFSError`, so one that escapes by mistake is reported as the bug
it is, with its traceback.

Classes keep a second, standard base where callers rely on it (`OSError` for
errno-carrying errors, `ValueError` for refused values): ``class
ConfigError(MusicFSError, ValueError)``.

Boundaries: the bottom layer of core; imports nothing of MusicFS.
"""

from __future__ import annotations

__all__ = ["MusicFSError", "Signal"]


class MusicFSError(Exception):
    """An expected error: its message tells a person what is wrong and what to do."""


class Signal(Exception):
    """Control flow inside one module (caught there); escaping it is a bug."""
