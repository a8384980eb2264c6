"""Configuration: TOML file, then ``MUSICFS_*`` environment variables, then flags.

Every setting has a default, so ``musicfs mount --origin ~/Music ~/mnt/music``
works with no file at all (SPEC §10). Each layer is validated as it is applied,
and a bad value raises `ConfigError` naming where it came from (the file and
key, the environment variable, or the flag), the key, and why it is wrong.
Unknown keys are errors too: a typo must not be silently ignored.

The result is an immutable `Config`: the top-level keys, then one frozen
dataclass per section (`config.mount.allow_other`, `config.cache.limit`...).
Sections that only another package uses (control's ``[metrics]`` and
``[[webhooks]]``) are described there and passed in (`load_config(sections=)`);
`Config.section` gives them back typed. Nothing here touches the filesystem
beyond reading the config file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate, TemplateError
from musicfs.core.config.collections import Collection, file_collections
from musicfs.core.config.origins import OriginConfig, file_origins, parse_origins
from musicfs.core.config.sections import Draft, Section, TableList
from musicfs.core.model import AUDIO_EXTENSIONS
from musicfs.core.values import (
    ConfigError,
    Setting,
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

S = TypeVar("S")
T = TypeVar("T")


@dataclass(frozen=True)
class TopLevel:
    """The keys outside any table."""

    template: str = DEFAULT_TEMPLATE
    cache_dir: str | None = None
    log_level: str = "info"


@dataclass(frozen=True)
class MountSettings:
    """``[mount]``: how the kernel sees the mount."""

    allow_other: bool = False
    entry_timeout: float = 60.0
    attr_timeout: float = 60.0
    read_ahead_kb: int = 1024


@dataclass(frozen=True)
class ScanSettings:
    """``[scan]``: what is scanned, by how many processes, and when again."""

    workers: int = 0
    on_start: bool = True
    skip_unreadable: bool = False
    include_hidden: bool = False
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS
    watch: bool = True
    poll_interval: float = 300.0


@dataclass(frozen=True)
class CacheSettings:
    """``[cache]``: the content cache."""

    mode: str = "full"
    limit: int = 10 * 1024**3
    #: Bytes of pinned tracks at most (``musicfs cache pin``); None: half of *limit*.
    pin_limit: int | None = None

    @property
    def pin_bytes(self) -> int:
        """The pin limit in force: *pin_limit*, or half the cache limit."""
        return self.limit // 2 if self.pin_limit is None else self.pin_limit


@dataclass(frozen=True)
class PrefetchSettings:
    """``[prefetch]``: copying the likely next tracks of remote origins."""

    enabled: bool = True
    ahead: int = 2
    max_bytes: int = 256 * 1024**2


@dataclass(frozen=True)
class ControlSettings:
    """``[control]``: the control socket."""

    socket: str | None = None


@dataclass(frozen=True)
class PluginSettings:
    """``[plugins]``: which plugins load and what WASM plugins may use."""

    paths: tuple[str, ...] = ()
    entry_points: bool = True
    wasm_memory_mb: int = 64
    wasm_cpu_ms: int = 1000
    wasm_filesystem: bool = False
    wasm_dirs: tuple[str, ...] = ()
    #: ``[plugins.<name>]`` tables: each plugin's own settings, given to its init().
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Config:
    """All settings of one mount: the top-level keys, then one value per section."""

    origins: tuple[OriginConfig, ...] = ()
    template: str = DEFAULT_TEMPLATE
    cache_dir: str | None = None
    log_level: str = "info"
    mount: MountSettings = MountSettings()
    scan: ScanSettings = ScanSettings()
    cache: CacheSettings = CacheSettings()
    prefetch: PrefetchSettings = PrefetchSettings()
    control: ControlSettings = ControlSettings()
    plugins: PluginSettings = PluginSettings()
    #: [[collections]] tables: smart collections besides the built-in ones.
    collections: tuple[Collection, ...] = ()
    #: (name, value) of the sections another package described (`load_config(sections=)`),
    #: sorted by name: compared like every other setting.
    extra: tuple[tuple[str, Any], ...] = ()
    sources: tuple[str, ...] = field(default=(), compare=False)

    @property
    def path_template(self) -> PathTemplate:
        return PathTemplate.parse(self.template)

    def section(self, spec: Section[S]) -> S:
        """The value of a section another package described (its default if not loaded)."""
        value = dict(self.extra).get(spec.name)
        return spec.default() if value is None else cast(S, value)

    def tables(self, spec: TableList[T]) -> tuple[T, ...]:
        """The ``[[name]]`` tables of a list another package described (none if not loaded)."""
        return cast(tuple[T, ...], dict(self.extra).get(spec.name, ()))


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


def _pin_limit_within_limit(cache: CacheSettings) -> None:
    if cache.pin_limit is not None and cache.pin_limit > cache.limit:
        raise ConfigError(
            f"[cache] pin_limit ({cache.pin_limit} bytes) is more than [cache] limit "
            f"({cache.limit} bytes): pinned tracks must fit in the cache; lower pin_limit "
            "or raise limit"
        )


def _no_wasm_dirs_without_filesystem(plugins: PluginSettings) -> None:
    if plugins.wasm_dirs and not plugins.wasm_filesystem:
        raise ConfigError(
            "[plugins] wasm_dirs lets WASM plugins read folders, but wasm_filesystem is "
            "false: set wasm_filesystem = true, or drop wasm_dirs"
        )


TOP = Section(
    "",
    TopLevel,
    {
        "template": Setting("template", _template, "path template of the tree"),
        "cache_dir": Setting("cache_dir", parse_path, "where catalog and cache live"),
        "log_level": Setting("log_level", _log_level, "debug, info, warning or error"),
    },
)
MOUNT = Section(
    "mount",
    MountSettings,
    {
        "allow_other": Setting("allow_other", parse_bool, "let other users see the mount"),
        "entry_timeout": Setting("entry_timeout", parse_seconds, "kernel name cache (s)"),
        "attr_timeout": Setting("attr_timeout", parse_seconds, "kernel attribute cache (s)"),
        "read_ahead_kb": Setting(
            "read_ahead_kb",
            int_range(0, 65536, " KiB"),
            "kernel read-ahead on the mount (KiB), 0 = default",
        ),
    },
)
SCAN = Section(
    "scan",
    ScanSettings,
    {
        "workers": Setting("workers", int_range(0, 256), "tag-reading processes, 0 = cores"),
        "on_start": Setting("on_start", parse_bool, "rescan origins after mounting"),
        "skip_unreadable": Setting("skip_unreadable", parse_bool, "hide unreadable files"),
        "include_hidden": Setting(
            "include_hidden", parse_bool, "also list origin files and folders named .*, never ._*"
        ),
        "extensions": Setting("extensions", _extensions, "file extensions to scan"),
        "watch": Setting("watch", parse_bool, "follow changes of local origins with inotify"),
        "poll_interval": Setting(
            "poll_interval",
            parse_seconds,
            "rescan origins that are not watched every N s, 0 = never",
        ),
    },
)
CACHE = Section(
    "cache",
    CacheSettings,
    {
        "mode": Setting(
            "mode",
            lambda v: parse_choice(v, CACHE_MODES),
            "full (keep what is read) or passthrough",
        ),
        "limit": Setting("limit", parse_size, "content cache size, e.g. 10GiB"),
        "pin_limit": Setting(
            "pin_limit", parse_size, "bytes of pinned tracks at most (default: half the limit)"
        ),
    },
    check=_pin_limit_within_limit,
)
PREFETCH = Section(
    "prefetch",
    PrefetchSettings,
    {
        "enabled": Setting(
            "enabled", parse_bool, "copy the likely next tracks of remote origins into the cache"
        ),
        "ahead": Setting("ahead", int_range(0, 1000), "tracks to copy ahead"),
        "max_bytes": Setting(
            "max_bytes", parse_size, "bytes to copy ahead at most (and 1/10 of cache.limit)"
        ),
    },
)
CONTROL = Section(
    "control",
    ControlSettings,
    {"socket": Setting("socket", parse_path, "path of the control socket")},
)
PLUGINS = Section(
    "plugins",
    PluginSettings,
    {
        "paths": Setting(
            "paths", _paths, "plugin files or folders to load (.py, packages, .wasm, .wat)"
        ),
        "entry_points": Setting(
            "entry_points", parse_bool, "load installed plugins (entry points musicfs.plugins)"
        ),
        "wasm_memory_mb": Setting(
            "wasm_memory_mb", int_range(1, 4096, " MiB"), "memory a WASM plugin may use (MiB)"
        ),
        "wasm_cpu_ms": Setting(
            "wasm_cpu_ms",
            int_range(1, 600_000, " ms"),
            "CPU time a WASM plugin may take per call (ms)",
        ),
        "wasm_filesystem": Setting(
            "wasm_filesystem",
            parse_bool,
            "let WASM plugins read files (never write; no network ever)",
        ),
        "wasm_dirs": Setting(
            "wasm_dirs",
            _paths,
            "folders WASM plugins may read (with wasm_filesystem), same path inside",
        ),
    },
    subtables="settings",
    check=_no_wasm_dirs_without_filesystem,
)
#: Core's sections, in the order `describe_settings` lists them.
SECTIONS: tuple[Section[Any], ...] = (TOP, MOUNT, SCAN, CACHE, PREFETCH, CONTROL, PLUGINS)
ORIGINS: TableList[OriginConfig] = TableList("origins", file_origins)
COLLECTIONS: TableList[Collection] = TableList("collections", file_collections)


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
    sections: Sequence[Section[Any] | TableList[Any]] = (),
) -> Config:
    """Build the effective configuration.

    *path* is the config file (None: ``MUSICFS_CONFIG`` or the XDG default, which
    may be absent). *overrides* maps ``section.key`` (``key`` for top-level keys)
    to values from flags; an unknown key is a `ConfigError`. *origins* are
    ``--origin`` arguments, which replace the file's origins. *sections* are those
    another package reads (see `Config.section`): a daemon's config file may have
    ``[metrics]`` and ``[[webhooks]]``, so read it with
    ``sections=musicfs.control.config.SECTIONS``; without them those are unknown keys.
    """
    env = os.environ if env is None else env
    own: list[Section[Any]] = [s for s in sections if isinstance(s, Section)]
    lists: list[TableList[Any]] = [s for s in sections if isinstance(s, TableList)]
    tables: list[TableList[Any]] = [ORIGINS, COLLECTIONS, *lists]
    draft = Draft({s.name: s for s in (*SECTIONS, *own)}, {t.name: t for t in tables})
    explicit = path is not None or "MUSICFS_CONFIG" in env
    file_path = Path(path or env.get("MUSICFS_CONFIG") or default_config_path(env))
    if explicit or file_path.exists():
        draft.apply_file(file_path, _read_toml(file_path))
    draft.apply_env(env, {"MUSICFS_CONFIG", "MUSICFS_ORIGINS"}, SECRET_ENV_PREFIX)
    draft.apply_flags(overrides or {})
    if origins:
        draft.lists["origins"] = parse_origins(tuple(origins), "--origin")
    elif env.get("MUSICFS_ORIGINS"):
        where = "environment variable MUSICFS_ORIGINS"
        draft.lists["origins"] = parse_origins(env["MUSICFS_ORIGINS"], where)
    top = draft.build("")
    return Config(
        origins=draft.lists.get("origins", ()),
        template=top.template,
        cache_dir=top.cache_dir,
        log_level=top.log_level,
        mount=draft.build("mount"),
        scan=draft.build("scan"),
        cache=draft.build("cache"),
        prefetch=draft.build("prefetch"),
        control=draft.build("control"),
        plugins=draft.build("plugins"),
        collections=draft.lists.get("collections", ()),
        extra=tuple(
            sorted(
                [(s.name, draft.build(s.name)) for s in own]
                + [(t.name, draft.lists[t.name]) for t in lists if t.name in draft.lists]
            )
        ),
        sources=tuple(draft.sources),
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
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


def describe_settings(sections: Sequence[Section[Any]] = ()) -> list[tuple[str, str, str, Any]]:
    """(TOML key, environment variable, description, default) of every setting."""
    return [row for spec in (*SECTIONS, *sections) for row in spec.describe()]
