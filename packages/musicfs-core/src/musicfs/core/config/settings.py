"""Configuration: TOML file, then ``MUSICFS_*`` environment variables, then flags.

Every setting has a default, so ``musicfs mount --origin ~/Music ~/mnt/music``
works with no file at all (SPEC §10). Each layer is validated as it is applied,
and a bad value raises `ConfigError` naming where it came from (the file and
key, the environment variable, or the flag), the key, and why it is wrong.
Unknown keys are errors too: a typo must not be silently ignored.

The result is an immutable `Config`; nothing here touches the filesystem beyond
reading the config file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate, TemplateError
from musicfs.core.config.collections import Collection, file_collections
from musicfs.core.config.origins import OriginConfig, file_origins, parse_origins
from musicfs.core.config.webhooks import WebhookConfig, file_webhooks
from musicfs.core.model import AUDIO_EXTENSIONS
from musicfs.core.values import (
    ConfigError,
    Setting,
    check_setting,
    int_range,
    parse_bool,
    parse_choice,
    parse_path,
    parse_seconds,
    parse_size,
    parse_str,
)

__all__ = ["Config", "ConfigError", "OriginConfig", "describe_settings", "load_config"]

SECRET_ENV_PREFIX = "MUSICFS_SECRET_"
LOG_LEVELS = ("debug", "info", "warning", "error")
CACHE_MODES = ("full", "passthrough")


@dataclass(frozen=True)
class Config:
    """All settings of one mount. Field names match the TOML keys (``[section] key``)."""

    origins: tuple[OriginConfig, ...] = ()
    template: str = DEFAULT_TEMPLATE
    cache_dir: str | None = None
    log_level: str = "info"
    # [mount]
    allow_other: bool = False
    entry_timeout: float = 60.0
    attr_timeout: float = 60.0
    read_ahead_kb: int = 1024
    # [scan]
    scan_workers: int = 0
    scan_on_start: bool = True
    skip_unreadable: bool = False
    include_hidden: bool = False
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS
    watch: bool = True
    poll_interval: float = 300.0
    # [cache]
    cache_mode: str = "full"
    cache_limit: int = 10 * 1024**3
    # [prefetch]
    prefetch_enabled: bool = True
    prefetch_ahead: int = 2
    prefetch_max_bytes: int = 256 * 1024**2
    # [control]
    socket: str | None = None
    # [metrics]
    metrics_listen: str = ""  # "host:port" of the Prometheus endpoint; "" = none
    # [plugins]
    plugin_paths: tuple[str, ...] = ()
    plugin_entry_points: bool = True
    wasm_memory_mb: int = 64
    wasm_cpu_ms: int = 1000
    wasm_filesystem: bool = False
    wasm_dirs: tuple[str, ...] = ()
    #: [plugins.<name>] tables: each plugin's own settings, given to its init().
    plugin_settings: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)
    #: [[webhooks]] tables (musicfs.core.config.webhooks).
    webhooks: tuple[WebhookConfig, ...] = ()
    #: [[collections]] tables: smart collections besides the built-in ones.
    collections: tuple[Collection, ...] = ()
    sources: tuple[str, ...] = field(default=(), compare=False)

    @property
    def path_template(self) -> PathTemplate:
        return PathTemplate.parse(self.template)


def _template(value: Any) -> str:
    text = parse_str(value)
    try:
        PathTemplate.parse(text)
    except TemplateError as exc:
        raise ValueError(str(exc)) from None
    return text


def _log_level(value: Any) -> str:
    level = parse_str(value).lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def _listen(value: Any) -> str:
    """``host:port`` (``[::1]:port`` for IPv6) to serve HTTP on; "" for nowhere."""
    text = parse_str(value).strip()
    if not text:
        return ""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9464), got {value!r}")
    if not host.strip("[]"):
        raise ValueError(f"name the address to listen on (e.g. 127.0.0.1:{port}), got {value!r}")
    return text


def _paths(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(os.pathsep) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expected a list of paths, got {value!r}")
    return tuple(os.path.abspath(os.path.expanduser(v)) for v in value)


def _extensions(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expected a list of file extensions, got {value!r}")
    return tuple(v.lower().lstrip(".") for v in value)


# (section, key) → setting. Section "" is the top level.
_SETTINGS: dict[tuple[str, str], Setting] = {
    ("", "template"): Setting("template", _template, "path template of the tree"),
    ("", "cache_dir"): Setting("cache_dir", parse_path, "where catalog and cache live"),
    ("", "log_level"): Setting("log_level", _log_level, "debug, info, warning or error"),
    ("mount", "allow_other"): Setting("allow_other", parse_bool, "let other users see the mount"),
    ("mount", "entry_timeout"): Setting("entry_timeout", parse_seconds, "kernel name cache (s)"),
    ("mount", "attr_timeout"): Setting("attr_timeout", parse_seconds, "kernel attribute cache (s)"),
    ("mount", "read_ahead_kb"): Setting(
        "read_ahead_kb",
        int_range(0, 65536, " KiB"),
        "kernel read-ahead on the mount (KiB), 0 = default",
    ),
    ("scan", "workers"): Setting(
        "scan_workers", int_range(0, 256), "tag-reading processes, 0 = cores"
    ),
    ("scan", "on_start"): Setting("scan_on_start", parse_bool, "rescan origins after mounting"),
    ("scan", "skip_unreadable"): Setting("skip_unreadable", parse_bool, "hide unreadable files"),
    ("scan", "include_hidden"): Setting(
        "include_hidden", parse_bool, "also list origin files and folders named .*, never ._*"
    ),
    ("scan", "extensions"): Setting("extensions", _extensions, "file extensions to scan"),
    ("scan", "watch"): Setting("watch", parse_bool, "follow changes of local origins with inotify"),
    ("scan", "poll_interval"): Setting(
        "poll_interval", parse_seconds, "rescan origins that are not watched every N s, 0 = never"
    ),
    ("cache", "mode"): Setting(
        "cache_mode",
        lambda v: parse_choice(v, CACHE_MODES),
        "full (keep what is read) or passthrough",
    ),
    ("cache", "limit"): Setting("cache_limit", parse_size, "content cache size, e.g. 10GiB"),
    ("prefetch", "enabled"): Setting(
        "prefetch_enabled",
        parse_bool,
        "copy the likely next tracks of remote origins into the cache",
    ),
    ("prefetch", "ahead"): Setting("prefetch_ahead", int_range(0, 1000), "tracks to copy ahead"),
    ("prefetch", "max_bytes"): Setting(
        "prefetch_max_bytes", parse_size, "bytes to copy ahead at most (and 1/10 of cache.limit)"
    ),
    ("control", "socket"): Setting("socket", parse_path, "path of the control socket"),
    ("metrics", "listen"): Setting(
        "metrics_listen", _listen, "HOST:PORT of the Prometheus metrics endpoint, empty = off"
    ),
    ("plugins", "paths"): Setting(
        "plugin_paths", _paths, "plugin files or folders to load (.py, packages, .wasm, .wat)"
    ),
    ("plugins", "entry_points"): Setting(
        "plugin_entry_points", parse_bool, "load installed plugins (entry points musicfs.plugins)"
    ),
    ("plugins", "wasm_memory_mb"): Setting(
        "wasm_memory_mb", int_range(1, 4096, " MiB"), "memory a WASM plugin may use (MiB)"
    ),
    ("plugins", "wasm_cpu_ms"): Setting(
        "wasm_cpu_ms",
        int_range(1, 600_000, " ms"),
        "CPU time a WASM plugin may take per call (ms)",
    ),
    ("plugins", "wasm_filesystem"): Setting(
        "wasm_filesystem", parse_bool, "let WASM plugins read files (never write; no network ever)"
    ),
    ("plugins", "wasm_dirs"): Setting(
        "wasm_dirs",
        _paths,
        "folders WASM plugins may read (with wasm_filesystem), same path inside",
    ),
}


def env_name(section: str, key: str) -> str:
    return "MUSICFS_" + "_".join(p for p in (section, key) if p).upper()


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "musicfs" / "config.toml"


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    origins: Sequence[str] = (),
) -> Config:
    """Build the effective configuration.

    *path* is the config file (None: ``MUSICFS_CONFIG`` or the XDG default, which
    may be absent). *overrides* maps ``Config`` field names to values from flags;
    *origins* are ``--origin`` arguments, which replace the file's origins.
    """
    env = os.environ if env is None else env
    config = Config()
    explicit = path is not None or "MUSICFS_CONFIG" in env
    file_path = Path(path or env.get("MUSICFS_CONFIG") or default_config_path(env))
    if explicit or file_path.exists():
        config = _apply_file(config, file_path)
    config = _apply_env(config, env)
    for attr, value in (overrides or {}).items():
        setting = next((s for s in _SETTINGS.values() if s.attr == attr), None)
        if setting is None or value is None:
            continue
        flag = "--" + attr.replace("_", "-")
        config = replace(config, **{attr: check_setting(setting, value, f"{flag}: ")})
        config = replace(config, sources=(*config.sources, flag))
    if origins:
        config = replace(config, origins=parse_origins(tuple(origins), "--origin"))
    elif env.get("MUSICFS_ORIGINS"):
        where = "environment variable MUSICFS_ORIGINS"
        config = replace(config, origins=parse_origins(env["MUSICFS_ORIGINS"], where))
    if config.wasm_dirs and not config.wasm_filesystem:
        raise ConfigError(
            "[plugins] wasm_dirs lets WASM plugins read folders, but wasm_filesystem is "
            "false: set wasm_filesystem = true, or drop wasm_dirs"
        )
    return config


def _apply_file(config: Config, path: Path) -> Config:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 text; this is not
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start} cannot be decoded): "
            "is it the right file? Save it as UTF-8"
        ) from None
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key == "origins":
            changes["origins"] = file_origins(path, value)
        elif key == "collections":
            changes["collections"] = file_collections(path, value)
        elif key == "webhooks":
            changes["webhooks"] = file_webhooks(path, value)
        elif isinstance(value, dict) and any(s == key for s, _ in _SETTINGS):
            for sub, subvalue in value.items():
                if key == "plugins" and isinstance(subvalue, dict):  # [plugins.<name>]
                    changes.setdefault("plugin_settings", {})[sub] = subvalue
                else:
                    changes.update(_file_setting(path, key, sub, subvalue))
        else:
            changes.update(_file_setting(path, "", key, value))
    return replace(config, sources=(*config.sources, str(path)), **changes)


def _file_setting(path: Path, section: str, key: str, value: Any) -> dict[str, Any]:
    name = f"{section}.{key}" if section else key
    setting = _SETTINGS.get((section, key))
    if setting is None:
        known = ", ".join(sorted(f"{s}.{k}" if s else k for s, k in _SETTINGS))
        raise ConfigError(
            f"{path}: unknown key {name!r} "
            f"(known keys: {known}, [[origins]], [[webhooks]], [[collections]])"
        )
    return {setting.attr: check_setting(setting, value, f"{path}: key {name!r}: ")}


def _apply_env(config: Config, env: Mapping[str, str]) -> Config:
    known = {env_name(s, k): setting for (s, k), setting in _SETTINGS.items()}
    known_names = {*known, "MUSICFS_CONFIG", "MUSICFS_ORIGINS"}
    changes: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith("MUSICFS_") or name.startswith(SECRET_ENV_PREFIX):
            continue  # secrets are the credentials store's (musicfs.core.secrets.credentials)
        setting = known.get(name)
        if setting is None:
            if name not in known_names:
                raise ConfigError(
                    f"environment variable {name} is not a MusicFS setting "
                    f"(known: {', '.join(sorted(known_names))})"
                )
            continue
        changes[setting.attr] = check_setting(setting, value, f"environment variable {name}: ")
    if not changes:
        return config
    return replace(config, sources=(*config.sources, "environment"), **changes)


def describe_settings() -> list[tuple[str, str, str, Any]]:
    """(TOML key, environment variable, description, default) of every setting."""
    defaults = {f.name: f.default for f in fields(Config)}
    return [
        (f"{s}.{k}" if s else k, env_name(s, k), st.doc, defaults.get(st.attr))
        for (s, k), st in _SETTINGS.items()
    ]
