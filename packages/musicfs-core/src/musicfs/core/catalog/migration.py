"""Reading a whole catalog out for ``musicfs catalog migrate`` (issue 16): the
rows a shared catalog takes (files, overrides, plays, ratings, pins, moves,
imported play counts, departed user data), in
batches of one consistent read, and counts of what stays with this machine.

The shared catalog (`musicfs.core.shared.migrate`) gets the files with their
ids as they are here, so after a migration this catalog's ids are the shared
ones and every table that names a file by id and stays here (playlists)
still names the right one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from musicfs.core.catalog.rows import Part
from musicfs.core.model import TAG_FIELDS

#: Columns of `file_rows`, in order: the id, then the shared ``tracks`` columns.
FILE_COLUMNS: tuple[str, ...] = (
    "id", "origin", "reldir", "name", "size", "mtime_ns", "ctime_ns", "format", "error",
    "scanned_at", "audio_id", *TAG_FIELDS,
)  # fmt: skip

#: User data a shared catalog takes besides overrides and plays: (table, what to call it).
SHARED_MORE: tuple[tuple[str, str], ...] = (
    ("ratings", "ratings"),
    ("pin_requests", "pins"),
    ("moves", "old paths of moved tracks"),
    ("imported_plays", "imported play counts"),
    ("imported_playlists", "imported playlists"),
)

#: User data a shared catalog does not hold yet: (table, what to call it).
LOCAL_ONLY: tuple[tuple[str, str], ...] = (
    ("origin_playlists", "playlists of origin files (the scanning machine reads them)"),
    ("played_after", "prefetch history"),
)

#: Counted as tables: the playlists imports brought, and those of origin files.
_COUNTED_AS = {
    "imported_playlists": "playlists WHERE substr(source, 1, 7) != 'origin:'",
    "origin_playlists": "playlists WHERE substr(source, 1, 7) = 'origin:'",
}


class MigrationRows(Part):
    """The catalog read out, batch by batch, for a shared catalog."""

    @contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """Every read inside sees the catalog as of one moment (one read transaction)."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN DEFERRED")
        try:
            self._conn.execute("SELECT count(*) FROM settings").fetchone()  # the snapshot starts
            yield
        finally:
            self._conn.execute("COMMIT")

    def migration_counts(self) -> dict[str, int]:
        """Rows per table: those a shared catalog takes, then `LOCAL_ONLY`."""
        tables = ("files", "overrides", "plays", "departed",
                  *(t for t, _ in (*SHARED_MORE, *LOCAL_ONLY)))  # fmt: skip
        return {
            table: int(
                self._conn.execute(
                    f"SELECT count(*) FROM {_COUNTED_AS.get(table, table)}"
                ).fetchone()[0]
            )
            for table in tables
        }

    def file_count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM files").fetchone()[0])

    def _keyset(self, query: str, size: int) -> Iterator[list[tuple[Any, ...]]]:
        # Keyset pages (rowid > last): each page one indexed range, whatever the size.
        last = -1
        while True:
            rows = self._conn.execute(query, (last, size)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [tuple(row[1:]) for row in rows]
            if len(rows) < size:
                return

    def file_rows(self, size: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
        """Every file as a tuple of `FILE_COLUMNS`, by id."""
        columns = ", ".join(FILE_COLUMNS)
        query = f"SELECT id, {columns} FROM files WHERE id > ? ORDER BY id LIMIT ?"
        return self._keyset(query, size)

    def override_rows(self, size: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
        """Every override as (file_id, field, value, source)."""
        query = (
            "SELECT rowid, file_id, field, value, source FROM overrides "
            "WHERE rowid > ? ORDER BY rowid LIMIT ?"
        )
        return self._keyset(query, size)

    def play_rows(self, size: int = 20000) -> Iterator[list[tuple[Any, ...]]]:
        """Every play as (file_id, at)."""
        query = "SELECT rowid, file_id, at FROM plays WHERE rowid > ? ORDER BY rowid LIMIT ?"
        return self._keyset(query, size)

    def rating_rows(self, size: int = 20000) -> Iterator[list[tuple[Any, ...]]]:
        """Every rating as (file_id, value, source)."""
        query = (
            "SELECT rowid, file_id, value, source FROM ratings WHERE rowid > ? "
            "ORDER BY rowid LIMIT ?"
        )
        return self._keyset(query, size)

    def imported_play_rows(self, size: int = 20000) -> Iterator[list[tuple[Any, ...]]]:
        """Every running total an import last brought, as (file_id, source, count)."""
        query = (
            "SELECT rowid, file_id, source, count FROM imported_plays WHERE rowid > ? "
            "ORDER BY rowid LIMIT ?"
        )
        return self._keyset(query, size)

    def move_rows(self, size: int = 20000) -> Iterator[list[tuple[Any, ...]]]:
        """Every old path of a moved file as (origin, relpath, file_id, at)."""
        query = (
            "SELECT rowid, origin, relpath, file_id, at FROM moves WHERE rowid > ? "
            "ORDER BY rowid LIMIT ?"
        )
        return self._keyset(query, size)

    def imported_playlist_rows(self) -> list[tuple[str, str, list[list[Any]]]]:
        """The playlists imports brought, as (name, source, [[file id or None, text]...])."""
        found = []
        for playlist, name, source in self._conn.execute(
            "SELECT id, name, source FROM playlists WHERE substr(source, 1, 7) != 'origin:' "
            "ORDER BY name"
        ).fetchall():
            entries = self._conn.execute(
                "SELECT file_id, text FROM playlist_entries WHERE playlist = ? ORDER BY position",
                (playlist,),
            ).fetchall()
            found.append((str(name), str(source), [[e[0], str(e[1])] for e in entries]))
        return found

    def pin_rows(self) -> tuple[list[tuple[Any, ...]], list[tuple[int, int]]]:
        """The pin requests as (id, kind, value, at), and the pins as (file_id, request)."""
        requests = self._conn.execute(
            "SELECT id, kind, value, at FROM pin_requests ORDER BY id"
        ).fetchall()
        pins = self._conn.execute("SELECT file_id, request FROM pins ORDER BY request").fetchall()
        return [tuple(r) for r in requests], [(int(r[0]), int(r[1])) for r in pins]

    def departed_rows(self) -> list[tuple[str, str, str, dict[str, Any], float]]:
        """User data waiting for its audio: (audio_id, origin, relpath, data, at),
        data holding the overrides ([{field, value, source}]) and plays ([at])
        the way a shared catalog keeps them (only those that have any)."""
        found = []
        for row in self._conn.execute(
            "SELECT audio_id, origin, relpath, data, at FROM departed ORDER BY id"
        ):
            try:
                data = json.loads(row[3])
            except ValueError:
                continue  # unreadable: it stays here, as it was
            overrides = [
                {"field": o["field"], "value": o.get("value"), "source": o.get("source", "")}
                for o in data.get("overrides", [])
                if "field" in o
            ]
            plays = [float(p["at"]) for p in data.get("plays", []) if "at" in p]
            ratings = [r for r in data.get("ratings", []) if "value" in r]
            if overrides or plays or ratings:
                kept: dict[str, Any] = {"overrides": overrides, "plays": plays}
                if ratings:
                    kept["rating"] = {
                        "value": int(ratings[0]["value"]),
                        "source": ratings[0].get("source", ""),
                    }
                found.append((row[0], row[1], row[2], kept, float(row[4])))
        return found
