"""Tag overrides reach indexers, not only players (issue 12, point 3).

MPD, beets, Plex, Jellyfin and minidlna notice a changed file by its mtime
(and size), and a changed folder by the folder's mtime; none of them reads
every file again on a plain update. So when ``musicfs tag set``/``tag clear``
changes the bytes served at a path, the file's mtime and ctime must move
forward (to a later whole second: MPD compares seconds), its size must be the
bytes read, its inode must stay, and every folder whose listing changed (old
and new parent when the file moves) must get a later mtime as well — through
the kernel's attribute cache, which the mount invalidates.

Checked with stat through the mount, then with the real clients: MPD 0.23
(own config, database and port, `tests.servers.mpd`; ``update``, not ``rescan``) and beets
(``beet import -A`` then ``beet update``). Both processes are always stopped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mutagen.flac import FLAC
from PIL import Image

from tests.e2e.helpers import (
    Mount,
    describe,
    mounted,
    run_musicfs,
    wait_until,
    write_config,
)
from tests.e2e.library import Library, make_origin, render_path
from tests.servers.mpd import MpdServer, mpd_server

pytestmark = [pytest.mark.mount, pytest.mark.media]

JOGA = "Björk/Homogenic/01 Jóga.flac"
UNRAVEL = "Björk/Homogenic/02 Unravel.flac"
SECOND = 1_000_000_000


def tag(path: Path, action: str, *args: str) -> dict[str, Any]:
    result = run_musicfs("tag", action, path, *args, "--json")
    assert result.returncode == 0, describe(result)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def later(after: os.stat_result, before: os.stat_result) -> bool:
    """mtime and ctime both in a later whole second (what MPD and beets compare)."""
    return (
        after.st_mtime_ns // SECOND > before.st_mtime_ns // SECOND
        and after.st_ctime_ns // SECOND > before.st_ctime_ns // SECOND
    )


@pytest.fixture
def homogenic(library: Library, tmp_path: Path) -> Iterator[tuple[Mount, Library]]:
    origin = tmp_path / "music"
    make_origin(library, origin, [JOGA, UNRAVEL])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        yield mount, library


def test_a_tag_edit_moves_mtime_and_ctime_forward_and_keeps_the_inode(
    homogenic: tuple[Mount, Library],
) -> None:
    mount, library = homogenic
    path = mount.mountpoint / render_path(library.find(JOGA).spec)
    folder = path.parent
    before, folder_before = path.stat(), folder.stat()  # now in the kernel's cache too

    info = tag(path, "set", "genre=Jazz")
    assert mount.mountpoint / info["path"] == path  # genre is not in the path
    after = path.stat()
    assert later(after, before), (before, after)
    assert after.st_ino == before.st_ino
    assert after.st_size == len(path.read_bytes())
    assert folder.stat().st_mtime_ns == folder_before.st_mtime_ns  # same listing

    tag(path, "clear")
    cleared = path.stat()
    assert later(cleared, after), (after, cleared)
    assert cleared.st_ino == before.st_ino
    assert cleared.st_size == len(path.read_bytes()) == before.st_size


def test_a_tag_edit_that_moves_the_file_moves_both_folders_mtimes(
    homogenic: tuple[Mount, Library],
) -> None:
    mount, library = homogenic
    path = mount.mountpoint / render_path(library.find(JOGA).spec)
    old_folder, artist = path.parent, path.parent.parent
    before = {p: p.stat() for p in (path, old_folder, artist)}

    info = tag(path, "set", "album=Debut")
    moved = mount.mountpoint / info["path"]
    assert moved.parent.name == "Debut (1997) [FLAC]"
    assert not path.exists()
    assert moved.stat().st_ino == before[path].st_ino
    assert moved.stat().st_size == len(moved.read_bytes())
    assert later(moved.stat(), before[path])
    # Homogenic lost a file, Björk gained a folder: both listings changed.
    assert old_folder.stat().st_mtime_ns // SECOND > before[old_folder].st_mtime_ns // SECOND
    assert artist.stat().st_mtime_ns // SECOND > before[artist].st_mtime_ns // SECOND

    middle = {p: p.stat() for p in (moved, old_folder, artist)}
    back = mount.mountpoint / tag(moved, "clear")["path"]
    assert back == path
    assert path.stat().st_ino == before[path].st_ino
    assert later(path.stat(), middle[moved])
    assert old_folder.stat().st_mtime_ns // SECOND > middle[old_folder].st_mtime_ns // SECOND
    assert artist.stat().st_mtime_ns // SECOND > middle[artist].st_mtime_ns // SECOND
    assert not moved.parent.exists()


def test_an_origin_file_retagged_with_its_mtime_put_back_still_moves_forward(
    homogenic: tuple[Mount, Library], tmp_path: Path
) -> None:
    """A tag editor that keeps the file's mtime (``touch -r``, "preserve dates"):
    the mount sees the change (ctime) and serves it with a later mtime."""
    mount, library = homogenic
    path = mount.mountpoint / render_path(library.find(JOGA).spec)
    origin = tmp_path / "music" / JOGA
    before, own = path.stat(), origin.stat()
    audio = FLAC(origin)
    audio["GENRE"] = "Jazz"
    audio.save()
    os.utime(origin, ns=(own.st_atime_ns, own.st_mtime_ns))

    def retagged() -> os.stat_result | None:
        st = path.stat()
        return st if st.st_size == origin.stat().st_size and later(st, before) else None

    after = wait_until(retagged, timeout=30, what="the rewritten file to show a later mtime")
    assert after.st_ino == before.st_ino
    assert FLAC(path)["GENRE"] == ["Jazz"]
    assert after.st_size == len(path.read_bytes())


def test_a_reloaded_header_writer_moves_the_overlaid_files_mtime(
    library: Library, tmp_path: Path
) -> None:
    """The bytes of an overlaid file change when its format plugin's writer does."""
    examples = Path(__file__).resolve().parents[2] / "plugins" / "examples"
    spec = importlib.util.spec_from_file_location("example_mtr", examples / "mtr_format.py")
    assert spec is not None
    assert spec.loader is not None
    mtr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mtr)
    origin = tmp_path / "music"
    origin.mkdir()
    (origin / "a.mtr").write_bytes(mtr.encode({"title": "One", "artist": "Ann"}, b"\0" * 4096))
    plugin = tmp_path / "mine" / "mtr_format.py"
    plugin.parent.mkdir()
    shutil.copy(examples / "mtr_format.py", plugin)
    config = write_config(tmp_path / "config.toml", [{"id": "music", "path": str(origin)}],
                          {"plugins": {"paths": [str(plugin)], "entry_points": False}})  # fmt: skip
    with mounted([], tmp_path / "mnt", tmp_path / "cache", "--config", str(config)) as mount:
        path = mount.mountpoint / "Ann" / "Unknown Album (0000) [MTR]" / "00 - One.mtr"
        wait_until(path.exists, timeout=30, what="the .mtr file in the tree")
        tag(path, "set", "genre=Jazz")
        before = path.stat()
        assert b"genre=Jazz" in path.read_bytes()

        plugin.write_text(plugin.read_text().replace(
            'block = "".join(f"{k}={v}\\n" for k, v in values.items()).encode()',
            'block = "".join(f"{k}={v}\\n" for k, v in values.items()).encode() + b"v=2\\n"',
        ))  # fmt: skip
        assert b'b"v=2' in plugin.read_bytes()
        result = run_musicfs("plugin", "reload", "mtr-format", "--mount", mount.mountpoint)
        assert result.returncode == 0, describe(result)

        def rewritten() -> os.stat_result | None:
            st = path.stat()
            return st if later(st, before) else None

        after = wait_until(rewritten, timeout=30, what="a later mtime after the reload")
        data = path.read_bytes()
        assert data.endswith(b"v=2\n" + b"\0" * 4096)
        assert after.st_size == len(data)
        assert after.st_ino == before.st_ino


def test_a_folder_whose_cover_files_appear_gets_a_later_mtime(
    library: Library, tmp_path: Path
) -> None:
    """cover.jpg & co. show in a folder once its art is found (in the background,
    after its first listing): media servers must see that folder as changed.
    (An image beside the tracks, not embedded art: covers of embedded art are
    made ahead, after the scan, so they may be there before the first listing.)"""
    origin = tmp_path / "music"
    make_origin(library, origin, [JOGA])
    Image.new("RGB", (300, 300), "red").save(origin / Path(JOGA).parent / "folder.png", "PNG")
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        folder = (mount.mountpoint / render_path(library.find(JOGA).spec)).parent
        before = folder.stat()
        assert "cover.jpg" not in os.listdir(folder), "the art was known before any listing"
        wait_until(lambda: "cover.jpg" in os.listdir(folder), timeout=30,
                   what="the cover files to appear")  # fmt: skip
        assert folder.stat().st_mtime_ns // SECOND > before.st_mtime_ns // SECOND


# -- MPD -------------------------------------------------------------------------------


def mpd_files_of_genre(mpd: MpdServer, genre: str) -> list[str]:
    return [
        line.removeprefix("file: ")
        for line in mpd.command(f'find genre "{genre}"')
        if line.startswith("file: ")
    ]


def test_mpd_sees_an_override_after_a_plain_update(
    homogenic: tuple[Mount, Library], tmp_path: Path
) -> None:
    mount, library = homogenic
    virtual = render_path(library.find(JOGA).spec)
    with mpd_server(mount.mountpoint, tmp_path / "mpd") as mpd:
        mpd.update_and_wait()
        assert sorted(mpd_files_of_genre(mpd, "Electronic")) == sorted(
            [virtual, render_path(library.find(UNRAVEL).spec)]
        )
        tag(mount.mountpoint / virtual, "set", "genre=Jazz")
        mpd.update_and_wait()  # not rescan: MPD goes by mtime
        assert mpd_files_of_genre(mpd, "Jazz") == [virtual]
        tag(mount.mountpoint / virtual, "clear")
        mpd.update_and_wait()
        assert mpd_files_of_genre(mpd, "Jazz") == []
        assert virtual in mpd_files_of_genre(mpd, "Electronic")


# -- beets -------------------------------------------------------------------------------


def beet_command() -> str:
    beet = Path(sys.executable).with_name("beet")
    found = str(beet) if beet.exists() else shutil.which("beet")
    if found is None:
        pytest.skip("needs beets (`beet`, in requirements-dev.lock)")
    return found


def beet(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [beet_command(), *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "BEETSDIR": str(home), "HOME": str(home)},
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    return result


def test_beets_sees_an_override_after_beet_update(
    homogenic: tuple[Mount, Library], tmp_path: Path
) -> None:
    mount, library = homogenic
    path = mount.mountpoint / render_path(library.find(JOGA).spec)
    home, directory = tmp_path / "beets", tmp_path / "beets-library"
    home.mkdir()
    directory.mkdir()  # beets' own folder: unused (copy: no), but update wants it
    (home / "config.yaml").write_text(
        f"directory: {json.dumps(str(directory))}\n"
        f"library: {json.dumps(str(home / 'library.db'))}\n"
        "import: {copy: no, move: no, write: no, autotag: no, resume: no, incremental: no}\n"
        "plugins: []\n",
        encoding="utf-8",
    )
    # A singleton import records the file's mtime (an album import leaves it 0 in
    # beets 2.14, and then every update reads every file again, changed or not).
    beet(home, "import", "-A", "-q", "-s", str(path))
    query = f"path:{path}"
    assert beet(home, "ls", "-f", "$genres", query).stdout.split() == ["Electronic"]

    tag(path, "set", "genre=Jazz")
    beet(home, "update", "-M")  # -M: never move files (they are not beets' to move)
    assert beet(home, "ls", "-f", "$genres", query).stdout.split() == ["Jazz"]

    tag(path, "clear")
    beet(home, "update", "-M")
    assert beet(home, "ls", "-f", "$genres", query).stdout.split() == ["Electronic"]
