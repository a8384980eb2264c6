"""The shared catalog and its change feed, on a real PostgreSQL with real SQLite
replicas: what one machine writes, every machine's replica shows, with the
same track ids; the later of two writes of one field wins everywhere; a new
machine copies everything and then follows the feed."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from musicfs.core.catalog.layout import Layout
from musicfs.core.catalog.schema import ROOT_NODE
from musicfs.core.catalog.templates import PathTemplate
from musicfs.core.shared import schema
from musicfs.core.shared.errors import ReplicaBehind, SharedCatalogError
from musicfs.core.shared.feed import Replica, apply_changes, bootstrap
from musicfs.core.shared.store import SharedCatalog
from tests.servers.postgres import PostgresServer
from tests.servers.replicas import Machine, scanned


def test_migrations_build_the_schema_once_and_refuse_a_newer_one(postgres_url: str) -> None:
    opened: list[SharedCatalog] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(SharedCatalog.open(postgres_url))
        except BaseException as exc:
            errors.append(exc)

    # Two machines mounting at once on an empty database: one migrates, both work.
    threads = [threading.Thread(target=open_one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({s.catalog_id for s in opened}) == 1
    for shared in opened:
        shared.close()
    with psycopg.connect(postgres_url) as conn:
        assert schema.schema_version(conn) == schema.SCHEMA_VERSION
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert {"tracks", "overrides", "plays", "changes", "meta", "schema_version"} <= tables
    with SharedCatalog.open(postgres_url) as again:  # idempotent: nothing to do
        assert again.catalog_id == opened[0].catalog_id
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(SharedCatalogError, match="newer MusicFS"):
        SharedCatalog.open(postgres_url)


def test_a_scan_batch_reaches_both_replicas_with_the_same_ids(
    machines: tuple[Machine, Machine],
) -> None:
    a, b = machines
    ids = a.shared.write_scan_batch(
        [
            scanned("Björk/Post/01 Army of Me.flac", title="Army of Me", artist="Björk", year=1995),
            scanned("Björk/Post/02 Hyperballad.flac", title="Hyperballad", artist="Björk"),
            scanned("Odd/tag.mp3", title="nul\x00inside", compilation=True, duration=float("nan")),
        ]
    )
    assert b.catalog.file_ids() == []  # nothing before the feed is applied
    for machine in (a, b):
        applied = machine.follow()
        assert applied.tracks == set(ids)
        assert machine.catalog.file_ids() == sorted(ids)
        track = machine.catalog.track(ids[0])
        assert track is not None
        assert (track.relpath, track.tags.title, track.tags.year) == (
            "Björk/Post/01 Army of Me.flac", "Army of Me", 1995,
        )  # fmt: skip
        odd = machine.catalog.track(ids[2])
        assert odd is not None
        assert odd.tags.compilation
        assert odd.tags.title == "nul\ufffdinside"  # PostgreSQL text holds no NUL
        assert odd.tags.duration is None  # nor JSON a NaN

    # A changed file and a removed one, in one batch.
    b.shared.write_scan_batch(
        [scanned("Björk/Post/02 Hyperballad.flac", size=2000, title="Hyperballad (remaster)")],
        removed=[ids[0]],
    )
    for machine in (a, b):
        applied = machine.follow()
        assert applied.removed == {ids[0]}
        assert applied.tracks == {ids[1]}
        assert machine.catalog.file_ids() == [ids[1], ids[2]]
        track = machine.catalog.track(ids[1])
        assert track is not None
        assert (track.size, track.tags.title) == (2000, "Hyperballad (remaster)")
    assert a.follow().changes == 0  # caught up: nothing applied twice


def test_an_override_made_on_one_machine_shows_on_the_other(
    machines: tuple[Machine, Machine],
) -> None:
    a, b = machines
    (track,) = a.shared.write_scan_batch([scanned("x/song.flac", title="Song", artist="Someone")])
    a.follow()
    b.follow()
    a.shared.set_overrides(track, {"artist": "Someone Else", "year": "2001"})
    assert b.catalog.overrides(track) == {}
    assert b.follow().overrides == {track}
    assert a.follow().overrides == {track}  # the writer's replica too, through the feed
    for machine in (a, b):
        assert machine.catalog.overrides(track) == {"artist": "Someone Else", "year": "2001"}

    b.shared.clear_overrides(track, ["year"])
    for machine in (a, b):
        machine.follow()
        assert machine.catalog.overrides(track) == {"artist": "Someone Else"}
    with pytest.raises(SharedCatalogError, match="no track with id 999999"):
        a.shared.set_overrides(999999, {"artist": "nobody"})


def test_two_machines_writing_one_field_the_later_transaction_wins_everywhere(
    machines: tuple[Machine, Machine], postgres_url: str
) -> None:
    a, b = machines
    (track,) = a.shared.write_scan_batch([scanned("x/song.flac", title="Song")])
    a.shared.set_overrides(track, {"artist": "first"})
    a.follow()

    # Both writes queue behind a transaction holding the override's row; the one
    # that started waiting first commits first, the other commits after it.
    with psycopg.connect(postgres_url) as holder:
        holder.execute(
            "SELECT * FROM overrides WHERE file_id = %s AND field = 'artist' FOR UPDATE", (track,)
        )
        writers = [
            threading.Thread(target=a.shared.set_overrides, args=(track, {"artist": "from A"})),
            threading.Thread(target=b.shared.set_overrides, args=(track, {"artist": "from B"})),
        ]
        for count, writer in enumerate(writers, 1):
            writer.start()
            _wait_for_waiters(postgres_url, count)
        holder.rollback()  # let them go
    for writer in writers:
        writer.join(timeout=30)
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT value FROM overrides WHERE file_id = %s AND field = 'artist'", (track,)
        ).fetchone()
    assert row == ("from B",)
    for machine in (b, a):
        machine.follow()
        assert machine.catalog.overrides(track) == {"artist": "from B"}

    # One after the other, each machine applying at its own pace.
    b.shared.set_overrides(track, {"artist": "B again"})
    b.follow()
    a.shared.set_overrides(track, {"artist": "A last"})
    for machine in (a, b):
        machine.follow()
        assert machine.catalog.overrides(track) == {"artist": "A last"}


def _wait_for_waiters(url: str, count: int) -> None:
    """Wait until *count* sessions wait for a lock."""
    with psycopg.connect(url, autocommit=True) as conn:  # each query sees the present
        for _ in range(3000):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0] >= count:
                return
            threading.Event().wait(0.01)
    raise AssertionError(f"{count} writers never waited for the row")


def test_plays_on_two_machines_add_up(machines: tuple[Machine, Machine]) -> None:
    a, b = machines
    (track,) = a.shared.write_scan_batch([scanned("x/song.flac", title="Song")])
    assert a.shared.add_plays([(track, 1000.0), (track, 2000.0)]) == 2
    assert b.shared.add_plays([(track, 1500.0), (track, 3000.0), (track, 2500.0)]) == 3
    assert b.shared.add_plays([(424242, 1.0)]) == 0  # a track gone meanwhile: dropped
    for machine in (a, b):
        assert machine.follow().played == {track}
        assert machine.catalog.play_stats(track) == (5, 3000.0)


def test_a_new_machine_copies_everything_then_follows_the_feed(
    machines: tuple[Machine, Machine], postgres_url: str, tmp_path: Path
) -> None:
    a, _ = machines
    files = [scanned(f"album/{n:02d}.flac", title=f"Track {n}", track=n) for n in range(1, 13)]
    ids = a.shared.write_scan_batch(files)
    a.shared.set_overrides(ids[0], {"genre": "Trip-hop"})
    a.shared.set_overrides(ids[1], {"album": "Renamed"}, source="plugin")
    a.shared.add_plays([(ids[2], 10.0), (ids[2], 20.0)])
    a.shared.write_scan_batch([], removed=[ids[-1]])

    with Machine(postgres_url, tmp_path / "c" / "catalog.sqlite3", bootstrapped=False) as c:
        c.catalog.upsert_file(scanned("local/leftover.flac", title="not shared"))
        with pytest.raises(SharedCatalogError, match="not a replica"):
            c.follow()
        assert c.catalog.replica_state()[0] is None

        seen: list[int] = []
        assert bootstrap(c.catalog, c.shared, batch=5, progress=seen.append) == 11
        assert seen == [5, 10, 11]  # in batches
        assert c.catalog.file_ids() == ids[:-1]  # the local leftover is gone
        assert c.catalog.overrides(ids[0]) == {"genre": "Trip-hop"}
        assert c.catalog.overrides(ids[1]) == {"album": "Renamed"}
        assert c.catalog.play_stats(ids[2]) == (2, 20.0)
        assert c.catalog.replica_state()[1] == a.shared.last_seq()
        assert c.follow().changes == 0  # the copy ended where the feed begins

        (new,) = a.shared.write_scan_batch([scanned("album/13.flac", title="Track 13")])
        a.shared.set_overrides(ids[3], {"artist": "Later"})
        applied = c.follow()
        assert applied.tracks == {new}
        assert applied.overrides == {ids[3]}
        assert c.catalog.overrides(ids[3]) == {"artist": "Later"}


def test_a_machine_that_scanned_on_its_own_joins_without_its_ids_naming_shared_tracks(
    machines: tuple[Machine, Machine], postgres_url: str, tmp_path: Path
) -> None:
    """A machine that scanned the library by itself (no overrides, no plays) and
    then joins a shared catalog: its local ids name other tracks there. Neither
    its tree nor what it keeps of its own (a rating) may land on the shared
    track that happens to have the same id: every copied track is placed by its
    own tags (the mount places the files without a place), none under the name
    of the local file that had its id."""
    a, _ = machines
    ids = a.shared.write_scan_batch(
        [scanned(f"album/{n}.flac", title=f"Shared {n}") for n in range(1, 4)]
    )
    with Machine(postgres_url, tmp_path / "c" / "catalog.sqlite3", bootstrapped=False) as c:
        layout = Layout(c.catalog, PathTemplate.parse("$title.$format"))
        with c.catalog.transaction():
            mine = c.catalog.upsert_file(scanned("local/mine.flac", title="Mine"))
            track = c.catalog.track(mine)
            assert track is not None
            layout.place_track(track)
            c.catalog.set_rating(mine, 100, "itunes")
        assert mine in ids  # the same number names another track on the server

        bootstrap(c.catalog, c.shared)

        assert c.catalog.file_ids() == ids
        assert c.catalog.lookup(ROOT_NODE, "Mine.flac") is None  # no entry shows another song
        assert c.catalog.unplaced_files() == ids  # each placed by its own tags
        assert c.catalog.rating(mine) is None  # not given to another song


def test_a_replica_of_another_shared_catalog_is_refused(
    machines: tuple[Machine, Machine], postgres: PostgresServer
) -> None:
    a, _ = machines
    with (
        SharedCatalog.open(postgres.create_database()) as other,
        pytest.raises(SharedCatalogError, match="replica of another shared catalog"),
    ):
        apply_changes(a.catalog, other)


def test_no_change_is_skipped_when_transactions_commit_out_of_order(
    machines: tuple[Machine, Machine], postgres_url: str
) -> None:
    a, b = machines
    (track,) = a.shared.write_scan_batch([scanned("x/song.flac", title="Song")])
    a.follow()
    # A slow writer (as the store writes: feed lock, then its change) that has
    # not committed yet; a second write starts meanwhile.
    with psycopg.connect(postgres_url) as slow:
        slow.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema.FEED_LOCK,))
        slow.execute("INSERT INTO plays (file_id, at) VALUES (%s, 5.0)", (track,))
        slow.execute(
            "INSERT INTO changes (kind, track_id, payload) VALUES ('plays', %s, %s)",
            (track, Jsonb({"at": [5.0]})),
        )
        writer = threading.Thread(target=b.shared.set_overrides, args=(track, {"genre": "Jazz"}))
        writer.start()
        _wait_for_waiters(postgres_url, 1)
        # The second write waits: a replica applying now must not see it and
        # move past the slow one's sequence number.
        assert a.follow().changes == 0
        slow.commit()
    writer.join(timeout=30)
    applied = a.follow()
    assert applied.played == {track}
    assert applied.overrides == {track}
    assert a.catalog.play_stats(track) == (1, 5.0)
    assert a.catalog.overrides(track) == {"genre": "Jazz"}


def test_user_data_follows_the_audio_when_a_scan_moves_a_file(
    machines: tuple[Machine, Machine],
) -> None:
    a, b = machines
    song = scanned("old/song.flac", title="Song")
    other = scanned("old/other.flac", title="Other")
    old, old_other = a.shared.write_scan_batch([song, other])
    a.shared.set_overrides(old, {"genre": "Jazz"})
    a.shared.set_overrides(old, {"album": "Tagged by a plugin"}, source="plugin")
    a.shared.add_plays([(old, 10.0), (old, 20.0)])
    a.shared.add_plays([(old_other, 30.0)])

    # One scan sees the new path and the old one gone (same audio).
    (new,) = a.shared.write_scan_batch([replace(song, relpath="new/song.flac")], removed=[old])
    # Another scan sees a file leave first, and its audio arrive later.
    a.shared.write_scan_batch([], removed=[old_other])
    for machine in (a, b):
        machine.follow()
        assert machine.catalog.origin_of(old) is None
        assert machine.catalog.overrides(new) == {"genre": "Jazz", "album": "Tagged by a plugin"}
        assert machine.catalog.play_stats(new) == (2, 20.0)
    (back,) = b.shared.write_scan_batch([replace(other, relpath="elsewhere/other.flac")])
    for machine in (a, b):
        machine.follow()
        assert machine.catalog.play_stats(back) == (1, 30.0)


def test_a_replica_behind_a_pruned_feed_is_copied_again(
    machines: tuple[Machine, Machine],
) -> None:
    a, b = machines
    first, second = a.shared.write_scan_batch(
        [scanned("x/1.flac", title="One"), scanned("x/2.flac", title="Two")]
    )
    a.follow()
    b.follow()
    # B is switched off while A goes on; then the old changes are pruned.
    a.shared.set_overrides(first, {"genre": "Jazz"})
    (third,) = a.shared.write_scan_batch([scanned("x/3.flac", title="Three")], removed=[second])
    a.follow()
    assert a.shared.prune_changes(older_than=0) > 0
    assert a.follow().changes == 0  # A had applied everything: nothing missed
    with pytest.raises(ReplicaBehind, match="copied again"):
        b.follow()
    applied = Replica(b.catalog, b.shared).sync()
    assert applied.removed == {second}
    assert b.catalog.file_ids() == [first, third]
    assert b.catalog.overrides(first) == {"genre": "Jazz"}
    a.shared.add_plays([(third, 9.0)])
    for machine in (a, b):
        machine.follow()
        assert machine.catalog.play_stats(third) == (1, 9.0)


def test_a_write_caught_in_a_deadlock_is_run_again(
    machines: tuple[Machine, Machine], postgres_url: str
) -> None:
    a, b = machines
    (track,) = a.shared.write_scan_batch([scanned("x/song.flac", title="Song")])
    a.shared.set_overrides(track, {"album": "old", "artist": "old"})
    failures: list[BaseException] = []

    def write() -> None:
        try:
            b.shared.set_overrides(track, {"artist": "new artist", "album": "new album"})
        except BaseException as exc:
            failures.append(exc)

    select = "SELECT 1 FROM overrides WHERE file_id = %s AND field = %s FOR UPDATE"
    sessions = _musicfs_sessions(postgres_url)
    with psycopg.connect(postgres_url) as other:
        # The other transaction waits longer before it looks for deadlocks: the
        # server picks the MusicFS write as the one to roll back.
        other.execute("SET deadlock_timeout = '20s'")
        other.execute(select, (track, "artist"))
        writer = threading.Thread(target=write)
        writer.start()
        _wait_for_waiters(postgres_url, 1)  # the write holds album, waits for artist
        other.execute(select, (track, "album"))  # a deadlock: the write is rolled back
        other.rollback()
    writer.join(timeout=30)
    assert not failures, failures
    assert _musicfs_sessions(postgres_url) == sessions  # run again on its own connection
    for machine in (a, b):
        machine.follow()
        assert machine.catalog.overrides(track) == {"album": "new album", "artist": "new artist"}


def _musicfs_sessions(url: str) -> set[int]:
    """The server processes of MusicFS's connections."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'musicfs'"
        ).fetchall()
    return {int(row[0]) for row in rows}
