"""Ops on a shared catalog (issue 16, point 7): moving a machine's SQLite
catalog into a new shared one (`migrate_catalog`), and how far a replica is
behind its shared catalog (`catalog_status`). ``musicfs catalog migrate`` and
``musicfs catalog status`` call them; the caller holds the cache dir's lock.

A migration is one PostgreSQL transaction, so the target is either left empty
(any failure, the server gone half way) or holds the whole catalog:

1. the target must be empty (no tracks, no changes): a catalog is never merged
   into one that other machines already fill;
2. the SQLite catalog is read in one read transaction, in batches, and COPYed
   into ``tracks`` (with the same ids), ``overrides``, ``plays``,
   ``ratings``, ``pin_requests`` and ``pins``, ``moves``, ``imported_plays``,
   ``playlists`` (those imports brought) and ``departed``;
   the ``tracks`` id sequence continues after the highest id;
3. the feed is marked as pruned up to a new sequence number: a machine that
   had already copied the (then empty) shared catalog is behind what the feed
   keeps and copies the catalog again (`feed.Replica.sync`), it never misses
   the migrated rows;
4. after the commit the SQLite catalog records that it is a replica of the
   shared catalog at that sequence number. Its ids are already the shared
   ones, so its origin files' playlists and prefetch history (which the
   shared catalog does not hold) still name the right tracks.

A migration that committed in PostgreSQL but stopped before step 4 is finished
by running it again (the target remembers the token the catalog was given
before the copy). A catalog that is already a replica of the target is left as
it is.
"""

from __future__ import annotations

import math
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from musicfs.core.catalog.migration import FILE_COLUMNS, LOCAL_ONLY, SHARED_MORE
from musicfs.core.catalog.store import Catalog
from musicfs.core.model import valid_text
from musicfs.core.secrets.credentials import Credentials
from musicfs.core.secrets.redact import redact
from musicfs.core.shared import schema
from musicfs.core.shared.connect import ServerAddress, connect, parse_url, unavailable
from musicfs.core.shared.errors import SharedCatalogError

#: Rows read from SQLite and sent per batch.
BATCH = 5000
#: The setting holding the token of a migration under way (see the module docstring).
_TOKEN_SETTING = "shared.migration"
_BOOLEANS = {FILE_COLUMNS.index("compilation"), FILE_COLUMNS.index("has_art")}
_LAST_SEQ = (
    "SELECT greatest(coalesce(max(seq), 0), coalesce((SELECT value::bigint FROM meta "
    "WHERE key = 'pruned_through'), 0)) FROM changes"
)

#: Progress: (what is being copied, rows done, rows in all).
Progress = Callable[[str, int, int], None]


@dataclass(slots=True)
class MigrationReport:
    """What a migration did (or, dry, would do)."""

    server: str
    catalog: str
    dry_run: bool
    tracks: int = 0
    overrides: int = 0
    plays: int = 0
    departed: int = 0
    #: more user data the shared catalog takes: what -> rows (ratings, pins, moves)
    more: dict[str, int] = field(default_factory=dict)
    #: user data the shared catalog does not hold: what -> rows (kept on this machine)
    local_only: dict[str, int] = field(default_factory=dict)
    #: tracks per origin id (every machine must name its origins by these ids)
    origins: dict[str, int] = field(default_factory=dict)
    already: bool = False  # the catalog was a replica of this shared catalog already
    resumed: bool = False  # PostgreSQL had the rows; only the replica's state was written
    applied_seq: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clean(value: Any) -> Any:
    """A value PostgreSQL takes: text in valid UTF-8 without NUL, no NaN."""
    if isinstance(value, str):
        return valid_text(value).replace("\x00", "\ufffd")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return redact(lines[0] if lines else type(exc).__name__)


def _track_row(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(bool(v) if i in _BOOLEANS else _clean(v) for i, v in enumerate(row))


def _target_state(conn: psycopg.Connection[Any]) -> tuple[int, int, int, str, str]:
    """(schema version, tracks, last seq, catalog id, migration token) of the target."""
    version = schema.schema_version(conn)
    if version == 0:
        return 0, 0, 0, "", ""
    tracks = conn.execute("SELECT count(*) FROM tracks").fetchone()
    last = conn.execute(_LAST_SEQ.encode()).fetchone()
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    return (
        version,
        int(tracks[0]) if tracks else 0,
        int(last[0]) if last else 0,
        str(meta.get("catalog_id", "")),
        str(meta.get("migrated_from", "")),
    )


def migrate_catalog(
    catalog_path: Path,
    url: str,
    credentials: Credentials | None = None,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
    progress: Progress | None = None,
) -> MigrationReport:
    """Move the SQLite catalog at *catalog_path* into the empty shared catalog
    at *url*, then make it a replica of it (see the module docstring). With
    *dry_run*, nothing is written anywhere: the report says what would be."""
    started = time.monotonic()
    address = parse_url(url)
    if not catalog_path.exists():
        raise SharedCatalogError(
            f"no catalog at {catalog_path} (never mounted with this cache dir?)"
        )
    catalog = Catalog.open(catalog_path, readonly=dry_run)
    report = MigrationReport(str(address), str(catalog_path), dry_run)
    try:
        conn = connect(address, credentials)
        try:
            _migrate(catalog, conn, address, report, batch, progress)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise unavailable(address, exc) from None
        except psycopg.Error as exc:  # refused by the server (a permission, a value)
            raise SharedCatalogError(
                f"shared catalog {address} refused the migration: {_first_line(exc)}; "
                "nothing was copied (check that the user owns the database)"
            ) from None
        except sqlite3.Error as exc:
            raise SharedCatalogError(
                f"catalog {catalog_path} cannot be read ({exc}); nothing was copied: run "
                "musicfs cache verify on its cache dir"
            ) from None
        finally:
            conn.close()
    finally:
        catalog.close()
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _migrate(  # noqa: PLR0917 (one migration's parts)
    catalog: Catalog,
    conn: psycopg.Connection[Any],
    address: ServerAddress,
    report: MigrationReport,
    batch: int,
    progress: Progress | None,
) -> None:
    followed, applied, bootstrapping = catalog.replica_state()
    _, tracks, last_seq, catalog_id, token = _target_state(conn)
    conn.rollback()  # no transaction left open between the checks and the copy
    mine = catalog.get_setting(_TOKEN_SETTING)
    if followed is not None or bootstrapping:
        if followed is not None and followed == catalog_id:
            report.already, report.applied_seq = True, applied
            report.tracks = catalog.file_count()
            return
        raise SharedCatalogError(
            f"catalog {catalog.path} is already a replica of a shared catalog"
            f"{'' if followed is None else f' (id {followed})'}, not of {address}; only a "
            "catalog of this machine's own is migrated. To use another shared catalog, move "
            f"{catalog.path} away: the next mount copies the shared catalog named in the config"
        )
    if tracks or last_seq:
        made, _, at_seq = token.partition(" ")
        if mine and made == mine and not report.dry_run:
            # At the migration's own change: what other machines wrote since
            # comes through the feed like any change.
            _count(catalog, report)
            _become_replica(catalog, catalog_id, int(at_seq or 0), report)
            report.resumed = True
            return
        raise SharedCatalogError(
            f"shared catalog {address} is not empty (it holds {tracks} tracks, change "
            f"{last_seq}); a catalog is migrated into an empty database only. To join it "
            "instead, mount this machine with [catalog] shared set to it (its catalog is "
            "copied from the shared one; this machine's own overrides and plays are not "
            "merged), or migrate into a new database (createdb, then --to its URL)"
        )
    if report.dry_run:
        with catalog.read_snapshot():
            _count(catalog, report)
        return
    # Committed before the copy: a run that stops after PostgreSQL's commit is
    # finished by the next one, which finds this token there.
    mine = uuid.uuid4().hex
    with catalog.transaction():
        catalog.set_setting(_TOKEN_SETTING, mine)
    schema.migrate(conn, str(address))
    with catalog.read_snapshot():
        departed = _count(catalog, report)
        with conn.transaction():
            catalog_id, seq = _copy(catalog, conn, address, departed, mine, report, batch, progress)
    _become_replica(catalog, catalog_id, seq, report)


def _count(
    catalog: Catalog, report: MigrationReport
) -> list[tuple[str, str, str, dict[str, Any], float]]:
    """Fill *report*'s counts; the departed user data the shared catalog takes."""
    counts = catalog.migration_counts()
    report.tracks, report.overrides = counts["files"], counts["overrides"]
    report.plays = counts["plays"]
    departed = catalog.departed_rows()
    report.departed = len(departed)
    report.more = {name: counts[table] for table, name in SHARED_MORE}
    report.local_only = {name: counts[table] for table, name in LOCAL_ONLY}
    report.origins = dict(sorted(catalog.tracks_per_origin().items()))
    return departed


def _copy(  # noqa: PLR0917 (the steps of one transaction)
    catalog: Catalog,
    conn: psycopg.Connection[Any],
    address: ServerAddress,
    departed: list[tuple[str, str, str, dict[str, Any], float]],
    token: str,
    report: MigrationReport,
    batch: int,
    progress: Progress | None,
) -> tuple[str, int]:
    """Everything into PostgreSQL, inside the caller's transaction; (catalog id, seq)."""
    # Nobody else writes while the copy runs: no scan batch takes an id of ours,
    # no change number is handed out in between. Checked again under the locks.
    conn.execute(
        "LOCK TABLE tracks, overrides, plays, ratings, pin_requests, pins, moves, "
        "imported_plays, playlists, departed, changes IN EXCLUSIVE MODE"
    )
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema.FEED_LOCK,))
    _, tracks, last_seq, catalog_id, _ = _target_state(conn)
    if tracks or last_seq:
        raise SharedCatalogError(
            f"shared catalog {address} was written by another machine while the migration "
            "began; nothing was copied. Run it again against an empty database"
        )
    columns = ", ".join(FILE_COLUMNS)
    _copy_rows(
        conn, f"COPY tracks ({columns}) FROM STDIN", catalog.file_rows(batch),
        "tracks", report.tracks, progress, _track_row,
    )  # fmt: skip
    conn.execute(
        "SELECT setval(pg_get_serial_sequence('tracks', 'id'), "
        "greatest((SELECT max(id) FROM tracks), 1))"
    )
    _copy_rows(
        conn, "COPY overrides (file_id, field, value, source) FROM STDIN",
        catalog.override_rows(batch), "overrides", report.overrides, progress,
        lambda row: tuple(_clean(v) for v in row),
    )  # fmt: skip
    _copy_rows(
        conn, "COPY plays (file_id, at) FROM STDIN", catalog.play_rows(batch * 4),
        "plays", report.plays, progress, tuple,
    )  # fmt: skip
    _copy_rows(
        conn, "COPY ratings (file_id, value, source) FROM STDIN", catalog.rating_rows(batch),
        "ratings", report.more.get("ratings", 0), progress, tuple,
    )  # fmt: skip
    _copy_rows(
        conn, "COPY moves (origin, relpath, file_id, at) FROM STDIN", catalog.move_rows(batch),
        "moves", report.more.get("old paths of moved tracks", 0), progress,
        lambda row: tuple(_clean(v) for v in row),
    )  # fmt: skip
    _copy_rows(
        conn, "COPY imported_plays (file_id, source, count) FROM STDIN",
        catalog.imported_play_rows(batch), "imported play counts",
        report.more.get("imported play counts", 0), progress,
        lambda row: tuple(_clean(v) for v in row),
    )  # fmt: skip
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO playlists (name, source, entries, at) VALUES (%s, %s, %s, %s)",
            [
                (_clean(name), _clean(source),
                 Jsonb([[f, _clean(text)] for f, text in entries]), time.time())
                for name, source, entries in catalog.imported_playlist_rows()
            ],
        )  # fmt: skip
    requests, pins = catalog.pin_rows()
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO pin_requests (id, kind, value, at) VALUES (%s, %s, %s, %s)",
            [(i, k, _clean(v), at) for i, k, v, at in requests],
        )
        cur.executemany("INSERT INTO pins (file_id, request) VALUES (%s, %s)", pins)
        cur.execute(
            "SELECT setval(pg_get_serial_sequence('pin_requests', 'id'), "
            "greatest((SELECT max(id) FROM pin_requests), 1))"
        )
        cur.executemany(
            "INSERT INTO departed (audio_id, origin, relpath, data, at) "
            "VALUES (%s, %s, %s, %s, %s)",
            [(a, o, _clean(r), Jsonb(d), at) for a, o, r, d, at in departed],
        )
    # One new sequence number that no change carries, marked as pruned: a
    # replica that copied the empty catalog before is told to copy it again.
    row = conn.execute("SELECT nextval(pg_get_serial_sequence('changes', 'seq'))").fetchone()
    seq = int(row[0]) if row else 1
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('pruned_through', %s), ('migrated_from', %s) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(seq), f"{token} {seq}"),
    )
    conn.execute("SELECT pg_notify(%s, %s)", (schema.CHANNEL, str(seq)))
    return catalog_id, seq


def _copy_rows(  # noqa: PLR0917 (one copy's statement, rows and progress)
    conn: psycopg.Connection[Any],
    statement: str,
    batches: Iterable[list[tuple[Any, ...]]],
    what: str,
    total: int,
    progress: Progress | None,
    shape: Callable[[Sequence[Any]], tuple[Any, ...]],
) -> None:
    done = 0
    if progress is not None:
        progress(what, 0, total)
    with conn.cursor() as cur, cur.copy(statement.encode()) as copy:
        for rows in batches:
            for row in rows:
                copy.write_row(shape(row))
            done += len(rows)
            if progress is not None:
                progress(what, done, total)


def _become_replica(catalog: Catalog, catalog_id: str, seq: int, report: MigrationReport) -> None:
    with catalog.transaction():
        catalog.set_replica_state(catalog_id, seq)
    report.applied_seq = seq


# -- status -----------------------------------------------------------------------------


@dataclass(slots=True)
class CatalogStatus:
    """How a machine's catalog stands with its shared catalog (``musicfs catalog status``)."""

    catalog: str
    shared: bool  # the config names a shared catalog
    server: str | None = None  # user@host:port/db, never a password
    reachable: bool | None = None  # None: not asked (not shared)
    error: str = ""  # why not reachable, or why the replica does not follow it
    replica_of: str | None = None  # the shared catalog id the local catalog follows
    server_catalog_id: str | None = None
    copying: bool = False  # a first copy began and has not finished
    applied_seq: int | None = None
    server_seq: int | None = None
    lag_changes: int | None = None
    lag_seconds: float | None = None  # age of the oldest change not applied yet
    replica_tracks: int | None = None
    server_tracks: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def catalog_status(
    catalog_path: Path, url: str | None, credentials: Credentials | None = None
) -> CatalogStatus:
    """The replica at *catalog_path* (read only) against the server at *url*
    (asked directly; nothing is written on either side)."""
    status = CatalogStatus(str(catalog_path), url is not None)
    if catalog_path.exists():
        with Catalog.open(catalog_path, readonly=True) as catalog:
            followed, applied, copying = catalog.replica_state()
            status.replica_of, status.copying = followed, copying
            status.applied_seq = applied if followed is not None else None
            status.replica_tracks = catalog.file_count()
    if url is None:
        return status
    address = parse_url(url)
    status.server = str(address)
    try:
        conn = connect(address, credentials)
    except SharedCatalogError as exc:
        status.reachable, status.error = False, str(exc)
        return status
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            version, tracks, last_seq, catalog_id, _ = _target_state(conn)
            status.reachable = True
            status.server_seq, status.server_tracks = last_seq, tracks
            status.server_catalog_id = catalog_id or None
            if version == 0:
                pass  # no MusicFS tables yet: the first mount or migration makes them
            elif status.replica_of is not None and status.replica_of != catalog_id:
                status.error = (
                    f"catalog {catalog_path} is a replica of another shared catalog "
                    f"(id {status.replica_of}, {address} has id {catalog_id})"
                )
            elif status.applied_seq is not None:
                status.lag_changes = max(0, last_seq - status.applied_seq)
                row = conn.execute(
                    "SELECT extract(epoch FROM now() - min(at)) FROM changes WHERE seq > %s",
                    (status.applied_seq,),
                ).fetchone()
                oldest = row[0] if row else None
                status.lag_seconds = 0.0 if oldest is None else round(float(oldest), 3)
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        status.reachable, status.error = False, str(unavailable(address, exc))
    except psycopg.Error as exc:  # it answers, but refuses to show its tables
        status.reachable = True
        status.error = f"shared catalog {address} refused a read: {_first_line(exc)}"
    finally:
        conn.close()
    return status
