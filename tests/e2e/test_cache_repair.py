"""A damaged cached copy is repaired by itself (issue 13.8).

A read that meets a damaged chunk never serves it; the copy is dropped at
once, so ``status`` no longer counts it as cached, and when its origin answers
(at once, or once it is back) the file is copied into the cache again in the
background, every damaged chunk of it afresh, so it plays offline again. The
origin is a mounted share (``nfs://``, polled only hourly here), so cached
files are read from the cache, as a NAS's are.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.helpers import errno_of, forget_pages, mounted, sha256_of, wait_until
from tests.e2e.test_cache_verify import share_config
from tests.e2e.test_offline import StoredChunk, write_noise_wav

pytestmark = [pytest.mark.mount]


def chunks_of(cache: Path, relpath: str) -> list[StoredChunk]:
    """The payload chunks of *relpath*'s cached copy, in order ([] if not cached)."""
    database = cache / "content" / "manifests.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT chunks FROM manifests WHERE relpath = ?", (relpath,)).fetchone()
    if row is None:
        return []
    return [StoredChunk(cache, item.rsplit(":", 1)[1]) for item in str(row[0]).split(",")]


@pytest.mark.parametrize("origin", ["away", "online"])
def test_a_damaged_copy_is_dropped_and_copied_again_from_its_origin(
    tmp_path: Path, origin: str
) -> None:
    """*away*: the damage is found while the share is gone (the read fails with
    EIO) and repaired when it is back; *online*: the read fails over to the
    share, and the copy is repaired at once."""
    share, away, cache = tmp_path / "share", tmp_path / "away", tmp_path / "cache"
    names = ["damaged.wav", "second.wav", "third.wav"]  # random samples: many chunks each
    for seed, name in enumerate(names):
        write_noise_wav(share / name, seed)
    origin_hash = {name: sha256_of(share / name) for name in names}
    config = share_config(tmp_path, share)
    with mounted([], tmp_path / "mnt", cache, "--config", str(config)) as mount:
        album = mount.mountpoint / "Unknown Artist" / "Unknown Album (0000) [WAV]"
        paths = {name: album / f"00 - {name}" for name in names}
        for path in paths.values():
            sha256_of(path)
        wait_until(lambda: mount.status()["cached_files"] == 3, timeout=30, what="caching")
        chunks = chunks_of(cache, "damaged.wav")
        assert len(chunks) > 3
        damaged = [chunks[0], chunks[len(chunks) // 2], chunks[-1]]  # a read meets the first
        for chunk in damaged:
            chunk.flip_byte(1000)
        for path in paths.values():
            forget_pages(path)

        if origin == "away":
            share.rename(away)
            try:
                assert errno_of(lambda: sha256_of(paths["damaged.wav"])) == errno.EIO
                # The damaged copy is no longer counted as cached; the others are.
                assert mount.status()["cached_files"] == 2
                assert sha256_of(paths["second.wav"]) == origin_hash["second.wav"]
            finally:
                away.rename(share)
        else:
            got = sha256_of(paths["damaged.wav"])
            assert got == origin_hash["damaged.wav"], "wrong bytes after the damage"

        def repaired() -> bool:
            whole = mount.status()["cached_files"] == 3
            return whole and all(chunk.exists() for chunk in damaged)

        wait_until(repaired, timeout=90, what="the damaged copy to be copied again")

        # Offline, the file plays from its new copy: every damaged chunk was replaced.
        share.rename(away)
        try:
            for path in paths.values():
                forget_pages(path)
            for name in names:
                assert sha256_of(paths[name]) == origin_hash[name], f"{name}: wrong bytes"
        finally:
            away.rename(share)
