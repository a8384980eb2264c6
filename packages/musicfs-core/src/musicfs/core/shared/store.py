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
==================  ===========================  ==================================

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
    kind: str  # track, track_removed, overrides, plays
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
        "OR EXISTS (SELECT 1 FROM plays p WHERE p.file_id = t.id))"
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
                self._record_user_data(pending, new, data)
            else:
                relpath = f"{leaving['reldir']}/{leaving['name']}".lstrip("/")
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
            "SELECT id, data FROM departed WHERE audio_id = %s ORDER BY at DESC, id DESC LIMIT 1",
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
        cur.execute("DELETE FROM departed WHERE id = %s", (left["id"],))
        self._record_user_data(pending, track_id, self._user_data(cur, track_id))

    @staticmethod
    def _user_data(cur: psycopg.Cursor[Any], track_id: int) -> dict[str, Any]:
        overrides = cur.execute(
            "SELECT field, value, source FROM overrides WHERE file_id = %s ORDER BY field",
            (track_id,),
        ).fetchall()
        plays = cur.execute(
            "SELECT at FROM plays WHERE file_id = %s ORDER BY at", (track_id,)
        ).fetchall()
        return {"overrides": [dict(o) for o in overrides], "plays": [p["at"] for p in plays]}

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
            count, through = (int(row[0]), row[1]) if row else (0, None)
            if through is not None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('pruned_through', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = "
                    "greatest(meta.value::bigint, excluded.value::bigint)::text",
                    (str(through),),
                )
            return count

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
            count, through = (int(row[0]), row[1]) if row else (0, None)
            if through is not None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('pruned_through', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = "
                    "greatest(meta.value::bigint, excluded.value::bigint)::text",
                    (str(through),),
                )
            return count

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
