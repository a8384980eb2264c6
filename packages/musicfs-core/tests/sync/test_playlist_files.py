"""Playlist files on origins: parsing, matching entries, and what a scan keeps of them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.origins import LocalOrigin
from musicfs.core.sync.changes import ScanRequest
from musicfs.core.sync.playlists import candidates, match_entry, parse_playlist
from musicfs.core.sync.scanner import Scanner

MakeWav = Callable[..., Path]  # the make_wav fixture of conftest.py


# -- parsing ---------------------------------------------------------------------------


def test_entries_are_the_lines_that_are_not_comments_or_blank() -> None:
    text = (
        "\ufeff#EXTM3U\r\n#EXTINF:123,Ann - One\r\nAlbum/01 One.flac\r\n\r\n"
        "# a comment\n  ../Other/02 Two.mp3  \n#EXTINF:-1,stream\nhttp://radio/stream\n"
    )
    assert parse_playlist(text.encode(), "x.m3u8") == [
        "Album/01 One.flac",
        "../Other/02 Two.mp3",
        "http://radio/stream",
    ]


def test_m3u_is_utf8_when_it_decodes_else_latin1_and_m3u8_is_always_utf8() -> None:
    assert parse_playlist("Björk/Jóga.flac\n".encode(), "old.m3u") == ["Björk/Jóga.flac"]
    assert parse_playlist("Björk/Jóga.flac\n".encode("latin-1"), "old.m3u") == ["Björk/Jóga.flac"]
    assert parse_playlist("Мумий/03.ogg\n".encode(), "new.M3U8") == ["Мумий/03.ogg"]


# -- what an entry may mean ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reldir", "expected"),
    [
        ("01.flac", "Lists", ["Lists/01.flac"]),
        ("../A/01.flac", "Lists", ["A/01.flac"]),
        ("..\\A\\01.flac", "Lists", ["A/01.flac"]),  # Windows separators
        ("./A/./01.flac", "", ["A/01.flac"]),
        ("../../outside.flac", "Lists", []),  # above the origin's root
        ("A%20B/01.flac", "", ["A%20B/01.flac", "A B/01.flac"]),
        ("/home/me/Music/A/01.flac", "x", ["home/me/Music/A/01.flac", "me/Music/A/01.flac",
                                           "Music/A/01.flac", "A/01.flac", "01.flac"]),
        ("C:\\Music\\A\\01.flac", "", ["Music/A/01.flac", "A/01.flac", "01.flac"]),
        ("file:///home/me/A%20B/01.flac", "", ["home/me/A B/01.flac", "me/A B/01.flac",
                                               "A B/01.flac", "01.flac"]),
        ("file://localhost/m/01.flac", "", ["m/01.flac", "01.flac"]),
        ("file:///C:/Music/01.flac", "", ["Music/01.flac", "01.flac"]),
        ("http://radio.example/stream.mp3", "", []),
    ],
)  # fmt: skip
def test_candidates_of_an_entry(text: str, reldir: str, expected: list[str]) -> None:
    assert candidates(text, reldir) == expected


def test_an_absolute_entry_matches_the_longest_suffix_that_is_a_file() -> None:
    files = {"A/01.flac": 1, "Other/A/01.flac": 2, "01.flac": 3}
    assert match_entry(files.get, "/mnt/old/Other/A/01.flac", "") == 2
    assert match_entry(files.get, "/mnt/old/Elsewhere/A/01.flac", "") == 1
    assert match_entry(files.get, "D:\\01.flac", "") == 3
    assert match_entry(files.get, "/nowhere/99.flac", "") is None


# -- scanning --------------------------------------------------------------------------


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog.open(tmp_path / "catalog.sqlite3")


def scanner(catalog: Catalog) -> Scanner:
    return Scanner(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))


def entries(catalog: Catalog, name: str) -> list[tuple[str | None, str]]:
    """(relpath of the matched file or None, text) of each entry of playlist *name*."""
    out: list[tuple[str | None, str]] = []
    for file_id, text in catalog.playlist(name):
        track = None if file_id is None else catalog.track(file_id)
        out.append((None if track is None else track.relpath, text))
    return out


def test_a_scan_stores_each_playlist_file_as_file_ids_and_no_track(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav
) -> None:
    lib = tmp_path / "lib"
    make_wav(lib / "A" / "1.wav", title="One", artist="Ann")
    make_wav(lib / "B" / "2.wav", title="Two", artist="Bob")
    (lib / "Lists").mkdir()
    (lib / "Lists" / "mix.m3u").write_bytes(
        f"#EXTM3U\n../A/1.wav\n{lib}/B/2.wav\nfile://{lib}/B/2.wav\n../A/missing.wav\n"
        "http://radio/stream\n".encode()
    )
    (lib / "A" / "mix.m3u8").write_text("1.wav\n")  # the same name in another folder
    report = scanner(catalog).scan(LocalOrigin("lib", lib))
    assert report.seen == 2  # playlists are not tracks
    assert catalog.playlist_names() == ["mix", "mix (2)"]
    by_file = {name: entries(catalog, name) for name in catalog.playlist_names()}
    assert {tuple(v) for v in by_file.values()} == {
        (("A/1.wav", "../A/1.wav"), ("B/2.wav", f"{lib}/B/2.wav"),
         ("B/2.wav", f"file://{lib}/B/2.wav"), (None, "../A/missing.wav"),
         (None, "http://radio/stream")),
        (("A/1.wav", "1.wav"),),
    }  # fmt: skip


def test_playlists_follow_their_files_changes_and_entries_match_files_that_come_later(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav
) -> None:
    lib = tmp_path / "lib"
    make_wav(lib / "A" / "1.wav", title="One", artist="Ann")
    playlist = lib / "Lists" / "road.m3u8"
    playlist.parent.mkdir()
    playlist.write_text("../A/1.wav\n../A/2.wav\n")
    origin = LocalOrigin("lib", lib)
    scanner(catalog).scan(origin)
    assert entries(catalog, "road") == [("A/1.wav", "../A/1.wav"), (None, "../A/2.wav")]

    make_wav(lib / "A" / "2.wav", title="Two", artist="Ann")  # the missing one appears
    scanner(catalog).rescan(origin, ScanRequest(dirs={"A"}))
    assert entries(catalog, "road") == [("A/1.wav", "../A/1.wav"), ("A/2.wav", "../A/2.wav")]

    playlist.write_text("../A/2.wav\n")  # the file changes: read again, same name
    os.utime(playlist, ns=(1, 10**18))
    scanner(catalog).scan(origin)
    assert entries(catalog, "road") == [("A/2.wav", "../A/2.wav")]

    (lib / "A" / "2.wav").unlink()  # its file goes: the entry stays, matching nothing
    scanner(catalog).scan(origin)
    assert entries(catalog, "road") == [(None, "../A/2.wav")]

    playlist.unlink()  # the playlist file goes: so does the playlist
    scanner(catalog).rescan(origin, ScanRequest(dirs={"Lists"}))
    assert catalog.playlist_names() == []


def test_entries_follow_their_files_when_they_move_on_the_origin(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav
) -> None:
    lib = tmp_path / "lib"
    make_wav(lib / "A" / "1.wav", title="One", artist="Ann")
    make_wav(lib / "B" / "2.wav", title="Two", artist="Bob")
    (lib / "mix.m3u").write_text("A/1.wav\nB/2.wav\n")
    origin = LocalOrigin("lib", lib)
    scanner(catalog).scan(origin)
    (lib / "C").mkdir()
    (lib / "A" / "1.wav").rename(lib / "C" / "uno.wav")  # later in the walk than before
    (lib / "B" / "2.wav").rename(lib / "A" / "zwei.wav")  # earlier in the walk
    scanner(catalog).scan(origin)
    assert entries(catalog, "mix") == [("C/uno.wav", "A/1.wav"), ("A/zwei.wav", "B/2.wav")]
    (lib / "mix.m3u").write_text("A/1.wav\nB/2.wav\nC/uno.wav\n")  # read again: old paths too
    os.utime(lib / "mix.m3u", ns=(1, 10**18))
    scanner(catalog).scan(origin)
    assert entries(catalog, "mix") == [
        ("C/uno.wav", "A/1.wav"), ("A/zwei.wav", "B/2.wav"), ("C/uno.wav", "C/uno.wav")
    ]  # fmt: skip


def test_a_playlist_in_a_folder_that_is_gone_is_dropped(
    tmp_path: Path, catalog: Catalog, make_wav: MakeWav
) -> None:
    lib = tmp_path / "lib"
    make_wav(lib / "A" / "1.wav", title="One", artist="Ann")
    (lib / "Lists" / "deep").mkdir(parents=True)
    (lib / "Lists" / "deep" / "a.m3u").write_text("../../A/1.wav\n")
    (lib / "top.m3u").write_text("A/1.wav\n")
    origin = LocalOrigin("lib", lib)
    scanner(catalog).scan(origin)
    assert catalog.playlist_names() == ["a", "top"]
    shutil.rmtree(lib / "Lists")
    scanner(catalog).scan(origin)  # a full walk: the folder is not listed at all
    assert catalog.playlist_names() == ["top"]


def test_imported_playlists_use_the_same_store(
    catalog: Catalog, tmp_path: Path, make_wav: MakeWav
) -> None:
    lib = tmp_path / "lib"
    make_wav(lib / "1.wav", title="One", artist="Ann")
    (lib / "Favourites.m3u").write_text("1.wav\n")
    origin = LocalOrigin("lib", lib)
    scanner(catalog).scan(origin)
    with catalog.transaction():
        catalog.replace_playlist("Favourites", "itunes", [(None, "Ann - One")])
        catalog.replace_playlist("Favourites", "itunes", [(None, "Bob - Two"), (None, "x")])
        catalog.replace_playlist("Other", "itunes-2", [])
    assert catalog.playlist("Favourites") == [(None, "Bob - Two"), (None, "x")]
    scanner(catalog).scan(origin)  # the origin's file keeps a playlist, under a name of its own
    assert entries(catalog, "Favourites (2)") == [("1.wav", "1.wav")]
    assert catalog.playlist("Favourites") == [(None, "Bob - Two"), (None, "x")]
    with catalog.transaction():
        catalog.drop_playlists("itunes")
    assert catalog.playlist_names() == ["Favourites (2)"]
