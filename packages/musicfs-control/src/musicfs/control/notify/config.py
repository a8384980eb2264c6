"""``[[notify]]`` tables of the config file → `NotifyConfig`: the media servers
told when folders of the mount change.

One table per server::

    [[notify]]
    type = "mpd"                   # mpd | jellyfin | plex | navidrome
    id = "living-room"             # names it in logs and the credentials store; default: type
    host = "localhost"             # mpd: host and port (default 6600), or
    socket = "/run/mpd/socket"     #      the path of its Unix socket
    root = "musicfs"               # mpd: where the mount sits in MPD's music_directory ("" = it is)

    [[notify]]
    type = "jellyfin"              # also "plex" (+ section = <library section id>)
    url = "http://jellyfin.local:8096"
    path_prefix = "/media/music"   # where the server sees the mount; default: the mountpoint

    [[notify]]
    type = "navidrome"             # Subsonic startScan: always the whole library
    url = "http://navidrome.local:4533"
    user = "admin"

Common keys: ``debounce`` (seconds to gather changes before telling, default
2), ``max_paths`` (folders named in one round, default 20; more means the
whole library), ``retries`` (default 5), ``backoff`` (first wait, doubling up
to 60 s, default 1), ``timeout`` (seconds per request, default 10).

Secrets never go in this file: MPD's password (key ``password``), Jellyfin's
and Plex's token (key ``token``) and Navidrome's password (key ``password``)
are read from the credentials store under the entry's id
(`musicfs.core.secrets.credentials`), e.g. ``MUSICFS_SECRET_JELLYFIN_TOKEN``.
A secret-like key here is refused, and so is a URL with a password in it.
"""

from __future__ import annotations

import enum
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musicfs.control.webhookconfig import ENTRY_ID, SECRETISH
from musicfs.core.secrets.credentials import env_var_name
from musicfs.core.values import (
    ConfigError,
    Setting,
    check_setting,
    int_range,
    parse_seconds,
    parse_str,
)

#: No wait between two attempts is longer than this (seconds).
BACKOFF_CAP = 60.0


class ServerType(enum.StrEnum):
    MPD = "mpd"
    JELLYFIN = "jellyfin"
    PLEX = "plex"
    NAVIDROME = "navidrome"


#: The credentials-store key of each type's secret (under the entry's id).
SECRET_KEYS = {
    ServerType.MPD: "password",
    ServerType.JELLYFIN: "token",
    ServerType.PLEX: "token",
    ServerType.NAVIDROME: "password",
}


@dataclass(frozen=True)
class NotifyConfig:
    """One media server to tell of changed folders."""

    type: ServerType
    id: str
    # mpd
    host: str = "localhost"
    port: int = 6600
    socket: str = ""  # a Unix socket path: used instead of host and port
    root: str = ""  # the mount's folder inside MPD's music_directory
    # jellyfin, plex, navidrome
    url: str = ""
    path_prefix: str = ""  # the mount's path as the server sees it; "" = the mountpoint
    section: int = 0  # plex: the library section id
    user: str = ""  # navidrome
    # all
    debounce: float = 2.0
    max_paths: int = 20
    retries: int = 5
    backoff: float = 1.0
    timeout: float = 10.0

    @property
    def secret_key(self) -> str:
        return SECRET_KEYS[self.type]

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number *retry* (1, 2, ...)."""
        return min(self.backoff * 2.0 ** (retry - 1), BACKOFF_CAP)

    def describe(self) -> str:
        """Where it is, for logs (no secret: URLs with one are refused)."""
        if self.type is ServerType.MPD:
            return self.socket or f"{self.host}:{self.port}"
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _type(value: Any) -> ServerType:
    text = parse_str(value).strip().lower()
    try:
        return ServerType(text)
    except ValueError:
        kinds = ", ".join(t.value for t in ServerType)
        raise ValueError(f"expected one of {kinds}, got {value!r}") from None


def _url(value: Any) -> str:
    text = parse_str(value).strip().rstrip("/")
    url = urllib.parse.urlsplit(text)
    if url.scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    if url.password is not None or url.username is not None:
        raise ValueError(
            "the URL has a user or password in it, where logs would show it; put the "
            "secret in the credentials store instead"
        )
    if not url.hostname:
        raise ValueError(f"the host is missing in {text!r}")
    try:
        url.port  # noqa: B018 - parses the port, raising ValueError if it is not one
    except ValueError:
        raise ValueError(f"the port of {text!r} is not a number from 0 to 65535") from None
    if url.query or url.fragment:
        raise ValueError(f"give the server's base URL, without ?query or #fragment: {text!r}")
    return text


def _host(value: Any) -> str:
    text = parse_str(value).strip()
    if not text or "/" in text or " " in text:
        raise ValueError(f"expected a host name or address, got {value!r}")
    return text


def _socket(value: Any) -> str:
    text = parse_str(value).strip()
    if not text.startswith("/"):
        raise ValueError(f"expected the absolute path of MPD's socket, got {value!r}")
    return text


def _relative(value: Any) -> str:
    text = parse_str(value).strip().strip("/")
    if any(part in ("", ".", "..") for part in text.split("/")) and text:
        raise ValueError(f"expected a folder inside MPD's music_directory, got {value!r}")
    return text


def _prefix(value: Any) -> str:
    text = parse_str(value).strip()
    if not text:
        return ""
    if not (text.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", text) or text.startswith("\\\\")):
        raise ValueError(
            f"expected the absolute path where the server sees the mount "
            f"(e.g. /media/music), got {value!r}"
        )
    return text.rstrip("/\\") or "/"


def _positive_seconds(value: Any) -> float:
    number = parse_seconds(value)
    if number <= 0:
        raise ValueError(f"expected a number of seconds above 0, got {value!r}")
    return number


TABLE_KEYS: dict[str, Setting] = {
    "type": Setting("type", _type, "mpd, jellyfin, plex or navidrome"),
    "id": Setting("id", parse_str, "names it in logs and the credentials store"),
    "host": Setting("host", _host, "mpd: host name or address (default localhost)"),
    "port": Setting("port", int_range(1, 65535), "mpd: TCP port (default 6600)"),
    "socket": Setting("socket", _socket, "mpd: path of its Unix socket, instead of host/port"),
    "root": Setting("root", _relative, "mpd: the mount's folder in music_directory ('' = it)"),
    "url": Setting("url", _url, "the server's base URL, e.g. http://host:8096"),
    "path_prefix": Setting("path_prefix", _prefix, "the mount's path as the server sees it"),
    "section": Setting("section", int_range(1, 1 << 31), "plex: the library section id"),
    "user": Setting("user", parse_str, "navidrome: the user name"),
    "debounce": Setting("debounce", parse_seconds, "seconds to gather changes (default 2)"),
    "max_paths": Setting("max_paths", int_range(1, 1000), "folders per round; more = all"),
    "retries": Setting("retries", int_range(0, 60), "retries after the first attempt"),
    "backoff": Setting("backoff", parse_seconds, "first wait before a retry (s), doubling"),
    "timeout": Setting("timeout", _positive_seconds, "seconds per request"),
}

#: The keys each type takes besides the common ones, and those it needs.
_TYPE_KEYS = {
    ServerType.MPD: ({"host", "port", "socket", "root"}, set()),
    ServerType.JELLYFIN: ({"url", "path_prefix"}, {"url"}),
    ServerType.PLEX: ({"url", "path_prefix", "section"}, {"url", "section"}),
    ServerType.NAVIDROME: ({"url", "user"}, {"url", "user"}),
}
_COMMON = {"type", "id", "debounce", "max_paths", "retries", "backoff", "timeout"}


def file_notify(path: Path, value: Any) -> tuple[NotifyConfig, ...]:
    """The ``[[notify]]`` tables of config file *path*."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{path}: 'notify' must be a list of [[notify]] tables")
    result = [_entry(f"{path}: [[notify]] #{i + 1}", table) for i, table in enumerate(value)]
    ids = [entry.id for entry in result]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(
            f"{path}: [[notify]] id(s) {dupes} are used more than once; give each "
            'entry its own id = "..."'
        )
    return tuple(result)


def _entry(where: str, table: dict[str, Any]) -> NotifyConfig:
    if "type" not in table:
        kinds = ", ".join(t.value for t in ServerType)
        raise ConfigError(f"{where}: 'type' is missing; set type = one of {kinds}")
    kind = check_setting(TABLE_KEYS["type"], table["type"], f"{where}: type: ")
    where = f"{where} ({kind})"
    allowed, required = _TYPE_KEYS[kind]
    unknown = set(table) - _COMMON - allowed
    secretish = sorted(k for k in unknown if SECRETISH.search(k))
    if secretish:
        entry_id = table.get("id", kind.value)
        name = env_var_name(entry_id, SECRET_KEYS[kind]) if isinstance(entry_id, str) else ""
        raise ConfigError(
            f"{where}: {secretish} cannot be set in the config file; the "
            f"{SECRET_KEYS[kind]} is read from the credentials store under the entry's id: "
            + (f"the environment variable {name}, " if name else "")
            + "the credentials file (0600) or the keyring (see docs/origins.md)"
        )
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; a {kind.value} entry takes "
            f"{', '.join(sorted(_COMMON | allowed))}"
        )
    for key in sorted(required - set(table)):
        raise ConfigError(f"{where}: {key!r} is missing ({TABLE_KEYS[key].doc})")
    if kind is ServerType.MPD and "socket" in table and ({"host", "port"} & set(table)):
        raise ConfigError(f"{where}: give either socket or host/port, not both")
    values = {k: check_setting(TABLE_KEYS[k], v, f"{where}: {k}: ") for k, v in table.items()}
    values.setdefault("id", kind.value)
    if not ENTRY_ID.match(values["id"]):
        raise ConfigError(
            f"{where}: id {values['id']!r} must be 1-64 letters, digits, '.', '_' or '-'"
        )
    if kind is ServerType.NAVIDROME and not values["user"].strip():
        raise ConfigError(f"{where}: 'user' is empty; name the Navidrome user to scan as")
    return NotifyConfig(**values)
