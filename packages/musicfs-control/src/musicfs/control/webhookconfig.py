"""Webhook settings: ``[[webhooks]]`` tables of the config file → `WebhookConfig`.

Each table names one receiver of the mount's events (SPEC FR-18.2)::

    [[webhooks]]
    id = "home-assistant"                  # names it (logs, counters, its secret)
    url = "https://hass.local:8123/api/webhook/musicfs"
    events = ["file.opened", "origin.health"]   # default []: every event type
    origin = "nas"                         # only events of this origin; default: any
    timeout = 5                            # seconds per request
    retries = 5                            # retries after the first attempt
    backoff = 1                            # first delay (s); doubles, capped at 60 s

The signing secret never goes in this file: it is the key ``secret`` of the
hook's id in the credentials store (`musicfs.core.secrets.credentials`), e.g. the
environment variable ``MUSICFS_SECRET_HOME_ASSISTANT_SECRET``; a ``secret``
key here is refused, and so is a URL with a password in it. Delivery itself is
`musicfs.control.webhooks`.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musicfs.core.events import EventType, event_type
from musicfs.core.secrets.credentials import env_var_name
from musicfs.core.values import (
    ConfigError,
    Setting,
    check_setting,
    parse_nonneg_int,
    parse_seconds,
    parse_str,
)

#: The credentials-store key of a hook's signing secret.
SECRET_KEY = "secret"
#: No wait between two attempts is longer than this (seconds).
BACKOFF_CAP = 60.0
#: The most retries a hook may ask for (with the cap: about an hour of trying).
MAX_RETRIES = 60

#: What an entry id of a ``[[table]]`` (a hook, a media server) may be: it names the
#: entry in logs and its secret in the credentials store.
ENTRY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: A key that looks like a secret: refused in a config file, which is no place for one.
SECRETISH = re.compile(r"pass|secret|token|key|auth", re.IGNORECASE)


@dataclass(frozen=True)
class WebhookConfig:
    """One webhook: where events go, which ones, and how hard to try."""

    id: str
    url: str
    events: tuple[EventType, ...] = ()  # empty: every type
    origin: str = ""  # empty: events of any origin (and those of none)
    timeout: float = 5.0  # seconds for each request (connect, and each wait for the answer)
    retries: int = 5  # attempts after the first one, on connection errors, 5xx and 429
    backoff: float = 1.0  # wait before the first retry; doubles each time, up to BACKOFF_CAP

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number *retry* (1, 2, ...)."""
        return min(self.backoff * 2.0 ** (retry - 1), BACKOFF_CAP)


def _url(value: Any) -> str:
    text = parse_str(value).strip()
    url = urllib.parse.urlsplit(text)
    if url.scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    if url.password is not None:
        raise ValueError(
            "the URL has a password in it, where logs would show it; put the hook's "
            "signing secret in the credentials store instead"
        )
    if not url.hostname:
        raise ValueError(f"the host is missing in {text!r}")
    try:
        url.port  # noqa: B018 - parses the port, raising ValueError if it is not one
    except ValueError:
        raise ValueError(f"the port of {text!r} is not a number from 0 to 65535") from None
    if url.fragment:
        raise ValueError(f"a webhook URL has no use for a #fragment: {text!r}")
    return text


def _events(value: Any) -> tuple[EventType, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of event types, got {value!r}")
    result: list[EventType] = []
    for name in value:
        kind = event_type(name)  # ValueError listing the valid names
        if kind not in result:
            result.append(kind)
    return tuple(result)


def _origin(value: Any) -> str:
    text = parse_str(value)
    if text and not ENTRY_ID.match(text):
        raise ValueError(f"expected an origin id (letters, digits, '.', '_', '-'), got {text!r}")
    return text


def _positive_seconds(value: Any) -> float:
    number = parse_seconds(value)
    if number <= 0:
        raise ValueError(f"expected a number of seconds above 0, got {value!r}")
    return number


def _retries(value: Any) -> int:
    number = parse_nonneg_int(value)
    if number > MAX_RETRIES:
        raise ValueError(f"expected at most {MAX_RETRIES} retries, got {value!r}")
    return number


TABLE_KEYS: dict[str, Setting] = {
    "id": Setting("id", parse_str, "names the hook in logs and counters, and its secret"),
    "url": Setting("url", _url, "http:// or https:// URL the events are POSTed to"),
    "events": Setting("events", _events, "event types to send; [] = all"),
    "origin": Setting("origin", _origin, "only events of this origin; '' = any"),
    "timeout": Setting("timeout", _positive_seconds, "seconds per request"),
    "retries": Setting("retries", _retries, "retries after the first attempt"),
    "backoff": Setting("backoff", parse_seconds, "first wait before a retry (s), doubling"),
}


def file_webhooks(path: Path, value: Any) -> tuple[WebhookConfig, ...]:
    """The ``[[webhooks]]`` tables of config file *path*."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{path}: 'webhooks' must be a list of [[webhooks]] tables")
    result = []
    for i, table in enumerate(value):
        where = f"{path}: [[webhooks]] #{i + 1}"
        unknown = set(table) - set(TABLE_KEYS)
        secretish = sorted(k for k in unknown if SECRETISH.search(k))
        if secretish:
            hook = table.get("id")
            name = env_var_name(hook, SECRET_KEY) if isinstance(hook, str) else ""
            raise ConfigError(
                f"{where}: {secretish} cannot be set in the config file; the signing secret "
                f"is the key {SECRET_KEY!r} of the hook's id in the credentials store: "
                + (f"the environment variable {name}, " if name else "")
                + "the credentials file (0600) or the keyring (see docs/origins.md)"
            )
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {sorted(unknown)}; use {', '.join(TABLE_KEYS)}"
            )
        for required in ("id", "url"):
            if required not in table:
                raise ConfigError(f"{where}: {required!r} is missing ({TABLE_KEYS[required].doc})")
        values = {k: check_setting(TABLE_KEYS[k], v, f"{where}: {k}: ") for k, v in table.items()}
        if not ENTRY_ID.match(values["id"]):
            raise ConfigError(
                f"{where}: id {values['id']!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        result.append(WebhookConfig(**values))
    ids = [hook.id for hook in result]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"{path}: webhook id(s) {dupes} are used more than once")
    return tuple(result)
