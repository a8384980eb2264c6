"""Keeping secrets out of logs and event details (SPEC NFR-13): the redaction registry.

`register_secret` adds a value; `redact` replaces every registered value by
``***`` in any text, and `SecretFilter` (set up by `install_redaction`) does
that to every log record -- message, arguments, traceback and stack -- before
any handler writes it. `redact_url` drops the password from a URL.

Boundaries: knows no credential store (`musicfs.core.secrets.credentials`
registers what it finds); imports nothing of MusicFS, so any module (the event
bus first) can redact without pulling in the store, keyring and TOML.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

#: What `redact` puts in place of a secret.
MASK = "***"
#: Values shorter than this are not registered: masking them would mangle logs.
MIN_SECRET_LENGTH = 4

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Have `redact` (and so `SecretFilter`) mask *value* from now on.

    Values shorter than 4 characters are ignored. The percent-encoded and the
    ``repr``-escaped forms of *value* are masked too, as they appear in URLs and
    in reprs of containers.
    """
    global _pattern
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    forms = {value, urllib.parse.quote(value, safe=""), repr(value)[1:-1]}
    forms = {form for form in forms if len(form) >= MIN_SECRET_LENGTH}
    with _lock:
        if forms <= _secrets:
            return
        _secrets.update(forms)
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(_secrets, key=lambda s: (-len(s), s))
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def clear_secrets() -> None:
    """Forget every registered secret (for tests)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def redact(text: str) -> str:
    """*text* with every registered secret replaced by ``***``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def redact_url(url: str) -> str:
    """*url* without the password of its user info: ``sftp://user:pw@host/x`` →
    ``sftp://user@host/x``, ``smb://:pw@host/share`` → ``smb://host/share``.

    The authority ends at the first ``/``, ``?`` or ``#`` (as in `urllib.parse`);
    a password holding those unencoded is not recognised, but registered secrets
    anywhere in *url* are masked as by `redact`.
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
        userinfo, at_sign, host = rest[:end].rpartition("@")
        if at_sign:
            user = userinfo.partition(":")[0]
            url = (
                f"{scheme}{sep}{user}@{host}{rest[end:]}"
                if user
                else f"{scheme}{sep}{host}{rest[end:]}"
            )
    return redact(url)


class SecretFilter(logging.Filter):
    """Masks registered secrets in log records: the message with its arguments,
    the traceback and the stack.

    The message is formatted first (``msg % args``), masked, and stored back
    with ``args = ()``. While any secret is registered, a traceback is rendered
    to ``exc_text`` here, masked, and ``exc_info`` is dropped so that no
    handler can render it again unmasked. The message and its arguments are
    left as they are when they hold no secret, and nothing is changed while no
    secret is registered. Attributes added with ``extra=`` are not masked. The
    filter never rejects a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception as exc:  # bad format arguments: do not let logging print them
            message = (
                f"{record.msg} [log arguments could not be formatted "
                f"({type(exc).__name__}): {record.args!r}]"
            )
            record.msg, record.args = redact(message), ()
        else:
            masked = redact(message)
            if masked != message:
                record.msg, record.args = masked, ()
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FORMATTER = logging.Formatter()
_FILTER = SecretFilter()


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Mask registered secrets in everything logged from now on.

    Adds a `SecretFilter` to *logger* (default: the root logger) and to each of
    its handlers, and wraps the log record factory so that every record, from
    any logger to any handler -- including handlers added later, such as by a
    later logging setup -- is masked as it is made. Calling it again is harmless.
    """
    target = logging.getLogger() if logger is None else logger
    for filterer in (target, *target.handlers):
        if not any(isinstance(f, SecretFilter) for f in filterer.filters):
            filterer.addFilter(_FILTER)
    with _lock:
        current = logging.getLogRecordFactory()
        if not getattr(current, "_musicfs_redacting", False):
            logging.setLogRecordFactory(_redacting_factory(current))


def _redacting_factory(inner: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = inner(*args, **kwargs)
        _FILTER.filter(record)
        return record

    factory._musicfs_redacting = True  # type: ignore[attr-defined]
    return factory
