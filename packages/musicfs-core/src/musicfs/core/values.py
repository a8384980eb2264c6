"""Parsing of setting values, shared by the configuration modules.

Each parser takes what TOML, an environment variable or a flag gave and
returns the typed value, or raises `ValueError` saying what was expected;
`check_setting` turns that into a `ConfigError` that also says where the value
came from. These are the public interface of this module: every config module
(and the runtime settings of a mount) parses with them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from musicfs.core.errors import MusicFSError


class ConfigError(MusicFSError, ValueError):
    """A setting is wrong. The message names the source, the key and the reason."""


@dataclass(frozen=True)
class Setting:
    """One setting: the attribute it fills, its parser and its one-line help."""

    attr: str
    parse: Callable[[Any], Any]
    doc: str


def parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__} {value!r}")
    return value


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_nonneg_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    else:
        raise ValueError(f"expected a whole number, got {value!r}")
    if number < 0:
        raise ValueError(f"expected a whole number >= 0, got {value!r}")
    return number


def int_range(low: int, high: int, unit: str = "") -> Callable[[Any], int]:
    """A parser of whole numbers from *low* to *high*: every numeric setting has a
    sane range, so a typo such as ``workers = 1000000000`` is refused, not obeyed."""

    def parse(value: Any) -> int:
        number = parse_nonneg_int(value)
        if not low <= number <= high:
            raise ValueError(f"expected a whole number from {low} to {high}{unit}, got {value!r}")
        return number

    return parse


#: The largest size a setting takes (1 EiB): what SQLite and the kernel still count in.
MAX_SIZE = 2**60


def parse_seconds(value: Any) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not 0 <= number <= 86400:
        raise ValueError(f"expected seconds between 0 and 86400, got {value!r}")
    return number


def parse_path(value: Any) -> str:
    path = parse_str(value)
    if not path.strip():
        raise ValueError("expected a path, got an empty string")
    return os.path.abspath(os.path.expanduser(path))


def parse_choice(value: Any, choices: tuple[str, ...]) -> str:
    text = parse_str(value).lower()
    if text not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
    return text


_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4,
          "tb": 1000**4, "tib": 1024**4}  # fmt: skip


def parse_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SIZE:
        return value
    m = re.fullmatch(
        r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value if isinstance(value, str) else ""
    )
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(
            f"expected a size such as 10GiB, 500MB or a number of bytes, got {value!r}"
        )
    size = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if size > MAX_SIZE:
        raise ValueError(f"expected a size of at most 1 EiB, got {value!r}")
    return int(size)


def check_setting(setting: Setting, value: Any, where: str) -> Any:
    try:
        return setting.parse(value)
    except ValueError as exc:
        raise ConfigError(f"{where}{exc}") from None
