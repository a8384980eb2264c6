"""The catalog database: schema and migrations, lookups, paging, the tree layout."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from musicfs.core.catalog.layout import ChangeKind, Layout, later_mtime
from musicfs.core.catalog.search import Searcher
from musicfs.core.catalog.store import (
    LISTING_QUERY,
    MIGRATIONS,
    ROOT_NODE,
    SCHEMA_VERSION,
    Catalog,
    CatalogError,
)
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.model import FileStat, ScannedFile, TrackTags

CatalogSQL = Callable[..., list[Any]]  # the catalog_sql fixture of conftest.py


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog.open(tmp_path / "catalog.sqlite3")


def add(catalog: Catalog, relpath: str, **tags: object) -> int:
    scanned = ScannedFile("lib", relpath, FileStat(100, 1), relpath.rsplit(".", maxsplit=1)[-1],
                          TrackTags(**tags))  # type: ignore[arg-type]  # fmt: skip
    return catalog.upsert_file(scanned)


def place(catalog: Catalog, layout: Layout, relpath: str, **tags: object) -> int:
    with catalog.transaction():
        file_id = add(catalog, relpath, **tags)
        track = catalog.track(file_id)
        assert track is not None
        layout.place_track(track)
    return file_id


def test_new_catalog_is_at_the_current_schema_in_wal_mode(
    catalog: Catalog, catalog_sql: CatalogSQL
) -> None:
    assert catalog.schema_version == SCHEMA_VERSION
    assert catalog_sql(catalog, "PRAGMA journal_mode") == [("wal",)]
    assert catalog.integrity_check() == "ok"
    root = catalog.node(ROOT_NODE)
    assert root is not None
    assert root.is_dir


def test_a_directory_listing_is_answered_from_the_index_alone(
    catalog: Catalog, catalog_sql: CatalogSQL
) -> None:
    # Huge folders are listed a page at a time; a table row read per entry
    # doubled the time of listing 100,000 entries (benchmarks/bench.py readdir).
    plan = catalog_sql(catalog, "EXPLAIN QUERY PLAN " + LISTING_QUERY, (ROOT_NODE, 0, 100))
    details = " ".join(str(row[-1]) for row in plan)
    assert "COVERING INDEX nodes_by_parent" in details, details


def test_a_catalog_from_a_newer_musicfs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    Catalog.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(CatalogError, match="newer MusicFS"):
        Catalog.open(path)


def test_a_version_1_catalog_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
        conn.execute(
            "INSERT INTO files (id, origin, reldir, name, size, mtime_ns, format, scanned_at) "
            "VALUES (7, 'lib', 'd', 'a.flac', 1234, 99, 'flac', 0)"
        )
        conn.execute("INSERT INTO nodes (parent, name, file_id) VALUES (1, 'a.flac', 7)")
    with Catalog.open(path) as catalog:
        assert catalog.schema_version == SCHEMA_VERSION
        node = catalog.resolve("a.flac")
        assert node is not None
        assert (node.size, node.mtime_ns) == (1234, 99)
        assert catalog.integrity_check() == "ok"


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_a_catalog_of_every_older_schema_is_migrated_keeping_its_rows(
    tmp_path: Path, version: int
) -> None:
    # Any MusicFS released may have left the catalog: each step up runs from
    # where the ones before stopped, and the rows stay (and are found by search).
    path = tmp_path / "c.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(";".join(MIGRATIONS[:version]) + f"; PRAGMA user_version = {version};")
        conn.execute(
            "INSERT INTO files (id, origin, reldir, name, size, mtime_ns, format, scanned_at, "
            "title) VALUES (7, 'lib', 'd', 'a.flac', 1234, 99, 'flac', 0, 'Old Song')"
        )
        sizes = ", size, mtime_ns" if version >= 2 else ""
        values = ", 1234, 99" if version >= 2 else ""
        conn.execute(
            f"INSERT INTO nodes (parent, name, file_id{sizes}) VALUES (1, 'a.flac', 7{values})"
        )
    with Catalog.open(path) as catalog:
        assert catalog.schema_version == SCHEMA_VERSION
        node = catalog.resolve("a.flac")
        assert node is not None
        assert (node.file_id, node.size, node.mtime_ns) == (7, 1234, 99)
        assert [hit.track.id for hit in Searcher(catalog).search("old song")] == [7]
        with catalog.transaction():
            catalog.set_overrides(7, {"title": "Renamed"})
        assert [hit.track.id for hit in Searcher(catalog).search("renamed")] == [7]
        assert catalog.integrity_check() == "ok"


def test_a_damaged_catalog_file_gives_advice(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogError, match="move it"):
        Catalog.open(path)


def damaged_in_the_middle(path: Path, files: int = 400) -> None:
    """A catalog of *files* tracks with 64 KiB zeroed in its middle (the rows,
    not the schema: it still opens)."""
    with Catalog.open(path) as catalog, catalog.transaction():
        layout = Layout(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))
        for i in range(files):
            file_id = add(catalog, f"a{i % 20}/b{i % 40}/{i:03d}.flac", title=f"Song {i}",
                          artist=f"Artist {i % 20}", album=f"Album {i % 40}")  # fmt: skip
            layout.place_track(catalog.track(file_id))  # type: ignore[arg-type]
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek((size // 2) // 4096 * 4096 - 32768)
        fh.write(bytes(65536))


def test_quick_check_finds_damage_in_the_middle_of_a_catalog_that_opens(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    damaged_in_the_middle(path)
    with Catalog.open(path) as catalog:
        verdict = catalog.quick_check()
    assert verdict is not None
    assert verdict != "ok"
    with Catalog.open(tmp_path / "sound.sqlite3") as sound:
        assert sound.quick_check(budget=10) == "ok"


def test_quick_check_stops_when_asked(tmp_path: Path, catalog_sql: CatalogSQL) -> None:
    path = tmp_path / "c.sqlite3"
    with Catalog.open(path) as catalog:
        assert catalog.quick_check(stop=lambda: True) in (None, "ok")  # tiny: may finish first
        catalog_sql(catalog, "CREATE TABLE big (x)")
        catalog_sql(
            catalog,
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500000) "
            "INSERT INTO big SELECT randomblob(200) FROM n",
        )
        assert catalog.quick_check(stop=lambda: True) is None
        assert catalog.quick_check(budget=0.001) is None
        assert catalog.quick_check() == "ok"  # the connection works on


def test_check_before_mounting_refuses_a_damaged_catalog_with_the_fix(tmp_path: Path) -> None:
    from musicfs.core.mount.assembly import check_catalog

    path = tmp_path / "c.sqlite3"
    damaged_in_the_middle(path)
    with Catalog.open(path) as catalog:
        with pytest.raises(CatalogError) as raised:
            check_catalog(catalog, max_bytes=2**30, budget=10)
        # Too big to check before mounting: left for after (no verdict yet).
        assert check_catalog(catalog, max_bytes=1000, budget=10) is False
    message = str(raised.value)
    assert message.startswith(f"catalog {path} is damaged (")
    assert message.endswith("Move it away; the next mount rebuilds it from the origins.")
    with Catalog.open(tmp_path / "sound.sqlite3") as sound:
        assert check_catalog(sound, max_bytes=2**30, budget=10) is True


def test_a_catalog_too_big_to_check_before_mounting_is_checked_after_and_shown_damaged(
    tmp_path: Path,
) -> None:
    import trio

    from musicfs.core.config.settings import Config
    from musicfs.core.mount.assembly import check_catalog_later
    from musicfs.core.mount.facade import MountControl, MountState
    from musicfs.core.mount.service import MusicFS

    fs = MusicFS(Config(cache_dir=str(tmp_path / "cache")), tmp_path / "mnt")
    fs.catalog_path.parent.mkdir()
    damaged_in_the_middle(fs.catalog_path)
    fs.state = MountState.READY  # mounted and serving meanwhile
    trio.run(check_catalog_later, fs.life, fs.catalog_path, fs.supervisor)
    [entry] = fs.supervisor.snapshot()
    assert entry["name"] == "catalog check"
    assert entry["failing"] is True
    assert entry["last_error"].startswith(f"CatalogError: catalog {fs.catalog_path} is damaged (")
    assert entry["last_error"].endswith(
        "Move it away; the next mount rebuilds it from the origins."
    )
    status = MountControl(fs).status()
    assert status["state"] == "DEGRADED"
    assert status["loops"] == [entry]


def test_rows_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with Catalog.open(path) as catalog:
        layout = Layout(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))
        place(catalog, layout, "a.flac", artist="A", title="T")
    with Catalog.open(path, readonly=True) as catalog:
        node = catalog.resolve("A/Unknown Album (0000) [FLAC]/00 - T.flac")
        assert node is not None
        assert node.size == 100
        assert [t.relpath for t in catalog.tracks(artist="A")] == ["a.flac"]


def test_paging_by_id_lists_every_child_once_even_while_it_changes(catalog: Catalog) -> None:
    with catalog.transaction():
        for i in range(2500):
            catalog.insert_node(ROOT_NODE, f"n{i}", None)
    seen: list[str] = []
    after = 0
    for _ in range(10):
        page = catalog.children(ROOT_NODE, after, 1000)
        if not page:
            break
        seen += [n.name for n in page]
        after = page[-1].id
        if page[0].name.startswith("n"):
            catalog.delete_node(page[0].id)  # removals behind the cursor change nothing ahead
            catalog.insert_node(ROOT_NODE, f"late{after}", None)  # additions come at the end
    assert seen[:2500] == [f"n{i}" for i in range(2500)]
    assert seen[2500:] == [n for n in seen[2500:] if n.startswith("late")]
    assert len(seen) == 2503


def test_folders_with_art_are_those_holding_a_track_with_a_picture(catalog: Catalog) -> None:
    layout = Layout(catalog, PathTemplate.parse("$album/$title.$format"))
    place(catalog, layout, "a.flac", album="With", title="A", has_art=True)
    place(catalog, layout, "b.flac", album="With", title="B")
    place(catalog, layout, "c.flac", album="Without", title="C")
    with_art, without = catalog.resolve("With"), catalog.resolve("Without")
    assert with_art is not None
    assert without is not None
    asked = [*range(10_000, 10_600), without.id, with_art.id]  # more than one query's worth
    assert catalog.folders_with_art(asked) == [with_art.id]


def test_transaction_rolls_back_on_error(catalog: Catalog) -> None:
    def fail_half_way() -> None:
        with catalog.transaction():
            add(catalog, "x.flac")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_half_way()
    assert list(catalog.tracks()) == []


def test_colliding_tracks_get_distinct_names(catalog: Catalog) -> None:
    layout = Layout(catalog, PathTemplate.parse("$artist/$title.$format"))
    place(catalog, layout, "1/a.flac", artist="A", title="Song")
    place(catalog, layout, "2/a.flac", artist="A", title="Song")
    place(catalog, layout, "3/a.flac", artist="A", title="Song")
    artist = catalog.resolve("A")
    assert artist is not None
    names = sorted(n.name for n in catalog.children(artist.id))
    assert names == ["Song (2).flac", "Song (3).flac", "Song.flac"]


def test_tag_change_moves_the_file_and_prunes_empty_directories(catalog: Catalog) -> None:
    layout = Layout(catalog, PathTemplate.parse("$artist/$album/$title.$format"))
    file_id = place(catalog, layout, "a.flac", artist="Old", album="X", title="T")
    with catalog.transaction():
        add(catalog, "a.flac", artist="New", album="X", title="T")
        changes = layout.place(
            file_id, "a.flac", "flac", TrackTags(artist="New", album="X", title="T")
        )
    assert catalog.resolve("Old") is None
    assert catalog.resolve("New/X/T.flac") is not None
    removed = {c.name for c in changes if c.kind is ChangeKind.REMOVED}
    assert removed == {"T.flac", "X", "Old"}


def test_unchanged_path_keeps_its_node(catalog: Catalog) -> None:
    layout = Layout(catalog, PathTemplate.parse("$artist/$title.$format"))
    file_id = place(catalog, layout, "a.flac", artist="A", title="T")
    before = catalog.node_of_file(file_id)
    changes = layout.place(file_id, "a.flac", "flac", TrackTags(artist="A", title="T", genre="G"))
    assert [c.kind for c in changes] == [ChangeKind.CHANGED]
    assert catalog.node_of_file(file_id) == before


def test_rebuild_with_another_template(catalog: Catalog) -> None:
    layout = Layout(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))
    place(catalog, layout, "a.mp3", artist="A", title="T", genre="Rock")
    with catalog.transaction():
        Layout(catalog, PathTemplate.parse("$genre/$title.$format")).rebuild()
    assert catalog.resolve("Rock/T.mp3") is not None
    assert catalog.resolve("A") is None
    assert catalog.counts()[:2] == (1, 2)


def test_skip_unreadable_hides_files_with_errors(catalog: Catalog) -> None:
    layout = Layout(catalog, PathTemplate.parse(DEFAULT_TEMPLATE), skip_unreadable=True)
    with catalog.transaction():
        file_id = add(catalog, "bad.mp3")
        assert layout.place(file_id, "bad.mp3", "mp3", TrackTags(), error="broken") == []
    assert catalog.node_of_file(file_id) is None


def test_a_freed_name_goes_to_its_lowest_variant(catalog: Catalog) -> None:
    layout = Layout(catalog, PathTemplate.parse("$title.$format"))
    first = place(catalog, layout, "old/a.flac", title="Song")
    place(catalog, layout, "new/a.flac", title="Song")  # found before the old one is dropped
    place(catalog, layout, "other/a.flac", title="Song")
    place(catalog, layout, "x.flac", title="Song (2) live")  # looks similar, is not a variant
    with catalog.transaction():
        changes = layout.unplace(first)
        catalog.delete_file(first)
    names = sorted(n.name for n in catalog.children(ROOT_NODE))
    assert names == ["Song (2) live.flac", "Song (3).flac", "Song.flac"]
    assert [(c.kind, c.name) for c in changes] == [
        (ChangeKind.REMOVED, "Song.flac"),
        (ChangeKind.REMOVED, "Song (2).flac"),
        (ChangeKind.ADDED, "Song.flac"),
        (ChangeKind.CHANGED, ""),  # the root: its listing changed, so did its mtime
    ]


# -- served mtimes: what indexers (MPD, beets) go by ---------------------------------------

SECOND = 1_000_000_000


def test_a_changed_file_gets_a_later_whole_second_whatever_its_origin_says() -> None:
    t = 1_700_000_000 * SECOND
    assert later_mtime(t + 5, t + 999, now_ns=t + 10) == t + SECOND  # same second: next one
    assert later_mtime(t, t + 3 * SECOND, now_ns=t + SECOND) == t + 3 * SECOND  # the origin's
    assert later_mtime(t, t - SECOND, now_ns=t + 7 * SECOND) == t + 7 * SECOND  # now
    assert later_mtime(t + 9 * SECOND, t, now_ns=t) == t + 10 * SECOND  # never back


def test_a_new_header_moves_the_mtime_and_the_same_bytes_keep_it(catalog: Catalog) -> None:
    layout = Layout(catalog, PathTemplate.parse("$artist/$title.$format"))
    layout.with_overrides = True
    file_id = place(catalog, layout, "a.flac", artist="A", title="T")
    before = catalog.node_of_file(file_id)
    assert before is not None
    assert before.mtime_ns == 1
    track = catalog.track(file_id)
    assert track is not None
    with catalog.transaction():
        catalog.set_overlay(file_id, 100, 1, 10, b"h" * 10)  # same size: fits the padding
        layout.place_track(track)
    edited = catalog.node_of_file(file_id)
    assert edited is not None
    assert edited.id == before.id
    assert edited.size == 100
    assert edited.mtime_ns // SECOND > before.mtime_ns // SECOND
    with catalog.transaction():
        layout.place_track(track)  # placed again, serving the same bytes
    assert catalog.node_of_file(file_id) == edited
    with catalog.transaction():
        catalog.set_overlay(file_id, 100, 1, 10, b"H" * 20)  # cleared or re-made
        layout.place_track(track)
    again = catalog.node_of_file(file_id)
    assert again is not None
    assert again.size == 110
    assert again.mtime_ns // SECOND > edited.mtime_ns // SECOND


def test_a_retagged_file_keeps_its_inode_and_both_folders_move_forward(catalog: Catalog) -> None:
    layout = Layout(catalog, PathTemplate.parse("$artist/$title.$format"))
    file_id = place(catalog, layout, "a.flac", artist="Old", title="T")
    place(catalog, layout, "b.flac", artist="Old", title="U")  # keeps Old in the tree
    node, old, root = catalog.node_of_file(file_id), catalog.resolve("Old"), catalog.node(1)
    assert node is not None
    assert old is not None
    assert root is not None
    with catalog.transaction():
        add(catalog, "a.flac", artist="New", title="T")
        changes = layout.place(file_id, "a.flac", "flac", TrackTags(artist="New", title="T"))
    moved = catalog.resolve("New/T.flac")
    assert moved is not None
    assert moved.id == node.id
    for folder in (old, root):
        now = catalog.node(folder.id)
        assert now is not None
        assert now.mtime_ns // SECOND > folder.mtime_ns // SECOND
    changed = {c.node for c in changes if c.kind is ChangeKind.CHANGED}
    assert {node.id, old.id, ROOT_NODE} <= changed  # the kernel forgets their attributes


def test_a_folder_moves_once_per_transaction(catalog: Catalog) -> None:
    layout = Layout(catalog, PathTemplate.parse("$artist/$title.$format"))
    place(catalog, layout, "x.flac", artist="A", title="X")
    folder = catalog.resolve("A")
    assert folder is not None
    with catalog.transaction():
        for n in range(20):
            file_id = add(catalog, f"{n}.flac", artist="A", title=str(n))
            layout.place(file_id, f"{n}.flac", "flac", TrackTags(artist="A", title=str(n)))
    after = catalog.node(folder.id)
    assert after is not None
    assert after.mtime_ns // SECOND > folder.mtime_ns // SECOND
    # now, or the next second: not 20 s ahead for 20 files
    assert after.mtime_ns <= max(time.time_ns(), (folder.mtime_ns // SECOND + 1) * SECOND)


def test_a_folder_changed_many_times_a_second_stays_near_the_clock(catalog: Catalog) -> None:
    layout = Layout(catalog, PathTemplate.parse("$artist/$title.$format"))
    seen = []
    for n in range(30):  # 30 scan batches, each adding to the root
        place(catalog, layout, f"{n}.flac", artist=f"A{n}", title="T")
        root = catalog.node(ROOT_NODE)
        assert root is not None
        seen.append(root.mtime_ns)
    assert seen == sorted(set(seen))  # always later
    assert seen[-1] <= time.time_ns() + 2 * SECOND  # not 30 s ahead


def test_imported_plays_add_up_and_last_played_is_the_later(catalog: Catalog) -> None:
    played, other = add(catalog, "a.flac", title="A"), add(catalog, "b.flac", title="B")
    with catalog.transaction():
        catalog.record_plays([(played, 100.0), (played, 200.0)])
        catalog.set_overrides(other, {"genre": "Pop", "composer": None})
    assert catalog.play_totals() == {played: (2, 200.0)}
    assert catalog.all_overrides() == {other: {"composer": None, "genre": "Pop"}}
    with catalog.transaction():
        catalog.add_plays(played, 3, 150.0)  # earlier than the last play here
        catalog.add_plays(other, 1, 50.0)
    assert catalog.play_totals() == {played: (5, 200.0), other: (1, 50.0)}


def test_a_play_count_imported_again_adds_only_the_plays_since(catalog: Catalog) -> None:
    played = add(catalog, "a.flac", title="A")
    with catalog.transaction():
        catalog.record_plays([(played, 100.0)])  # played here too
        assert catalog.import_plays(played, "itunes", 5, 300.0) == 5
    with catalog.transaction():  # the same Library.xml again: nothing new
        assert catalog.import_plays(played, "itunes", 5, 300.0) == 0
    assert catalog.play_totals() == {played: (6, 300.0)}
    with catalog.transaction():  # a later export: 2 more plays in iTunes
        assert catalog.import_plays(played, "itunes", 7, 400.0) == 2
    assert catalog.play_totals() == {played: (8, 400.0)}
    assert catalog.imported_plays("itunes") == {played: 7}
    assert catalog.imported_plays("other") == {}


def test_ratings_and_playlists_go_with_their_file(catalog: Catalog) -> None:
    first, second = add(catalog, "a.flac", title="A"), add(catalog, "b.flac", title="B")
    with catalog.transaction():
        catalog.set_rating(first, 80, "itunes")
        catalog.set_rating(second, 20, "itunes")
        catalog.set_rating(second, 100, "itunes")  # again: replaced, not added
        entries = [(second, "/m/b.flac"), (None, "/gone.flac"), (first, "/m/a.flac")]
        catalog.replace_playlist("Road Trip", "itunes", entries)
    assert catalog.rating(first) == 80
    assert catalog.all_ratings() == {first: 80, second: 100}
    with pytest.raises(ValueError, match="0-100"):
        catalog.set_rating(first, 101, "itunes")
    with catalog.transaction():  # imported again: one playlist of that name
        catalog.replace_playlist(
            "Road Trip", "itunes", [(second, "/m/b.flac"), (first, "/m/a.flac")]
        )
    assert catalog.playlist_names() == ["Road Trip"]
    with catalog.transaction():
        catalog.delete_file(first)
    assert catalog.all_ratings() == {second: 100}
    # The entry of a removed file keeps its text: nothing dropped silently.
    assert catalog.playlist("Road Trip") == [(second, "/m/b.flac"), (None, "/m/a.flac")]
    with catalog.transaction():
        catalog.drop_playlists("itunes")
    assert catalog.playlist_names() == []
