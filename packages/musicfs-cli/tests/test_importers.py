"""How ``musicfs import beets`` and ``import itunes`` read the other programs' files."""

from __future__ import annotations

import argparse
import datetime
import plistlib
import sqlite3
from pathlib import Path

import pytest

from musicfs.cli.common import CLIError
from musicfs.cli.importers import (
    Here,
    ITunesLibrary,
    ITunesTrack,
    _import_itunes,
    beets_directory,
    location_path,
    read_beets,
    read_itunes,
)


def test_an_itunes_location_is_a_percent_decoded_local_path() -> None:
    url = "file://localhost/Users/me/Music/Bj%C3%B6rk/01%20J%C3%B3ga.m4a"
    assert location_path(url) == "/Users/me/Music/Björk/01 Jóga.m4a"
    assert location_path("file:///srv/a%23b.mp3") == "/srv/a#b.mp3"
    assert location_path("http://example.com/a.mp3") is None
    assert location_path("file://nas/share/a.mp3") is None  # another host's file


def test_itunes_own_playlists_and_album_ratings_are_left_out(tmp_path: Path) -> None:
    played = datetime.datetime(2024, 1, 2, 3, 4, 5)
    xml = tmp_path / "Library.xml"
    xml.write_bytes(plistlib.dumps({
        "Major Version": 1,
        "Tracks": {
            "1": {"Track ID": 1, "Name": "A", "Play Count": 3, "Play Date UTC": played,
                  "Rating": 60, "Location": "file://localhost/m/a.mp3"},
            "2": {"Track ID": 2, "Name": "B", "Rating": 40, "Rating Computed": True},
            "3": {"Track ID": 3, "Name": "C", "Play Count": 1, "Play Date": 3786912000},
        },
        "Playlists": [
            {"Name": "Library", "Master": True, "Playlist Items": [{"Track ID": 1}]},
            {"Name": "Music", "Distinguished Kind": 4, "Playlist Items": [{"Track ID": 1}]},
            {"Name": "Old stuff", "Folder": True},
            {"Name": "Mine", "Playlist Items": [{"Track ID": 2}, {"Track ID": 1}]},
        ],
    }))  # fmt: skip
    library = read_itunes(xml)
    first, second = library.tracks[1], library.tracks[2]
    assert (first.path, first.plays, first.rating) == ("/m/a.mp3", 3, 60)
    assert first.last_played == played.replace(tzinfo=datetime.UTC).timestamp()
    assert (second.path, second.plays, second.rating) == (None, 0, None)
    assert library.playlists == [("Mine", [2, 1])]
    # Only the older "Play Date" (seconds since 1904): 2024-01-01.
    assert (
        library.tracks[3].last_played
        == datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC).timestamp()
    )


def beets_db(path: Path, rows: list[tuple[object, ...]]) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, path BLOB, title TEXT, "
                     "year INTEGER, track INTEGER, genres TEXT, comp INTEGER)")  # fmt: skip
        conn.executemany("INSERT INTO items (path, title, year, track, genres, comp) "
                         "VALUES (?, ?, ?, ?, ?, ?)", rows)  # fmt: skip
    conn.close()
    return path


def test_beets_values_are_read_as_overrides_and_unset_ones_skipped(tmp_path: Path) -> None:
    db = beets_db(tmp_path / "library.db", [
        ("Björk/01 Jóga.flac".encode(), "Jóga ", 1997, 0, "Electronic\\␀Trip-Hop", 0),
        (b"/abs/\xff.flac", "", 0, 3, "", 1),  # a path that is not UTF-8, as beets keeps it
    ])  # fmt: skip
    first, second = read_beets(db)
    assert first.path == "Björk/01 Jóga.flac"
    # Trimmed as tag readers give text; 0 is beets' "no number"; the first of many genres.
    assert first.tags == {"title": "Jóga", "year": "1997", "genre": "Electronic",
                          "compilation": "0"}  # fmt: skip
    assert second.path == "/abs/\udcff.flac"
    assert second.tags == {"track": "3", "compilation": "1"}


def test_beets_directory_comes_from_the_config_beside_the_library(tmp_path: Path) -> None:
    assert beets_directory(tmp_path / "library.db") is None
    (tmp_path / "config.yaml").write_text('plugins: []\ndirectory: "/srv/music"  # mine\n')
    assert beets_directory(tmp_path / "library.db") == Path("/srv/music")


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_a_beets_library_that_is_not_one_is_a_usage_error(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "library.db"
    if kind == "empty":
        path.write_bytes(b"")  # SQLite opens it as an empty database: no items table
    with pytest.raises(CLIError, match=r"library\.db") as caught:
        read_beets(path)
    assert caught.value.code == 2


def test_itunes_duplicates_of_one_track_here_add_their_plays_once(tmp_path: Path) -> None:
    """Two iTunes tracks that are copies of one recording match the same track
    here (by its audio): importing the same Library.xml again adds nothing."""
    from musicfs.core.catalog.store import Catalog
    from musicfs.core.model import FileStat, ScannedFile, TrackTags
    from musicfs.core.tags.identity import audio_identity_of

    song = tmp_path / "itunes" / "Song.mp3"
    song.parent.mkdir()
    song.write_bytes(bytes(range(256)) * 64)
    copy = song.with_name("Song 1.mp3")  # iTunes' name for a duplicate
    copy.write_bytes(song.read_bytes())
    path = tmp_path / "catalog.sqlite3"
    with Catalog.open(path) as catalog, catalog.transaction():
        file_id = catalog.upsert_file(ScannedFile(
            "nas", "Artist/Song.mp3", FileStat(song.stat().st_size, 1), "mp3",
            TrackTags(title="Song"), None, audio_identity_of(str(song)),
        ))  # fmt: skip
    tracks = {
        1: ITunesTrack(1, str(song), None, None, "Song", None, 10, 1_700_000_000.0, None),
        2: ITunesTrack(2, str(copy), None, None, "Song", None, 3, 1_600_000_000.0, None),
    }
    args = argparse.Namespace(dry_run=False)
    for _ in range(2):  # the same export imported twice
        _import_itunes(args, ITunesLibrary(tracks, []), Here.load(path))
        with Catalog.open(path, readonly=True) as catalog:
            assert catalog.play_stats(file_id) == (13, 1_700_000_000.0)
