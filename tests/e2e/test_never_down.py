"""A mount that said "mounted" stays up (issue 13.4 and 13.5).

Before, a catalog damaged in the middle was mounted, and the first scan then
met the broken pages and took the daemon down a second after ``musicfs mount``
had said "mounted"; so did any other failure of a background loop (here: the
catalog's write lock held by another program). Now a damaged catalog is
refused before mounting, with the fix in the message, and a loop that fails is
shown by ``musicfs status`` and started again until it works, while the mount
serves.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import mutagen
import pytest

from tests.e2e.helpers import (
    describe,
    is_mounted,
    mount_command,
    mounted,
    require_fuse,
    require_tools,
    run_musicfs,
    sha256_of,
    status,
    try_status,
    unmount,
    wait_until,
    walk_files,
)

pytestmark = [pytest.mark.mount, pytest.mark.media]


def encode(path: Path, title: str, artist: str = "Keeper", album: str = "Up") -> Path:
    """A one-second FLAC at *path*, tagged (written beside it, then renamed in)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(".encoding.flac")
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
         "-metadata", f"title={title}", "-metadata", f"artist={artist}",
         "-metadata", f"album={album}", str(temporary)],
        check=True,
        timeout=60,
    )  # fmt: skip
    os.rename(temporary, path)
    return path


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def library_of(origin: Path, count: int) -> None:
    """*count* tagged tracks (copies of one encoded file, tagged apart): a catalog
    big enough that its middle holds rows, not the schema."""
    first = encode(origin / "seed.flac", "Seed")
    for i in range(count):
        path = origin / f"Artist {i % 20}" / f"Album {i % 40}" / f"{i:03d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first, path)
        tags = mutagen.File(path)
        tags["title"], tags["artist"], tags["album"] = f"Song {i}", f"Artist {i % 20}", "Album"
        tags["tracknumber"] = str(i % 10 + 1)
        tags.save()
    first.unlink()


def test_a_catalog_damaged_in_the_middle_is_refused_before_saying_mounted(
    tmp_path: Path,
) -> None:
    require_tools("ffmpeg")
    require_fuse()
    origin, mountpoint, cache = tmp_path / "music", tmp_path / "mnt", tmp_path / "cache"
    library_of(origin, 400)
    with mounted([origin], mountpoint, cache) as mount:
        assert mount.ready_status["tracks"] == 400
    catalog = cache / "catalog.sqlite3"
    size = catalog.stat().st_size
    with open(catalog, "r+b") as fh:  # 64 KiB of zeros in the middle, page-aligned
        fh.seek((size // 2) // 4096 * 4096 - 32768)
        fh.write(bytes(65536))
    # The schema is intact (the catalog opens); the damage is in the rows.
    with sqlite3.connect(catalog) as db:
        db.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        try:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            verdict = str(exc)
        assert verdict != "ok"

    try:
        result = run_musicfs(*mount_command([origin], mountpoint, cache))
        assert result.returncode == 1, describe(result)
        assert f"catalog {catalog} is damaged" in result.stderr, describe(result)
        assert "Move it away; the next mount rebuilds it from the origins." in result.stderr
        assert "Traceback" not in result.stderr
        assert "mounted" not in result.stdout
        assert not is_mounted(mountpoint)
        assert try_status(mountpoint) is None  # no daemon left behind
    finally:
        unmount(mountpoint)

    # The advice works: with the damaged file moved away, the mount rebuilds it.
    catalog.rename(tmp_path / "catalog.damaged")
    with mounted([origin], mountpoint, cache) as mount:
        assert mount.ready_status["tracks"] == 400
        assert len(walk_files(mountpoint)) == 400


def test_a_failing_scan_is_shown_retried_and_recovers_while_the_mount_serves(
    tmp_path: Path,
) -> None:
    require_tools("ffmpeg")
    origin, cache = tmp_path / "music", tmp_path / "cache"
    encode(origin / "one.flac", "One")
    one = "Keeper/Up (0000) [FLAC]/00 - One.flac"
    with mounted([origin], tmp_path / "mnt", cache) as mount:
        pid = mount.pid
        # Another program holds the catalog's write lock (a sqlite3 shell in a
        # transaction, a backup tool): the scan of a new file cannot write.
        holder = sqlite3.connect(cache / "catalog.sqlite3", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            encode(origin / "two.flac", "Two")

            def sync_failed() -> dict[str, Any] | None:
                data = try_status(mount.mountpoint)
                assert data is not None, "the daemon died: " + tail(cache / "musicfs.log")
                loops = {loop["name"]: loop for loop in data.get("loops", [])}
                return data if loops.get("sync", {}).get("failing") else None

            shown = wait_until(sync_failed, timeout=60, what="status to show the failed scan")
            [sync] = [loop for loop in shown["loops"] if loop["name"] == "sync"]
            assert sync["failures"] >= 1
            assert sync["last_error"] == "OperationalError: database is locked"
            assert shown["state"] == "DEGRADED"
            assert shown["pid"] == pid
            # It serves meanwhile, and the text status says what fails.
            assert sha256_of(mount.mountpoint / one) == sha256_of(origin / "one.flac")
            text = run_musicfs("status", mount.mountpoint)
            assert text.returncode == 0, describe(text)
            assert "background tasks that failed" in text.stdout
            assert "database is locked" in text.stdout
            log = (cache / "musicfs.log").read_text()
            assert "background task 'sync' failed" in log
            assert "Traceback" in log  # the details are in the log
        finally:
            if holder.in_transaction:
                holder.execute("ROLLBACK")
            holder.close()

        # Once the lock is gone the scan is tried again by itself, and works.
        two = mount.mountpoint / "Keeper/Up (0000) [FLAC]/00 - Two.flac"
        wait_until(two.exists, timeout=90, what="the new file once the catalog is free")
        assert sha256_of(two) == sha256_of(origin / "two.flac")

        def recovered() -> dict[str, Any] | None:
            data = status(mount.mountpoint)
            failing = [loop["name"] for loop in data["loops"] if loop["failing"]]
            return data if data["state"] == "READY" and not failing else None

        after = wait_until(recovered, timeout=60, what="status to show the scan recovered")
        assert after["pid"] == pid
        assert after["tracks"] == 2
        [sync] = [loop for loop in after["loops"] if loop["name"] == "sync"]
        assert sync["failures"] >= 1  # still counted, no longer failing


def test_mounting_a_catalog_another_program_holds_says_so_without_a_traceback(
    tmp_path: Path,
) -> None:
    require_tools("ffmpeg")
    origin, mountpoint, cache = tmp_path / "music", tmp_path / "mnt", tmp_path / "cache"
    encode(origin / "one.flac", "One")
    with mounted([origin], mountpoint, cache):
        pass
    holder = sqlite3.connect(cache / "catalog.sqlite3", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        result = run_musicfs(*mount_command([origin], mountpoint, cache))
        assert result.returncode == 1, describe(result)
        assert "database is locked" in result.stderr, describe(result)
        assert "if another program has it open, close that program and mount again" in (
            result.stderr
        )
        assert "Traceback" not in result.stderr + result.stdout
        assert not is_mounted(mountpoint)
    finally:
        holder.close()
        unmount(mountpoint)
    with mounted([origin], mountpoint, cache) as mount:  # once it lets go
        assert mount.ready_status["tracks"] == 1
