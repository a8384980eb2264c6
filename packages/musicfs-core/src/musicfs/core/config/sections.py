"""How a section of the config file is described, so one loader reads them all.

A `Section` is a ``[name]`` table whose keys fill the fields of one frozen
dataclass (``[mount] allow_other`` → `MountSettings.allow_other`); a
`TableList` is a ``[[name]]`` list of tables parsed by its own function. Core
describes its sections in `musicfs.core.config.settings`; another package
describes its own (`musicfs.control` has ``[metrics]`` and ``[[webhooks]]``)
and hands them to `load_config`, so core parses no section it does not use.

Every key can come from the file, from ``MUSICFS_<SECTION>_<KEY>`` and from a
flag; `Draft` collects the parsed values in that order, and `Draft.build`
makes the dataclasses, so a later source wins and a bad value is refused with
its source, its key and the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from musicfs.core.values import ConfigError, Setting, check_setting

S = TypeVar("S")
T = TypeVar("T")


@dataclass(frozen=True)
class Section(Generic[S]):
    """A ``[name]`` table: each key parsed into one field of *type*.

    *subtables* names a field that takes ``[name.<sub>]`` tables as they are
    (``[plugins.<plugin>]`` settings); *check* is a rule across keys, run on the
    built value, that raises `ConfigError`.
    """

    name: str
    type: type[S]
    keys: Mapping[str, Setting]
    subtables: str | None = None
    check: Callable[[S], None] | None = None

    def default(self) -> S:
        return self.type()

    def env_name(self, key: str) -> str:
        return env_name(self.name, key)

    def describe(self) -> list[tuple[str, str, str, Any]]:
        """(TOML key, environment variable, description, default) of each key."""
        defaults = {
            f.name: f.default if f.default is not MISSING else None
            for f in fields(cast(Any, self.type))
        }
        return [
            (
                f"{self.name}.{key}" if self.name else key,
                self.env_name(key),
                s.doc,
                defaults[s.attr],
            )
            for key, s in self.keys.items()
        ]


@dataclass(frozen=True)
class TableList(Generic[T]):
    """A ``[[name]]`` list of tables, parsed by *parse* (config file path, value)."""

    name: str
    parse: Callable[[Path, Any], tuple[T, ...]]


def env_name(section: str, key: str) -> str:
    return "MUSICFS_" + "_".join(p for p in (section, key) if p).upper()


@dataclass
class Draft:
    """Values parsed so far, per section, before the dataclasses are built."""

    sections: Mapping[str, Section[Any]]
    tables: Mapping[str, TableList[Any]]
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    lists: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def setting(self, section: str, key: str) -> Setting | None:
        spec = self.sections.get(section)
        return None if spec is None else spec.keys.get(key)

    def put(self, section: str, key: str, value: Any, where: str) -> None:
        """Parse *value* for ``[section] key``; *where* prefixes an error ("file: key 'x': ")."""
        setting = self.setting(section, key)
        if setting is None:
            raise ConfigError(f"{where}not a setting")
        self.values.setdefault(section, {})[setting.attr] = check_setting(setting, value, where)

    def apply_file(self, path: Path, data: Mapping[str, Any]) -> None:
        for key, value in data.items():
            if key in self.tables:
                self.lists[key] = self.tables[key].parse(path, value)
            elif isinstance(value, dict) and key and key in self.sections:
                spec = self.sections[key]
                for sub, subvalue in value.items():
                    if spec.subtables and isinstance(subvalue, dict):
                        subs = self.values.setdefault(key, {}).setdefault(spec.subtables, {})
                        subs[sub] = subvalue
                    else:
                        self._file_key(path, key, sub, subvalue)
            else:
                self._file_key(path, "", key, value)
        self.sources.append(str(path))

    def _file_key(self, path: Path, section: str, key: str, value: Any) -> None:
        name = f"{section}.{key}" if section else key
        if self.setting(section, key) is None:
            known = ", ".join(
                sorted(
                    f"{s}.{k}" if s else k for s, spec in self.sections.items() for k in spec.keys
                )
            )
            lists = ", ".join(f"[[{n}]]" for n in self.tables)
            raise ConfigError(f"{path}: unknown key {name!r} (known keys: {known}, {lists})")
        self.put(section, key, value, f"{path}: key {name!r}: ")

    def apply_env(self, env: Mapping[str, str], also_known: set[str], skip_prefix: str) -> None:
        known = {env_name(s, k): (s, k) for s, spec in self.sections.items() for k in spec.keys}
        changed = False
        for name, value in env.items():
            if not name.startswith("MUSICFS_") or name.startswith(skip_prefix):
                continue
            if name not in known:
                if name not in also_known:
                    raise ConfigError(
                        f"environment variable {name} is not a MusicFS setting "
                        f"(known: {', '.join(sorted({*known, *also_known}))})"
                    )
                continue
            section, key = known[name]
            self.put(section, key, value, f"environment variable {name}: ")
            changed = True
        if changed:
            self.sources.append("environment")

    def apply_flags(self, flags: Mapping[str, Any]) -> None:
        """*flags* maps ``section.key`` (``key`` at the top level) to a flag's value."""
        for name, value in flags.items():
            if value is None:
                continue
            section, _, key = name.rpartition(".")
            flag = "--" + key.replace("_", "-")
            if self.setting(section, key) is None:
                raise ConfigError(f"{flag}: {name!r} is not a setting")
            self.put(section, key, value, f"{flag}: ")
            self.sources.append(flag)

    def build(self, name: str) -> Any:
        spec = self.sections[name]
        value = spec.type(**self.values.get(name, {}))
        if spec.check is not None:
            spec.check(value)
        return value
