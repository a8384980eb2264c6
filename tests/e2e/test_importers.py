"""``musicfs import beets`` and ``musicfs import itunes`` through real mounts (issue 15.5).

beets: a real beets library, made by beets (``beet import -A`` of the origin
folder, then ``beet modify -W``: corrected tags in beets' database only, the
files keep theirs). The import turns them into overrides with source beets:
the mount shows the corrected names, files moved to their folders; a dry run
prints the diff and changes nothing; running it again changes nothing.

iTunes: a Library.xml written in Apple's plist format (file:// locations,
percent-encoded, with a space and a non-ASCII letter). The import brings play
counts (added once: importing the same file again adds nothing, a later one
only the new plays), last played, ratings (shown by ``tag show``, carried by
``export``/``import musicfs``) and playlists (stored in the catalog; their
``.playlists/`` files are the playlists' part).

Files that are not what each importer reads are refused in one line naming
the file, exit 2, never a traceback.
"""

from __future__ import annotations

import datetime
import json
import os
import plistlib
import shutil
import sqlite3
import subprocess
import sys
import urllib.parse
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from musicfs.core.catalog.store import Catalog
from tests.e2e.helpers import describe, mounted, run_musicfs, wait_until
from tests.e2e.library import Library, make_origin, render_path

JOGA, UNRAVEL = "Björk/Homogenic/01 Jóga.flac", "Björk/Homogenic/02 Unravel.flac"


def tag_show(path: Path) -> dict[str, Any]:
    result = run_musicfs("tag", "show", str(path), "--json")
    assert result.returncode == 0, describe(result)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def by_title(mountpoint: Path) -> dict[str, dict[str, Any]]:
    result = run_musicfs("export", "--mount", str(mountpoint))
    assert result.returncode == 0, describe(result)
    return {track["title"]: track for track in json.loads(result.stdout)["tracks"]}


# -- beets ------------------------------------------------------------------------------


def beet(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    found = Path(sys.executable).with_name("beet")
    command = str(found) if found.exists() else shutil.which("beet")
    if command is None:
        pytest.skip("needs beets (`beet`, in requirements-dev.lock)")
    result = subprocess.run(
        [command, *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "BEETSDIR": str(home), "HOME": str(home)},
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    return result


def beets_library(home: Path, directory: Path) -> Path:
    """A beets config whose library lives in *home* and whose music directory is
    *directory*, never writing or moving files."""
    home.mkdir()
    library = home / "library.db"
    (home / "config.yaml").write_text(
        f"directory: {json.dumps(str(directory))}\n"
        f"library: {json.dumps(str(library))}\n"
        "import: {copy: no, move: no, write: no, autotag: no, resume: no, incremental: no}\n"
        "plugins: []\n",
        encoding="utf-8",
    )
    return library


@pytest.mark.mount
@pytest.mark.media
def test_the_tags_beets_corrected_become_overrides(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    home = tmp_path / "beets"
    db = beets_library(home, origin)
    beet(home, "import", "-A", "-q", "-s", str(origin / JOGA))
    # beets knows Unravel from a copy elsewhere: the same audio, found by it.
    copy = tmp_path / "elsewhere" / "unravel copy.flac"
    copy.parent.mkdir()
    shutil.copy2(origin / UNRAVEL, copy)
    beet(home, "import", "-A", "-q", "-s", str(copy))
    # A file beets has that the mount has not, by path or audio: listed, not matched.
    elsewhere = tmp_path / "elsewhere" / "hyperballad.mp3"
    shutil.copy2(library.find("Björk/Post/hyperballad.mp3").path, elsewhere)
    beet(home, "import", "-A", "-q", "-s", str(elsewhere))
    # Corrections in beets' database only (-W: the files keep their own tags).
    beet(home, "modify", "-y", "-W", f"path:{origin / JOGA}", "title=Jóga (Live)", "year=1998")
    beet(home, "modify", "-y", "-W", f"path:{copy}", "genre=Trip-Hop")
    with sqlite3.connect(db) as conn:  # beets 2 keeps paths inside its directory relative
        assert os.fsdecode(conn.execute("SELECT path FROM items WHERE title = 'Jóga (Live)'")
                           .fetchone()[0]) == JOGA  # fmt: skip
    conn.close()
    assert own_title(origin / JOGA) == "Jóga"

    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        joga = mount.mountpoint / render_path(specs[JOGA])
        unravel = mount.mountpoint / render_path(specs[UNRAVEL])
        before = mount.files()
        dry = run_musicfs("import", "beets", str(db), "--dry-run", "--mount", str(mount.mountpoint))
        assert dry.returncode == 0, describe(dry)
        assert f"would set {render_path(specs[JOGA])}\n" in dry.stdout, dry.stdout
        assert "  title: Jóga → Jóga (Live)\n" in dry.stdout, dry.stdout
        assert "  year: 1997 → 1998\n" in dry.stdout, dry.stdout
        assert f"would set {render_path(specs[UNRAVEL])}\n  genre: Electronic → Trip-Hop\n" in (
            dry.stdout), dry.stdout  # fmt: skip
        assert (f"no match: {elsewhere}: not in the folder of any local origin of this mount; "
                "its audio matches no track of this mount") in dry.stdout, dry.stdout  # fmt: skip
        assert dry.stdout.splitlines()[-1] == (
            "beets: 3 items, 2 matched (1 by their audio), 1 not; 3 fields to change "
            "(dry run: nothing changed)"
        )
        assert mount.files() == before
        assert tag_show(joga)["overrides"] == {}

        result = run_musicfs("import", "beets", str(db), "--mount", str(mount.mountpoint))
        assert result.returncode == 0, describe(result)
        assert result.stdout.splitlines()[-1] == (
            "beets: 3 items, 2 matched (1 by their audio), 1 not; 3 fields changed"
        ), result.stdout
        corrected = replace(specs[JOGA], tags={**specs[JOGA].tags, "title": "Jóga (Live)",
                                               "year": "1998"})  # fmt: skip
        moved = mount.mountpoint / render_path(corrected)
        assert moved.parent.name == "Homogenic (1998) [FLAC]"
        assert moved.is_file()
        assert not joga.exists()
        shown = tag_show(moved)
        assert shown["overrides"] == {"title": "Jóga (Live)", "year": "1998"}
        assert shown["sources"] == {"title": "beets", "year": "beets"}
        assert shown["own"]["title"] == "Jóga"  # the origin file is never written
        assert tag_show(unravel)["effective"]["genre"] == "Trip-Hop"
        table = run_musicfs("tag", "show", str(moved))
        assert table.returncode == 0, describe(table)
        assert "beets" in table.stdout, table.stdout

        again = run_musicfs("import", "beets", str(db), "--mount", str(mount.mountpoint))
        assert again.returncode == 0, describe(again)
        assert again.stdout.splitlines()[-1] == (
            "beets: 3 items, 2 matched (1 by their audio), 1 not; 0 fields changed"
        ), again.stdout
        beet(home, "modify", "-y", "-W", f"path:{copy}", "title=Unravel (Demo)")
        cache = tmp_path / "cache"
        busy = run_musicfs("import", "beets", str(db), "--cache-dir", str(cache))
        assert busy.returncode == 2, describe(busy)
        assert "in use by a running MusicFS daemon" in busy.stderr, busy.stderr
    assert own_title(origin / JOGA) == "Jóga"

    # Unmounted: into the cache dir's catalog, shown from the next mount on.
    offline = run_musicfs("import", "beets", str(db), "--cache-dir", str(tmp_path / "cache"))
    assert offline.returncode == 0, describe(offline)
    assert "1 fields changed (set when it is next mounted)" in offline.stdout, offline.stdout
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        demo = replace(specs[UNRAVEL], tags={**specs[UNRAVEL].tags, "title": "Unravel (Demo)"})
        assert tag_show(mount.mountpoint / render_path(demo))["sources"]["title"] == "beets"
        assert (mount.mountpoint / render_path(corrected)).is_file()


def own_title(path: Path) -> str:
    from mutagen.flac import FLAC

    return str(FLAC(path)["title"][0])


# -- iTunes -----------------------------------------------------------------------------


def location(path: Path | str) -> str:
    """A Location as iTunes writes it: file://localhost + the percent-encoded path."""
    return "file://localhost" + urllib.parse.quote(str(path))


PLAYED = datetime.datetime(2024, 3, 9, 21, 15, 30)  # plistlib: naive, UTC


def itunes_library(origin: Path, joga_plays: int) -> bytes:
    tracks = {
        "101": {"Track ID": 101, "Name": "Jóga", "Artist": "Björk", "Album": "Homogenic",
                "Track Number": 1, "Kind": "FLAC audio file", "Play Count": joga_plays,
                "Play Date UTC": PLAYED, "Rating": 80, "Location": location(origin / JOGA)},
        # Another machine's path: found by its tags.
        "102": {"Track ID": 102, "Name": "Unravel", "Artist": "Björk", "Album": "Homogenic",
                "Track Number": 2, "Play Count": 2, "Rating": 100, "Location": location(
                    "/Users/me/Music/iTunes/iTunes Media/Music/Björk/Homogenic/02 Unravel.flac")},
        # Rated only through its album: not the track's own rating.
        "103": {"Track ID": 103, "Name": "Gone", "Artist": "Nobody", "Rating": 60,
                "Rating Computed": True, "Location": location("/Users/me/Music/gone.mp3")},
    }  # fmt: skip
    playlists = [
        {"Name": "Library", "Master": True, "Playlist ID": 1,
         "Playlist Items": [{"Track ID": 101}, {"Track ID": 102}, {"Track ID": 103}]},
        {"Name": "Music", "Distinguished Kind": 4, "Playlist ID": 2,
         "Playlist Items": [{"Track ID": 101}, {"Track ID": 102}]},
        {"Name": "Road Trip", "Playlist ID": 3,
         "Playlist Items": [{"Track ID": 102}, {"Track ID": 103}, {"Track ID": 101}]},
    ]  # fmt: skip
    return plistlib.dumps({
        "Major Version": 1, "Minor Version": 1, "Application Version": "12.9.5.5",
        "Date": PLAYED, "Features": 5, "Show Content Ratings": True,
        "Music Folder": location("/Users/me/Music/iTunes/iTunes Media/") ,
        "Library Persistent ID": "0123456789ABCDEF", "Tracks": tracks, "Playlists": playlists,
    })  # fmt: skip


@pytest.mark.mount
@pytest.mark.media
def test_itunes_plays_ratings_and_playlists(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "my music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    xml = tmp_path / "Library.xml"
    xml.write_bytes(itunes_library(origin, joga_plays=5))
    assert "%20" in xml.read_text()
    assert "J%C3%B3ga" in xml.read_text()
    saved = tmp_path / "export.json"
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        mp = str(mount.mountpoint)
        joga = mount.mountpoint / render_path(specs[JOGA])
        dry = run_musicfs("import", "itunes", str(xml), "--dry-run", "--mount", mp)
        assert dry.returncode == 0, describe(dry)
        assert f"would add 5 plays to {render_path(specs[JOGA])}" in dry.stdout, dry.stdout
        assert f"would rate {render_path(specs[JOGA])}: 80/100 (4 stars)" in dry.stdout
        assert "would store playlist 'Road Trip': 3 tracks (1 not found" in dry.stdout
        assert "no match: /Users/me/Music/gone.mp3 (Nobody - ? - Gone)" in dry.stdout
        assert dry.stdout.splitlines()[-1] == ("itunes: 3 tracks, 2 matched, 1 not; 7 plays to "
                                               "add, 2 ratings, 1 playlists (dry run: nothing "
                                               "changed)")  # fmt: skip
        assert by_title(mount.mountpoint) == {}
        assert tag_show(joga)["rating"] == -1

        result = run_musicfs("import", "itunes", str(xml), "--mount", mp)
        assert result.returncode == 0, describe(result)
        tracks = by_title(mount.mountpoint)
        assert tracks["Jóga"]["plays"] == 5
        assert tracks["Jóga"]["last_played"] == PLAYED.replace(tzinfo=datetime.UTC).timestamp()
        assert tracks["Jóga"]["rating"] == 80
        assert tracks["Unravel"]["plays"] == 2
        assert tag_show(joga)["rating"] == 80
        table = run_musicfs("tag", "show", str(joga))
        assert "rating: 80/100 (4 stars)" in table.stdout, describe(table)
        assert "played 5 times, last on 2024-03-" in table.stdout, describe(table)  # any zone
        # Unravel has a play count but no Play Date UTC: no made-up date.
        unravel = run_musicfs("tag", "show", str(mount.mountpoint / render_path(specs[UNRAVEL])))
        assert "played 2 times, last on an unknown date" in unravel.stdout, describe(unravel)

        # The stored playlist is a playlist file of the mount, with the tracks' paths now.
        shown = mount.mountpoint / ".playlists" / "Road Trip.m3u8"
        wait_until(shown.is_file, timeout=30, what="/.playlists/Road Trip.m3u8")
        text = shown.read_text(encoding="utf-8")
        assert render_path(specs[UNRAVEL]) in text, text
        assert render_path(specs[JOGA]) in text, text
        assert "gone.mp3" in text, text  # unmatched: said in a comment, not dropped

        # The same file again adds nothing; a later one only the plays since.
        again = run_musicfs("import", "itunes", str(xml), "--mount", mp)
        assert again.returncode == 0, describe(again)
        assert "itunes: 3 tracks, 2 matched, 1 not; 0 plays added, 0 ratings" in again.stdout
        assert by_title(mount.mountpoint)["Jóga"]["plays"] == 5
        xml.write_bytes(itunes_library(origin, joga_plays=8))
        later = run_musicfs("import", "itunes", str(xml), "--mount", mp)
        assert f"add 3 plays to {render_path(specs[JOGA])}" in later.stdout, describe(later)
        assert by_title(mount.mountpoint)["Jóga"]["plays"] == 8

        exported = run_musicfs("export", "--mount", mp, "-o", str(saved))
        assert exported.returncode == 0, describe(exported)

    with Catalog.open(tmp_path / "cache" / "catalog.sqlite3", readonly=True) as catalog:
        assert catalog.playlist_names() == ["Road Trip"]  # not iTunes' own lists
        entries = catalog.playlist("Road Trip")
        titles = [None if file_id is None else catalog.track(file_id).tags.title  # type: ignore[union-attr]
                  for file_id, _ in entries]  # fmt: skip
        assert titles == ["Unravel", None, "Jóga"]
        assert entries[1][1] == "/Users/me/Music/gone.mp3"  # kept as text, not dropped

    # The rating goes with an export to another mount.
    with mounted([origin], tmp_path / "mnt_b", tmp_path / "cache_b") as other:
        restored = run_musicfs("import", "musicfs", str(saved), "--mount", str(other.mountpoint))
        assert restored.returncode == 0, describe(restored)
        assert tag_show(other.mountpoint / render_path(specs[JOGA]))["rating"] == 80


# -- wrong files --------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["beets", "itunes"])
def test_a_file_that_is_not_a_library_is_refused_in_one_line(source: str, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a music library\n")
    other_db = tmp_path / "other.db"
    with sqlite3.connect(other_db) as conn:
        conn.execute("CREATE TABLE songs (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()
    plist = tmp_path / "prefs.plist"
    plist.write_bytes(plistlib.dumps({"Some Setting": True}))
    cases = {
        tmp_path / "missing": "no such file",
        text: "is not a beets library" if source == "beets" else "is not an iTunes library",
        other_db if source == "beets" else plist: (
            "'items' table" if source == "beets" else "'Tracks' dictionary"),
    }  # fmt: skip
    for wrong, said in cases.items():
        result = run_musicfs("import", source, str(wrong), "--mount", str(tmp_path / "mnt"))
        assert result.returncode == 2, describe(result)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert str(wrong) in result.stderr, result.stderr
        assert said in result.stderr, result.stderr
