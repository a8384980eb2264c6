"""The user data beyond overrides and plays, shared (issue 16, point 1): ratings,
pins, collections defined in the catalog and where moved tracks were, written
to PostgreSQL first and applied to every replica, the writer's included, by
the change feed; a new machine's copy has them; a move carries them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psycopg

from musicfs.core.catalog.store import Catalog
from musicfs.core.shared.feed import bootstrap
from musicfs.core.shared.migrate import migrate_catalog
from tests.servers.replicas import Machine, scanned


def test_a_rating_made_on_one_machine_shows_on_every_replica(
    machines: tuple[Machine, Machine],
) -> None:
    a, b = machines
    song, other = a.shared.write_scan_batch([scanned("a/song.flac"), scanned("a/other.flac")])
    assert a.shared.set_ratings([(song, 80), (other, 40)], "user") == 2
    b.shared.set_ratings([(other, None)], "user")  # B clears one: on both
    for machine in (a, b):
        applied = machine.follow()
        assert {song, other} <= applied.rated
        assert machine.catalog.rating(song) == 80
        assert machine.catalog.rating(other) is None


def test_plays_an_import_brought_count_once_whichever_machine_imports(
    machines: tuple[Machine, Machine],
) -> None:
    a, b = machines
    (song,) = a.shared.write_scan_batch([scanned("a/song.flac")])
    assert a.shared.import_plays([(song, 5, 100.0)], "itunes") == {song: 5}
    # The same iTunes library imported again on B: only what is new since.
    assert b.shared.import_plays([(song, 7, 200.0)], "itunes") == {song: 2}
    assert b.shared.import_plays([(song, 7, 200.0)], "itunes") == {}
    assert b.shared.import_plays([(song, 3, 50.0)]) == {song: 3}  # an export's plays add up
    for machine in (a, b):
        machine.follow()
        assert machine.catalog.play_stats(song) == (10, 200.0)
        assert machine.catalog.imported_plays("itunes") == {song: 7}


def test_an_imported_playlist_reaches_every_replica_and_follows_a_move(
    machines: tuple[Machine, Machine],
) -> None:
    a, b = machines
    song, gone = scanned("old/song.flac"), scanned("a/other.flac")
    (old, other) = a.shared.write_scan_batch([song, gone])
    a.shared.set_playlists({"Road Trip": [(old, "Song"), (None, "Lost"), (other, "Other")]},
                           "itunes")  # fmt: skip
    # A playlist entry alone is user data that follows the audio: to a move's new
    # path, and to a track that arrives later with the audio of one that left.
    (new,) = a.shared.write_scan_batch([replace(song, relpath="new/song.flac")], removed=[old])
    a.shared.write_scan_batch([], removed=[other])
    (back,) = b.shared.write_scan_batch([replace(gone, relpath="b/other.flac")])
    for machine in (a, b):
        machine.follow()
        assert machine.catalog.playlist("Road Trip") == [
            (new, "Song"), (None, "Lost"), (back, "Other"),
        ]  # fmt: skip


def test_pins_and_their_requests_reach_every_replica(machines: tuple[Machine, Machine]) -> None:
    a, b = machines
    ids = a.shared.write_scan_batch([scanned(f"Album/{n}.flac") for n in range(3)])
    a.shared.set_pins({("path", "Artist/Album"): ids[:2], ("search", "song"): [ids[2]]}, 100.0)
    for machine in (a, b):
        assert machine.follow().pins
        requests = {(r.kind, r.value): r.id for r in machine.catalog.pin_requests()}
        assert set(requests) == {("path", "Artist/Album"), ("search", "song")}
        assert machine.catalog.pinned_by(requests[("path", "Artist/Album")]) == ids[:2]
        assert machine.catalog.pinned_file_ids() == set(ids)
    # The same request again names other tracks; another is dropped (on B).
    b.shared.set_pins({("path", "Artist/Album"): [ids[0]]}, 200.0)
    assert b.shared.drop_pins([("search", "song")]) == 1
    for machine in (a, b):
        machine.follow()
        assert [(r.kind, r.value) for r in machine.catalog.pin_requests()] == [
            ("path", "Artist/Album")
        ]
        assert machine.catalog.pinned_file_ids() == {ids[0]}
    assert a.shared.drop_pins(everything=True) == 1
    b.follow()
    assert b.catalog.pinned_file_ids() == set()


def test_a_collection_defined_on_one_machine_reaches_every_replica(
    machines: tuple[Machine, Machine],
) -> None:
    a, b = machines
    assert a.shared.set_collection("90s rock", {"genre": "Rock", "year_from": 1990})
    for machine in (a, b):
        assert machine.follow().collections
        assert machine.catalog.shared_collections() == {
            "90s rock": {"genre": "Rock", "year_from": 1990}
        }
    assert b.shared.set_collection("90s rock", None)
    assert not b.shared.set_collection("90s rock", None)  # nothing left to remove
    for machine in (a, b):
        machine.follow()
        assert machine.catalog.shared_collections() == {}


def test_a_move_carries_rating_pins_and_history_on_every_replica(
    machines: tuple[Machine, Machine],
) -> None:
    a, b = machines
    song = scanned("old/song.flac", title="Song")
    (old,) = a.shared.write_scan_batch([song])
    a.shared.set_ratings([(old, 100)], "user")
    a.shared.set_pins({("search", "Song"): [old]}, 1.0)
    (new,) = a.shared.write_scan_batch([replace(song, relpath="new/song.flac")], removed=[old])
    for machine in (a, b):
        machine.follow()
        assert machine.catalog.rating(new) == 100
        assert machine.catalog.pinned_file_ids() == {new}
        # What named the track by its old path finds it (a playlist entry).
        assert machine.catalog.file_id_at("nas", "old/song.flac") == new
    # It leaves and comes back later (its data waits in departed): all of it again.
    a.shared.write_scan_batch([], removed=[new])
    (back,) = b.shared.write_scan_batch([replace(song, relpath="third/song.flac")])
    for machine in (a, b):
        machine.follow()
        assert machine.catalog.rating(back) == 100
        assert machine.catalog.pinned_file_ids() == {back}
        assert machine.catalog.file_id_at("nas", "new/song.flac") == back
        assert machine.catalog.file_id_at("nas", "old/song.flac") == back  # the first move too


def test_a_new_machine_copies_ratings_pins_collections_and_moves(
    machines: tuple[Machine, Machine], postgres_url: str, tmp_path: Path
) -> None:
    a, _ = machines
    song = scanned("old/song.flac")
    (old,) = a.shared.write_scan_batch([song])
    a.shared.set_ratings([(old, 60)], "itunes")
    (new,) = a.shared.write_scan_batch([replace(song, relpath="new/song.flac")], removed=[old])
    a.shared.set_pins({("path", "new"): [new]}, 5.0)
    a.shared.set_collection("loved", {"min_plays": 3})
    with Machine(postgres_url, tmp_path / "c" / "catalog.sqlite3") as c:
        assert c.catalog.rating(new) == 60
        assert c.catalog.pinned_file_ids() == {new}
        assert c.catalog.file_id_at("nas", "old/song.flac") == new
        assert c.catalog.shared_collections() == {"loved": {"min_plays": 3}}


def test_migrate_carries_ratings_pins_and_moves(postgres_url: str, tmp_path: Path) -> None:
    path = tmp_path / "a" / "catalog.sqlite3"
    with Catalog.open(path) as catalog, catalog.transaction():
        song = catalog.upsert_file(scanned("Album/song.flac"))
        other = catalog.upsert_file(scanned("Album/other.flac"))
        catalog.set_rating(song, 80, "user")
        catalog.set_pinned(catalog.add_pin_request("path", "Artist/Album", 1.0), [song, other])
        catalog.set_moves(song, [("nas", "Old/song.flac", 2.0)])
        catalog.import_plays(other, "itunes", 4, 3.0)
        catalog.replace_playlist("Loved", "itunes", [(song, "Song"), (None, "Gone")])
    report = migrate_catalog(path, postgres_url)
    assert report.more == {
        "ratings": 1, "pins": 1, "old paths of moved tracks": 1, "imported play counts": 1,
        "imported playlists": 1,
    }  # fmt: skip
    assert "ratings" not in report.local_only
    assert "pins" not in report.local_only
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT file_id, value FROM ratings").fetchall() == [(song, 80)]
        assert conn.execute("SELECT count(*) FROM pins").fetchone() == (2,)
    with Machine(postgres_url, tmp_path / "b" / "catalog.sqlite3", bootstrapped=False) as b:
        bootstrap(b.catalog, b.shared)
        assert b.catalog.rating(song) == 80
        assert b.catalog.pinned_file_ids() == {song, other}
        assert b.catalog.file_id_at("nas", "Old/song.flac") == song
        assert b.catalog.imported_plays("itunes") == {other: 4}
        assert b.catalog.playlist("Loved") == [(song, "Song"), (None, "Gone")]
        assert b.catalog.play_stats(other) == (4, 3.0)
        # A pin made after the migration gets a new id, not one of the copied ones.
        b.shared.set_pins({("search", "x"): [other]}, 3.0)
        b.follow()
        assert len(b.catalog.pin_requests()) == 2
