"""Smart collections (FR-15): the rules, the built-in ones, the access log, config."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from musicfs.core.catalog.store import Catalog
from musicfs.core.config.collections import BUILTIN, Collection, file_collections
from musicfs.core.events import EventBus, EventType
from musicfs.core.model import FileStat, ScannedFile, TrackTags
from musicfs.core.namespace.collections import AccessLog, file_ids
from musicfs.core.values import ConfigError

CatalogSQL = Callable[..., list[Any]]  # the catalog_sql fixture of conftest.py


TRACKS = [
    ("a.flac", TrackTags(artist="Nirvana", title="Lithium", genre="Rock", year=1991, track=5)),
    ("b.flac", TrackTags(artist="Blur", title="Song 2", genre="Rock", year=1997, track=2)),
    ("c.flac", TrackTags(artist="Daft Punk", title="One More Time", genre="House", year=2000)),
    ("d.flac", TrackTags(artist="Queen", title="Bohemian", genre="rock", year=1975)),
]


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    catalog = Catalog.open(tmp_path / "catalog.sqlite3")
    with catalog.transaction():
        for relpath, tags in TRACKS:
            catalog.upsert_file(ScannedFile("lib", relpath, FileStat(1, 1), "flac", tags))
    return catalog


def titles(catalog: Catalog, collection: Collection, now: float | None = None) -> list[str]:
    return [catalog.track(i).tags.title for i in file_ids(catalog, collection, now)]  # type: ignore[union-attr,misc]


def test_field_conditions_and_year_ranges(catalog: Catalog) -> None:
    nineties = Collection("90s rock", genre="ROCK", year_from=1990, year_to=1999, order="year")
    assert titles(catalog, nineties) == ["Song 2", "Lithium"]
    assert titles(catalog, Collection("house", genre="house")) == ["One More Time"]


def test_recently_added_is_newest_first_and_added_within_days(catalog: Catalog) -> None:
    recent = next(c for c in BUILTIN if c.name == "recently-added")
    assert titles(catalog, recent)[0] == "Bohemian"
    later = time.time() + 3 * 86400
    assert titles(catalog, Collection("new", added_within_days=1), now=later) == []
    assert len(titles(catalog, Collection("new", added_within_days=7), now=later)) == 4


def test_the_access_log_feeds_recently_and_most_played(
    tmp_path: Path, catalog: Catalog, catalog_sql: CatalogSQL
) -> None:
    events = EventBus()
    log = AccessLog(catalog.path, events)
    log.start()
    try:
        for relpath in ("a.flac", "b.flac", "a.flac"):  # a twice within a minute: one play
            events.publish(EventType.FILE_OPENED, origin="lib", path=relpath)
        events.publish(EventType.FILE_OPENED, origin="lib", path="gone.flac")  # not catalogued
        deadline = time.monotonic() + 10
        while catalog_sql(catalog, "SELECT count(*) FROM plays")[0][0] < 2:
            assert time.monotonic() < deadline, "the access log wrote nothing"
            time.sleep(0.02)
    finally:
        log.stop()
    assert catalog_sql(catalog, "SELECT count(*) FROM plays") == [(2,)]
    played = next(c for c in BUILTIN if c.name == "recently-played")
    assert set(titles(catalog, played)) == {"Lithium", "Song 2"}
    catalog.record_plays([(catalog.tracks(title="Song 2").__next__().id, time.time() + 100)])
    most = next(c for c in BUILTIN if c.name == "most-played")
    assert titles(catalog, most)[0] == "Song 2"
    assert titles(catalog, Collection("twice", min_plays=2)) == ["Song 2"]


def test_config_tables_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    parsed = file_collections(path, [{"name": "90s", "year_from": 1990, "order": "year"}])
    assert parsed == (Collection("90s", year_from=1990, order="year"),)
    for bad, message in [
        ({"name": "x", "colour": "red"}, "unknown key"),
        ({"name": "a/b"}, "folder name"),
        ({"name": "x", "year_from": "1990"}, "must be a number"),
        ({"name": "x", "order": "random"}, "order must be one of"),
        ({"name": "most-played"}, "used twice"),
    ]:
        with pytest.raises(ConfigError, match=message):
            file_collections(path, [bad])
