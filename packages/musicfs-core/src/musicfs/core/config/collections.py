"""Smart collection settings: ``[[collections]]`` tables → `Collection` (FR-15).

What a collection is (its folder name and its rule) and the built-in ones;
`musicfs.core.namespace.collections` finds their tracks and keeps the access log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from musicfs.core.catalog.plays import ORDERS
from musicfs.core.values import ConfigError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[^/\0]{1,200}$")


@dataclass(frozen=True)
class Collection:
    """One collection: its folder name and its rule (unset conditions match all)."""

    name: str
    artist: str = ""
    albumartist: str = ""
    album: str = ""
    genre: str = ""
    format: str = ""
    year_from: int = 0
    year_to: int = 0
    added_within_days: float = 0.0
    played_within_days: float = 0.0
    min_plays: int = 0
    order: str = "artist"
    limit: int = 500


BUILTIN = (
    Collection("recently-added", order="added", limit=200),
    Collection("recently-played", min_plays=1, order="played", limit=200),
    Collection("most-played", min_plays=1, order="plays", limit=200),
)


def file_collections(path: Path, value: Any) -> tuple[Collection, ...]:
    """The ``[[collections]]`` tables of config file *path*."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{path}: 'collections' must be a list of [[collections]] tables")
    known = {f for f in Collection.__dataclass_fields__}
    out = []
    for i, table in enumerate(value):
        where = f"{path}: [[collections]] #{i + 1}"
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; use {', '.join(sorted(known))}")
        name = table.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or name.startswith("."):
            raise ConfigError(f"{where}: 'name' must be a folder name (no '/', not hidden)")
        collection = Collection(name)
        for key, raw in table.items():
            default = getattr(collection, key)
            if isinstance(default, str) and not isinstance(raw, str):
                raise ConfigError(f"{where}: {key} must be a string, got {raw!r}")
            numeric = isinstance(raw, int | float) and not isinstance(raw, bool)
            if isinstance(default, int | float) and not numeric:
                raise ConfigError(f"{where}: {key} must be a number, got {raw!r}")
            if isinstance(default, int | float) and raw < 0:
                raise ConfigError(f"{where}: {key} must not be negative, got {raw!r}")
        if table.get("order", "artist") not in ORDERS:
            raise ConfigError(f"{where}: order must be one of {', '.join(ORDERS)}")
        out.append(replace(collection, **{k: v for k, v in table.items() if k != "name"}))
    names = [c.name for c in (*BUILTIN, *out)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path}: collection name(s) {dupes} are used twice (or are built in)")
    return tuple(out)


def collection_rule(name: str, rule: Mapping[str, Any]) -> Collection:
    """A collection defined in a shared catalog (``musicfs collection add``):
    *rule* holds the keys of a ``[[collections]]`` table besides its name.
    Raises `ConfigError` saying what is wrong."""
    try:
        (found,) = file_collections(Path("collection"), [{"name": name, **rule}])
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("collection: [[collections]] #1: ", "")) from None
    return found


def catalog_collections(rules: Mapping[str, Mapping[str, Any]]) -> dict[str, Collection]:
    """The collections a shared catalog defines (name -> rule), those that make
    sense to this MusicFS (one of a newer one may not: skipped, with a warning)."""
    found: dict[str, Collection] = {}
    for name, rule in sorted(rules.items()):
        try:
            found[name] = collection_rule(name, rule)
        except ConfigError as exc:
            log.warning("collection %r of the shared catalog is not shown: %s", name, exc)
    return found
