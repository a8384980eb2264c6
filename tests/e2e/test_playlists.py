"""Playlists that survive moves (issue 15.3), through a real mount.

A ``.m3u`` on an origin (Latin-1, relative, absolute and Windows-style
entries, one that matches nothing) becomes ``/.playlists/x.m3u8`` with the
tracks' paths in the mount: each opens from the playlist's folder, the one
that matches nothing is a comment, and mpv plays every entry. An override
that moves a track (``musicfs tag set``) moves its entry; a track whose file is
moved on the origin stays in the playlist; an edit of the playlist file on the
origin is seen; a smart collection is a playlist too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.helpers import Mount, describe, mounted, require_tools, run_musicfs, wait_until
from tests.e2e.library import Library, make_origin, render_path

pytestmark = [pytest.mark.mount, pytest.mark.media]

JOGA = "Björk/Homogenic/01 Jóga.flac"
UNRAVEL = "Björk/Homogenic/02 Unravel.flac"
SVEFN = "Sigur Rós/svefn-g-englar.mp3"


def read_playlist(mount: Mount, name: str) -> str | None:
    """The playlist's text, checked against its size in stat (None: not there)."""
    path = mount.mountpoint / ".playlists" / name
    try:
        with path.open("rb") as file:
            data = file.read()
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        return None
    assert size == len(data), f"stat says {size} bytes, read {len(data)}"
    return data.decode()


def playlist_when(mount: Mount, name: str, ok: Callable[[str], bool], what: str) -> str:
    """The playlist's text once *ok* says it is what the test waits for."""

    def probe() -> str | None:
        text = read_playlist(mount, name)
        return text if text is not None and ok(text) else None

    return wait_until(probe, timeout=30, what=what)


def shown_relpath(path: Path) -> str | None:
    """The origin path ``musicfs tag show`` gives for a file of the mount."""
    result = run_musicfs("tag", "show", path, "--json")
    return str(json.loads(result.stdout)["relpath"]) if result.returncode == 0 else None


def tracks_of(text: str) -> list[str]:
    """The paths of a playlist (its lines that are not # lines)."""
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def mpv_opened(playlist: Path) -> list[str]:
    """The files mpv played from *playlist* (it must play them all)."""
    result = subprocess.run(
        ["mpv", "--no-config", "--ao=null", "--vo=null", "--ao-null-untimed", "--length=0.2",
         "--msg-level=all=info", f"--playlist={playlist}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"mpv failed: {result.stdout}\n{result.stderr}"
    return re.findall(r"^Playing: (.*)$", result.stdout, re.MULTILINE)


def test_an_origin_playlist_follows_its_tracks_through_the_mount(
    library: Library, tmp_path: Path
) -> None:
    require_tools("mpv")
    origin = tmp_path / "music"
    make_origin(library, origin, [JOGA, UNRAVEL, SVEFN])
    lists = origin / "Lists"
    lists.mkdir()
    # Written by an old player: Latin-1, one entry from another machine's absolute
    # path, one with Windows separators, one whose file is not there.
    (lists / "x.m3u").write_bytes(
        (
            "#EXTM3U\n#EXTINF:2,Björk - Jóga\n../Björk/Homogenic/01 Jóga.flac\n"
            "/home/someone/Music/Sigur Rós/svefn-g-englar.mp3\n"
            "..\\Björk\\Homogenic\\02 Unravel.flac\n"
            "../Björk/Homogenic/99 Not Here.flac\n"
        ).encode("latin-1")
    )
    specs = {relpath: library.find(relpath).spec for relpath in (JOGA, UNRAVEL, SVEFN)}
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        text = playlist_when(mount, "x.m3u8", lambda _: True, "/.playlists/x.m3u8")
        paths = [f"../{render_path(specs[r])}" for r in (JOGA, SVEFN, UNRAVEL)]
        assert text.splitlines() == [
            "#EXTM3U",
            "#EXTINF:2,Björk - Jóga", paths[0],
            "#EXTINF:2,Sigur Rós - Svefn-g-englar", paths[1],
            "#EXTINF:2,Björk - Unravel", paths[2],
            "# not found: ../Björk/Homogenic/99 Not Here.flac",
        ]  # fmt: skip
        folder = mount.mountpoint / ".playlists"
        for path, relpath in zip(paths, (JOGA, SVEFN, UNRAVEL), strict=True):
            opened = Path(os.path.normpath(folder / path))
            assert opened.read_bytes() == (origin / relpath).read_bytes()
        played = mpv_opened(folder / "x.m3u8")
        assert [os.path.normpath(folder / p) for p in played] == [
            os.path.normpath(folder / p) for p in paths
        ]

        # An override moves Jóga in the tree: the playlist points to where it is now.
        old = mount.mountpoint / render_path(specs[JOGA])
        result = run_musicfs("tag", "set", old, "artist=Someone Else", "title=Moved", "--json")
        assert result.returncode == 0, describe(result)
        moved = "../" + json.loads(result.stdout)["path"]
        assert moved != paths[0]
        text = playlist_when(mount, "x.m3u8", lambda t: moved in tracks_of(t),
                             "the playlist to follow the override")  # fmt: skip
        assert tracks_of(text) == [moved, paths[1], paths[2]]
        assert "#EXTINF:2,Someone Else - Moved" in text.splitlines()
        assert Path(os.path.normpath(folder / moved)).is_file()
        assert not old.exists()
        assert len(mpv_opened(folder / "x.m3u8")) == 3

        # Unravel's file is moved on the origin (another folder, another name): its
        # entry still finds it, though the playlist file names its old path.
        target = origin / "sorted" / "unravel, moved.flac"
        target.parent.mkdir()
        (origin / UNRAVEL).rename(target)
        unravel = mount.mountpoint / render_path(specs[UNRAVEL])
        wait_until(lambda: shown_relpath(unravel) == "sorted/unravel, moved.flac", timeout=60,
                   what="the moved file to be scanned")  # fmt: skip
        text = playlist_when(mount, "x.m3u8", lambda t: tracks_of(t) == [moved, *paths[1:]],
                             "the moved track in the playlist")  # fmt: skip
        assert text.count("# not found:") == 1
        assert Path(os.path.normpath(folder / paths[2])).read_bytes() == target.read_bytes()

        # The playlist file changes on the origin: it is read again.
        with (lists / "x.m3u").open("ab") as file:
            file.write(b"../Sigur R\xf3s/svefn-g-englar.mp3\n")
        text = playlist_when(mount, "x.m3u8", lambda t: len(tracks_of(t)) == 4,
                             "the edited playlist file to be read again")  # fmt: skip
        assert tracks_of(text) == [moved, paths[1], paths[2], paths[1]]

        # The playlist file goes: so does its playlist.
        (lists / "x.m3u").unlink()
        wait_until(lambda: read_playlist(mount, "x.m3u8") is None, timeout=30,
                   what="the playlist to go with its file")  # fmt: skip
        assert "x.m3u8" not in os.listdir(folder)


def test_a_smart_collection_is_a_playlist(library: Library, tmp_path: Path) -> None:
    require_tools("mpv")
    origin = tmp_path / "music"
    make_origin(library, origin, [JOGA, UNRAVEL, SVEFN])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        folder = mount.mountpoint / ".playlists"
        assert "recently-added.m3u8" in os.listdir(folder)
        text = read_playlist(mount, "recently-added.m3u8")
        assert text is not None
        assert text.startswith("#EXTM3U\n")
        linked = mount.mountpoint / ".collections" / "recently-added"
        in_collection = {os.path.realpath(linked / name) for name in os.listdir(linked)}
        in_playlist = {os.path.normpath(folder / p) for p in tracks_of(text)}
        assert len(in_playlist) == 3
        assert in_playlist == in_collection
        assert len(mpv_opened(folder / "recently-added.m3u8")) == 3
