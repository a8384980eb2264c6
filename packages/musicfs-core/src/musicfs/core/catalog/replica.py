"""A catalog kept as a replica of a shared catalog (issue 16): the rows the
change feed (`musicfs.core.shared.feed`) writes, and what the replica remembers.

A replica's files carry the shared catalog's track ids (`replicate_file`), so
the user data of one track has one id on every machine. Which catalog it
follows and the last change applied are settings (`replica_state`), written in
the same transaction as the changes themselves: after a crash the replica
resumes exactly where its last commit left it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from musicfs.core.catalog.rows import Part, replica_key, split_relpath
from musicfs.core.model import TAG_FIELDS, ScannedFile

#: The per-track user data a shared catalog holds (of identity's USER_TABLES and
#: what goes with them); imported playlists are shared too (`clear_user_data`),
#: those read from origin files stay with the machine that scans them.
SHARED_USER_TABLES: tuple[str, ...] = (
    "overrides", "plays", "ratings", "pins", "moves", "imported_plays",
)  # fmt: skip
#: Settings holding the collections defined in the shared catalog, by name
#: (their rule as JSON): the replica keeps them as it keeps its place in the feed.
_COLLECTION = "shared.collection."

_CATALOG_ID = "shared.catalog_id"
_APPLIED_SEQ = "shared.applied_seq"
_BOOTSTRAP = "shared.bootstrap"
#: This replica's id in the shared catalog's ``replicas`` (feed pruning).
_REPLICA_ID = "shared.replica_id"
#: The last change whose tree work (re-placing, overlays) the mount has done.
_HANDLED_SEQ = "shared.handled_seq"


class ReplicaRows(Part):
    """Rows with the shared catalog's ids, and the replica's place in the feed."""

    def replicate_file(self, file_id: int, scanned: ScannedFile, scanned_at: float) -> int | None:
        """Write the row of track *file_id* as the shared catalog has it. A row
        of another id at its path (left by a change not seen) is dropped first:
        its id is returned."""
        reldir, name = split_relpath(scanned.relpath)
        stale = self._conn.execute(
            "SELECT id FROM files WHERE origin = ? AND reldir = ? AND name = ? AND id != ?",
            (scanned.origin, reldir, name, file_id),
        ).fetchone()
        if stale is not None:
            self._conn.execute("DELETE FROM files WHERE id = ?", (stale[0],))
        cols: tuple[str, ...] = ("id", "origin", "reldir", "name", "size", "mtime_ns")
        cols += ("ctime_ns", "format", "error", "scanned_at", "replica_key", "content_hash")
        cols += ("audio_id", *TAG_FIELDS)
        values: Sequence[Any] = (
            file_id, scanned.origin, reldir, name, scanned.stat.size, scanned.stat.mtime_ns,
            scanned.stat.ctime_ns, scanned.format, scanned.error, scanned_at,
            replica_key(scanned), None, scanned.audio_id, *scanned.tags.as_row(),
        )  # fmt: skip
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
        self._conn.execute(
            f"INSERT INTO files ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}",
            values,
        )
        return None if stale is None else int(stale[0])

    def unplaced_files(self, after: int = 0) -> list[int]:
        """Files past id *after* that have no place in the tree yet (rows a copy
        just wrote). A copy goes in id order: asking past the last id placed
        keeps each batch's question the size of the batch, not of the replica."""
        rows = self._conn.execute(
            "SELECT f.id FROM files f WHERE f.id > ? AND NOT EXISTS "
            "(SELECT 1 FROM nodes n WHERE n.file_id = f.id) ORDER BY f.id",
            (after,),
        ).fetchall()
        return [int(row[0]) for row in rows]

    def has_user_data(self) -> bool:
        """Whether any file has overrides or plays (which a copy of a shared
        catalog would replace: a machine that scanned on its own may join with
        its ratings and pins, which name its own ids and are dropped)."""
        return any(
            self._conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None
            for table in ("overrides", "plays")
        )

    # -- user data the feed brings beyond overrides and plays -------------------------------

    def replicate_pin_request(self, request: int, kind: str, value: str, at: float) -> None:
        """Pin request *request* as the shared catalog has it (same id)."""
        self._conn.execute(
            "DELETE FROM pin_requests WHERE kind = ? AND value = ? AND id != ?",
            (kind, value, request),
        )
        self._conn.execute(
            "INSERT INTO pin_requests (id, kind, value, at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, value = excluded.value, "
            "at = excluded.at",
            (request, kind, value, at),
        )

    def add_pins(self, file_id: int, requests: Sequence[int]) -> None:
        """Track *file_id* is pinned by *requests* too (those this replica has)."""
        self._conn.executemany(
            "INSERT OR IGNORE INTO pins (file_id, request) "
            "SELECT ?, id FROM pin_requests WHERE id = ?",
            [(file_id, r) for r in requests],
        )

    def set_imported_plays(self, file_id: int, source: str, count: int) -> None:
        """The running total last imported from *source* for a file (its plays
        come as plays changes of their own)."""
        self._conn.execute(
            "INSERT INTO imported_plays (file_id, source, count) VALUES (?, ?, ?) "
            "ON CONFLICT (file_id, source) DO UPDATE SET count = excluded.count",
            (file_id, source, count),
        )

    def set_moves(self, file_id: int, moves: Sequence[Sequence[Any]]) -> None:
        """Where track *file_id* was before: (origin, relpath, when) each."""
        self._conn.executemany(
            "INSERT INTO moves (origin, relpath, file_id, at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (origin, relpath) DO UPDATE SET file_id = excluded.file_id, "
            "at = excluded.at",
            [(m[0], m[1], file_id, float(m[2])) for m in moves],
        )

    def shared_collections(self) -> dict[str, dict[str, Any]]:
        """The collections defined in the shared catalog: name -> rule."""
        rows = self._conn.execute(
            "SELECT key, value FROM settings WHERE substr(key, 1, ?) = ? ORDER BY key",
            (len(_COLLECTION), _COLLECTION),
        ).fetchall()
        found: dict[str, dict[str, Any]] = {}
        for key, value in rows:
            if not str(key).startswith(_COLLECTION):
                continue
            try:
                found[str(key)[len(_COLLECTION) :]] = dict(json.loads(value))
            except (ValueError, TypeError):
                continue  # unreadable: skipped, the next copy writes it again
        return found

    def set_shared_collection(self, name: str, rule: dict[str, Any] | None) -> None:
        """Keep (or with None forget) a collection defined in the shared catalog."""
        if rule is None:
            self._conn.execute("DELETE FROM settings WHERE key = ?", (_COLLECTION + name,))
            return
        self._conn.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_COLLECTION + name, json.dumps(rule, sort_keys=True)),
        )

    def forget_files(self) -> None:
        """Drop every file row, and what hangs on them (a local scan's rows,
        before the first copy of a shared catalog)."""
        self._conn.execute("DELETE FROM files")

    def clear_user_data(self) -> None:
        """Drop every file's user data that the shared catalog holds (a bootstrap
        that starts over copies it again)."""
        for table in SHARED_USER_TABLES:
            self._conn.execute(f"DELETE FROM {table}")
        self._conn.execute("DELETE FROM pin_requests")
        # Imported playlists (those of origin files are this machine's scan's).
        self._conn.execute("DELETE FROM playlists WHERE substr(source, 1, 7) != 'origin:'")
        self._conn.execute("DELETE FROM settings WHERE substr(key, 1, ?) = ?",
                           (len(_COLLECTION), _COLLECTION))  # fmt: skip
        self._conn.execute("DELETE FROM overlays")

    def replica_state(self) -> tuple[str | None, int, bool]:
        """(id of the shared catalog followed, last change applied, whether a
        bootstrap began and has not finished)."""
        found = dict(
            self._conn.execute(
                "SELECT key, value FROM settings WHERE key IN (?, ?, ?)",
                (_CATALOG_ID, _APPLIED_SEQ, _BOOTSTRAP),
            ).fetchall()
        )
        return (
            found.get(_CATALOG_ID),
            int(found.get(_APPLIED_SEQ, 0)),
            _BOOTSTRAP in found,
        )

    def set_replica_state(self, catalog_id: str, applied_seq: int) -> None:
        """Record that changes up to *applied_seq* of *catalog_id* are applied."""
        self._conn.executemany(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(_CATALOG_ID, catalog_id), (_APPLIED_SEQ, str(applied_seq))],
        )
        self._conn.execute("DELETE FROM settings WHERE key = ?", (_BOOTSTRAP,))

    def replica_id(self) -> str:
        """This replica's id, made the first time it is asked for."""
        row = self._conn.execute(
            "SELECT value FROM settings WHERE key = ?", (_REPLICA_ID,)
        ).fetchone()
        if row is not None:
            return str(row[0])
        made = uuid.uuid4().hex
        self._conn.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (_REPLICA_ID, made))
        return made

    def handled_seq(self) -> int | None:
        """The last change the mount made its tree for (`set_handled_seq`); -1:
        a copy whose tree is not done; None: never recorded."""
        row = self._conn.execute(
            "SELECT value FROM settings WHERE key = ?", (_HANDLED_SEQ,)
        ).fetchone()
        return None if row is None else int(row[0])

    def set_handled_seq(self, seq: int) -> None:
        """Record that the mount re-placed the tracks (and made the overlays)
        of every change up to *seq*: after a crash between applying changes
        and that work, the mount does it for the changes after *seq*."""
        self._conn.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_HANDLED_SEQ, str(seq)),
        )

    def begin_bootstrap(self, catalog_id: str) -> None:
        """Note that a copy of *catalog_id* began (a restart starts it over)."""
        self._conn.execute("DELETE FROM settings WHERE key IN (?, ?)", (_CATALOG_ID, _APPLIED_SEQ))
        self._conn.execute(
            "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
            (_BOOTSTRAP, f"{catalog_id} {time.time()}"),
        )
