"""Virtual folders (FR-14, FR-15): the names of the symlinks in ``/.search/<query>/``
and ``/.collections/<name>/`` match the tree they point into — same title (the
tree's fallbacks), same collision counter, one extension — whatever order the
search or the collection lists the tracks in.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from musicfs.core.catalog.layout import Layout
from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.config.collections import Collection
from musicfs.core.model import FileStat, ScannedFile, TrackTags
from musicfs.core.namespace.inodes import COLLECTIONS_DIR, SEARCH_DIR
from musicfs.core.namespace.virtual import (
    VirtualTree,
    result_name,
    tree_counter,
    unique_names,
)

THRILL = TrackTags(artist="AC/DC", album="Back in Black", title="Shoot to Thrill", track=2,
                   year=1980)  # fmt: skip


def add(catalog: Catalog, layout: Layout, relpath: str, tags: TrackTags) -> int:
    fmt = relpath.rpartition(".")[2]
    with catalog.transaction():
        file_id = catalog.upsert_file(ScannedFile("lib", relpath, FileStat(10, 1), fmt, tags))
        layout.place(file_id, relpath, fmt, tags)
    return file_id


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    catalog = Catalog.open(tmp_path / "catalog.sqlite3")
    layout = Layout(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))
    layout.rebuild()  # stores the template the tree is laid out with
    add(catalog, layout, "a/thrill.flac", THRILL)
    add(catalog, layout, "b/thrill.flac", THRILL)  # the same name in the tree: "(2)"
    add(catalog, layout, "c/notags.flac", TrackTags())
    return catalog


def links(catalog: Catalog, parent: int, name: str) -> dict[str, str]:
    tree = VirtualTree(catalog.path, (Collection("all", order="artist"),))
    folder = tree.folder(parent, name)
    assert folder is not None
    return {n: e.target for n, e in tree.results(folder).items()}


def test_an_untagged_file_gets_one_extension(catalog: Catalog) -> None:
    assert links(catalog, SEARCH_DIR, "notags") == {
        "Unknown Artist - notags.flac": "../../Unknown Artist/Unknown Album (0000) [FLAC]/"
        "00 - notags.flac"
    }


def test_links_carry_the_collision_counter_of_their_target(catalog: Catalog) -> None:
    album = "../../AC_DC/Back in Black (1980) [FLAC]/"
    expected = {
        "AC_DC - Shoot to Thrill.flac": album + "02 - Shoot to Thrill.flac",
        "AC_DC - Shoot to Thrill (2).flac": album + "02 - Shoot to Thrill (2).flac",
    }
    assert links(catalog, SEARCH_DIR, "shoot to thrill") == expected
    # recently-added lists the newest first: the (2) of the tree comes first there
    recent = links(catalog, COLLECTIONS_DIR, "recently-added")
    assert {n: t for n, t in recent.items() if "Thrill" in n} == expected
    assert {n: t for n, t in links(catalog, COLLECTIONS_DIR, "all").items()
            if "Thrill" in n} == expected  # fmt: skip


def test_names_follow_the_tree_after_a_template_change(tmp_path: Path) -> None:
    catalog = Catalog.open(tmp_path / "catalog.sqlite3")
    layout = Layout(catalog, PathTemplate.parse("$title.$format"))
    layout.rebuild()
    add(catalog, layout, "x/one.flac", TrackTags(artist="A", title="Song"))
    add(catalog, layout, "y/two.flac", TrackTags(artist="A", title="Song"))
    recent = links(catalog, COLLECTIONS_DIR, "recently-added")
    assert recent == {
        "A - Song.flac": "../../Song.flac",
        "A - Song (2).flac": "../../Song (2).flac",
    }


def test_result_name_uses_the_template_fallbacks() -> None:
    assert result_name(TrackTags(), "dir/notags.flac", "flac") == "Unknown Artist - notags.flac"
    only_albumartist = TrackTags(albumartist="Band", title="  Hymn ")
    assert result_name(only_albumartist, "h.mp3", "mp3") == "Band - Hymn.mp3"
    assert result_name(TrackTags(artist=".hidden", title="a/b"), "x.ogg", "ogg") == (
        "_hidden - a_b.ogg"
    )
    long = result_name(TrackTags(artist="A", title="x" * 400), "l.flac", "flac")
    assert len(long.encode()) <= 255
    assert long.endswith(".flac")


def test_tree_counter_reads_only_the_counters_the_layout_makes() -> None:
    base = "02 - Shoot to Thrill.flac"
    assert tree_counter(base, base) == 1
    assert tree_counter("02 - Shoot to Thrill (3).flac", base) == 3
    # a title that ends in "(2)" is not a counter
    assert tree_counter("01 - Song (2).flac", "01 - Song (2).flac") == 1
    assert tree_counter("01 - Other (2).flac", base) == 1


def test_unique_names_do_not_depend_on_the_order() -> None:
    wanted = [("A - T.flac", 2, "x/2"), ("A - T.flac", 1, "x/1"), ("B - U.flac", 1, "y")]
    assert unique_names(wanted) == ["A - T (2).flac", "A - T.flac", "B - U.flac"]
    assert unique_names(wanted[::-1]) == ["B - U.flac", "A - T.flac", "A - T (2).flac"]
    # different folders in the tree, one link name: the lower key keeps the plain name
    apart = [("A - T.flac", 1, "z/1"), ("A - T.flac", 1, "a/1"), ("A - T.flac", 2, "a/2")]
    assert unique_names(apart) == ["A - T (3).flac", "A - T.flac", "A - T (2).flac"]


def test_results_are_reused_for_a_while(catalog: Catalog) -> None:
    now = [time.monotonic()]
    tree = VirtualTree(catalog.path, clock=lambda: now[0])
    folder = tree.folder(SEARCH_DIR, "thrill")
    assert folder is not None
    first = tree.results(folder)
    assert tree.results(folder) is first
    now[0] += 10
    assert tree.results(folder) is not first
    assert tree.folder(COLLECTIONS_DIR, "no such collection") is None
