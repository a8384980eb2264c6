"""The catalogued audio files: the ``files`` table, one row per file seen on an
origin, keyed by (origin, directory, name), with its size, times and tags (or
the error that stopped them being read).

The scanner writes these rows (`upsert_file`, `delete_file` (through
`musicfs.core.catalog.identity.Identity.forget_file`), the census of the
folders a full scan saw); the filesystem, the overlay, verification and
prefetch read them. Replicas — one track on several origins — share a
`replica_key` (`musicfs.core.catalog.rows.replica_key`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from musicfs.core.catalog.rows import KnownFile, Part, Track, replica_key, split_relpath
from musicfs.core.model import TAG_FIELDS, ScannedFile


def _upsert_sql() -> str:
    """The statement of `Tracks.upsert_file` (made once: a scan runs it per file)."""
    cols: tuple[str, ...] = ("origin", "reldir", "name", "size", "mtime_ns", "ctime_ns")
    cols += ("format", "error")
    cols += ("scanned_at", "replica_key", "content_hash", "audio_id", *TAG_FIELDS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols[3:] if c != "audio_id")
    # A file that could not be read this time (a network hiccup) keeps the
    # identity it had: else, moved later, it would lose its user data.
    updates += (
        ", audio_id = CASE WHEN excluded.error IS NULL THEN excluded.audio_id "
        "ELSE files.audio_id END"
    )
    return (
        f"INSERT INTO files ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT (origin, reldir, name) DO UPDATE SET {updates} RETURNING id"
    )


_UPSERT = _upsert_sql()


class Tracks(Part):
    """Reading and writing file rows."""

    # -- reading -------------------------------------------------------------

    def track(self, file_id: int) -> Track | None:
        row = self._conn.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        return None if row is None else Track.from_row(row)

    def tracks(self, **equals: Any) -> Iterator[Track]:
        """Tracks whose columns equal the given values, e.g. ``tracks(artist="Björk")``.

        With no arguments: every catalogued file, in id order.
        """
        allowed = set(TAG_FIELDS) | {"origin", "format", "error"}
        unknown = set(equals) - allowed
        if unknown:
            raise ValueError(f"cannot filter tracks by {sorted(unknown)}; use {sorted(allowed)}")
        where = " AND ".join(f"{k} IS ?" for k in equals) or "1"
        sql = f"SELECT * FROM files WHERE {where} ORDER BY id"
        for row in self._conn.execute(sql, tuple(equals.values())):
            yield Track.from_row(row)

    def track_at(self, origin: str, relpath: str) -> Track | None:
        """The file at *relpath* of *origin*, if catalogued."""
        reldir, name = split_relpath(relpath)
        row = self._conn.execute(
            "SELECT * FROM files WHERE origin = ? AND reldir = ? AND name = ?",
            (origin, reldir, name),
        ).fetchone()
        return None if row is None else Track.from_row(row)

    def origin_of(self, file_id: int) -> str | None:
        """The origin of a file (None: no such file, e.g. its row is already gone)."""
        row = self._conn.execute("SELECT origin FROM files WHERE id = ?", (file_id,)).fetchone()
        return None if row is None else str(row[0])

    def file_ids(self, origin: str | None = None) -> list[int]:
        """Ids of every catalogued file of *origin* (of all origins when None)."""
        if origin is None:
            rows = self._conn.execute("SELECT id FROM files ORDER BY id")
        else:
            rows = self._conn.execute(
                "SELECT id FROM files WHERE origin = ? ORDER BY id", (origin,)
            )
        return [row[0] for row in rows]

    def album_successors(self, file_id: int, limit: int) -> list[Track]:
        """Up to *limit* tracks after *file_id* on its album: the readable files of
        its origin folder with its album tag (any, when it has none), in (disc,
        track, name) order."""
        order = "coalesce(f.disc, 1), coalesce(f.track, 0), f.name"
        rows = self._conn.execute(
            "SELECT f.* FROM files a JOIN files f ON f.origin = a.origin AND f.reldir = a.reldir"
            " WHERE a.id = ? AND f.id != a.id AND f.error IS NULL"
            " AND (a.album IS NULL OR f.album IS a.album)"
            f" AND ({order}) > (coalesce(a.disc, 1), coalesce(a.track, 0), a.name)"
            f" ORDER BY {order} LIMIT ?",
            (file_id, limit),
        )
        return [Track.from_row(row) for row in rows]

    # -- what a scan compares with -------------------------------------------

    def known_files(self, origin: str, reldir: str) -> dict[str, KnownFile]:
        """The files the catalog has for one directory of an origin, by name."""
        rows = self._conn.execute(
            "SELECT id, name, size, mtime_ns, ctime_ns FROM files WHERE origin = ? AND reldir = ?",
            (origin, reldir),
        )
        return {
            r["name"]: KnownFile(r["id"], r["size"], r["mtime_ns"], r["ctime_ns"]) for r in rows
        }

    def files_under(self, origin: str, reldir: str) -> list[int]:
        """Ids of *origin*'s files in folder *reldir* or any folder below it."""
        params: tuple[str, ...]
        if not reldir:
            sql, params = "SELECT id FROM files WHERE origin = ?", (origin,)
        else:
            # '0' follows '/' in byte order: [reldir/, reldir0) is everything below.
            sql = (
                "SELECT id FROM files WHERE origin = ? AND "
                "(reldir = ? OR (reldir >= ? AND reldir < ?))"
            )
            params = (origin, reldir, reldir + "/", reldir + "0")
        return [r[0] for r in self._conn.execute(sql, params)]

    def start_dir_census(self) -> None:
        """Begin noting the folders a full scan of one origin finds (this
        connection only); `files_in_unseen_dirs` then names what vanished."""
        self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS scan_dirs (reldir TEXT PRIMARY KEY)")
        self._conn.execute("DELETE FROM scan_dirs")

    def saw_dir(self, reldir: str) -> None:
        """Note that the scan found folder *reldir*."""
        self._conn.execute("INSERT OR IGNORE INTO scan_dirs VALUES (?)", (reldir,))

    def files_in_unseen_dirs(self, origin: str) -> list[int]:
        """Ids of *origin*'s files in folders the census did not see."""
        rows = self._conn.execute(
            "SELECT id FROM files WHERE origin = ? "
            "AND reldir NOT IN (SELECT reldir FROM scan_dirs)",
            (origin,),
        )
        return [r[0] for r in rows]

    # -- writing -------------------------------------------------------------

    def upsert_file(self, scanned: ScannedFile) -> int:
        """Insert or update the row of a scanned file; return its id."""
        reldir, name = split_relpath(scanned.relpath)
        values: Sequence[Any] = (
            scanned.origin,
            reldir,
            name,
            scanned.stat.size,
            scanned.stat.mtime_ns,
            scanned.stat.ctime_ns,
            scanned.format,
            scanned.error,
            time.time(),
            replica_key(scanned),
            None,  # a new version: its content has not been hashed yet
            scanned.audio_id,
            *scanned.tags.as_row(),
        )
        row = self._conn.execute(_UPSERT, values).fetchone()
        return int(row[0])

    def delete_file(self, file_id: int) -> None:
        self._conn.execute("DELETE FROM files WHERE id = ?", (file_id,))

    def set_ctimes(self, ctimes: Sequence[tuple[int, int]]) -> None:
        """Record the change time of unchanged files as (file id, ctime_ns) pairs
        (rows catalogued before change times were kept)."""
        self._conn.executemany(
            "UPDATE files SET ctime_ns = ? WHERE id = ?", [(c, i) for i, c in ctimes]
        )

    def mark_changed(self, file_id: int) -> None:
        """Make the next scan parse this file again, whatever its size and mtime
        say (its content was found changed), and forget its content hash."""
        self._conn.execute(
            "UPDATE files SET size = -1, content_hash = NULL WHERE id = ?", (file_id,)
        )

    def mark_formats_changed(self, formats: Sequence[str]) -> None:
        """`mark_changed` for every file of these formats (their reader changed)."""
        marks = ", ".join("?" * len(formats))
        self._conn.execute(f"UPDATE files SET size = -1 WHERE format IN ({marks})", tuple(formats))

    # -- replicas and content hashes -----------------------------------------

    def replica_key_of(self, file_id: int) -> tuple[str, str | None]:
        """(origin, replica key) of a file."""
        row = self._conn.execute("SELECT origin, replica_key FROM files WHERE id = ?", (file_id,))
        found = row.fetchone()
        if found is None:
            raise KeyError(f"no file with id {file_id} in the catalog")
        return found[0], found[1]

    def replicas(self, replica_key: str, besides: int = 0) -> list[Track]:
        """Every file with this replica key except *besides*, in id order."""
        rows = self._conn.execute(
            "SELECT * FROM files WHERE replica_key = ? AND id != ? ORDER BY id",
            (replica_key, besides),
        )
        return [Track.from_row(row) for row in rows]

    def content_hash(self, file_id: int) -> str | None:
        row = self._conn.execute("SELECT content_hash FROM files WHERE id = ?", (file_id,))
        found = row.fetchone()
        return None if found is None else found[0]

    def set_content_hash(self, file_id: int, size: int, mtime_ns: int, digest: str) -> bool:
        """Record the hash of a file's whole content, if the row is still that version."""
        cur = self._conn.execute(
            "UPDATE files SET content_hash = ? WHERE id = ? AND size = ? AND mtime_ns = ?",
            (digest, file_id, size, mtime_ns),
        )
        return cur.rowcount > 0
