"""Crash safety (NFR-8): ``kill -9`` of the daemon in the middle of a scan.

10,000 small tagged files are scanned; the daemon is killed once part of them
is committed. The next mount must clear the dead mountpoint, resume the scan,
and end with a sound database holding every file exactly once.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import wave
from pathlib import Path
from typing import Any

import pytest
from mutagen.id3 import TALB, TIT2, TPE1, TRCK
from mutagen.wave import WAVE

from tests.e2e.helpers import children_of, is_mounted, mounted, pid_alive, status, wait_until

pytestmark = pytest.mark.mount

FILES = 10_000


def make_library(root: Path) -> None:
    """FILES tagged WAV files, 100 albums of 100 tracks, written in-process."""
    template = root / "template.wav"
    root.mkdir(parents=True)
    with wave.open(str(template), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 400)
    raw = template.read_bytes()
    template.unlink()
    for album in range(FILES // 100):
        folder = root / f"artist {album % 10}" / f"album {album}"
        folder.mkdir(parents=True)
        for track in range(100):
            path = folder / f"{track:02d}.wav"
            path.write_bytes(raw)
            audio: Any = WAVE(str(path))
            audio.add_tags()
            audio.tags.add(TIT2(encoding=3, text=[f"song {album}-{track}"]))
            audio.tags.add(TPE1(encoding=3, text=[f"artist {album % 10}"]))
            audio.tags.add(TALB(encoding=3, text=[f"album {album}"]))
            audio.tags.add(TRCK(encoding=3, text=[str(track + 1)]))
            audio.save()


def test_kill_9_during_a_scan_then_resume(tmp_path: Path) -> None:
    origin, mnt, cache = tmp_path / "music", tmp_path / "mnt", tmp_path / "cache"
    make_library(origin)
    env = {"MUSICFS_SCAN_WORKERS": "1"}  # slower scan: a wider window to kill it in
    with mounted([origin], mnt, cache, wait_scan=False, env=env) as mount:
        partial = wait_until(
            lambda: (s := status(mnt))["tracks"] >= 500 and s["scanning"] and s,
            timeout=120,
            what="part of the scan to be committed",
        )
        os.kill(mount.pid, signal.SIGKILL)
        wait_until(lambda: not is_mounted(mnt), timeout=10, what="auto_unmount after kill -9")
    assert partial["tracks"] < FILES, "the scan finished before it could be interrupted"

    with mounted([origin], mnt, cache) as mount:
        done = mount.status()
        assert done["tracks"] == FILES
        assert done["unreadable_files"] == 0
        names = sorted(os.listdir(mnt / "artist 3"))
        assert len(names) == 10
        assert len(os.listdir(mnt / "artist 3" / names[0])) == 100

    db = sqlite3.connect(cache / "catalog.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM files").fetchone()[0] == FILES
        assert (
            db.execute(
                "SELECT count(*) FROM (SELECT origin, reldir, name FROM files "
                "GROUP BY origin, reldir, name HAVING count(*) > 1)"
            ).fetchone()[0]
            == 0
        )
        file_nodes = db.execute("SELECT count(*) FROM nodes WHERE file_id IS NOT NULL")
        assert file_nodes.fetchone()[0] == FILES
        orphans = db.execute(
            "SELECT count(*) FROM nodes WHERE file_id IS NOT NULL "
            "AND file_id NOT IN (SELECT id FROM files)"
        )
        assert orphans.fetchone()[0] == 0
    finally:
        db.close()


def test_kill_9_during_a_scan_leaves_no_process_behind(tmp_path: Path) -> None:
    origin, mnt, cache = tmp_path / "music", tmp_path / "mnt", tmp_path / "cache"
    make_library(origin)
    env = {"MUSICFS_SCAN_WORKERS": "2"}  # tag-reading worker processes
    with mounted([origin], mnt, cache, wait_scan=False, env=env) as mount:
        helpers = wait_until(
            lambda: status(mnt)["scanning"] and len(found := children_of(mount.pid)) >= 2 and found,
            timeout=120,
            what="the scan's worker processes to start",
        )
        os.kill(mount.pid, signal.SIGKILL)
        wait_until(lambda: not is_mounted(mnt), timeout=10, what="auto_unmount after kill -9")
        wait_until(lambda: not any(pid_alive(pid) for pid in helpers), timeout=30,
                   what=f"the daemon's worker processes {sorted(helpers)} to exit")  # fmt: skip
