"""Full-text search (FR-14): folding, typos, partial words, ranking, and an index
that stays in step with the catalog in every transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from musicfs.core.catalog.search import Searcher, fold
from musicfs.core.catalog.store import Catalog
from musicfs.core.model import FileStat, ScannedFile, TrackTags

CatalogSQL = Callable[..., list[Any]]  # the catalog_sql fixture of conftest.py

LIBRARY = [
    ("a/halo.flac", TrackTags(artist="Beyoncé", title="Halo", album="I Am... Sasha Fierce")),
    ("b/one.flac", TrackTags(artist="Metallica", title="One", album="...And Justice for All")),
    ("b/enter.flac", TrackTags(artist="Metallica", title="Enter Sandman", album="Metallica")),
    ("c/tribute.flac", TrackTags(artist="Various", title="A Metallica Tribute", album="Covers")),
    ("d/jóga.flac", TrackTags(artist="Björk", title="Jóga", album="Homogenic")),
    ("e/untagged.flac", TrackTags()),
]


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    catalog = Catalog.open(tmp_path / "catalog.sqlite3")
    with catalog.transaction():
        for relpath, tags in LIBRARY:
            catalog.upsert_file(ScannedFile("lib", relpath, FileStat(1, 1), "flac", tags))
    return catalog


def titles(catalog: Catalog, query: str) -> list[str | None]:
    return [hit.track.tags.title for hit in Searcher(catalog).search(query)]


def test_case_and_diacritics_are_folded(catalog: Catalog) -> None:
    assert titles(catalog, "beyonce") == ["Halo"]
    assert titles(catalog, "BJORK joga") == ["Jóga"]
    assert fold("Björk Beyoncé") == "bjork beyonce"


def test_a_typo_is_corrected(catalog: Catalog) -> None:
    assert set(titles(catalog, "metalica")) == {"One", "Enter Sandman", "A Metallica Tribute"}
    assert titles(catalog, "sandmen") == ["Enter Sandman"]


def test_partial_words_match_the_start_of_words(catalog: Catalog) -> None:
    assert titles(catalog, "sand") == ["Enter Sandman"]
    assert titles(catalog, "homog") == ["Jóga"]


def test_an_exact_artist_or_title_comes_first(catalog: Catalog) -> None:
    found = titles(catalog, "metallica")
    assert found[-1] == "A Metallica Tribute"  # only a word of its title
    assert titles(catalog, "one")[0] == "One"


def test_every_word_must_match_and_nonsense_finds_nothing(catalog: Catalog) -> None:
    assert titles(catalog, "metallica halo") == []
    assert titles(catalog, "zzzqqq") == []
    assert titles(catalog, "   ") == []


def test_untagged_files_are_found_by_their_file_name(catalog: Catalog) -> None:
    assert [h.track.relpath for h in Searcher(catalog).search("untagged")] == ["e/untagged.flac"]


def test_the_index_follows_every_change_in_the_same_transaction(
    catalog: Catalog, catalog_sql: CatalogSQL
) -> None:
    one = next(t for t in catalog.tracks(title="One"))
    retagged = TrackTags(artist="Metallica", title="Fade to Black")
    with catalog.transaction():
        catalog.upsert_file(ScannedFile("lib", "b/one.flac", FileStat(2, 2), "flac", retagged))
    assert titles(catalog, "fade black") == ["Fade to Black"]
    assert titles(catalog, "justice") == []  # the old album is out of the index
    with catalog.transaction():
        catalog.delete_file(one.id)
    assert titles(catalog, "fade") == []
    with pytest.raises(RuntimeError, match="killed"):
        insert_then_fail(catalog)
    assert titles(catalog, "rolled") == []
    catalog_sql(catalog, "INSERT INTO search (search) VALUES ('integrity-check')")


def test_an_existing_catalog_is_indexed_when_it_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with Catalog.open(path) as catalog, catalog.transaction():
        catalog.upsert_file(ScannedFile("lib", "x.flac", FileStat(1, 1), "flac",
                                        TrackTags(title="Before Search")))  # fmt: skip
    with sqlite3.connect(path) as db:  # back to schema 5: no index
        db.executescript(
            "DROP TRIGGER nodes_listing_insert; DROP TRIGGER nodes_listing_delete;"
            "DROP TRIGGER nodes_listing_update; DROP TABLE listings;"
            "DROP TABLE playlist_files; DROP TABLE playlist_entries; DROP TABLE playlists;"
            "DROP TRIGGER files_search_insert; DROP TRIGGER files_search_delete;"
            "DROP TRIGGER files_search_update; DROP TABLE search_terms; DROP TABLE search;"
            "DROP TABLE plays; DROP TABLE played_after; DROP TRIGGER overrides_search_insert;"
            "DROP TRIGGER overrides_search_delete; DROP TABLE search_override_terms;"
            "DROP TABLE search_overrides; ALTER TABLE nodes DROP COLUMN version;"
            "DROP TABLE ratings; DROP TABLE imported_plays;"
            "DROP TABLE pins; DROP TABLE pin_requests;"
            "DROP TABLE moves; DROP TABLE departed; DROP INDEX files_by_audio_id;"
            "ALTER TABLE files DROP COLUMN audio_id; PRAGMA user_version = 5;"
        )
    with Catalog.open(path) as catalog:
        assert titles(catalog, "before") == ["Before Search"]


def insert_then_fail(catalog: Catalog) -> None:
    with catalog.transaction():
        catalog.upsert_file(ScannedFile("lib", "f/new.flac", FileStat(1, 1), "flac",
                                        TrackTags(title="Rolled Back")))  # fmt: skip
        raise RuntimeError("the scan was killed")


def test_tags_set_through_the_overlay_are_found_and_forgotten(
    catalog: Catalog, catalog_sql: CatalogSQL
) -> None:
    halo = next(catalog.tracks(title="Halo"))
    with catalog.transaction():
        catalog.set_overrides(halo.id, {"title": "Halo (Remastered)", "album": "Deluxe Édition"})
    assert titles(catalog, "remastered") == ["Halo"]  # the file's own title, found by its override
    assert titles(catalog, "deluxe edition") == ["Halo"]
    assert titles(catalog, "beyonce") == ["Halo"]  # its own tags still find it
    assert titles(catalog, "beyonce remastered") == ["Halo"]  # and both together
    assert titles(catalog, "metallica remastered") == []
    with catalog.transaction():
        catalog.clear_overrides(halo.id, ["album"])
    assert titles(catalog, "deluxe") == []
    assert titles(catalog, "remastered") == ["Halo"]
    with catalog.transaction():
        catalog.clear_overrides(halo.id)
    assert titles(catalog, "remastered") == []
    catalog_sql(
        catalog, "INSERT INTO search_overrides (search_overrides) VALUES ('integrity-check')"
    )
