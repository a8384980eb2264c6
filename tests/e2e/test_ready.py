"""Complete when it says ready: what a listing shows the moment ``musicfs mount``
returns.

* A library mounted before (same cache dir): the first ``ls`` right after
  ``musicfs mount`` returns shows the album's cover files too, with their true
  sizes and bytes (no ``wait_until``) — also for an album nobody listed in the
  session before: art embedded in a track is made after the scan.
* A first mount with ``--wait``: when the command returns, the first scan has
  finished and the tree holds every track; quiet (two lines) when not on a
  terminal, a progress bar on one; an origin that is down does not hold it up
  and is named on stderr.
"""

from __future__ import annotations

import contextlib
import io
import os
import pty
import sqlite3
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.helpers import (
    MUSICFS,
    describe,
    mount_command,
    mounted,
    musicfs_env,
    run_musicfs,
    unmount,
    wait_until,
    walk_files,
)
from tests.e2e.library import Library, make_origin, render_path
from tests.e2e.test_covers import NAMES, embed, image

pytestmark = [pytest.mark.mount, pytest.mark.media]

JOGA = "Björk/Homogenic/01 Jóga.flac"
UNRAVEL = "Björk/Homogenic/02 Unravel.flac"


def test_covers_are_listed_as_soon_as_a_remount_returns(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    embed(origin / JOGA, image((800, 800), "JPEG", "red"))
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    album = mnt / render_path(specs[JOGA])
    with mounted([origin], mnt, cache):
        wait_until(lambda: set(os.listdir(album.parent)) >= NAMES, timeout=30,
                   what="the covers of the album, made the first time")  # fmt: skip
        first = {name: (album.parent / name).read_bytes() for name in NAMES}
    try:  # not `mounted`: its status call would give the covers time
        result = run_musicfs(*mount_command([origin], mnt, cache))
        assert result.returncode == 0, describe(result)
        listed = set(os.listdir(album.parent))  # the first thing done: no waiting
        assert listed >= NAMES, f"listed right after mount: {sorted(listed)}"
        for name in NAMES:
            data = (album.parent / name).read_bytes()
            assert (album.parent / name).stat().st_size == len(data)
            assert data == first[name]
        with Image.open(io.BytesIO(first["cover-thumb.jpg"])) as thumb:
            assert thumb.size == (150, 150)
    finally:
        unmount(mnt)


def albums_with_art(cache: Path) -> int:
    """Albums whose art the cover store has made (its own index in the cache dir)."""
    path = cache / "covers" / "albums.sqlite3"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM albums WHERE source IS NOT NULL")
                       .fetchone()[0])  # fmt: skip
        except sqlite3.OperationalError:  # not created yet
            return 0


def test_covers_of_an_album_never_listed_are_there_at_the_next_mount(
    library: Library, tmp_path: Path
) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    embed(origin / JOGA, image((640, 480), "JPEG", "green"))
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted([origin], mnt, cache):  # nothing is listed in this session
        wait_until(lambda: albums_with_art(cache) == 1, timeout=30,
                   what="the art of the album to be made after the scan")  # fmt: skip
    album = (mnt / render_path(specs[JOGA])).parent
    try:
        result = run_musicfs(*mount_command([origin], mnt, cache))
        assert result.returncode == 0, describe(result)
        listed = set(os.listdir(album))  # the first thing done: no waiting
        assert listed >= NAMES, f"listed right after mount: {sorted(listed)}"
        with Image.open(album / "cover.jpg") as cover:
            assert cover.size == (640, 480)
    finally:
        unmount(mnt)


def test_mount_wait_returns_with_every_track(library: Library, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    with mounted(library.origins, mnt, tmp_path / "cache", "--wait", wait_scan=False) as mount:
        assert walk_files(mount.mountpoint) == library.expected_files()  # no waiting
        status = mount.status()
        assert not status["scanning"]
        assert status["tracks"] == len(library.tracks)


def test_mount_wait_is_quiet_off_a_terminal_and_draws_a_bar_on_one(
    library: Library, tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = mount_command(library.origins, mnt, tmp_path / "cache", "--wait")
    try:
        result = subprocess.run([MUSICFS, *args], capture_output=True, text=True, timeout=120,
                                env=musicfs_env(), check=False)  # fmt: skip
        assert result.returncode == 0, describe(result)
        assert result.stdout.splitlines() == [
            f"mounted {mnt} (daemon pid {result.stdout.split('pid ')[1].split(')')[0]}); "
            f"`musicfs status --mount {mnt}` shows it",
            f"first scan finished: {len(library.tracks)} files in 2 origin(s)",
        ], describe(result)
        assert result.stderr == ""
    finally:
        unmount(mnt)
    # On a terminal (a pseudo-terminal here): the same, with a progress bar drawn.
    leader, follower = pty.openpty()
    try:
        with subprocess.Popen([MUSICFS, *args], stdin=follower, stdout=follower,
                              stderr=follower, env=musicfs_env()) as process:  # fmt: skip
            os.close(follower)
            output = b""
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # EIO: the terminal's last writer is gone
                    break
                if not chunk:
                    break
                output += chunk
            assert process.wait(timeout=120) == 0, output.decode(errors="replace")
        text = output.decode(errors="replace")
        assert "scanning" in text, text
        assert "first scan finished" in text, text
        assert walk_files(mnt) == library.expected_files()
    finally:
        os.close(leader)
        unmount(mnt)


def test_mount_wait_returns_naming_an_origin_that_is_down(library: Library, tmp_path: Path) -> None:
    from tests.e2e.helpers import write_config
    from tests.e2e.test_federation import sftp_origin
    from tests.servers.sshd import sshd_server

    local, remote = tmp_path / "local", tmp_path / "remote"
    make_origin(library, local, [JOGA])
    make_origin(library, remote, [UNRAVEL])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with sshd_server(remote) as sshd:
        sshd.stop()
        config = write_config(tmp_path / "config.toml",
                              [{"id": "disk", "path": str(local)}, sftp_origin(sshd)])  # fmt: skip
        try:
            result = run_musicfs("mount", mnt, "--config", config, "--cache-dir",
                                 tmp_path / "cache", "--wait", timeout=120)  # fmt: skip
            assert result.returncode == 0, describe(result)
            assert "origin 'ssh' was not scanned completely" in result.stderr, describe(result)
            assert walk_files(mnt) == {render_path(library.find(JOGA).spec)}  # disk's, whole
        finally:
            unmount(mnt)


def test_foreground_wait_tells_systemd_ready_once_the_tree_is_whole(
    library: Library, tmp_path: Path
) -> None:
    import socket

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(120)
        args = mount_command(library.origins, mnt, tmp_path / "cache", "--foreground", "--wait")
        env = {**musicfs_env(), "NOTIFY_SOCKET": address}
        with subprocess.Popen([MUSICFS, *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) as daemon:  # fmt: skip
            try:
                message = notify.recv(4096).decode()
                assert "READY=1" in message, message
                assert walk_files(mnt) == library.expected_files()  # at READY=1: no waiting
            finally:
                unmount(mnt, daemon.pid)
