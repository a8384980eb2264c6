"""How ``musicfs import musicfs`` finds exported tracks, and how it reads an export."""

from __future__ import annotations

import json

import pytest

from musicfs.cli.transfer import Entry, match_entries, parse_export


def entry(origin: str, relpath: str, title: str | None, track: int | None = 1, *,
          artist: str = "Björk", album: str = "Homogenic") -> Entry:  # fmt: skip
    return Entry(origin, relpath, artist, album, title, track)


def test_the_same_origin_and_relpath_wins_over_tags() -> None:
    here = [entry("music", "a.flac", "Jóga"), entry("music", "b.flac", "Other", 2)]
    wanted = entry("music", "b.flac", "Jóga")  # retagged since: still the file at b.flac
    assert match_entries([wanted], here) == [(wanted, here[1])]


def test_moved_files_are_found_by_their_tags_ignoring_case() -> None:
    here = [entry("other", "x/1.flac", "jóga"), entry("other", "x/2.flac", "Unravel", 2)]
    wanted = entry("music", "Björk/01 Jóga.flac", "Jóga", artist="BJÖRK")
    assert match_entries([wanted], here) == [(wanted, here[0])]


def test_a_moved_and_retagged_file_is_found_by_its_audio() -> None:
    here = [entry("nas", "new/place.flac", "Jóga (Live)"), entry("nas", "x.flac", "Jóga")]
    here[0] = Entry(**{**here[0].__dict__, "audio_id": "6f5e-abc"})
    wanted = Entry("music", "Björk/01 Jóga.flac", "Björk", "Homogenic", "Jóga", 1,
                   audio_id="6f5e-abc")  # fmt: skip
    assert match_entries([wanted], here) == [(wanted, here[0])]  # not the one with its old tags


def test_ambiguous_or_unknown_tracks_match_nothing() -> None:
    twins = [entry("m", "a.flac", "Echo", 7), entry("m", "b.flac", "Echo", 7)]
    assert match_entries([entry("x", "c.flac", "Echo", 7)], twins)[0][1] is None
    assert match_entries([entry("x", "c.flac", "Echo", 8)], twins)[0][1] is None
    untitled = [entry("m", "a.flac", None)]  # no title: too little to tell tracks apart
    assert match_entries([entry("x", "b.flac", None)], untitled)[0][1] is None


def test_an_export_reads_back_from_json() -> None:
    track = {"origin": "m", "relpath": "a.flac", "artist": "A", "album": "B", "title": "C",
             "track": 3, "overrides": {"genre": "Pop", "composer": None}, "plays": 2,
             "last_played": 1700000000.5, "audio_id": "1f-00ff"}  # fmt: skip
    entries = parse_export(json.dumps({"musicfs_export": 1, "tracks": [track]}))
    assert entries == [Entry("m", "a.flac", "A", "B", "C", 3,
                             {"genre": "Pop", "composer": None}, 2, 1700000000.5,
                             "1f-00ff")]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not valid JSON"),
        ('{"tracks": []}', "not a MusicFS export"),
        ('{"musicfs_export": 9, "tracks": []}', "format 9 is not known"),
        ('{"musicfs_export": 1, "tracks": [{"origin": "m"}]}', "track 1: 'relpath'"),
        (
            '{"musicfs_export": 1, "tracks": [{"origin": "m", "relpath": "a", "plays": -1}]}',
            "'plays' must be",
        ),
        ("a,b\n1,2\n", "not a MusicFS export"),
        ("", "not a MusicFS export"),
    ],
)
def test_what_is_wrong_with_a_file_is_named(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_export(text)


def test_pins_read_back_from_json_and_csv_and_old_csv_has_none() -> None:
    track = {"origin": "m", "relpath": "a.flac", "artist": "A", "album": "B", "title": "C",
             "track": 3, "overrides": {}, "plays": 0, "last_played": None,
             "pinned": True}  # fmt: skip
    (read,) = parse_export(json.dumps({"musicfs_export": 1, "tracks": [track]}))
    assert read.pinned
    header = "origin,relpath,artist,album,title,track,plays,last_played,overrides"
    (pinned,) = parse_export(f"{header},pinned\nm,a.flac,A,B,C,3,0,,{{}},True\n")
    assert pinned.pinned
    (old,) = parse_export(f"{header}\nm,a.flac,A,B,C,3,0,,{{}}\n")  # before pins
    assert not old.pinned
    with pytest.raises(ValueError, match="'pinned' must be true or false"):
        parse_export(json.dumps({"musicfs_export": 1, "tracks": [{**track, "pinned": "yes"}]}))
