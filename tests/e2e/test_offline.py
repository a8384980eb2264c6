"""Offline (NFR-7.1): an album that was read keeps playing when its origin goes away.

Files read through the mount are copied into the content cache in the
background. Then the origin disappears (its folder is renamed away, as when a
disk is unplugged): browsing and stat still work, the files that were read come
back byte for byte from the cache, a file never read fails with EIO at once,
and the mount reports DEGRADED. When the origin returns, the daemon notices by
itself, and live changes are followed again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import sqlite3
import wave
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    describe,
    errno_of,
    forget_pages,
    mounted,
    run_musicfs,
    sha256_of,
    wait_until,
)
from tests.e2e.library import Library, make_origin, render_path

pytestmark = [pytest.mark.mount, pytest.mark.media]

JOGA = "Björk/Homogenic/01 Jóga.flac"
UNRAVEL = "Björk/Homogenic/02 Unravel.flac"
SVEFN = "Sigur Rós/svefn-g-englar.mp3"
HIKARI = "jp/光.opus"


def test_read_album_survives_the_origin_going_away(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL, SVEFN])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        album = {rel: mount.mountpoint / render_path(specs[rel]) for rel in (JOGA, UNRAVEL)}
        never_read = mount.mountpoint / render_path(specs[SVEFN])
        played = {rel: sha256_of(path) for rel, path in album.items()}
        wait_until(lambda: mount.status()["cached_files"] >= 2, timeout=30,
                   what="the album to be cached")  # fmt: skip
        for path in album.values():
            forget_pages(path)

        origin.rename(tmp_path / "unplugged")
        try:
            assert sorted(os.listdir(album[JOGA].parent)) == sorted(p.name for p in album.values())
            for rel, path in album.items():
                assert path.stat().st_size == (tmp_path / "unplugged" / rel).stat().st_size
                assert sha256_of(path) == played[rel], f"{path.name}: wrong bytes from the cache"
            assert errno_of(lambda: sha256_of(never_read)) == errno.EIO
            status = mount.status()
            assert status["state"] == "DEGRADED"
            assert status["origins"][0]["online"] is False
        finally:
            (tmp_path / "unplugged").rename(origin)

        wait_until(lambda: mount.status()["state"] == "READY", timeout=30, what="READY again")
        assert mount.status()["origins"][0]["online"] is True
        assert sha256_of(never_read) == sha256_of(origin / SVEFN)
        added = make_origin(library, origin, [HIKARI])
        target = mount.mountpoint / render_path(added[HIKARI])
        wait_until(target.exists, timeout=30, what="a change after the origin came back")


def test_passthrough_mode_keeps_no_copy(library: Library, tmp_path: Path) -> None:
    """``[cache] mode = "passthrough"`` (NFR-5.4): nothing is stored, so nothing
    is readable once the origin is gone."""
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA])
    env = {"MUSICFS_CACHE_MODE": "passthrough"}
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache", env=env) as mount:
        path = mount.mountpoint / render_path(specs[JOGA])
        sha256_of(path)
        forget_pages(path)
        assert mount.status()["cached_files"] == 0
        origin.rename(tmp_path / "unplugged")
        try:
            assert errno_of(lambda: sha256_of(path)) == errno.EIO
        finally:
            (tmp_path / "unplugged").rename(origin)
    assert not (tmp_path / "cache" / "content").exists()


def test_a_damaged_chunk_is_never_served_and_verify_repairs(
    library: Library, tmp_path: Path
) -> None:
    """Integrity (NFR-8.1): flip one byte of a cached chunk, take the origin away:
    the damaged file fails with EIO (never wrong bytes), the others still play;
    the mount drops the copy and copies it again once the origin is back.
    ``musicfs cache verify`` reports and drops damage no read has met."""
    origin, cache = tmp_path / "music", tmp_path / "cache"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    with mounted([origin], tmp_path / "mnt", cache) as mount:
        paths = {rel: mount.mountpoint / render_path(specs[rel]) for rel in (JOGA, UNRAVEL)}
        played = {rel: sha256_of(path) for rel, path in paths.items()}
        wait_until(lambda: mount.status()["cached_files"] >= 2, timeout=30, what="caching")
        # Not behind the running daemon's back: it copies and evicts meanwhile.
        refused = run_musicfs("cache", "verify", "--cache-dir", cache)
        assert refused.returncode == 2, describe(refused)
        assert "musicfs cache verify MOUNTPOINT" in refused.stderr
        assert "Traceback" not in refused.stderr
        chunk_of(cache, JOGA).flip_byte(1000)
        for path in paths.values():
            forget_pages(path)
        origin.rename(tmp_path / "unplugged")
        try:
            assert errno_of(lambda: sha256_of(paths[JOGA])) == errno.EIO
            assert sha256_of(paths[UNRAVEL]) == played[UNRAVEL]
        finally:
            (tmp_path / "unplugged").rename(origin)
        wait_until(lambda: mount.status()["cached_files"] == 2, timeout=60,
                   what="the damaged copy to be copied again")  # fmt: skip
    chunk_of(cache, UNRAVEL).flip_byte(1000)
    first = run_musicfs("cache", "verify", "--cache-dir", cache, "--json")
    assert first.returncode == 1, describe(first)
    report = json.loads(first.stdout)
    assert report["catalog"] == "ok"
    assert report["cached_files_dropped"] == 1
    assert report["cached_files_kept"] == 1
    again = run_musicfs("cache", "verify", "--cache-dir", cache)
    assert again.returncode == 0, describe(again)


def test_a_cached_header_damaged_on_disk_is_never_served(library: Library, tmp_path: Path) -> None:
    """Headers (L2) are verified like chunks: one flipped bit in a cached
    header, on disk, gives EIO offline (never wrong tags), and verify names it."""
    origin, cache, mnt = tmp_path / "music", tmp_path / "cache", tmp_path / "mnt"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    with mounted([origin], mnt, cache) as mount:
        paths = {rel: mount.mountpoint / render_path(specs[rel]) for rel in (JOGA, UNRAVEL)}
        played = {rel: sha256_of(path) for rel, path in paths.items()}
        wait_until(lambda: mount.status()["cached_files"] >= 2, timeout=30, what="caching")
    database = cache / "content" / "manifests.sqlite3"
    with contextlib.closing(sqlite3.connect(database)) as db:
        (header,) = db.execute("SELECT header FROM manifests WHERE relpath = ?", (JOGA,)).fetchone()
    data = bytearray(database.read_bytes())
    piece = bytes(header[:64])  # fLaC, STREAMINFO with the audio's MD5: this file's own
    at = data.find(piece)
    assert data.count(piece) == 1, "the header must lie in the file once"
    data[at + 30] ^= 0x01  # a bit of the MD5 in STREAMINFO
    database.write_bytes(bytes(data))

    # The origin away from the start: the damaged copy cannot be copied again.
    origin.rename(tmp_path / "unplugged")
    no_scan = {"MUSICFS_SCAN_ON_START": "false"}
    try:
        with mounted([origin], mnt, cache, wait_scan=False, env=no_scan) as mount:
            assert errno_of(lambda: sha256_of(paths[JOGA])) == errno.EIO
            assert sha256_of(paths[UNRAVEL]) == played[UNRAVEL]
            assert mount.status()["cached_files"] == 1
    finally:
        (tmp_path / "unplugged").rename(origin)
    # (The mount above dropped the damaged copy when it met it; damage it is not
    # here any more, so verify finds the cache sound.)
    again = run_musicfs("cache", "verify", "--cache-dir", cache, "--json")
    assert again.returncode == 0, describe(again)
    assert json.loads(again.stdout)["cached_files_kept"] == 1


@dataclass(frozen=True)
class StoredChunk:
    """A payload chunk of a cached file, where the chunk store's index places it."""

    cache: Path
    digest: str

    def place(self) -> tuple[Path, int, int] | None:
        """(file holding it, offset, size); None while the store does not list it."""
        index = self.cache / "content" / "chunks" / "index.sqlite3"
        with contextlib.closing(sqlite3.connect(f"file:{index}?mode=ro", uri=True)) as db:
            row = db.execute(
                "SELECT pack, offset, size FROM chunks WHERE hash = ?", (self.digest,)
            ).fetchone()
        if row is None:
            return None
        pack, offset, size = row
        store = self.cache / "content" / "chunks"
        if pack is None:  # a store from before pack files
            return store / "chunks" / self.digest[:2] / self.digest[2:4] / self.digest, 0, size
        return store / "packs" / f"{pack:08d}.pack", offset, size

    def exists(self) -> bool:
        return self.place() is not None

    def flip_byte(self, at: int) -> None:
        """Damage the stored chunk: invert the bits of its byte *at* (from its start)."""
        place = self.place()
        assert place is not None, f"chunk {self.digest} is not stored"
        path, offset, size = place
        with open(path, "r+b") as fh:
            fh.seek(offset + at % size)
            byte = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte[0] ^ 0xFF]))


def chunk_of(cache: Path, relpath: str) -> StoredChunk:
    """The first payload chunk of *relpath*'s cached copy."""
    with sqlite3.connect(cache / "content" / "manifests.sqlite3") as db:
        row = db.execute("SELECT chunks FROM manifests WHERE relpath = ?", (relpath,)).fetchone()
    return StoredChunk(cache, str(row[0]).split(",")[0].rsplit(":", 1)[1])


def test_backup_restore_round_trip_through_the_cli(library: Library, tmp_path: Path) -> None:
    """``musicfs cache backup`` while mounted, lose the cache, ``cache restore``:
    the next mount serves the tree at once and the cached album offline."""
    origin, cache, mnt = tmp_path / "music", tmp_path / "cache", tmp_path / "mnt"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    backup = tmp_path / "musicfs.tar"
    with mounted([origin], mnt, cache) as mount:
        played = sha256_of(mount.mountpoint / render_path(specs[JOGA]))
        wait_until(lambda: mount.status()["cached_files"] >= 1, timeout=30, what="caching")
        made = run_musicfs("cache", "backup", backup, mnt)
        assert made.returncode == 0, describe(made)
        refused = run_musicfs("cache", "restore", backup, "--cache-dir", cache)
        assert refused.returncode == 2, describe(refused)
        assert "unmount" in refused.stderr
    (cache / "catalog.sqlite3").write_bytes(b"lost")
    for path in (cache / "content").rglob("*.sqlite3*"):
        path.unlink()
    restored = run_musicfs("cache", "restore", backup, "--cache-dir", cache)
    assert restored.returncode == 0, describe(restored)
    origin.rename(tmp_path / "unplugged")
    no_scan = {"MUSICFS_SCAN_ON_START": "false"}
    try:
        with mounted([origin], mnt, cache, wait_scan=False, env=no_scan) as mount:
            path = mount.mountpoint / render_path(specs[JOGA])
            assert sha256_of(path) == played
            assert mount.status()["tracks"] == 2
    finally:
        (tmp_path / "unplugged").rename(origin)


def write_noise_wav(path: Path, seed: int, seconds: float = 4.0) -> None:
    """A WAV of random samples: its payload does not compress or dedup."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(random.Random(seed).randbytes(int(44100 * seconds) * 4))


def test_eviction_keeps_the_cache_under_its_limit(tmp_path: Path) -> None:
    """``[cache] limit``: least recently used copies go first; the store never
    grows past the limit by more than one chunk; a copy that lost chunks to
    eviction is no longer counted as cached."""
    origin, cache = tmp_path / "music", tmp_path / "cache"
    names = ["first.wav", "second.wav", "third.wav"]  # about 700 KB each
    for seed, name in enumerate(names):
        write_noise_wav(origin / name, seed)
    env = {"MUSICFS_CACHE_LIMIT": "1MiB"}
    with mounted([origin], tmp_path / "mnt", cache, env=env) as mount:
        album = mount.mountpoint / "Unknown Artist" / "Unknown Album (0000) [WAV]"
        paths = {name: album / f"00 - {name}" for name in names}
        for name in names:
            sha256_of(paths[name])

            def cached(relpath: str = name) -> bool:
                database = cache / "content" / "manifests.sqlite3"
                with contextlib.closing(sqlite3.connect(database)) as db:
                    row = db.execute("SELECT 1 FROM manifests WHERE relpath = ?", (relpath,))
                    return row.fetchone() is not None

            wait_until(cached, timeout=30, what=f"{name} to be cached")
            # Now, while it is cached whole: opening a file whose copy was evicted
            # copies it again, which would undo the eviction this test looks for.
            forget_pages(paths[name])
        # Bytes on disk: an evicted chunk's bytes are freed by a hole in its pack.
        packs = (cache / "content" / "chunks").rglob("*.pack")
        stored = sum(p.stat().st_blocks * 512 for p in packs)
        assert stored <= 1024 * 1024 + 256 * 1024
        # Only the last copy is whole (two do not fit): the count says so.
        assert mount.status()["cached_files"] == 1
        origin.rename(tmp_path / "unplugged")
        try:
            assert errno_of(lambda: sha256_of(paths["first.wav"])) == errno.EIO  # evicted
            assert sha256_of(paths["third.wav"]) == sha256_of(tmp_path / "unplugged" / "third.wav")
        finally:
            (tmp_path / "unplugged").rename(origin)
