"""Crash points (NFR-8, issue 13): ``kill -9`` in the middle of each kind of work.

The daemon is killed while it copies a file into the cache, while it evicts
to stay under its limit, and ``cache restore`` is killed while it unpacks
(the middle of a scan is `test_crash.py`). After each kill the same
invariants must hold: every database passes ``integrity_check``, the catalog
has no duplicate or orphan rows, no process of the dead daemon is left, and
the next mount serves every track with its origin's bytes, also from the
cache alone once the origin is gone (a copy cut short is dropped, never served
in part).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    MUSICFS,
    Mount,
    children_of,
    describe,
    forget_pages,
    is_mounted,
    mounted,
    musicfs_env,
    pid_alive,
    require_tools,
    run_musicfs,
    wait_until,
    walk_files,
)
from tests.servers.faultfs import FaultFS, fault_fs

pytestmark = [pytest.mark.mount, pytest.mark.media]

DATABASES = ("catalog.sqlite3", "content/manifests.sqlite3", "content/chunks/index.sqlite3")


@pytest.fixture(scope="module")
def big_tracks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four FLACs of several MiB each (noise does not compress), tagged."""
    require_tools("ffmpeg")
    root = tmp_path_factory.mktemp("crash-points")
    for number in range(1, 5):
        path = root / "Noise" / f"{number:02d}.flac"
        path.parent.mkdir(exist_ok=True)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
             f"anoisesrc=d=6:c=white:r=96000:a=1:seed={number}", "-sample_fmt", "s32",
             "-metadata", f"title=Noise {number}", "-metadata", "artist=Crash",
             "-metadata", "album=Points", "-metadata", f"track={number}", str(path)],
            check=True,
            timeout=120,
        )  # fmt: skip
    return root


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def origin_hashes(origin: Path) -> set[str]:
    return {sha256(p.read_bytes()) for p in origin.rglob("*.flac")}


def tracks_of(mount: Mount) -> list[Path]:
    return [mount.mountpoint / rel for rel in sorted(walk_files(mount.mountpoint))
            if rel.endswith(".flac")]  # fmt: skip


def killed(mount: Mount) -> set[int]:
    """Kill the daemon with SIGKILL; wait for the kernel to drop its mount."""
    helpers = children_of(mount.pid)
    os.kill(mount.pid, signal.SIGKILL)
    wait_until(lambda: not is_mounted(mount.mountpoint), timeout=10,
               what="auto_unmount after kill -9")  # fmt: skip
    return helpers


def assert_sound(cache: Path, left_behind: set[int]) -> None:
    """The invariants after a crash, read from the cache dir itself."""
    wait_until(lambda: not any(pid_alive(pid) for pid in left_behind), timeout=30,
               what=f"the dead daemon's processes {sorted(left_behind)} to exit")  # fmt: skip
    for name in DATABASES:
        if (cache / name).exists():
            with contextlib.closing(sqlite3.connect(cache / name)) as db:
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", name
    with contextlib.closing(sqlite3.connect(cache / "catalog.sqlite3")) as db:
        duplicates = db.execute(
            "SELECT count(*) FROM (SELECT 1 FROM files GROUP BY origin, reldir, name"
            " HAVING count(*) > 1)"
        ).fetchone()[0]
        orphans = db.execute(
            "SELECT count(*) FROM nodes WHERE file_id IS NOT NULL"
            " AND file_id NOT IN (SELECT id FROM files)"
        ).fetchone()[0]
    assert (duplicates, orphans) == (0, 0)


def assert_serves(mount: Mount, expected: set[str]) -> None:
    """Every track reads back as one of the origin's files, each once."""
    tracks = tracks_of(mount)
    assert {sha256(p.read_bytes()) for p in tracks} == expected
    assert len(tracks) == len(expected)


def assert_cache_never_lies(mount: Mount, expected: set[str]) -> int:
    """With the origin gone: each track reads whole as its origin's bytes, or EIO.
    Returns how many came from the cache."""
    served = 0
    for path in tracks_of(mount):
        try:
            forget_pages(path)  # (opening is where a file with no copy fails)
            data = path.read_bytes()
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            continue
        assert sha256(data) in expected, f"{path.name}: wrong bytes from the cache"
        served += 1
    return served


@contextlib.contextmanager
def share_of(tracks: Path, tmp_path: Path) -> Iterator[FaultFS]:
    export = tmp_path / "export"
    shutil.copytree(tracks, export)
    with fault_fs(export, tmp_path / "share") as share:
        yield share


def nfs_config(path: Path, share: FaultFS, limit: str = "1GiB") -> Path:
    path.write_text(
        f'[cache]\nlimit = "{limit}"\n[prefetch]\nenabled = false\n'
        f'[[origins]]\nid = "nas"\npath = "nfs://{share.mountpoint}"\ntimeout = 30\n',
        encoding="utf-8",
    )
    return path


def packed_bytes(cache: Path) -> int:
    packs = cache / "content" / "chunks" / "packs"
    return sum(p.stat().st_size for p in packs.glob("*.pack")) if packs.exists() else 0


@pytest.mark.parametrize("point", ["reading the origin", "writing the copy"])
def test_kill_9_while_a_file_is_copied_into_the_cache(
    big_tracks: Path, tmp_path: Path, point: str
) -> None:
    cache, mnt = tmp_path / "cache", tmp_path / "mnt"
    expected = origin_hashes(big_tracks)
    with share_of(big_tracks, tmp_path) as share:
        config = nfs_config(tmp_path / "config.toml", share)
        with mounted([], mnt, cache, "--config", str(config)) as mount:
            first = tracks_of(mount)[0]
            share.set(delay=0.2)  # every request to the share is slow: the copy takes seconds
            before = share.stats()["ops"]
            with open(first, "rb") as fh:
                fh.read(64 * 1024)  # opened from the share: the daemon starts copying it
            if point == "reading the origin":
                wait_until(lambda: share.stats()["ops"] > before + 5, timeout=60,
                           what="the copy to be reading the share")  # fmt: skip
                assert mount.status()["cached_files"] == 0, "the copy finished before the kill"
            else:  # the chunks go into a pack in one write, then into the index
                wait_until(lambda: packed_bytes(cache) > 0, timeout=120,
                           what="the copy to write its chunks")  # fmt: skip
            left = killed(mount)
            share.clear()
        assert_sound(cache, left)
        with mounted([], mnt, cache, "--config", str(config)) as mount:
            assert_serves(mount, expected)
            wait_until(lambda: mount.status()["cached_files"] == len(expected), timeout=60,
                       what="every track read to be cached again")  # fmt: skip
            share.set(eio=True)  # the share is gone: the cache alone answers
            try:
                assert assert_cache_never_lies(mount, expected) == len(expected)
            finally:
                share.clear()


def test_kill_9_while_the_cache_evicts(big_tracks: Path, tmp_path: Path) -> None:
    cache, mnt = tmp_path / "cache", tmp_path / "mnt"
    expected = origin_hashes(big_tracks)
    one_track = max(p.stat().st_size for p in big_tracks.rglob("*.flac"))
    limit = f"{one_track * 2 + one_track // 2}B"  # room for two and a half tracks
    with share_of(big_tracks, tmp_path) as share:
        config = nfs_config(tmp_path / "config.toml", share, limit)
        with mounted([], mnt, cache, "--config", str(config)) as mount:
            tracks = tracks_of(mount)
            for path in tracks[:3]:
                path.read_bytes()
            # Two copies made and the third in: older copies must go for the next.
            wait_until(lambda: mount.status()["cached_files"] >= 2, timeout=60,
                       what="the first copies")  # fmt: skip
            tracks[3].read_bytes()  # a fourth copy: the cache evicts to make room for it
            left = killed(mount)
        assert_sound(cache, left)
        with mounted([], mnt, cache, "--config", str(config)) as mount:
            assert_serves(mount, expected)
            share.set(eio=True)
            try:
                assert_cache_never_lies(mount, expected)
            finally:
                share.clear()


def test_kill_9_of_cache_restore_leaves_the_cache_as_it_was(
    big_tracks: Path, tmp_path: Path
) -> None:
    origin, cache, mnt = tmp_path / "music", tmp_path / "cache", tmp_path / "mnt"
    shutil.copytree(big_tracks, origin)
    expected = origin_hashes(origin)
    with mounted([origin], mnt, cache) as mount:
        for path in tracks_of(mount):
            path.read_bytes()
        wait_until(lambda: mount.status()["cached_files"] == len(expected), timeout=60,
                   what="every track to be cached")  # fmt: skip
    shelf = tmp_path / "shelf"  # where the backup is kept: a slow share
    shelf.mkdir()
    result = run_musicfs("cache", "backup", str(shelf / "backup.tar"), "--cache-dir", str(cache))
    assert result.returncode == 0, describe(result)

    with fault_fs(shelf, tmp_path / "share") as share:
        backup = share.mountpoint / "backup.tar"
        share.set(delay=0.05)  # each read of the backup waits: the restore takes seconds
        restore = subprocess.Popen(
            [MUSICFS, "cache", "restore", str(backup), "--cache-dir", str(cache)],
            env=musicfs_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(
                lambda: (
                    any(p.is_dir() and any(p.iterdir()) for p in tmp_path.glob(".cache.restore-*"))
                    or restore.poll() is not None
                ),
                timeout=60,
                what="restore to be unpacking",
            )
            assert restore.poll() is None, "the restore finished before it could be killed"
        finally:
            restore.kill()
            restore.wait(timeout=30)
            share.clear()
    assert_sound(cache, set())
    with mounted([origin], mnt, cache) as mount:
        assert_serves(mount, expected)
    assert list(tmp_path.glob(".cache.restore-*")), "the killed restore left nothing to clear"
    again = run_musicfs("cache", "restore", str(shelf / "backup.tar"), "--cache-dir", str(cache))
    assert again.returncode == 0, describe(again)
    assert_sound(cache, set())
    assert not list(tmp_path.glob(".cache.*")), "what the killed restore unpacked is removed"
    with mounted([origin], mnt, cache) as mount:
        assert_serves(mount, expected)
