"""``catalog migrate`` and ``catalog status`` in core (issue 16, point 7), on a
real PostgreSQL with real SQLite catalogs: a machine's catalog moves with its
ids, overrides, plays and departed user data; a second machine's copy shows
the same; the migrated catalog follows the feed from there; a dry run and a
refused target change nothing; status tells the lag."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from musicfs.core.catalog.store import Catalog
from musicfs.core.shared.errors import SharedCatalogError, SharedCatalogUnavailable
from musicfs.core.shared.feed import Replica, apply_changes
from musicfs.core.shared.migrate import catalog_status, migrate_catalog
from musicfs.core.shared.store import SharedCatalog
from tests.servers.postgres import PostgresServer
from tests.servers.replicas import Machine, scanned


def _local_catalog(path: Path, tracks: int = 30) -> dict[str, int]:
    """A machine's own catalog: tracks (ids with a gap), an override, plays, a
    rating, a departed track's data. Returns ids by relpath."""
    ids = {}
    with Catalog.open(path) as catalog, catalog.transaction():
        for n in range(tracks):
            relpath = f"Artist/Album/{n:02d}.flac"
            ids[relpath] = catalog.upsert_file(scanned(relpath, title=f"t{n}", artist="A"))
        gone = catalog.upsert_file(scanned("Old/gone.flac", title="gone"))
        catalog.set_overrides(gone, {"genre": "Jazz"}, "user")
        catalog.forget_file(gone)  # its override waits in departed for its audio
        first, second = ids["Artist/Album/00.flac"], ids["Artist/Album/01.flac"]
        catalog.set_overrides(first, {"title": "Fixed", "year": "1999"}, "user")
        catalog.record_plays([(first, 1000.0), (first, 2000.0), (second, 3000.0)])
        catalog.set_rating(second, 80, "user")
    return ids


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(query.encode()).fetchall()]


def test_migrate_moves_the_catalog_with_its_ids_and_user_data(
    postgres_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "a" / "catalog.sqlite3"
    ids = _local_catalog(path)
    steps: list[tuple[str, int, int]] = []
    report = migrate_catalog(path, postgres_url, batch=7, progress=lambda *s: steps.append(s))
    assert (report.tracks, report.overrides, report.plays, report.departed) == (30, 2, 3, 1)
    assert report.more["ratings"] == 1
    assert "ratings" not in report.local_only
    assert ("tracks", 30, 30) in steps  # batch by batch
    assert ("tracks", 7, 30) in steps
    # PostgreSQL has the rows under the SQLite ids.
    tracks = {
        r[0]: r[1] for r in _rows(postgres_url, "SELECT reldir || '/' || name, id FROM tracks")
    }
    assert tracks == ids
    first = ids["Artist/Album/00.flac"]
    assert _rows(postgres_url, "SELECT file_id, field, value FROM overrides ORDER BY field") == [
        (first, "title", "Fixed"), (first, "year", "1999"),
    ]  # fmt: skip
    assert _rows(postgres_url, "SELECT count(*) FROM plays") == [(3,)]
    assert _rows(postgres_url, "SELECT audio_id FROM departed") == [("audio-Old/gone.flac",)]
    # A second machine copies it: same ids, overrides, play counts.
    with Machine(postgres_url, tmp_path / "b" / "catalog.sqlite3") as b:
        assert {t.relpath: t.id for t in b.catalog.tracks()} == ids
        assert b.catalog.overrides(first) == {"title": "Fixed", "year": "1999"}
        assert b.catalog.play_stats(first)[0] == 2
        assert b.catalog.rating(ids["Artist/Album/01.flac"]) == 80  # ratings are shared too
        # The migrated catalog is a replica now: a write on B reaches it by the feed,
        # its rating still names the right track.
        b.shared.set_overrides(ids["Artist/Album/05.flac"], {"album": "New"})
        with Catalog.open(path) as a, SharedCatalog.open(postgres_url) as shared:
            assert a.replica_state()[0] == shared.catalog_id
            applied = apply_changes(a, shared)
            assert applied.overrides == {ids["Artist/Album/05.flac"]}
            assert a.rating(ids["Artist/Album/01.flac"]) == 80
            # New tracks get ids after the migrated ones on every machine.
            [new_id] = shared.write_scan_batch([scanned("Artist/Album/new.flac")])
            assert new_id > max(ids.values())
    # Run again: nothing to do.
    again = migrate_catalog(path, postgres_url)
    assert again.already
    assert again.tracks == 30


def test_a_machine_that_copied_the_empty_catalog_copies_it_again(
    postgres_url: str, tmp_path: Path
) -> None:
    with Machine(postgres_url, tmp_path / "b" / "catalog.sqlite3") as b:
        assert b.catalog.file_count() == 0
        path = tmp_path / "a" / "catalog.sqlite3"
        ids = _local_catalog(path, 5)
        migrate_catalog(path, postgres_url)
        Replica(b.catalog, b.shared).sync()  # told it is behind: copies again
        assert {t.relpath: t.id for t in b.catalog.tracks()} == ids


def test_dry_run_changes_nothing(postgres_url: str, tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite3"
    _local_catalog(path, 4)
    before = path.read_bytes()
    report = migrate_catalog(path, postgres_url, dry_run=True)
    assert report.dry_run
    assert (report.tracks, report.overrides) == (4, 2)
    assert _rows(postgres_url, "SELECT to_regclass('tracks') IS NULL") == [(True,)]
    assert path.read_bytes() == before
    with Catalog.open(path, readonly=True) as catalog:
        assert catalog.replica_state() == (None, 0, False)


def test_a_target_with_tracks_is_refused_and_left_alone(postgres_url: str, tmp_path: Path) -> None:
    with SharedCatalog.open(postgres_url) as shared:
        shared.write_scan_batch([scanned("Other/x.flac")])
    path = tmp_path / "catalog.sqlite3"
    _local_catalog(path, 3)
    with pytest.raises(SharedCatalogError, match=r"not empty .*1 tracks.*createdb"):
        migrate_catalog(path, postgres_url)
    assert _rows(postgres_url, "SELECT count(*) FROM tracks") == [(1,)]
    with Catalog.open(path, readonly=True) as catalog:
        assert catalog.replica_state()[0] is None


def test_a_migration_cut_short_after_the_commit_is_finished_by_running_it_again(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from musicfs.core.shared import migrate

    path = tmp_path / "catalog.sqlite3"
    _local_catalog(path, 3)

    def crash(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(migrate, "_become_replica", crash)
    with pytest.raises(KeyboardInterrupt):
        migrate_catalog(path, postgres_url)
    monkeypatch.undo()
    with SharedCatalog.open(postgres_url) as shared:  # another machine writes meanwhile
        [new_id] = shared.write_scan_batch([scanned("Later/new.flac")])
    report = migrate_catalog(path, postgres_url)
    assert report.resumed
    assert report.tracks == 3
    with Catalog.open(path) as catalog, SharedCatalog.open(postgres_url) as shared:
        assert catalog.replica_state()[0] == shared.catalog_id
        assert report.applied_seq < shared.last_seq()
        assert new_id in apply_changes(catalog, shared).tracks  # the later write is not skipped


def test_migrate_with_the_server_down_names_it_and_writes_nothing(
    postgres: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.sqlite3"
    _local_catalog(path, 2)
    postgres.stop()
    try:
        with pytest.raises(SharedCatalogUnavailable) as caught:
            migrate_catalog(path, postgres_url)
        assert f"{postgres.host}:{postgres.port}" in str(caught.value)
        assert "check that PostgreSQL runs there" in str(caught.value)
        with Catalog.open(path, readonly=True) as catalog:
            assert catalog.replica_state()[0] is None
    finally:
        postgres.start()


def test_status_tells_the_lag_of_a_replica(
    postgres: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.sqlite3"
    ids = _local_catalog(path, 4)
    plain = catalog_status(path, None)
    assert not plain.shared
    assert plain.replica_of is None
    assert plain.replica_tracks == 4
    migrate_catalog(path, postgres_url)
    status = catalog_status(path, postgres_url)
    assert status.reachable
    assert (status.lag_changes, status.lag_seconds) == (0, 0)
    assert status.replica_tracks == status.server_tracks == 4
    with SharedCatalog.open(postgres_url) as shared:
        shared.add_plays([(ids["Artist/Album/02.flac"], time.time())])
        shared.set_overrides(ids["Artist/Album/03.flac"], {"genre": "Pop"})
    behind = catalog_status(path, postgres_url)
    assert behind.lag_changes == 2
    assert behind.lag_seconds is not None
    assert behind.server_seq == (behind.applied_seq or 0) + 2
    postgres.stop()
    try:
        down = catalog_status(path, postgres_url)
        assert down.reachable is False
        assert "unavailable" in down.error
        assert down.applied_seq == behind.applied_seq  # the replica is still read
    finally:
        postgres.start()
    with Catalog.open(path) as a, SharedCatalog.open(postgres_url) as shared:
        apply_changes(a, shared)
    assert catalog_status(path, postgres_url).lag_changes == 0


def test_a_user_without_rights_on_the_target_gets_the_reason_not_a_traceback(
    postgres: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.sqlite3"
    _local_catalog(path, 2)
    postgres.sql("DO $$ BEGIN CREATE ROLE musicfs_norights LOGIN; "
                 "EXCEPTION WHEN duplicate_object THEN NULL; END $$")  # fmt: skip
    url = postgres_url.replace("postgres@", "musicfs_norights@")
    with pytest.raises(SharedCatalogError, match=r"refused the migration: .*permission denied"):
        migrate_catalog(path, url)
    with Catalog.open(path, readonly=True) as catalog:
        assert catalog.replica_state()[0] is None
