"""No SQL on the catalog outside `musicfs.core.catalog` (issue 14).

The catalog's schema is its own: every other module asks it by a named method,
so a change of a table is a change in one package. Two guards keep it so: the
`Catalog` hands out no connection, cursor or raw-SQL entry point, and no product
module outside the package reaches for one (run SQL on an object it calls a
catalog, or take its private connection). The content cache, cover store and
backups own their own databases and are not concerned.
"""

from __future__ import annotations

import ast
import inspect
import sqlite3
import typing
from pathlib import Path

from musicfs.core.catalog.store import Catalog

PACKAGES = Path(__file__).resolve().parents[3]  # packages/
CATALOG_PACKAGE = PACKAGES / "musicfs-core" / "src" / "musicfs" / "core" / "catalog"
_SQL_CALLS = {"execute", "executemany", "executescript", "cursor"}


def test_the_catalog_hands_out_no_connection_or_raw_sql(tmp_path: Path) -> None:
    assert not _SQL_CALLS & set(dir(Catalog)), "Catalog must not run arbitrary SQL"
    for name, method in inspect.getmembers(Catalog, callable):
        if name.startswith("_"):
            continue
        hints = typing.get_type_hints(method)
        assert not {sqlite3.Connection, sqlite3.Cursor} & set(hints.values()), name
    with Catalog.open(tmp_path / "c.sqlite3") as catalog:
        public = {k: v for k, v in vars(catalog).items() if not k.startswith("_")}
        assert not [k for k, v in public.items() if isinstance(v, sqlite3.Connection)]


def test_no_module_outside_the_catalog_runs_sql_on_it() -> None:
    sources = [
        path
        for path in sorted(PACKAGES.glob("musicfs-*/src/**/*.py"))
        if CATALOG_PACKAGE not in path.parents and "_pb2" not in path.name
    ]
    assert len(sources) > 50  # the walk found the product's modules
    found = [hit for path in sources for hit in _sql_on_a_catalog(path)]
    assert not found, "SQL on the catalog outside musicfs.core.catalog:\n" + "\n".join(found)


def _sql_on_a_catalog(path: Path) -> list[str]:
    """Places in *path* that run SQL on, or take the connection of, a catalog."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Attribute):
            continue
        receiver = ast.unparse(node.value)
        if "catalog" not in receiver.lower():
            continue
        if node.attr in _SQL_CALLS or node.attr == "_conn":
            hits.append(f"{path.relative_to(PACKAGES)}:{node.lineno}: {ast.unparse(node)}")
    return hits
