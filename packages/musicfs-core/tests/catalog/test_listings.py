"""Packed listings: a big folder's listing in one row is exactly its rows, or absent.

A stale packed listing would show a folder as it was (a track missing, a
renamed one twice), so the property drives every write the tree has through
random sequences and checks, after each, that every packed row equals what
the rows say; the unit tests pin each kind of change and the migration.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from musicfs.core.catalog.store import MIGRATIONS, ROOT_NODE, Catalog, Node


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog.open(tmp_path / "catalog.sqlite3") as catalog:
        yield catalog


def rows(catalog: Catalog, folder: int) -> list[tuple[int, bytes, int, int]]:
    return catalog.child_rows(folder, 0, -1)


def folder_of(catalog: Catalog, name: str, tracks: int, parent: int = ROOT_NODE) -> int:
    with catalog.transaction():
        folder = catalog.insert_node(parent, name, None)
        for i in range(tracks):
            catalog.insert_node(folder, f"{i:03d}.flac", folder * 1000 + i, 100 + i, 7 + i)
    return folder


def test_a_big_folder_is_packed_as_its_rows_and_a_small_one_is_not(catalog: Catalog) -> None:
    big, small = folder_of(catalog, "Big", 12), folder_of(catalog, "Small", 3)
    sub = folder_of(catalog, "Sub", 0, parent=big)  # a folder among the tracks
    assert catalog.packed_listing(big) is None, "packed before it was asked"
    assert catalog.pack_listings(min_entries=10) == 1
    packed = catalog.packed_listing(big)
    assert packed is not None
    assert packed.rows() == rows(catalog, big)
    assert len(packed) == 13
    assert packed.rows()[-1] == (sub, b"Sub", -1, rows(catalog, big)[-1][3])
    assert catalog.packed_listing(small) is None
    assert catalog.listing_marks() == {big: True}, "small folders keep no mark"
    assert catalog.pack_listings(min_entries=10) == 0, "nothing changed: nothing to pack"


def test_every_change_a_listing_shows_unpacks_its_folder(catalog: Catalog) -> None:
    big = folder_of(catalog, "Big", 12)
    other = folder_of(catalog, "Other", 12)
    sub = folder_of(catalog, "Sub", 0, parent=big)
    first, second = (r[0] for r in rows(catalog, big)[:2])
    changes = {
        "add": lambda: catalog.insert_node(big, "new.flac", 99_999, 1, 1),
        "remove": lambda: catalog.delete_node(first),
        "rename": lambda: catalog.rename_node(second, "renamed.flac"),
        "move out": lambda: catalog.move_node(rows(catalog, big)[0][0], other, "moved.flac"),
        "move in": lambda: catalog.move_node(rows(catalog, other)[0][0], big, "came.flac"),
        "new size": lambda: catalog.update_node_file(
            rows(catalog, big)[1][0], 50_000, 5, rows(catalog, big)[1][3], None
        ),
        "a folder's mtime": lambda: catalog.touch_dir(sub, 2_000_000_000_000_000_000),
    }
    for what, change in changes.items():
        catalog.pack_listings(min_entries=10)
        assert catalog.packed_listing(big) is not None, what
        with catalog.transaction():
            change()
        assert catalog.packed_listing(big) is None, f"{what}: still packed"
        assert catalog.pack_listings(min_entries=10) >= 1, what
        packed = catalog.packed_listing(big)
        assert packed is not None, what
        assert packed.rows() == rows(catalog, big), what


def test_changes_a_listing_does_not_show_keep_it_packed(catalog: Catalog) -> None:
    big, other = folder_of(catalog, "Big", 12), folder_of(catalog, "Other", 12)
    catalog.pack_listings(min_entries=10)
    track = rows(catalog, big)[0]
    with catalog.transaction():
        catalog.update_node_file(track[0], 50_000, track[2], track[3], "replica-key", version=3)
        catalog.insert_node(other, "elsewhere.flac", 77_777, 1, 1)
    assert catalog.packed_listing(big) is not None
    assert catalog.packed_listing(other) is None


def test_a_removed_folder_leaves_no_packed_listing(catalog: Catalog) -> None:
    big = folder_of(catalog, "Big", 12)
    catalog.pack_listings(min_entries=10)
    with catalog.transaction():
        for entry in rows(catalog, big):
            catalog.delete_node(entry[0])
        catalog.delete_node(big)
    assert big not in catalog.listing_marks()


def test_packing_that_is_stopped_leaves_the_rest_marked(catalog: Catalog) -> None:
    folders = [ROOT_NODE, *(folder_of(catalog, f"F{i}", 4) for i in range(3))]
    asked = iter([False, True])
    assert catalog.pack_listings(min_entries=2, stop=lambda: next(asked)) == 1
    marks = catalog.listing_marks()
    assert set(marks) == set(folders)
    assert sorted(marks.values()) == [False, False, False, True]
    assert catalog.pack_listings(min_entries=2) == 3
    assert all(catalog.listing_marks().values())


def test_a_catalog_from_before_packed_listings_marks_its_big_folders(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(";".join(MIGRATIONS[:15]) + "; PRAGMA user_version = 15;")
        conn.execute("INSERT INTO nodes (id, parent, name) VALUES (2, 1, 'Big')")
        conn.executemany(
            "INSERT INTO nodes (parent, name, file_id, size, mtime_ns) VALUES (2, ?, ?, 10, 20)",
            [(f"{i:04d}.flac", i) for i in range(1000)],
        )
    with Catalog.open(path) as catalog:
        assert catalog.listing_marks() == {2: False}, "not marked for packing"
        assert catalog.pack_listings() == 1
        packed = catalog.packed_listing(2)
        assert packed is not None
        assert packed.rows() == rows(catalog, 2)


# -- the property: any sequence of tree writes ------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "é", "dd"])
OPS = st.one_of(
    st.tuples(st.just("track"), st.integers(0, 4), NAMES, st.integers(0, 9)),
    st.tuples(st.just("folder"), st.integers(0, 4), NAMES),
    st.tuples(st.just("remove"), st.integers(0, 50)),
    st.tuples(st.just("rename"), st.integers(0, 50), NAMES),
    st.tuples(st.just("move"), st.integers(0, 50), st.integers(0, 4)),
    st.tuples(st.just("resize"), st.integers(0, 50), st.integers(0, 9)),
    st.tuples(st.just("touch"), st.integers(0, 4)),
    st.tuples(st.just("pack"), st.integers(1, 3)),
)


@given(st.lists(OPS, max_size=40))
def test_a_packed_listing_always_equals_the_rows(ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp, Catalog.open(Path(tmp) / "c.sqlite3") as catalog:
        next_file = iter(range(1, 10_000))
        for op in ops:
            below = _below(catalog, ROOT_NODE)
            folders = [ROOT_NODE, *(n.id for n in below if n.is_dir)]
            nodes = [n.id for n in below]
            try:
                with catalog.transaction():
                    _apply(catalog, op, folders, nodes, next_file)
            except sqlite3.IntegrityError:
                pass  # a name taken in that folder: the write is refused, nothing changes
            for folder in folders:
                packed = catalog.packed_listing(folder)
                assert packed is None or packed.rows() == rows(catalog, folder), (op, folder)


def _apply(
    catalog: Catalog, op: tuple[object, ...], folders: list[int], nodes: list[int],
    next_file: Iterator[int],
) -> None:  # fmt: skip
    kind, *args = op

    def pick(items: list[int], k: object) -> int:
        assert isinstance(k, int)
        return items[k % len(items)]

    if kind == "pack":
        catalog.pack_listings(min_entries=int(str(args[0])))
    elif kind == "track":
        size = int(str(args[2]))
        catalog.insert_node(pick(folders, args[0]), str(args[1]), next(next_file), size, 1)
    elif kind == "folder":
        catalog.insert_node(pick(folders, args[0]), str(args[1]), None)
    elif not nodes:
        return
    elif kind == "remove":
        catalog.delete_node(pick(nodes, args[0]))
    elif kind == "rename":
        catalog.rename_node(pick(nodes, args[0]), str(args[1]))
    elif kind == "move":
        catalog.move_node(pick(nodes, args[0]), pick(folders, args[1]), f"m{args[0]}")
    elif kind == "resize":
        node = catalog.node(pick(nodes, args[0]))
        if node is not None and node.file_id is not None:  # the same mtime: size alone
            catalog.update_node_file(node.id, node.file_id, int(str(args[1])), node.mtime_ns, None)
    elif kind == "touch":
        catalog.touch_dir(pick(folders, args[0]), 3_000_000_000_000_000_000)


def _below(catalog: Catalog, folder: int, depth: int = 0) -> list[Node]:
    """The nodes in the tree under *folder* (a folder moved into itself is cut off)."""
    found = []
    for child in catalog.children(folder, 0, 10_000):
        found.append(child)
        if child.is_dir and depth < 5:
            found += _below(catalog, child.id, depth + 1)
    return found


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE listings SET ids = x'0102'",  # not a whole number of entries
        "UPDATE listings SET names = substr(names, 2)",  # names shorter than their offsets
        "UPDATE listings SET sizes = NULL",  # a column lost
        # a name's start moved: the sizes still add up, only the checksum sees it
        "UPDATE listings SET offsets = substr(offsets, 1, 16) || x'0100000000000000'"
        " || substr(offsets, 25)",
    ],
)
def test_a_damaged_packed_listing_is_passed_over_for_the_rows(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite3"
    with Catalog.open(path) as catalog:
        big = folder_of(catalog, "Big", 12)
        catalog.pack_listings(min_entries=10)
    with sqlite3.connect(path) as conn:
        conn.execute(damage)
    with Catalog.open(path) as catalog:
        assert catalog.packed_listing(big) is None
        assert "packed listing of folder" in caplog.text
        assert len(rows(catalog, big)) == 12


def test_the_triggers_that_keep_packed_listings_exact_exist(catalog: Catalog) -> None:
    # A later migration that rebuilds `nodes` would drop them silently, and
    # packed listings would go stale for good.
    with sqlite3.connect(catalog.path) as conn:
        triggers = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'nodes'"
        )}  # fmt: skip
    assert {"nodes_listing_insert", "nodes_listing_delete", "nodes_listing_update"} <= triggers


def test_a_folder_above_the_largest_packed_is_listed_from_its_rows(catalog: Catalog) -> None:
    big = folder_of(catalog, "Big", 12)
    assert catalog.pack_listings(min_entries=2, max_entries=10) == 0
    assert catalog.packed_listing(big) is None
    assert big not in catalog.listing_marks()


def test_packing_that_sqlite_refuses_leaves_the_marks_and_raises_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite3"
    with Catalog.open(path) as catalog:
        big = folder_of(catalog, "Big", 12)
        with sqlite3.connect(path, isolation_level=None) as other:
            other.execute("PRAGMA busy_timeout = 0")
            other.execute("BEGIN IMMEDIATE")  # another writer holds the catalog
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(catalog, "_conn", _impatient(catalog))
                assert catalog.pack_listings(min_entries=10) == 0
            other.execute("ROLLBACK")
        assert "could not pack folder listings" in caplog.text
        assert catalog.listing_marks()[big] is False
        assert catalog.pack_listings(min_entries=10) >= 1


def _impatient(catalog: Catalog) -> sqlite3.Connection:
    conn = sqlite3.connect(catalog.path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 0")
    return conn
