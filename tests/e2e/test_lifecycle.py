"""A mount's life: start, status, rescan, restart, errors, crash (SPEC FR-1, FR-7, FR-9, FR-10).

Proves with the real ``musicfs`` command and real mounts:

* ``musicfs status`` reports READY with the right counts; ``musicfs unmount``
  unmounts, and afterwards ``status`` exits 3 saying it is not mounted;
* remounting with the same cache dir serves the stored tree at once (with the
  rescan switched off the tree is exactly the stored one), and the background
  rescan then brings added, re-tagged and removed origin files into the tree;
* with the mount live, SIGHUP rescans and the kernel forgets what changed: a
  new file is listed, a removed one is ENOENT even though it was just stat'ed,
  and a re-tagged file's new bytes and size are served (no stale page cache);
* bad mountpoints, origins and templates, and a cache dir already in use, fail
  with exit status and message a user can act on, leaving nothing mounted;
* ``musicfs shutdown`` and SIGTERM unmount cleanly; ``musicfs unmount`` completes
  while a player still holds a file open;
* after ``kill -9`` of the daemon, the mountpoint is released (auto_unmount)
  and the next ``musicfs mount`` on it works;
* two origin folders with the same name never serve each other's bytes after a
  remount, and ``status`` works right after a mount that replaced a crashed one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    EXIT_NO_DAEMON,
    Mount,
    describe,
    errno_name,
    errno_of,
    is_mounted,
    mount_command,
    mounted,
    pid_alive,
    run_musicfs,
    sha256_of,
    status,
    try_status,
    unmount,
    wait_until,
)
from tests.e2e.library import (
    Library,
    TrackSpec,
    assert_serves,
    expected,
    make_origin,
    render_path,
    retag_flac,
)

JOGA = "Björk/Homogenic/01 Jóga.flac"
UNRAVEL = "Björk/Homogenic/02 Unravel.flac"
SVEFN = "Sigur Rós/svefn-g-englar.mp3"
VLADIVOSTOK = "Мумий Тролль/Морская/03.ogg"
HIKARI = "jp/光.opus"
OVERTURE = "Two Sides/CD1/01.flac"
SMALL = (JOGA, UNRAVEL, SVEFN, VLADIVOSTOK, OVERTURE)


@pytest.fixture
def small_origin(library: Library, tmp_path: Path) -> tuple[Path, dict[str, TrackSpec]]:
    """A fresh origin with five tracks of the library, ours to change."""
    origin = tmp_path / "music"
    return origin, make_origin(library, origin, SMALL)


@pytest.mark.mount
@pytest.mark.media
def test_status_unmount_and_status_after(
    small_origin: tuple[Path, dict[str, TrackSpec]], tmp_path: Path
) -> None:
    origin, specs = small_origin
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted([origin], mnt, cache) as mount:
        data = status(mnt)
        assert data["state"] == "READY"
        assert data["scanning"] is False
        assert data["tracks"] == len(specs)
        assert data["unreadable_files"] == 0
        assert data["mountpoint"] == str(mnt)
        assert Path(data["cache_dir"]).resolve() == cache.resolve()
        assert [o["online"] for o in data["origins"]] == [True]
        assert data["origins"][0]["location"] == str(origin)
        # the human-readable form works too
        human = run_musicfs("status", mnt)
        assert human.returncode == 0, describe(human)
        assert "READY" in human.stdout

        result = run_musicfs("unmount", mnt)
        assert result.returncode == 0, describe(result)
        assert not is_mounted(mnt)
        wait_until(
            lambda: not pid_alive(mount.pid), timeout=15, what="the daemon to exit after unmount"
        )
    after = run_musicfs("status", mnt)
    assert after.returncode == EXIT_NO_DAEMON, describe(after)
    assert "is it mounted" in after.stderr


@pytest.mark.mount
@pytest.mark.media
@pytest.mark.parametrize("how", ["musicfs shutdown", "SIGTERM"])
def test_shutdown_command_and_sigterm_unmount_cleanly(
    small_origin: tuple[Path, dict[str, TrackSpec]], tmp_path: Path, how: str
) -> None:
    origin, _ = small_origin
    mnt = tmp_path / "mnt"
    with mounted([origin], mnt, tmp_path / "cache") as mount:
        if how == "SIGTERM":
            os.kill(mount.pid, signal.SIGTERM)
        else:
            result = run_musicfs("shutdown", mnt)
            assert result.returncode == 0, describe(result)
        wait_until(
            lambda: not is_mounted(mnt) and not pid_alive(mount.pid),
            timeout=20,
            what=f"{how} to unmount and end the daemon",
        )
        assert not Path(mount.ready_status["socket"]).exists(), "control socket left behind"
    assert run_musicfs("status", mnt).returncode == EXIT_NO_DAEMON


@pytest.mark.mount
@pytest.mark.media
def test_unmount_with_a_file_still_open_completes(
    small_origin: tuple[Path, dict[str, TrackSpec]], tmp_path: Path
) -> None:
    """A player holding a file open does not make ``musicfs unmount`` hang or fail."""
    origin, specs = small_origin
    mnt = tmp_path / "mnt"
    with mounted([origin], mnt, tmp_path / "cache") as mount:
        fd = os.open(mnt / render_path(specs[SVEFN]), os.O_RDONLY)
        try:
            assert mount.status()["open_handles"] == 1
            result = run_musicfs("unmount", mnt, timeout=60)
            assert result.returncode == 0, describe(result)
            assert not is_mounted(mnt)
        finally:
            with contextlib.suppress(OSError):  # ENOTCONN: the mount is gone
                os.close(fd)


@pytest.mark.mount
@pytest.mark.media
def test_status_of_the_shared_library(library: Library, library_mount: Mount) -> None:
    data = library_mount.status()
    assert data["state"] == "READY"
    assert data["tracks"] == len(library.tracks)
    assert data["unreadable_files"] == 0
    assert len(data["origins"]) == 2
    assert all(o["online"] for o in data["origins"])


@pytest.mark.mount
@pytest.mark.media
def test_remount_without_rescan_serves_the_stored_tree(
    small_origin: tuple[Path, dict[str, TrackSpec]], tmp_path: Path
) -> None:
    """With the rescan off, everything shown comes from the catalog stored in the cache dir."""
    origin, specs = small_origin
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted([origin], mnt, cache) as mount:
        first = mount.files()
    assert first == expected(specs.values())
    no_scan = {"MUSICFS_SCAN_ON_START": "false"}
    with mounted([origin], mnt, cache, wait_scan=False, env=no_scan) as mount:
        assert mount.files() == first
        for relpath, spec in specs.items():
            assert_serves(mount, render_path(spec), origin / relpath)
        data = mount.status()
        assert data["tracks"] == len(specs)
        assert data["scanning"] is False
        assert [o["last_scan"] for o in data["origins"]] == [""], "no scan was asked for"


@pytest.mark.mount
@pytest.mark.media
def test_remount_serves_at_once_then_rescan_shows_offline_changes(
    library: Library, small_origin: tuple[Path, dict[str, TrackSpec]], tmp_path: Path
) -> None:
    origin, specs = small_origin
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted([origin], mnt, cache) as mount:
        assert mount.files() == expected(specs.values())

    # while unmounted: add a track, re-tag one (new title: it moves), remove one
    specs |= make_origin(library, origin, [HIKARI])
    retag_flac(origin / JOGA, title="Jóga (Live)")
    specs[JOGA] = replace(specs[JOGA], tags={**specs[JOGA].tags, "title": "Jóga (Live)"})
    (origin / UNRAVEL).unlink()
    del specs[UNRAVEL]

    with mounted([origin], mnt, cache, wait_scan=False) as mount:
        # served from the stored catalog straight away, before waiting for anything
        unchanged = mnt / render_path(specs[SVEFN])
        assert unchanged.is_file(), "the stored tree was not served right after mount returned"
        assert sha256_of(unchanged) == sha256_of(origin / SVEFN)
        mount.wait_for_scan()
        assert mount.files() == expected(specs.values())
        assert "Björk/Homogenic (1997) [FLAC]/01 - Jóga (Live).flac" in mount.files()
        for relpath, spec in specs.items():
            assert_serves(mount, render_path(spec), origin / relpath)
        assert mount.status()["tracks"] == len(specs)


@pytest.mark.mount
@pytest.mark.media
def test_sighup_rescans_and_invalidates_kernel_caches(
    small_origin: tuple[Path, dict[str, TrackSpec]], tmp_path: Path
) -> None:
    origin, specs = small_origin
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted([origin], mnt, cache) as mount:
        album = mnt / "Björk" / "Homogenic (1997) [FLAC]"
        joga, unravel = album / "01 - Jóga.flac", album / "02 - Unravel.flac"
        overture = mnt / render_path(specs[OVERTURE])
        # fill the kernel's caches: names, attributes, and the pages of two files
        assert sorted(os.listdir(album)) == ["01 - Jóga.flac", "02 - Unravel.flac"]
        os.stat(unravel)
        assert sha256_of(joga) == sha256_of(origin / JOGA)
        assert sha256_of(overture) == sha256_of(origin / OVERTURE)

        # change the origin behind the live mount: add, remove, and re-tag two
        # files without moving them — one grows, one keeps its size (FLAC padding)
        added = origin / "Björk/Homogenic/03 Bachelorette.flac"
        shutil.copy2(origin / JOGA, added)
        retag_flac(added, title="Bachelorette", tracknumber="3")
        (origin / UNRAVEL).unlink()
        size_before = {p: (origin / p).stat().st_size for p in (JOGA, OVERTURE)}
        retag_flac(origin / JOGA, comment="re-tagged while mounted " * 1000)
        retag_flac(origin / OVERTURE, genre="Prog")
        assert (origin / JOGA).stat().st_size > size_before[JOGA]
        assert (origin / OVERTURE).stat().st_size == size_before[OVERTURE]

        os.kill(mount.pid, signal.SIGHUP)
        data = mount.wait_for_scan(after=mount.ready_status)

        listing = subprocess.run(["ls", "-1", str(album)], capture_output=True, text=True,
                                 check=True).stdout.splitlines()  # fmt: skip
        assert listing == ["01 - Jóga.flac", "03 - Bachelorette.flac"]
        code = errno_of(lambda: os.stat(unravel))
        assert code == errno.ENOENT, f"removed file still stat-able ({errno_name(code)})"
        assert_serves(mount, "Björk/Homogenic (1997) [FLAC]/03 - Bachelorette.flac", added)
        assert_serves(mount, "Björk/Homogenic (1997) [FLAC]/01 - Jóga.flac", origin / JOGA)
        assert_serves(mount, render_path(specs[OVERTURE]), origin / OVERTURE)
        assert data["tracks"] == len(specs)  # one removed, one added


@pytest.mark.mount
@pytest.mark.media
def test_removing_an_albums_last_track_removes_its_folders(
    small_origin: tuple[Path, dict[str, TrackSpec]], tmp_path: Path
) -> None:
    origin, specs = small_origin
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted([origin], mnt, cache) as mount:
        artist = mnt / render_path(specs[VLADIVOSTOK]).split("/")[0]
        assert os.listdir(artist)  # cached by the kernel now
        shutil.rmtree(origin / "Мумий Тролль")
        os.kill(mount.pid, signal.SIGHUP)
        mount.wait_for_scan(after=mount.ready_status)
        assert errno_of(lambda: os.stat(artist)) == errno.ENOENT
        assert artist.name not in os.listdir(mnt)
        del specs[VLADIVOSTOK]
        assert mount.files() == expected(specs.values())


# -- failing to mount --------------------------------------------------------------


def test_nonexistent_mountpoint_fails_naming_it(tmp_path: Path) -> None:
    origin = tmp_path / "music"
    origin.mkdir()
    missing = tmp_path / "no" / "such" / "mnt"
    result = run_musicfs(*mount_command([origin], missing, tmp_path / "cache"))
    assert result.returncode == 2, describe(result)
    assert result.stderr.startswith("musicfs: error: ")
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_nonexistent_origin_fails_naming_it(tmp_path: Path) -> None:
    mnt, missing = tmp_path / "mnt", tmp_path / "no-such-music"
    mnt.mkdir()
    try:
        result = run_musicfs(*mount_command([missing], mnt, tmp_path / "cache"))
        assert result.returncode == 2, describe(result)
        assert result.stderr.startswith("musicfs: error: ")
        assert str(missing) in result.stderr
        assert not is_mounted(mnt)
    finally:
        unmount(mnt)


def test_bad_template_exits_2_naming_the_variable(tmp_path: Path) -> None:
    origin, mnt = tmp_path / "music", tmp_path / "mnt"
    origin.mkdir()
    mnt.mkdir()
    try:
        result = run_musicfs(
            *mount_command([origin], mnt, tmp_path / "cache", "--template", "$nosuchvar/$title")
        )
        assert result.returncode == 2, describe(result)
        assert "$nosuchvar" in result.stderr
        assert "Traceback" not in result.stderr
        assert not is_mounted(mnt)
    finally:
        unmount(mnt)


@pytest.mark.mount
@pytest.mark.media
def test_mounting_over_a_live_mount_is_refused(
    library: Library, library_mount: Mount, tmp_path: Path
) -> None:
    mnt = library_mount.mountpoint
    empty = tmp_path / "music"
    empty.mkdir()
    result = run_musicfs(*mount_command([empty], mnt, tmp_path / "cache"))
    try:
        assert result.returncode == 2, describe(result)
        assert str(mnt) in result.stderr
        assert "already" in result.stderr
    finally:
        if result.returncode == 0:  # stacked on the shared mount: take the top one off
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    assert library_mount.status()["state"] == "READY"
    assert len(library_mount.files()) == len(library.tracks)


@pytest.mark.mount
@pytest.mark.media
def test_second_mount_on_the_same_cache_dir_is_refused(
    small_origin: tuple[Path, dict[str, TrackSpec]], tmp_path: Path
) -> None:
    origin, specs = small_origin
    cache, second = tmp_path / "cache", tmp_path / "mnt2"
    second.mkdir()
    with mounted([origin], tmp_path / "mnt", cache) as mount:
        try:
            result = run_musicfs(*mount_command([origin], second, cache))
            assert result.returncode == 2, describe(result)
            assert "in use" in result.stderr, describe(result)
            assert str(cache) in result.stderr
            assert not is_mounted(second)
        finally:
            unmount(second)
        # the first mount is unharmed
        assert mount.files() == expected(specs.values())
        assert mount.status()["state"] == "READY"


@pytest.mark.mount
@pytest.mark.media
def test_kill_9_releases_the_mountpoint_and_mount_works_again(
    small_origin: tuple[Path, dict[str, TrackSpec]], tmp_path: Path
) -> None:
    origin, specs = small_origin
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted([origin], mnt, cache) as mount:
        os.kill(mount.pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(mount.pid), timeout=10, what="the killed daemon to end")

        def released() -> bool:
            # unmounted by auto_unmount's helper, or at least a dead mount (ENOTCONN)
            return not is_mounted(mnt) or errno_of(lambda: os.stat(mnt)) == errno.ENOTCONN

        wait_until(released, timeout=10, what=f"{mnt} to be unmounted or dead after kill -9")
        dead = run_musicfs("status", mnt)
        assert dead.returncode == EXIT_NO_DAEMON, describe(dead)

        with mounted([origin], mnt, cache) as again:
            assert again.pid != mount.pid
            assert again.files() == expected(specs.values())
            for relpath, spec in specs.items():
                assert_serves(again, render_path(spec), origin / relpath)


@pytest.mark.mount
@pytest.mark.media
def test_status_right_after_mount_over_a_stale_socket(
    small_origin: tuple[Path, dict[str, TrackSpec]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After a crash, ``musicfs mount && musicfs status`` must work like after a clean unmount.

    The status call is made in-process right after ``musicfs mount`` returns
    (as a fast script or a program using the control client would), so the
    outcome does not depend on how long a new ``musicfs`` process takes to start.
    """
    from musicfs.cli.main import main  # imported (with gRPC) before mounting: no delay later

    origin, _ = small_origin
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted([origin], mnt, cache) as mount:
        os.kill(mount.pid, signal.SIGKILL)
        wait_until(lambda: not is_mounted(mnt), timeout=10, what="auto_unmount after kill -9")
    pid = None
    try:
        result = run_musicfs(*mount_command([origin], mnt, cache))
        assert result.returncode == 0, describe(result)
        capsys.readouterr()
        code = main(["status", str(mnt), "--json"])
        out, err = capsys.readouterr()
        assert code == 0, f"status right after mount exited {code}: {err}"
        pid = int(json.loads(out)["pid"])
    finally:
        if pid is None:  # learn the new daemon's pid once its socket answers, to be sure it ends
            with contextlib.suppress(AssertionError):
                pid = int(wait_until(lambda: try_status(mnt), timeout=10, what="status")["pid"])
        unmount(mnt, pid)


@pytest.mark.mount
@pytest.mark.media
@pytest.mark.parametrize("change", ["reordered", "replaced"])
def test_origins_with_the_same_folder_name_never_swap_content(
    library: Library, tmp_path: Path, change: str
) -> None:
    """Two origins both called ``music``: remounting must not serve one's bytes as the other's.

    *reordered*: the same two folders, ``--origin`` flags in the other order.
    *replaced*: the cache dir is reused with another folder of the same name.
    The rescan is switched off on the second mount, so what is served comes
    from the stored catalog alone; a track may be missing until the rescan,
    but a track that is shown must have its own bytes.
    """
    first, second = tmp_path / "x" / "music", tmp_path / "y" / "music"
    # the same file name in both folders, different tracks
    for folder, relpath in ((first, JOGA), (second, OVERTURE)):
        (folder / "album").mkdir(parents=True)
        shutil.copy2(library.find(relpath).path, folder / "album" / "track.flac")
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    own_bytes = {
        render_path(library.find(JOGA).spec): sha256_of(first / "album" / "track.flac"),
        render_path(library.find(OVERTURE).spec): sha256_of(second / "album" / "track.flac"),
    }
    before, after = (
        ([first, second], [second, first]) if change == "reordered" else ([first], [second])
    )
    with mounted(before, mnt, cache):
        pass
    no_scan = {"MUSICFS_SCAN_ON_START": "false"}
    with mounted(after, mnt, cache, wait_scan=False, env=no_scan) as mount:
        wrong = []
        for virtual in sorted(mount.files()):
            try:
                if sha256_of(mnt / virtual) != own_bytes.get(virtual):
                    wrong.append(f"{virtual}: not its own bytes")
            except OSError as exc:
                wrong.append(f"{virtual}: {exc.strerror}")
        assert not wrong, f"tracks shown but served wrongly: {wrong}"
