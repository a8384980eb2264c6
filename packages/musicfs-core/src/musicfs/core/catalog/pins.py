"""Pins for offline: which tracks the user asked to keep in the content cache.

Two tables (schema 12). ``pin_requests`` remembers what was asked — a *kind*
(``path``: a file or folder of the tree; ``collection``: a smart collection;
``search``: a query; ``import``: the tracks an import named) and its *value* —
so that ``musicfs cache pins`` can show it and a rescan can pin what newly
matches it. ``pins`` holds the tracks each request pins now, one row per (file
id, request): user data keyed by file id, so a pin follows its file (and goes
with it). A track is pinned while any request pins it.

What the requests mean (resolving a path, a collection, a search) and the pin
limit are the mount's business (`musicfs.core.mount.pins`); this stores rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from musicfs.core.catalog.rows import Part

_BATCH = 500  # ids per query: below SQLite's limit on bound parameters


class PinRequest(NamedTuple):
    """What the user asked to pin: *kind* and *value* (``path`` + the path in the
    tree, ``collection`` + its name, ``search`` + the query, ``import`` + a label)."""

    id: int
    kind: str
    value: str
    at: float


class Pins(Part):
    """The pin requests and the tracks they pin."""

    def pin_requests(self) -> list[PinRequest]:
        """Every pin request, oldest first."""
        rows = self._conn.execute("SELECT id, kind, value, at FROM pin_requests ORDER BY id")
        return [PinRequest(int(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

    def pin_request(self, kind: str, value: str) -> PinRequest | None:
        row = self._conn.execute(
            "SELECT id, kind, value, at FROM pin_requests WHERE kind = ? AND value = ?",
            (kind, value),
        ).fetchone()
        return None if row is None else PinRequest(int(row[0]), kind, value, float(row[3]))

    def add_pin_request(self, kind: str, value: str, at: float) -> int:
        """The id of the request (*kind*, *value*), made now if it is new."""
        self._conn.execute(
            "INSERT INTO pin_requests (kind, value, at) VALUES (?, ?, ?) "
            "ON CONFLICT (kind, value) DO NOTHING",
            (kind, value, at),
        )
        found = self.pin_request(kind, value)
        assert found is not None
        return found.id

    def drop_pin_request(self, request: int) -> None:
        """Forget a request; its rows go with it (a track stays pinned while
        another request pins it)."""
        self._conn.execute("DELETE FROM pin_requests WHERE id = ?", (request,))

    def set_pinned(self, request: int, file_ids: Iterable[int]) -> None:
        """Make the tracks *request* pins exactly *file_ids*."""
        wanted = set(file_ids)
        had = set(self.pinned_by(request))
        self._conn.executemany(
            "DELETE FROM pins WHERE file_id = ? AND request = ?",
            [(f, request) for f in had - wanted],
        )
        self._conn.executemany(
            "INSERT OR IGNORE INTO pins (file_id, request) VALUES (?, ?)",
            [(f, request) for f in sorted(wanted - had)],
        )

    def pinned_by(self, request: int) -> list[int]:
        """The file ids *request* pins, in id order."""
        rows = self._conn.execute(
            "SELECT file_id FROM pins WHERE request = ? ORDER BY file_id", (request,)
        )
        return [int(row[0]) for row in rows]

    def pinned_file_ids(self, besides: Iterable[int] = ()) -> set[int]:
        """Every pinned file id; with *besides*, only those pinned by requests other
        than these (what stays pinned if they are replaced or dropped)."""
        skip = sorted(set(besides))
        if not skip:
            rows = self._conn.execute("SELECT DISTINCT file_id FROM pins")
        else:
            marks = ",".join("?" * len(skip))
            rows = self._conn.execute(
                f"SELECT DISTINCT file_id FROM pins WHERE request NOT IN ({marks})", skip
            )
        return {int(row[0]) for row in rows}

    def file_sizes(self, file_ids: Iterable[int]) -> dict[int, int]:
        """The catalogued size of each of *file_ids* (those still catalogued)."""
        ids = sorted(set(file_ids))
        sizes: dict[int, int] = {}
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            marks = ",".join("?" * len(batch))
            rows = self._conn.execute(f"SELECT id, size FROM files WHERE id IN ({marks})", batch)
            sizes.update((int(r[0]), int(r[1])) for r in rows)
        return sizes
