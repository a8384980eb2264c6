"""Fixtures of the shared catalog's tests: a real PostgreSQL (tests/servers/postgres.py:
one server per session, a fresh database per test) and real SQLite catalogs as
the replicas of two machines (tests/servers/replicas.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests.servers lives at the repository root: make it importable from here.
_REPO_ROOT = str(Path(__file__).resolve().parents[4])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.servers.postgres import postgres, postgres_url  # noqa: E402, F401
from tests.servers.replicas import Machine  # noqa: E402


@pytest.fixture
def machines(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Machine, Machine]]:  # noqa: F811
    """Two machines (A, B) sharing one new catalog, each replica bootstrapped."""
    with (
        Machine(postgres_url, tmp_path / "a" / "catalog.sqlite3") as a,
        Machine(postgres_url, tmp_path / "b" / "catalog.sqlite3") as b,
    ):
        yield a, b
