"""Origin settings: ``--origin`` URLs and ``[[origins]]`` tables → `OriginConfig`.

An origin is named by a folder path or a URL (SPEC §6):

- ``/srv/music`` — a local folder;
- ``nfs:///mnt/nas/music``, ``smb:///mnt/share/music`` — a share the system mounted;
- ``s3://bucket/prefix`` — an S3 bucket (any S3-compatible endpoint);
- ``sftp://user@host:port/path`` — a folder on an SSH server;
- ``smb://user@server:port/share/path`` — a folder on an SMB server, spoken to directly.

A config file can add per-origin keys (priority, limits, endpoint, key file),
and name origin types that plugins provide: ``type = "<origin_type>"``, with
the plugin's settings in an ``options`` table (checked by the plugin when the
daemon starts, since plugins are not loaded while the config is read).
Passwords and secret keys never go here: they come from the credentials store
(`musicfs.core.secrets.credentials`), and a URL with a password in it is refused.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from musicfs.core.model import SSH_CLIENTS
from musicfs.core.values import (
    ConfigError,
    Setting,
    check_setting,
    int_range,
    parse_choice,
    parse_seconds,
    parse_size,
    parse_str,
)

ORIGIN_TYPES = ("local", "nfs", "smb", "s3", "sftp", "smbclient")
MOUNTED_TYPES = ("local", "nfs", "smb")  # read through the local kernel
#: ``max_requests`` of an origin spoken to over the network (s3, sftp,
#: smbclient) unless set: a first scan keeps that many files in flight, and
#: latency decides its rate (SFTP at 20 ms a round trip: 8 give ~150 tracks/s,
#: 32 ~450). Other origins keep the field's default (8): a mounted share's scan
#: reads through worker processes, not through these slots.
NETWORK_MAX_REQUESTS = 32
_ORIGIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PLUGIN_TYPE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# --origin and MUSICFS_ORIGINS lists: split on commas, blanks, and on ':' where
# it starts a new path or URL (so '/a:/b' is two origins, 'sftp://h:22/x' one).
_LIST_SEPARATOR = re.compile(r"[,\s]+|:(?=/(?!/))|:(?=[a-z][a-z0-9+.-]*://)")


@dataclass(frozen=True)
class OriginConfig:
    """One origin: an id that names it in the catalog, its type, where it is, and
    how hard MusicFS may use it. Which fields matter depends on the type."""

    id: str
    type: str
    path: str  # the folder (local types, sftp, smbclient) or key prefix (s3)
    priority: int = 0  # lower is preferred when a track is on several origins
    host: str = ""  # sftp / smbclient server
    port: int = 0  # 0: the protocol's default
    user: str = ""
    bucket: str = ""  # s3
    share: str = ""  # smbclient
    endpoint_url: str = ""  # s3: a non-AWS endpoint
    region: str = ""  # s3
    key_file: str = ""  # sftp: private key
    known_hosts: str = ""  # sftp: host keys file
    ssh_client: str = "auto"  # sftp: OpenSSH's ssh or paramiko (see SSH_CLIENTS)
    max_requests: int = 8  # requests in flight at once (network types: NETWORK_MAX_REQUESTS)
    bandwidth: int = 0  # bytes per second, 0 = unlimited
    timeout: float = 10.0  # seconds before a request counts as failed
    options: dict[str, Any] = field(default_factory=dict, hash=False)  # plugin origins

    @property
    def mounted(self) -> bool:
        return self.type in MOUNTED_TYPES

    @property
    def from_plugin(self) -> bool:
        """A type no built-in origin has: a plugin must provide it."""
        return self.type not in ORIGIN_TYPES


def _table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a table, got {type(value).__name__} {value!r}")
    return dict(value)


TABLE_KEYS: dict[str, Setting] = {
    "id": Setting("id", parse_str, ""),
    "type": Setting("type", parse_str, ""),
    "path": Setting("path", parse_str, ""),
    "priority": Setting("priority", int_range(0, 1_000_000), ""),
    "user": Setting("user", parse_str, ""),
    "port": Setting("port", int_range(0, 65535), ""),
    "endpoint_url": Setting("endpoint_url", parse_str, ""),
    "region": Setting("region", parse_str, ""),
    "key_file": Setting("key_file", parse_str, ""),
    "known_hosts": Setting("known_hosts", parse_str, ""),
    "ssh_client": Setting("ssh_client", lambda value: parse_choice(value, SSH_CLIENTS), ""),
    "max_requests": Setting("max_requests", int_range(0, 1024), ""),
    "bandwidth": Setting("bandwidth", parse_size, ""),
    "timeout": Setting("timeout", parse_seconds, ""),
    "options": Setting("options", _table, ""),
}


def file_origins(path: Path, value: Any) -> tuple[OriginConfig, ...]:
    """The ``[[origins]]`` tables of config file *path*."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{path}: 'origins' must be a list of [[origins]] tables")
    result = []
    for i, table in enumerate(value):
        where = f"{path}: [[origins]] #{i + 1}"
        unknown = set(table) - set(TABLE_KEYS)
        if unknown:
            secretish = sorted(k for k in unknown if re.search(r"pass|secret|token", k))
            if secretish:
                raise ConfigError(
                    f"{where}: {secretish} cannot be set here; put secrets in the "
                    "credentials file (0600) or the keyring (see docs/origins.md)"
                )
            raise ConfigError(
                f"{where}: unknown key(s) {sorted(unknown)}; use {', '.join(TABLE_KEYS)}"
            )
        values = {k: check_setting(TABLE_KEYS[k], v, f"{where}: {k}: ") for k, v in table.items()}
        plugin_type = values.get("type", "")
        if plugin_type and plugin_type not in ORIGIN_TYPES and _PLUGIN_TYPE.match(plugin_type):
            result.append(_plugin_origin(values, where))
            continue
        if "path" not in table:
            raise ConfigError(f"{where}: 'path' is missing (the folder or URL of the origin)")
        if "options" in values:
            raise ConfigError(f"{where}: 'options' is for origin types from plugins only")
        origin = parse_origin(values.pop("path"), where)
        kind = values.pop("type", origin.type)
        if kind not in ORIGIN_TYPES:
            raise ConfigError(
                f"{where}: type {kind!r} is not supported; use one of {', '.join(ORIGIN_TYPES)}, "
                "or the origin type of a plugin (lower case letters, digits, '-', '_')"
            )
        if kind != origin.type and not (kind in MOUNTED_TYPES and origin.mounted):
            raise ConfigError(f"{where}: type {kind!r} does not match the path's {origin.type!r}")
        origin_id = values.pop("id", origin.id)
        if not _ORIGIN_ID.match(origin_id):
            raise ConfigError(
                f"{where}: id {origin_id!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        if values.get("key_file"):
            values["key_file"] = os.path.abspath(os.path.expanduser(values["key_file"]))
        result.append(replace(origin, id=origin_id, type=kind, **values))
    ids = [o.id for o in result]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"{path}: origin id(s) {dupes} are used more than once")
    return tuple(result)


def _plugin_origin(values: dict[str, Any], where: str) -> OriginConfig:
    kind = values.pop("type")
    origin_id = values.pop("id", kind)
    if not _ORIGIN_ID.match(origin_id):
        raise ConfigError(
            f"{where}: id {origin_id!r} must be 1-64 letters, digits, '.', '_' or '-'"
        )
    return OriginConfig(origin_id, kind, values.pop("path", ""), **values)


def parse_origins(
    text_or_list: str | list[str] | tuple[str, ...], where: str
) -> tuple[OriginConfig, ...]:
    """Several origins (``--origin`` flags, or one ``MUSICFS_ORIGINS`` string), with
    distinct ids."""
    if isinstance(text_or_list, str):
        items = [p for p in _LIST_SEPARATOR.split(text_or_list) if p]
    else:
        items = list(text_or_list)
    seen: dict[str, int] = {}
    result = []
    for origin in (parse_origin(item, where) for item in items):
        n = seen.get(origin.id, 0) + 1
        seen[origin.id] = n
        result.append(origin if n == 1 else replace(origin, id=f"{origin.id}-{n}"))
    return tuple(result)


def parse_origin(arg: str, where: str) -> OriginConfig:
    """One folder path or URL → `OriginConfig` (see the module docstring)."""
    m = re.match(r"^([a-z][a-z0-9+.-]*)://(.*)$", arg)
    if not m:
        return _mounted("local", arg, arg, where)
    scheme, rest = m.group(1), m.group(2)
    if scheme in ("nfs", "smb") and rest.startswith("/"):
        return _mounted(scheme, rest, arg, where)
    if scheme not in ("s3", "sftp", "smb"):
        raise ConfigError(
            f"{where}: origin {arg!r}: {scheme}:// is not supported; use a folder path, "
            "nfs:///mounted/path, smb:///mounted/path, s3://bucket/prefix, "
            "sftp://user@host:port/path or smb://user@server/share/path"
        )
    url = urllib.parse.urlsplit(arg)
    if url.password is not None:
        shown = arg.replace(f":{url.password}@", ":***@")
        raise ConfigError(
            f"{where}: origin {shown!r} has a password in it, where the process list and "
            "logs would show it; put it in the credentials file or the keyring instead"
        )
    try:
        port = url.port or 0
    except ValueError:
        raise ConfigError(f"{where}: origin {arg!r}: the port is not a number") from None
    host = url.hostname or ""
    if not host:
        raise ConfigError(f"{where}: origin {arg!r}: the {'bucket' if scheme == 's3' else 'host'} "
                          "is missing")  # fmt: skip
    path = urllib.parse.unquote(url.path).strip("/")
    user = urllib.parse.unquote(url.username or "")
    if scheme == "s3":
        base = path.rpartition("/")[2] or host
        return OriginConfig(_id_from(base), "s3", path, bucket=host,
                            max_requests=NETWORK_MAX_REQUESTS)  # fmt: skip
    if scheme == "sftp":
        base = path.rpartition("/")[2] or host
        return OriginConfig(_id_from(base), "sftp", "/" + path, host=host, port=port, user=user,
                            max_requests=NETWORK_MAX_REQUESTS)  # fmt: skip
    share, _, folder = path.partition("/")
    if not share:
        raise ConfigError(f"{where}: origin {arg!r}: expected smb://server/share/path")
    base = folder.rpartition("/")[2] or share
    return OriginConfig(_id_from(base), "smbclient", folder, host=host, port=port, user=user,
                        share=share, max_requests=NETWORK_MAX_REQUESTS)  # fmt: skip


def _mounted(kind: str, path: str, arg: str, where: str) -> OriginConfig:
    if not path:
        raise ConfigError(f"{where}: origin path is empty")
    if kind != "local" and not path.startswith("/"):
        raise ConfigError(f"{where}: origin {arg!r}: expected {kind}:///absolute/path")
    path = os.path.abspath(os.path.expanduser(path))
    return OriginConfig(_id_from(os.path.basename(path.rstrip("/")) or "root"), kind, path)


def _id_from(base: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.")[:64] or "origin"


def describe_origin_keys() -> list[str]:
    """The keys an ``[[origins]]`` table may have (for docs and errors)."""
    return [f.name for f in fields(OriginConfig) if f.name in TABLE_KEYS]
