"""`SharedCatalog`: the shared catalog on PostgreSQL, where every shared write goes first.

Each write is ONE transaction that changes the tables and records what it
changed in ``changes`` (with ``NOTIFY musicfs_changes``), so it reaches every
replica, the writer's own included, through the change feed
(`musicfs.core.shared.feed`):

==================  ===========================  ==================================
write               tables                       changes recorded (kind: payload)
==================  ===========================  ==================================
write_scan_batch    tracks (upsert, delete),     track: the row; track_removed;
                    user data that follows the   overrides, plays: what a track
                    audio (departed)             got from a removed one
set_overrides       overrides                    overrides: {"set": {field: value}}
clear_overrides     overrides                    overrides: {"clear": [field...]}
add_plays           plays                        plays: {"at": [time...]}
import_plays        plays, imported_plays        plays; imported_plays: {"source",
                                                 "count"}
set_ratings         ratings                      ratings: {"value", "source"}
set_pins            pin_requests, pins           pin_request: {id, kind, value, at,
                                                 files}
drop_pins           pin_requests (pins go too)   pin_dropped: {"id"}
set_collection      collections                  collection: {"name", "rule"|null}
set_playlists       playlists                    playlist: {"name", "source",
                                                 "entries"}
==================  ===========================  ==================================

A scan batch that carries a removed track's user data (overrides, plays,
rating, pins) to the track with its audio also records where it was
(``moves``: the heir's whole history) and the heir's pins.

Changes are recorded at the end of the transaction under the feed lock
(`musicfs.core.shared.schema.FEED_LOCK`), so sequence numbers follow commit
order. Two writes of one field (an override set on two machines): the later
transaction waits for the earlier one's row, commits after it, and gets the
higher sequence number: the later one wins, in PostgreSQL and on every replica.

A failed call raises `SharedCatalogUnavailable` (the server, the reason, the
fix) and drops the connection; the next call connects again. A call that finds
its connection dropped since the last one (a server restart, an idle timeout)
runs once more on a new connection, since nothing of it was written; a failure
at the commit is never retried: whether a commit whose answer was lost went
through is for the caller to settle.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from musicfs.core.catalog.rows import split_relpath
from musicfs.core.model import TAG_FIELDS, ScannedFile, valid_text
from musicfs.core.secrets.credentials import Credentials
from musicfs.core.secrets.redact import redact
from musicfs.core.shared import schema
from musicfs.core.shared.connect import (
    CONNECT_TIMEOUT,
    ServerAddress,
    connect,
    interrupt,
    parse_url,
    unavailable,
)
from musicfs.core.shared.errors import ReplicaBehind, SharedCatalogError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often a write the server rolled back for a conflict is tried.
_ATTEMPTS = 3
#: A transaction the server rolled back for a conflict with another (SQLSTATE
#: 40xxx; psycopg derives each from OperationalError, not from TransactionRollback).
_CONFLICTS = (
    psycopg.errors.TransactionRollback,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
)
#: What a lost or refused connection raises in psycopg.
_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change feed."""

    seq: int
    kind: str  # track, track_removed, overrides, plays, ratings, moves, pins, pin_request...
    track_id: int | None
    payload: dict[str, Any]


@dataclass(slots=True)
class _Pending:
    """The changes a write transaction records at its end."""

    rows: list[tuple[str, int | None, Jsonb]] = field(default_factory=list)

    def add(self, kind: str, track_id: int | None, payload: Mapping[str, Any]) -> None:
        self.rows.append((kind, track_id, Jsonb(dict(payload))))


def _text(value: Any) -> Any:
    """A value PostgreSQL and a JSON payload take: text in valid UTF-8 without
    NUL (a tag may hold one), no NaN or infinity (a damaged header's duration)."""
    if isinstance(value, str):
        return valid_text(value).replace("\x00", "\ufffd")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def track_values(scanned: ScannedFile, scanned_at: float) -> tuple[Any, ...]:
    """The ``tracks`` row of a scanned file, in `schema.TRACK_COLUMNS` order."""
    reldir, name = split_relpath(scanned.relpath)
    tags = scanned.tags.as_row()
    flags = {TAG_FIELDS.index("compilation"), TAG_FIELDS.index("has_art")}
    tags = tuple(bool(v) if i in flags else v for i, v in enumerate(tags))
    values = (
        scanned.origin, reldir, name, scanned.stat.size, scanned.stat.mtime_ns,
        scanned.stat.ctime_ns, scanned.format, scanned.error, scanned_at, scanned.audio_id,
        *tags,
    )  # fmt: skip
    return tuple(_text(v) for v in values)


_COLUMNS = ", ".join(schema.TRACK_COLUMNS)
_UPSERT = (
    f"INSERT INTO tracks ({_COLUMNS}) VALUES ({', '.join(['%s'] * len(schema.TRACK_COLUMNS))}) "
    "ON CONFLICT (origin, reldir, name) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in schema.TRACK_COLUMNS[3:])
    # xmax is 0 on a row this statement inserted (not on one it updated).
    + f" RETURNING id, (xmax = 0) AS inserted, {_COLUMNS}"
)

# The last sequence number handed out: of the changes kept, or of those pruned.
_LAST_SEQ = (
    "SELECT greatest(coalesce(max(seq), 0), coalesce((SELECT value::bigint FROM meta "
    "WHERE key = 'pruned_through'), 0)) FROM changes"
)


class SharedCatalog:
    """One machine's connection to the shared catalog. Use one per thread.

    Open with `open` (connects and migrates, or raises); close with `close` or
    a ``with`` block.
    """

    def __init__(
        self,
        address: ServerAddress,
        credentials: Credentials | None = None,
        *,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.address = address
        self.credentials = credentials
        self.timeout = timeout
        self.catalog_id = ""  # meta.catalog_id, read at the first connection
        self._conn: psycopg.Connection[Any] | None = None

    @classmethod
    def open(
        cls, url: str, credentials: Credentials | None = None, *, timeout: float = CONNECT_TIMEOUT
    ) -> SharedCatalog:
        """Connect to the shared catalog at *url* and migrate its schema."""
        shared = cls(parse_url(url), credentials, timeout=timeout)
        shared._connection()
        return shared

    def __repr__(self) -> str:
        return f"SharedCatalog({self.address})"

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def interrupt(self) -> None:
        """End at once a call another thread is waiting in on a server gone
        silent (it raises `SharedCatalogUnavailable`): the mount is going."""
        interrupt(self._conn)

    def __enter__(self) -> SharedCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the connection -----------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self.close()
        conn = connect(self.address, self.credentials, timeout=self.timeout)
        try:
            schema.migrate(conn, str(self.address))
            with conn.transaction():
                row = conn.execute("SELECT value FROM meta WHERE key = 'catalog_id'").fetchone()
        except _CONNECTION_ERRORS as exc:
            conn.close()
            raise unavailable(self.address, exc) from None
        except BaseException:
            conn.close()
            raise
        self.catalog_id = str(row[0]) if row else ""
        self._conn = conn
        return conn

    def _lost(self, exc: BaseException) -> SharedCatalogError:
        self.close()  # the next call connects again
        return unavailable(self.address, exc)

    def _run(self, work: Callable[[psycopg.Connection[Any], _Pending], T]) -> T:
        """Run *work* in one transaction; the changes it adds to its `_Pending`
        are recorded, and notified, at its end.

        Run again, since nothing of it was written: when the server rolled it
        back for a deadlock or a serialization failure with another machine's
        write (up to `_ATTEMPTS` times); and once when a connection open before
        this call had been dropped meanwhile (a server restart, an idle
        timeout) and failed before the commit. A failure at the commit is not
        retried (it may have gone through)."""
        reconnected = False
        for attempt in range(1, _ATTEMPTS + 1):
            reused = self._conn is not None and not self._conn.closed and not self._conn.broken
            conn = self._connection()
            pending = _Pending()
            committing = False
            try:
                with conn.transaction():
                    result = work(conn, pending)
                    if pending.rows:
                        self._record(conn, pending)
                    committing = True
                return result
            except _CONFLICTS as exc:  # rolled back by the server; the connection is fine
                if attempt < _ATTEMPTS and not committing:
                    log.info("shared catalog %s: %s; again", self.address, type(exc).__name__)
                    continue
                raise SharedCatalogError(
                    f"shared catalog {self.address} refused a write {attempt} times, as it "
                    "conflicted with other machines' writes; try again"
                ) from None
            except _CONNECTION_ERRORS as exc:
                if reused and not reconnected and not committing:
                    log.info("shared catalog %s: connection lost, connecting again", self.address)
                    self.close()
                    reconnected = True
                    continue
                raise self._lost(exc) from None
            except psycopg.errors.ForeignKeyViolation:
                raise  # the caller names the track (`set_overrides`)
            except psycopg.Error as exc:  # refused (read-only, no rights): no retry fixes it
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                reason = redact(lines[0] if lines else type(exc).__name__)
                raise SharedCatalogError(
                    f"shared catalog {self.address} refused the request: {reason}; check the "
                    "server (a read-only standby?) and the rights of its user"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _record(conn: psycopg.Connection[Any], pending: _Pending) -> None:
        # Held to the commit: sequence numbers are handed out in commit order.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema.FEED_LOCK,))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO changes (kind, track_id, payload) VALUES (%s, %s, %s)", pending.rows
            )
            row = cur.execute("SELECT max(seq) FROM changes").fetchone()
            cur.execute("SELECT pg_notify(%s, %s)", (schema.CHANNEL, str(row[0] if row else 0)))

    # -- writes ---------------------------------------------------------------------

    def write_scan_batch(
        self,
        files: Sequence[ScannedFile],
        removed: Sequence[int] = (),
        *,
        scanned_at: float | None = None,
    ) -> list[int]:
        """Record what a scan found: *files* added or changed, the tracks with ids
        *removed* gone. Returns the files' track ids, in order.

        User data follows the audio, as in the SQLite catalog
        (`musicfs.core.catalog.identity`): a removed track's overrides and plays
        go to another track with its audio id and no data of its own (the new
        path of a move), or wait in ``departed`` for the first track that
        arrives with that audio."""
        when = time.time() if scanned_at is None else scanned_at
        rows = [track_values(f, when) for f in files]
        return self._run(lambda conn, pending: self._scan_batch(conn, pending, rows, removed, when))

    def _scan_batch(
        self,
        conn: psycopg.Connection[Any],
        pending: _Pending,
        rows: list[tuple[Any, ...]],
        removed: Sequence[int],
        when: float,
    ) -> list[int]:
        ids: list[int] = []
        arrived: list[tuple[int, str]] = []  # (id, audio id) of new rows
        with conn.cursor(row_factory=dict_row) as cur:
            if rows:
                cur.executemany(_UPSERT, rows, returning=True)
                while True:
                    row = cur.fetchone()
                    if row is not None:
                        track_id = int(row.pop("id"))
                        ids.append(track_id)
                        if row.pop("inserted") and row["audio_id"] is not None:
                            arrived.append((track_id, row["audio_id"]))
                        pending.add("track", track_id, row)
                    if not cur.nextset():
                        break
            if removed:
                self._keep_user_data(cur, pending, list(removed), when)
                cur.execute("DELETE FROM tracks WHERE id = ANY(%s) RETURNING id", (list(removed),))
                for row in cur.fetchall():
                    pending.add("track_removed", int(row["id"]), {})
            for track_id, audio_id in arrived:
                self._adopt(cur, pending, track_id, audio_id)
        return ids

    # -- user data follows the audio ---------------------------------------------------

    _HAS_DATA = (
        "(EXISTS (SELECT 1 FROM overrides o WHERE o.file_id = t.id) "
        "OR EXISTS (SELECT 1 FROM plays p WHERE p.file_id = t.id) "
        "OR EXISTS (SELECT 1 FROM ratings r WHERE r.file_id = t.id) "
        "OR EXISTS (SELECT 1 FROM playlists pl "
        "WHERE pl.entries @> jsonb_build_array(jsonb_build_array(t.id))))"
    )

    def _keep_user_data(
        self, cur: psycopg.Cursor[Any], pending: _Pending, removed: list[int], when: float
    ) -> None:
        """Hand the user data of the *removed* tracks to an heir, or keep it in ``departed``."""
        cur.execute(
            "SELECT id, origin, reldir, name, audio_id FROM tracks t WHERE id = ANY(%s) "
            f"AND audio_id IS NOT NULL AND {self._HAS_DATA} ORDER BY id",
            (removed,),
        )
        for leaving in cur.fetchall():
            old = int(leaving["id"])
            heir = cur.execute(
                "SELECT id FROM tracks t WHERE audio_id = %s AND NOT (id = ANY(%s)) "
                f"AND NOT {self._HAS_DATA} ORDER BY id DESC LIMIT 1",
                (leaving["audio_id"], removed),
            ).fetchone()
            data = self._user_data(cur, old)
            if heir is not None:
                new = int(heir["id"])
                cur.execute("UPDATE overrides SET file_id = %s WHERE file_id = %s", (new, old))
                cur.execute("UPDATE plays SET file_id = %s WHERE file_id = %s", (new, old))
                cur.execute("UPDATE ratings SET file_id = %s WHERE file_id = %s", (new, old))
                cur.execute("UPDATE imported_plays SET file_id = %s WHERE file_id = %s", (new, old))
                # Pins go along (the heir has none of its own pinned by the same request).
                cur.execute(
                    "INSERT INTO pins (file_id, request) SELECT %s, request FROM pins "
                    "WHERE file_id = %s ON CONFLICT DO NOTHING",
                    (new, old),
                )
                self._repoint_playlists(cur, pending, old, new)
                relpath = f"{leaving['reldir']}/{leaving['name']}".lstrip("/")
                self._record_user_data(pending, new, data)
                self._move(cur, pending, old, new, leaving["origin"], relpath, when)
            else:
                relpath = f"{leaving['reldir']}/{leaving['name']}".lstrip("/")
                # What goes along, as in SQLite's departed: pins, and where it was before.
                pins = cur.execute(
                    "SELECT request FROM pins WHERE file_id = %s ORDER BY request", (old,)
                ).fetchall()
                moves = cur.execute(
                    "SELECT origin, relpath, at FROM moves WHERE file_id = %s ORDER BY at", (old,)
                ).fetchall()
                data["file_id"] = old  # what its playlist entries name (`_adopt`)
                if pins:
                    data["pins"] = [int(p["request"]) for p in pins]
                if moves:
                    data["moves"] = [[m["origin"], m["relpath"], m["at"]] for m in moves]
                cur.execute(
                    "INSERT INTO departed (audio_id, origin, relpath, data, at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (leaving["audio_id"], leaving["origin"], relpath, Jsonb(data), when),
                )

    def _adopt(
        self, cur: psycopg.Cursor[Any], pending: _Pending, track_id: int, audio_id: str
    ) -> None:
        """Give a track that just arrived the user data its audio left behind."""
        left = cur.execute(
            "SELECT id, origin, relpath, data, at FROM departed WHERE audio_id = %s "
            "ORDER BY at DESC, id DESC LIMIT 1",
            (audio_id,),
        ).fetchone()
        if left is None:
            return
        data: dict[str, Any] = left["data"]
        cur.executemany(
            "INSERT INTO overrides (file_id, field, value, source) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (file_id, field) DO NOTHING",
            [(track_id, o["field"], o["value"], o["source"]) for o in data.get("overrides", [])],
        )
        cur.executemany(
            "INSERT INTO plays (file_id, at) VALUES (%s, %s)",
            [(track_id, at) for at in data.get("plays", [])],
        )
        rating = data.get("rating")
        if rating is not None:
            cur.execute(
                "INSERT INTO ratings (file_id, value, source) VALUES (%s, %s, %s) "
                "ON CONFLICT (file_id) DO NOTHING",
                (track_id, rating["value"], rating["source"]),
            )
        cur.executemany(
            "INSERT INTO imported_plays (file_id, source, count) VALUES (%s, %s, %s) "
            "ON CONFLICT (file_id, source) DO NOTHING",
            [(track_id, i["source"], i["count"]) for i in data.get("imported_plays", [])],
        )
        cur.executemany(
            "INSERT INTO pins (file_id, request) SELECT %s, id FROM pin_requests WHERE id = %s "
            "ON CONFLICT DO NOTHING",
            [(track_id, int(r)) for r in data.get("pins", [])],
        )
        cur.executemany(
            "INSERT INTO moves (origin, relpath, file_id, at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (origin, relpath) DO NOTHING",
            [(m[0], m[1], track_id, float(m[2])) for m in data.get("moves", [])],
        )
        if data.get("file_id") is not None:
            self._repoint_playlists(cur, pending, int(data["file_id"]), track_id)
        cur.execute("DELETE FROM departed WHERE id = %s", (left["id"],))
        self._record_user_data(pending, track_id, self._user_data(cur, track_id))
        self._move(cur, pending, None, track_id, left["origin"], left["relpath"], left["at"])

    @staticmethod
    def _repoint_playlists(cur: psycopg.Cursor[Any], pending: _Pending, old: int, new: int) -> None:
        """Playlist entries of track *old* name *new* (the track its data went to)."""
        rows = cur.execute(
            "SELECT name, source, entries FROM playlists WHERE entries @> %s",
            (Jsonb([[old]]),),
        ).fetchall()
        for row in rows:
            entries = [[new if e[0] == old else e[0], e[1]] for e in row["entries"]]
            cur.execute(
                "UPDATE playlists SET entries = %s WHERE name = %s", (Jsonb(entries), row["name"])
            )
            payload = {"name": row["name"], "source": row["source"], "entries": entries}
            pending.add("playlist", None, payload)

    @staticmethod
    def _move(  # noqa: PLR0917 (one move's parts)
        cur: psycopg.Cursor[Any],
        pending: _Pending,
        old: int | None,
        new: int,
        origin: str,
        relpath: str,
        when: float,
    ) -> None:
        """Record that track *new* took over the data of the one at *origin*/*relpath*
        (track *old*, when still here): its earlier moves come along, and the
        replicas get the heir's whole history (``moves``) and pins (``pins``)."""
        if old is not None:
            cur.execute("UPDATE moves SET file_id = %s WHERE file_id = %s", (new, old))
        cur.execute(
            "INSERT INTO moves (origin, relpath, file_id, at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (origin, relpath) DO UPDATE SET file_id = excluded.file_id, "
            "at = excluded.at",
            (origin, relpath, new, when),
        )
        moves = cur.execute(
            "SELECT origin, relpath, at FROM moves WHERE file_id = %s ORDER BY at", (new,)
        ).fetchall()
        pending.add("moves", new, {"moves": [[m["origin"], m["relpath"], m["at"]] for m in moves]})
        requests = cur.execute(
            "SELECT request FROM pins WHERE file_id = %s ORDER BY request", (new,)
        ).fetchall()
        if requests:
            pending.add("pins", new, {"requests": [int(r["request"]) for r in requests]})

    @staticmethod
    def _user_data(cur: psycopg.Cursor[Any], track_id: int) -> dict[str, Any]:
        overrides = cur.execute(
            "SELECT field, value, source FROM overrides WHERE file_id = %s ORDER BY field",
            (track_id,),
        ).fetchall()
        plays = cur.execute(
            "SELECT at FROM plays WHERE file_id = %s ORDER BY at", (track_id,)
        ).fetchall()
        rating = cur.execute(
            "SELECT value, source FROM ratings WHERE file_id = %s", (track_id,)
        ).fetchone()
        data: dict[str, Any] = {
            "overrides": [dict(o) for o in overrides],
            "plays": [p["at"] for p in plays],
        }
        if rating is not None:
            data["rating"] = dict(rating)
        imported = cur.execute(
            "SELECT source, count FROM imported_plays WHERE file_id = %s ORDER BY source",
            (track_id,),
        ).fetchall()
        if imported:
            data["imported_plays"] = [dict(i) for i in imported]
        return data

    @staticmethod
    def _record_user_data(pending: _Pending, track_id: int, data: Mapping[str, Any]) -> None:
        """The changes that give a replica's track this user data."""
        by_source: dict[str, dict[str, str | None]] = {}
        for override in data.get("overrides", []):
            by_source.setdefault(override["source"], {})[override["field"]] = override["value"]
        for source, fields in sorted(by_source.items()):
            pending.add("overrides", track_id, {"set": fields, "source": source})
        if data.get("plays"):
            pending.add("plays", track_id, {"at": list(data["plays"])})
        if data.get("rating"):
            pending.add("ratings", track_id, dict(data["rating"]))
        for imported in data.get("imported_plays", []):
            pending.add("imported_plays", track_id, dict(imported))

    def set_overrides(
        self, file_id: int, fields: Mapping[str, str | None], source: str = "user"
    ) -> None:
        """Override tags of a track (values as `model.override_value` returns them)."""
        if not fields:
            return
        # In one order on every machine: two writes of the same fields then wait
        # for each other instead of deadlocking.
        values = {name: _text(fields[name]) for name in sorted(fields)}

        def work(conn: psycopg.Connection[Any], pending: _Pending) -> None:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO overrides (file_id, field, value, source) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (file_id, field) "
                    "DO UPDATE SET value = excluded.value, source = excluded.source",
                    [(file_id, name, value, source) for name, value in values.items()],
                )
            pending.add("overrides", file_id, {"set": values, "source": source})

        try:
            self._run(work)
        except psycopg.errors.ForeignKeyViolation:
            raise self._no_track(file_id) from None

    def clear_overrides(self, file_id: int, fields: Sequence[str] = ()) -> list[str]:
        """Forget the overrides of *fields* (all when empty); returns those forgotten."""

        def work(conn: psycopg.Connection[Any], pending: _Pending) -> list[str]:
            if fields:
                rows = conn.execute(
                    "DELETE FROM overrides WHERE file_id = %s AND field = ANY(%s) RETURNING field",
                    (file_id, list(fields)),
                ).fetchall()
            else:
                rows = conn.execute(
                    "DELETE FROM overrides WHERE file_id = %s RETURNING field", (file_id,)
                ).fetchall()
            cleared = sorted(str(row[0]) for row in rows)
            if cleared:
                pending.add("overrides", file_id, {"clear": cleared})
            return cleared

        return self._run(work)

    def add_plays(self, plays: Sequence[tuple[int, float]], batch_id: str = "") -> int:
        """Add (track id, time) plays; those of tracks no longer in the catalog
        are dropped. Returns how many were added.

        With *batch_id* (unique to this batch of plays), a batch the server
        already took is not added again (0): a machine that sent it and
        crashed before forgetting it sends it once more."""
        if not plays:
            return 0

        def work(conn: psycopg.Connection[Any], pending: _Pending) -> int:
            if batch_id:
                # In the same transaction: the plays and their batch's id go in together.
                new = conn.execute(
                    "INSERT INTO play_batches (id) VALUES (%s) ON CONFLICT (id) DO NOTHING "
                    "RETURNING id",
                    (batch_id,),
                ).fetchone()
                if new is None:
                    log.info("plays of batch %s were already sent; not counted again", batch_id)
                    return 0
            wanted = sorted({file_id for file_id, _ in plays})
            # Locked (KEY SHARE) so that no track is removed before the plays go in.
            rows = conn.execute(
                "SELECT id FROM tracks WHERE id = ANY(%s) FOR KEY SHARE", (wanted,)
            ).fetchall()
            present = {int(row[0]) for row in rows}
            kept = [(f, float(at)) for f, at in plays if f in present]
            if kept:
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO plays (file_id, at) VALUES (%s, %s)", kept)
                by_track: dict[int, list[float]] = {}
                for file_id, at in kept:
                    by_track.setdefault(file_id, []).append(at)
                for file_id, times in sorted(by_track.items()):
                    pending.add("plays", file_id, {"at": times})
            return len(kept)

        return self._run(work)

    def import_plays(
        self, plays: Sequence[tuple[int, int, float]], source: str = ""
    ) -> dict[int, int]:
        """Add plays brought by an import, as (track id, count, last played).
        With *source* (a program that keeps running totals, e.g. "itunes"),
        *count* is its total: only the plays past the total last imported from
        it (on any machine) are added, and the total is kept. Tracks no longer
        in the catalog are left out. Returns the plays added, by track id."""
        if not plays:
            return {}

        def work(conn: psycopg.Connection[Any], pending: _Pending) -> dict[int, int]:
            wanted = sorted({file_id for file_id, _, _ in plays})
            rows = conn.execute(
                "SELECT id FROM tracks WHERE id = ANY(%s) FOR KEY SHARE", (wanted,)
            ).fetchall()
            present = {int(row[0]) for row in rows}
            added: dict[int, int] = {}
            with conn.cursor() as cur:
                for file_id, count, last in plays:
                    if file_id not in present:
                        continue
                    new = count
                    if source:
                        row = cur.execute(
                            "SELECT count FROM imported_plays WHERE file_id = %s AND source = %s "
                            "FOR UPDATE",
                            (file_id, source),
                        ).fetchone()
                        new = count - (int(row[0]) if row is not None else 0)
                        cur.execute(
                            "INSERT INTO imported_plays (file_id, source, count) "
                            "VALUES (%s, %s, %s) ON CONFLICT (file_id, source) "
                            "DO UPDATE SET count = excluded.count",
                            (file_id, source, count),
                        )
                        pending.add("imported_plays", file_id, {"source": source, "count": count})
                    if new > 0:
                        at = float(last)
                        cur.executemany(
                            "INSERT INTO plays (file_id, at) VALUES (%s, %s)", [(file_id, at)] * new
                        )
                        pending.add("plays", file_id, {"at": [at] * new})
                        added[file_id] = added.get(file_id, 0) + new
            return added

        return self._run(work)

    def set_ratings(self, ratings: Sequence[tuple[int, int | None]], source: str) -> int:
        """Rate tracks 0-100 (None: no rating), as (track id, rating); those of
        tracks no longer in the catalog are dropped. Returns how many were set."""
        for _, value in ratings:
            if value is not None and not 0 <= value <= 100:
                raise ValueError(f"a rating is 0-100, got {value}")
        if not ratings:
            return 0

        def work(conn: psycopg.Connection[Any], pending: _Pending) -> int:
            wanted = sorted({file_id for file_id, _ in ratings})
            rows = conn.execute(
                "SELECT id FROM tracks WHERE id = ANY(%s) FOR KEY SHARE", (wanted,)
            ).fetchall()
            present = {int(row[0]) for row in rows}
            last = {f: v for f, v in ratings if f in present}  # the last one of a track wins
            with conn.cursor() as cur:
                for file_id, value in sorted(last.items()):
                    if value is None:
                        cur.execute("DELETE FROM ratings WHERE file_id = %s", (file_id,))
                    else:
                        cur.execute(
                            "INSERT INTO ratings (file_id, value, source) VALUES (%s, %s, %s) "
                            "ON CONFLICT (file_id) DO UPDATE SET value = excluded.value, "
                            "source = excluded.source",
                            (file_id, value, source),
                        )
                    pending.add("ratings", file_id, {"value": value, "source": source})
            return len(last)

        return self._run(work)

    def set_pins(self, requests: Mapping[tuple[str, str], Sequence[int]], at: float) -> None:
        """Make each pin request (kind, value) pin exactly these track ids (a
        new request is made); tracks no longer in the catalog are left out."""
        if not requests:
            return

        def work(conn: psycopg.Connection[Any], pending: _Pending) -> None:
            for (kind, value), ids in sorted(requests.items()):
                row = conn.execute(
                    "INSERT INTO pin_requests (kind, value, at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (kind, value) DO UPDATE SET kind = excluded.kind "
                    "RETURNING id, at",
                    (kind, _text(value), at),
                ).fetchone()
                assert row is not None
                request, made = int(row[0]), float(row[1])
                conn.execute("DELETE FROM pins WHERE request = %s", (request,))
                kept = conn.execute(
                    "INSERT INTO pins (file_id, request) SELECT id, %s FROM tracks "
                    "WHERE id = ANY(%s) RETURNING file_id",
                    (request, sorted(set(ids))),
                ).fetchall()
                files = sorted(int(r[0]) for r in kept)
                payload = {"id": request, "kind": kind, "value": value, "at": made, "files": files}
                pending.add("pin_request", None, payload)

        self._run(work)

    def drop_pins(self, requests: Sequence[tuple[str, str]] = (), everything: bool = False) -> int:
        """Forget pin requests (kind, value), or all of them; returns how many went."""

        def work(conn: psycopg.Connection[Any], pending: _Pending) -> int:
            if everything:
                rows = conn.execute("DELETE FROM pin_requests RETURNING id").fetchall()
            else:
                rows = []
                for kind, value in requests:
                    rows += conn.execute(
                        "DELETE FROM pin_requests WHERE kind = %s AND value = %s RETURNING id",
                        (kind, value),
                    ).fetchall()
            for row in rows:
                pending.add("pin_dropped", None, {"id": int(row[0])})
            return len(rows)

        return self._run(work)

    def set_playlists(
        self, playlists: Mapping[str, Sequence[tuple[int | None, str]]], source: str
    ) -> None:
        """Store playlists an import brought (name -> entries: track id or None,
        the entry's text), each in place of any playlist of that name."""
        if not playlists:
            return

        def work(conn: psycopg.Connection[Any], pending: _Pending) -> None:
            for name, entries in sorted(playlists.items()):
                kept = [[f, _text(text)] for f, text in entries]
                conn.execute(
                    "INSERT INTO playlists (name, source, entries, at) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET source = excluded.source, "
                    "entries = excluded.entries, at = excluded.at",
                    (_text(name), source, Jsonb(kept), time.time()),
                )
                pending.add("playlist", None, {"name": name, "source": source, "entries": kept})

        self._run(work)

    def set_collection(self, name: str, rule: Mapping[str, Any] | None) -> bool:
        """Define (or redefine) collection *name* with *rule* (the keys of a
        ``[[collections]]`` table besides its name); None removes it. Returns
        whether something changed (False: no such collection to remove)."""

        def work(conn: psycopg.Connection[Any], pending: _Pending) -> bool:
            if rule is None:
                gone = conn.execute(
                    "DELETE FROM collections WHERE name = %s RETURNING name", (name,)
                ).fetchone()
                if gone is None:
                    return False
            else:
                conn.execute(
                    "INSERT INTO collections (name, rule, at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET rule = excluded.rule, at = excluded.at",
                    (name, Jsonb(dict(rule)), time.time()),
                )
            pending.add("collection", None, {"name": name, "rule": rule})
            return True

        return self._run(work)

    def collections(self) -> dict[str, dict[str, Any]]:
        """The collections defined in the catalog: name -> rule."""
        rows = self._run(
            lambda conn, _: conn.execute(
                "SELECT name, rule FROM collections ORDER BY name"
            ).fetchall()
        )
        return {str(r[0]): dict(r[1]) for r in rows}

    def _no_track(self, file_id: int) -> SharedCatalogError:
        return SharedCatalogError(
            f"shared catalog {self.address} has no track with id {file_id} (it was removed); "
            "rescan its folder or try again once the change has reached this machine"
        )

    # -- reads ------------------------------------------------------------------------

    def last_seq(self) -> int:
        """The sequence number of the latest change (0: none yet)."""
        return int(self._read_one(_LAST_SEQ))

    def changes_after(self, seq: int, limit: int = 10_000) -> list[Change]:
        """Up to *limit* changes after sequence number *seq*, oldest first.
        Raises `ReplicaBehind` if some of them were pruned (`prune_changes`)."""

        def work(conn: psycopg.Connection[Any], _: _Pending) -> tuple[int, list[Any]]:
            # One snapshot for both: a prune between them cannot hide a gap.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            pruned = conn.execute("SELECT value FROM meta WHERE key = 'pruned_through'").fetchone()
            rows = conn.execute(
                "SELECT seq, kind, track_id, payload FROM changes WHERE seq > %s "
                "ORDER BY seq LIMIT %s",
                (seq, limit),
            ).fetchall()
            return (int(pruned[0]) if pruned else 0), rows

        pruned, rows = self._run(work)
        if pruned > seq:
            raise ReplicaBehind(
                f"a replica at change {seq} of shared catalog {self.address} is behind what "
                f"it keeps (changes up to {pruned} were pruned); the replica must be copied again"
            )
        return [Change(int(r[0]), str(r[1]), r[2], dict(r[3])) for r in rows]

    def prune_changes(self, older_than: float) -> int:
        """Forget the changes recorded more than *older_than* seconds ago (else
        the feed grows forever); a replica that had not applied them is copied
        again. Returns how many were forgotten."""

        def work(conn: psycopg.Connection[Any], _: _Pending) -> int:
            row = conn.execute(
                "WITH gone AS (DELETE FROM changes WHERE at < now() - make_interval(secs => %s) "
                "RETURNING seq) SELECT count(*), max(seq) FROM gone",
                (float(older_than),),
            ).fetchone()
            return _pruned(conn, row)

        return self._run(work)

    def report_applied(self, replica_id: str, applied_seq: int) -> None:
        """Record that replica *replica_id* applied the changes up to
        *applied_seq* (now): `prune_feed` keeps what it has not applied yet."""
        self._run(
            lambda conn, _: conn.execute(
                "INSERT INTO replicas (id, applied_seq) VALUES (%s, %s) ON CONFLICT (id) DO "
                "UPDATE SET applied_seq = excluded.applied_seq, seen_at = now()",
                (replica_id, applied_seq),
            )
        )

    def prune_feed(self, keep: float) -> int:
        """Forget the changes every replica has applied, and those older than
        *keep* seconds whatever the replicas (a replica not heard from for
        *keep* seconds no longer holds the feed back: behind it, it is copied
        again); and the ids of play batches older than that. Returns how many
        changes were forgotten."""

        def work(conn: psycopg.Connection[Any], _: _Pending) -> int:
            age = float(keep)
            conn.execute(
                "DELETE FROM replicas WHERE seen_at < now() - make_interval(secs => %s)", (age,)
            )
            conn.execute(
                "DELETE FROM play_batches WHERE at < now() - make_interval(secs => %s)", (age,)
            )
            row = conn.execute("SELECT min(applied_seq) FROM replicas").fetchone()
            floor = int(row[0]) if row and row[0] is not None else 0
            row = conn.execute(
                "WITH gone AS (DELETE FROM changes WHERE seq <= %s "
                "OR at < now() - make_interval(secs => %s) RETURNING seq) "
                "SELECT count(*), max(seq) FROM gone",
                (floor, age),
            ).fetchone()
            return _pruned(conn, row)

        return self._run(work)

    def track(self, file_id: int) -> dict[str, Any] | None:
        """The ``tracks`` row of one track, by column name (None: no such track)."""

        def work(conn: psycopg.Connection[Any], _: _Pending) -> dict[str, Any] | None:
            with conn.cursor(row_factory=dict_row) as cur:
                return cur.execute("SELECT * FROM tracks WHERE id = %s", (file_id,)).fetchone()

        return self._run(work)

    def overrides(self, file_id: int) -> dict[str, str | None]:
        rows = self._run(
            lambda conn, _: conn.execute(
                "SELECT field, value FROM overrides WHERE file_id = %s ORDER BY field",
                (file_id,),
            ).fetchall()
        )
        return {str(r[0]): r[1] for r in rows}

    def _read_one(self, query: str) -> Any:
        row = self._run(lambda conn, _: conn.execute(query.encode()).fetchone())
        return row[0] if row else None

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """A consistent read of the whole catalog (one REPEATABLE READ
        transaction): every row as of one sequence number, for a bootstrap."""
        conn = self._connection()
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                row = conn.execute(_LAST_SEQ.encode()).fetchone()
                yield Snapshot(conn, int(row[0]) if row else 0)
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from None


class Snapshot:
    """The catalog as of change *seq*, read in batches by server-side cursors."""

    def __init__(self, conn: psycopg.Connection[Any], seq: int) -> None:
        self._conn = conn
        self.seq = seq

    def _batches(self, name: str, query: str, size: int) -> Iterator[list[dict[str, Any]]]:
        with self._conn.cursor(name=name, row_factory=dict_row) as cur:
            cur.itersize = size
            cur.execute(query.encode())
            while rows := cur.fetchmany(size):
                yield rows

    def tracks(self, size: int = 5000) -> Iterator[list[dict[str, Any]]]:
        return self._batches("musicfs_tracks", "SELECT * FROM tracks ORDER BY id", size)

    def overrides(self, size: int = 5000) -> Iterator[list[dict[str, Any]]]:
        return self._batches(
            "musicfs_overrides", "SELECT * FROM overrides ORDER BY file_id, field", size
        )

    def plays(self, size: int = 20000) -> Iterator[list[dict[str, Any]]]:
        return self._batches("musicfs_plays", "SELECT * FROM plays ORDER BY file_id, at", size)

    def imported_plays(self, size: int = 20000) -> Iterator[list[dict[str, Any]]]:
        return self._batches(
            "musicfs_imported", "SELECT * FROM imported_plays ORDER BY file_id, source", size
        )

    def ratings(self, size: int = 20000) -> Iterator[list[dict[str, Any]]]:
        return self._batches("musicfs_ratings", "SELECT * FROM ratings ORDER BY file_id", size)

    def pin_requests(self) -> list[dict[str, Any]]:
        """Every pin request with the tracks it pins (``files``), oldest first."""
        with self._conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT r.id, r.kind, r.value, r.at, coalesce(array_agg(p.file_id "
                "ORDER BY p.file_id) FILTER (WHERE p.file_id IS NOT NULL), '{}') AS files "
                "FROM pin_requests r LEFT JOIN pins p ON p.request = r.id "
                "GROUP BY r.id ORDER BY r.id"
            ).fetchall()

    def playlists(self) -> list[dict[str, Any]]:
        with self._conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT name, source, entries FROM playlists ORDER BY name"
            ).fetchall()

    def collections(self) -> list[dict[str, Any]]:
        with self._conn.cursor(row_factory=dict_row) as cur:
            return cur.execute("SELECT name, rule FROM collections ORDER BY name").fetchall()

    def moves(self, size: int = 20000) -> Iterator[list[dict[str, Any]]]:
        return self._batches("musicfs_moves", "SELECT * FROM moves ORDER BY file_id, at", size)


def _pruned(conn: psycopg.Connection[Any], row: tuple[Any, ...] | None) -> int:
    """How many changes a prune's ``(count, max seq)`` *row* forgot; the feed
    remembers how far it was pruned, so a replica behind it copies again."""
    count, through = (int(row[0]), row[1]) if row else (0, None)
    if through is not None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('pruned_through', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = "
            "greatest(meta.value::bigint, excluded.value::bigint)::text",
            (str(through),),
        )
    return count
