"""The catalog's pins (schema 12): requests, the tracks each pins, and what
follows the files (a track stays pinned while any request pins it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicfs.core.catalog.store import Catalog
from musicfs.core.model import FileStat, ScannedFile, TrackTags


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog.open(tmp_path / "catalog.sqlite3")


def add(catalog: Catalog, relpath: str, size: int = 100) -> int:
    with catalog.transaction():
        return catalog.upsert_file(ScannedFile("lib", relpath, FileStat(size, 1), "flac",
                                               TrackTags(title=relpath)))  # fmt: skip


def test_a_request_pins_exactly_what_it_is_given(catalog: Catalog) -> None:
    a, b, c = add(catalog, "a.flac"), add(catalog, "b.flac"), add(catalog, "c.flac")
    with catalog.transaction():
        folder = catalog.add_pin_request("path", "Artist/Album", 1.0)
        assert catalog.add_pin_request("path", "Artist/Album", 2.0) == folder  # the same one
        search = catalog.add_pin_request("search", "b", 3.0)
        catalog.set_pinned(folder, [a, b])
        catalog.set_pinned(search, [b])
    assert [(r.kind, r.value, r.at) for r in catalog.pin_requests()] == [
        ("path", "Artist/Album", 1.0), ("search", "b", 3.0)
    ]  # fmt: skip
    assert catalog.pinned_file_ids() == {a, b}
    assert catalog.pinned_file_ids(besides=[folder]) == {b}
    with catalog.transaction():
        catalog.set_pinned(folder, [b, c])  # a left the folder, c came
    assert catalog.pinned_by(folder) == [b, c]
    assert catalog.pinned_file_ids() == {b, c}
    with catalog.transaction():
        catalog.drop_pin_request(folder)
    assert catalog.pinned_file_ids() == {b}  # the search still pins it
    assert catalog.pin_request("path", "Artist/Album") is None


def test_pins_go_with_their_file(catalog: Catalog) -> None:
    a, b = add(catalog, "a.flac", 300), add(catalog, "b.flac", 500)
    with catalog.transaction():
        catalog.set_pinned(catalog.add_pin_request("collection", "favourites", 1.0), [a, b])
    assert catalog.file_sizes([a, b, 999]) == {a: 300, b: 500}
    with catalog.transaction():
        catalog.delete_file(a)
    assert catalog.pinned_file_ids() == {b}
    assert len(catalog.pin_requests()) == 1
