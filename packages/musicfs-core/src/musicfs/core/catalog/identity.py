"""Identity across moves (issue 15.1): a user's data follows the audio, not the path.

Every file row carries ``audio_id``, the fingerprint of its audio payload
(`musicfs.core.tags.identity`). What a user did to a track lives in the
*user-data tables* (`USER_TABLES`), each keyed by ``file_id``. When a file leaves
the catalog (deleted, moved, renamed: the scanner sees a path vanish):

- if another file with the same audio is in the catalog and has no user data of
  its own (the new path of a move seen first), the rows are carried to it; else
  to a copy on another origin (which has a copy of the overrides, see below), so
  that the plays join it when the original goes (also when its origin is
  dropped from the config: `depart_origin`);
- else they are kept in ``departed`` under the audio id, and the first new file
  with that audio adopts them (the new path of a move seen later, or a copy on
  another origin after the first one was removed).

A file that arrives while a *different* origin holds the same audio with
overrides (a copy) gets a copy of the overrides, so both replicas show the same
tags; plays stay where they were counted.

Each carry is recorded in ``moves`` (old origin and path -> file), so what
named a file by its old path (a playlist entry) still finds it, and `Moved` is
returned for the ``track.moved`` event.

A file changed in place (same path) keeps its rows: a retag of a format whose
identity covers the whole file (Ogg, WAV) must not lose them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from musicfs.core.catalog.rows import Part, join_relpath, split_relpath

#: The tables of per-track user data, each with a ``file_id`` column.
#: (``playlist_entries``: a removed file's entries stay, matching nothing, so its
#: heir fills them in again rather than inserting them: see `_restore`.)
USER_TABLES: tuple[str, ...] = (
    "overrides",
    "plays",
    "playlist_entries",
    "ratings",
    "imported_plays",
)

#: What goes with the user data: pins (which alone never make a file's data to
#: carry: a pinned folder, collection or search pins the file at its new path
#: again after the scan) and where the file was before (a second move keeps the first).
_CARRIED = (*USER_TABLES, "pins", "moves")

#: How long the data of a file that left the catalog waits for its audio to return.
DEPARTED_DAYS = 365


@dataclass(frozen=True, slots=True)
class Moved:
    """A file that took over the user data of one that left."""

    file_id: int
    origin: str
    relpath: str
    from_origin: str
    from_relpath: str


class Identity(Part):
    """Audio identities, departed user data and the history of moves."""

    def files_with_identity(self, audio_id: str) -> list[int]:
        """Ids of the files whose audio payload has this identity, oldest first."""
        rows = self._conn.execute(
            "SELECT id FROM files WHERE audio_id = ? ORDER BY id", (audio_id,)
        )
        return [row[0] for row in rows]

    def audio_id(self, file_id: int) -> str | None:
        row = self._conn.execute("SELECT audio_id FROM files WHERE id = ?", (file_id,)).fetchone()
        return None if row is None else row[0]

    def set_audio_id(self, file_id: int, audio_id: str) -> None:
        self._conn.execute("UPDATE files SET audio_id = ? WHERE id = ?", (audio_id, file_id))

    def file_id_at(self, origin: str, relpath: str) -> int | None:
        """The file at *origin*/*relpath*, or the one that was moved away from it."""
        reldir, name = split_relpath(relpath)
        row = self._conn.execute(
            "SELECT id FROM files WHERE origin = ? AND reldir = ? AND name = ?",
            (origin, reldir, name),
        ).fetchone()
        if row is None:
            row = self._conn.execute(
                "SELECT file_id FROM moves WHERE origin = ? AND relpath = ?", (origin, relpath)
            ).fetchone()
        return None if row is None else int(row[0])

    def moves_of(self, file_id: int) -> list[tuple[str, str, float]]:
        """Where the file was before, as (origin, relpath, when it moved), latest first."""
        rows = self._conn.execute(
            "SELECT origin, relpath, at FROM moves WHERE file_id = ? ORDER BY at DESC",
            (file_id,),
        )
        return [(row[0], row[1], row[2]) for row in rows]

    def without_identity(self, origin: str) -> list[tuple[int, str]]:
        """(id, relpath) of *origin*'s readable files with user data and no
        identity yet (catalogued before identities were kept, or by a remote
        scan, which leaves them out). Starts from the user data (each table has
        an index on ``file_id``), so it costs little however big the library:
        the mount asks every
        `musicfs.core.sync.scanner.IDENTITY_ROUND` seconds."""
        users = " UNION ".join(
            f"SELECT file_id FROM {t} WHERE file_id IS NOT NULL" for t in USER_TABLES
        )
        rows = self._conn.execute(
            f"SELECT id, reldir, name FROM files WHERE id IN ({users}) "
            f"AND origin = ? AND audio_id IS NULL AND error IS NULL",
            (origin,),
        )
        return [(row[0], join_relpath(row[1], row[2])) for row in rows]

    def departed_lengths(self) -> set[int]:
        """The payload lengths (the first part of an identity) of the audio
        whose user data waits in ``departed``: a file shorter than all of them
        cannot be one that left."""
        lengths: set[int] = set()
        for (audio_id,) in self._conn.execute("SELECT DISTINCT audio_id FROM departed"):
            try:
                lengths.add(int(str(audio_id).partition("-")[0], 16))
            except ValueError:
                continue
        return lengths

    def unidentified(self, file_ids: Sequence[int], least: int) -> list[tuple[int, str]]:
        """(id, relpath) of those of *file_ids* that are readable, have no
        identity and are at least *least* bytes long."""
        return self._relpaths_of(
            file_ids,
            "SELECT id, reldir, name FROM files WHERE id IN ({marks}) "
            "AND audio_id IS NULL AND error IS NULL AND size >= ? ORDER BY id",
            least,
        )

    def overridden_copies(self, file_ids: Sequence[int]) -> list[tuple[int, str]]:
        """(id, relpath) of those of *file_ids* without an identity that look like
        a copy of a track with overrides (the same `replica_key`: format, size,
        duration, identifying tags): the files whose identity is worth two more
        ranged reads, so that a copy gets the overrides (`adopt`)."""
        return self._relpaths_of(
            file_ids,
            "SELECT f.id, f.reldir, f.name FROM files f WHERE f.id IN ({marks}) "
            "AND f.audio_id IS NULL AND f.error IS NULL AND f.replica_key IS NOT NULL "
            "AND EXISTS (SELECT 1 FROM files g JOIN overrides o ON o.file_id = g.id "
            "WHERE g.replica_key = f.replica_key AND g.id != f.id) ORDER BY f.id",
        )

    def _relpaths_of(
        self, file_ids: Sequence[int], query: str, *params: object
    ) -> list[tuple[int, str]]:
        """(id, relpath) of the rows *query* finds among *file_ids*, asked 500
        ids at a time (*query*'s ``{marks}`` is their IN list, *params* follow)."""
        found: list[tuple[int, str]] = []
        for start in range(0, len(file_ids), 500):
            chunk = list(file_ids[start : start + 500])
            rows = self._conn.execute(
                query.format(marks=", ".join("?" * len(chunk))), (*chunk, *params)
            )
            found += [(row[0], join_relpath(row[1], row[2])) for row in rows]
        return found

    # -- leaving and arriving ---------------------------------------------------------

    def forget_file(self, file_id: int) -> Moved | None:
        """Delete a file's row, keeping its user data for its audio (see the
        module docstring). Returns the move if the data went to a file here now."""
        row = self._conn.execute(
            "SELECT origin, reldir, name, audio_id FROM files WHERE id = ?", (file_id,)
        ).fetchone()
        moved = None
        if row is not None and row[3] is not None and self._has_user_data(file_id):
            origin, relpath, audio_id = row[0], join_relpath(row[1], row[2]), row[3]
            heir = self._heir(audio_id, file_id, origin)
            if heir is not None:
                self._carry(file_id, heir)
                moved = self._moved(heir, origin, relpath)
            else:
                self._depart(file_id, audio_id, origin, relpath)
        self._conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
        return moved

    def depart_origin(self, origin: str) -> list[int]:
        """Keep the user data of every file of *origin* (which is being forgotten):
        carried to a copy of its audio on another origin, else kept for its audio.
        Returns the copies that took data over: place them again (their overlay
        is made again, so their size in the tree changes)."""
        heirs: list[int] = []
        for file_id in self._with_user_data(origin):
            row = self._conn.execute(
                "SELECT reldir, name, audio_id FROM files WHERE id = ?", (file_id,)
            ).fetchone()
            if row[2] is None:
                continue
            relpath = join_relpath(row[0], row[1])
            heir = self._heir(row[2], file_id, origin, elsewhere=True)
            if heir is not None:
                self._carry(file_id, heir)
                self._moved(heir, origin, relpath)
                heirs.append(heir)
            else:
                self._depart(file_id, row[2], origin, relpath)
        return heirs

    def may_adopt(self) -> bool:
        """Whether `adopt` could give anything to a file arriving now: some
        departed file's data waits, or some file has overrides to copy. False
        on the first scan of a library, whose files then skip its queries."""
        row = self._conn.execute(
            "SELECT EXISTS (SELECT 1 FROM departed) OR EXISTS (SELECT 1 FROM overrides)"
        ).fetchone()
        return bool(row[0])

    def adopt(self, file_id: int) -> Moved | None:
        """Give a file that just arrived the user data its audio left behind, if
        any; else a copy of the overrides of the same audio on another origin."""
        row = self._conn.execute(
            "SELECT origin, audio_id FROM files WHERE id = ?", (file_id,)
        ).fetchone()
        if row is None or row[1] is None:
            return None
        origin, audio_id = row
        left = self._conn.execute(
            "SELECT id, origin, relpath, data FROM departed WHERE audio_id = ? "
            "ORDER BY at DESC, id DESC LIMIT 1",
            (audio_id,),
        ).fetchone()
        if left is not None:
            self._restore(file_id, json.loads(left[3]))
            self._conn.execute("DELETE FROM departed WHERE id = ?", (left[0],))
            return self._moved(file_id, left[1], left[2])
        source = self._conn.execute(
            "SELECT id FROM files WHERE audio_id = ? AND origin != ? AND id != ? "
            "AND EXISTS (SELECT 1 FROM overrides WHERE overrides.file_id = files.id) "
            "ORDER BY id LIMIT 1",
            (audio_id, origin, file_id),
        ).fetchone()
        if source is not None:
            self._conn.execute(
                "INSERT OR IGNORE INTO overrides (file_id, field, value, source) "
                "SELECT ?, field, value, source FROM overrides WHERE file_id = ?",
                (file_id, source[0]),
            )
            self._conn.execute("DELETE FROM overlays WHERE file_id = ?", (file_id,))
        return None

    def prune_departed(self, now: float | None = None) -> int:
        """Forget user data whose audio has not come back in `DEPARTED_DAYS`."""
        cutoff = (time.time() if now is None else now) - DEPARTED_DAYS * 86400
        return self._conn.execute("DELETE FROM departed WHERE at < ?", (cutoff,)).rowcount

    def departed_count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM departed").fetchone()[0])

    # -- helpers ------------------------------------------------------------------------

    def _has_user_data(self, file_id: int) -> bool:
        return any(
            self._conn.execute(f"SELECT 1 FROM {t} WHERE file_id = ? LIMIT 1", (file_id,))
            .fetchone() is not None
            for t in USER_TABLES
        )  # fmt: skip

    def _with_user_data(self, origin: str) -> list[int]:
        union = " UNION ".join(f"SELECT file_id FROM {t}" for t in USER_TABLES)
        rows = self._conn.execute(
            f"SELECT id FROM files WHERE origin = ? AND id IN ({union})", (origin,)
        )
        return [row[0] for row in rows]

    def _heir(
        self, audio_id: str, file_id: int, origin: str, *, elsewhere: bool = False
    ) -> int | None:
        """The newest other file with this audio and no user data of its own; else
        the newest copy on another origin (its overrides were copied to it when it
        arrived, so it has data: the plays must still join it, as no file with this
        audio will arrive to adopt them). *elsewhere*: only files of other origins
        (all of *origin*'s are leaving)."""
        rows = self._conn.execute(
            "SELECT id, origin FROM files WHERE audio_id = ? AND id != ? ORDER BY id DESC",
            (audio_id, file_id),
        ).fetchall()
        others = [(int(r[0]), r[1]) for r in rows if not (elsewhere and r[1] == origin)]
        for other, _ in others:
            if not self._has_user_data(other):
                return other
        for other, where in others:
            if where != origin:
                return other
        return None

    def _carry(self, old: int, new: int) -> None:
        # Overrides are copied and deleted, not updated: the search index of
        # override values (schema 9) is kept by insert and delete triggers only.
        self._conn.execute(
            "INSERT OR IGNORE INTO overrides (file_id, field, value, source) "
            "SELECT ?, field, value, source FROM overrides WHERE file_id = ?",
            (new, old),
        )
        self._conn.execute("DELETE FROM overrides WHERE file_id = ?", (old,))
        for table in _CARRIED:
            self._conn.execute(
                f"UPDATE OR IGNORE {table} SET file_id = ? WHERE file_id = ?", (new, old)
            )
        self._conn.execute("DELETE FROM overlays WHERE file_id = ?", (new,))

    def _depart(self, file_id: int, audio_id: str, origin: str, relpath: str) -> None:
        data: dict[str, list[dict[str, Any]]] = {}
        for table in _CARRIED:
            cursor = self._conn.execute(f"SELECT * FROM {table} WHERE file_id = ?", (file_id,))
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, r, strict=True)) for r in cursor]
            if rows:
                data[table] = rows
        if data:
            self._conn.execute(
                "INSERT INTO departed (audio_id, origin, relpath, data, at) VALUES (?, ?, ?, ?, ?)",
                (audio_id, origin, relpath, json.dumps(data), time.time()),
            )

    def _restore(self, file_id: int, data: dict[str, list[dict[str, Any]]]) -> None:
        for table, rows in data.items():
            if table not in _CARRIED:
                continue  # a table of a newer MusicFS: nothing to put it in
            if table == "playlist_entries":  # still there, set to NULL with the file
                self._conn.executemany(
                    "UPDATE playlist_entries SET file_id = ? WHERE playlist = ? "
                    "AND position = ? AND text = ? AND file_id IS NULL",
                    [(file_id, r.get("playlist"), r.get("position"), r.get("text")) for r in rows],
                )
                continue
            columns = {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}
            for kept in rows:
                row = {k: v for k, v in kept.items() if k in columns} | {"file_id": file_id}
                names = ", ".join(row)
                marks = ", ".join("?" * len(row))
                try:
                    self._conn.execute(
                        f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})",
                        tuple(row.values()),
                    )
                except sqlite3.IntegrityError:
                    continue  # what it refers to is gone (a pin dropped meanwhile)
        self._conn.execute("DELETE FROM overlays WHERE file_id = ?", (file_id,))

    def _moved(self, file_id: int, from_origin: str, from_relpath: str) -> Moved:
        origin, reldir, name = self._conn.execute(
            "SELECT origin, reldir, name FROM files WHERE id = ?", (file_id,)
        ).fetchone()
        self._conn.execute(
            "INSERT OR REPLACE INTO moves (origin, relpath, file_id, at) VALUES (?, ?, ?, ?)",
            (from_origin, from_relpath, file_id, time.time()),
        )
        return Moved(file_id, origin, join_relpath(reldir, name), from_origin, from_relpath)
