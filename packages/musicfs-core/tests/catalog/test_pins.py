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


def test_pins_move_with_a_files_user_data_and_never_fail_its_return(catalog: Catalog) -> None:
    """Identity across moves: a pin goes with the file's overrides and plays to
    its new path; a pin dropped while the file was away is simply not restored."""
    old, new = add(catalog, "old.flac"), add(catalog, "new.flac")
    with catalog.transaction():
        for file_id in (old, new):
            catalog.set_audio_id(file_id, "same audio")
        catalog.record_plays([(old, 1.0)])
        folder = catalog.add_pin_request("path", "A/B", 1.0)
        catalog.set_pinned(folder, [old])
        catalog.forget_file(old)  # moved: new.flac is its new path
    assert catalog.pinned_by(folder) == [new]
    away = add(catalog, "away.flac")
    with catalog.transaction():
        catalog.set_audio_id(away, "other audio")
        catalog.record_plays([(away, 2.0)])
        search = catalog.add_pin_request("search", "away", 2.0)
        catalog.set_pinned(search, [away])
        catalog.forget_file(away)  # gone for now: its data waits for its audio
        catalog.drop_pin_request(search)
    back = add(catalog, "back.flac")
    with catalog.transaction():
        catalog.set_audio_id(back, "other audio")
        catalog.adopt(back)
    assert catalog.play_totals()[back] == (1, 2.0)
    assert back not in catalog.pinned_file_ids()
