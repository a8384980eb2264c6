"""``[catalog]``: the catalog a mount uses.

``shared = "postgresql://user@host:port/database"`` names a catalog on
PostgreSQL shared by several machines (issue 16, docs/shared-catalog.md); unset
(the default), each mount keeps its own SQLite catalog. The URL is checked as it
is read (scheme, database, no password: that goes in the credentials store),
and the PostgreSQL driver is imported only then, so a config without it never
loads it.

Not wired yet: the section is read only where it is passed to
`musicfs.core.config.settings.load_config` (``sections=[CATALOG]``), and the
mount does not use it (see docs/shared-catalog.md, "Not done yet").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from musicfs.core.config.sections import Section
from musicfs.core.values import Setting, parse_str


@dataclass(frozen=True)
class CatalogSettings:
    """``[catalog]``: where the catalog lives."""

    shared: str | None = None


def _shared_url(value: Any) -> str | None:
    text = parse_str(value).strip()
    if not text:
        return None
    # Only a config that names a shared catalog pays for the driver.
    from musicfs.core.shared.connect import parse_url
    from musicfs.core.shared.errors import SharedCatalogError

    try:
        parse_url(text)
    except SharedCatalogError as exc:
        raise ValueError(str(exc)) from None
    return text


CATALOG = Section(
    "catalog",
    CatalogSettings,
    {
        "shared": Setting(
            "shared",
            _shared_url,
            "postgresql://user@host:port/db of a catalog shared by several machines "
            "(password in the credentials store as [catalog] password)",
        )
    },
)
