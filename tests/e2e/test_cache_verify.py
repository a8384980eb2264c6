"""``musicfs cache verify MOUNTPOINT`` on a live mount (as ``zpool scrub`` does).

The daemon hashes every cached chunk while it goes on serving: a damaged chunk
is dropped, and the files whose cached copies needed it are copied again from
their origins; a file whose origin does not answer is dropped and named. Each
damaged copy is told as a ``chunk.corrupt`` event, as a read would tell it. The
origin is a mounted share (``nfs://``, polled only hourly here), so cached
files are read from the cache, on the FUSE thread, like a NAS's when it is
slow or away.
"""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import pytest

from tests.e2e.eventstream import about, listening
from tests.e2e.helpers import (
    describe,
    errno_of,
    forget_pages,
    mounted,
    run_musicfs,
    sha256_of,
    wait_until,
    write_config,
)
from tests.e2e.library import Library, make_origin, render_path
from tests.e2e.test_offline import JOGA, SVEFN, UNRAVEL, chunk_of

pytestmark = [pytest.mark.mount, pytest.mark.media]


def share_config(tmp_path: Path, share: Path) -> Path:
    return write_config(
        tmp_path / "config.toml",
        [{"id": "nas", "path": f"nfs://{share}"}],
        {"scan": {"poll_interval": 3600}},
    )


class Reader(threading.Thread):
    """Reads files through the mount again and again (past the kernel's page
    cache) until told to stop, then once more; records every hash it got."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.hashes: dict[Path, list[str]] = {path: [] for path in paths}
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        last_round = False
        while not last_round:
            last_round = self.stop.is_set()
            for path in self.paths:
                try:
                    forget_pages(path)
                    self.hashes[path].append(sha256_of(path))
                except OSError as exc:
                    self.errors.append(f"{path.name}: {exc}")


def test_live_verify_refetches_a_damaged_file_while_reads_go_on(
    library: Library, tmp_path: Path
) -> None:
    share, cache = tmp_path / "share", tmp_path / "cache"
    specs = make_origin(library, share, [JOGA, UNRAVEL, SVEFN])
    origin_hash = {rel: sha256_of(share / rel) for rel in specs}
    config = share_config(tmp_path, share)
    with mounted([], tmp_path / "mnt", cache, "--config", str(config)) as mount:
        paths = {rel: mount.mountpoint / render_path(spec) for rel, spec in specs.items()}
        for path in paths.values():
            sha256_of(path)
        wait_until(lambda: mount.status()["cached_files"] >= 3, timeout=30, what="caching")
        damaged = chunk_of(cache, JOGA)
        damaged.flip_byte(1000)

        reader = Reader([paths[UNRAVEL], paths[SVEFN]])
        reader.start()
        try:
            verify = run_musicfs("cache", "verify", mount.mountpoint, "--json")
        finally:
            reader.stop.set()
            reader.join()
        assert verify.returncode == 0, describe(verify)
        report = json.loads(verify.stdout)
        assert report["damaged_chunks"] == [damaged.digest]
        assert report["damaged_files"] == [f"nas/{JOGA}"]
        assert report["refetched"] == [f"nas/{JOGA}"]
        assert report["not_refetched"] == []
        assert report["catalog"] == "ok"
        assert report["checked"] == report["chunks"] > 1

        # Reads of the other files never stopped, nor got a wrong byte.
        assert reader.errors == []
        for rel in (UNRAVEL, SVEFN):
            got = reader.hashes[paths[rel]]
            assert got, f"{rel} was never read"
            assert set(got) == {origin_hash[rel]}, f"{rel}: wrong bytes during the verify"

        # The copy is whole again: read through the mount, also with the share away.
        assert damaged.exists()
        forget_pages(paths[JOGA])
        assert sha256_of(paths[JOGA]) == origin_hash[JOGA]
        share.rename(tmp_path / "away")
        try:
            forget_pages(paths[JOGA])
            assert sha256_of(paths[JOGA]) == origin_hash[JOGA], "the cached copy is wrong"
        finally:
            (tmp_path / "away").rename(share)


def test_live_verify_without_the_origin_drops_the_damaged_file_and_says_so(
    library: Library, tmp_path: Path
) -> None:
    share, cache = tmp_path / "share", tmp_path / "cache"
    specs = make_origin(library, share, [JOGA, UNRAVEL])
    origin_hash = {rel: sha256_of(share / rel) for rel in specs}
    config = share_config(tmp_path, share)
    with mounted([], tmp_path / "mnt", cache, "--config", str(config)) as mount:
        paths = {rel: mount.mountpoint / render_path(spec) for rel, spec in specs.items()}
        for path in paths.values():
            sha256_of(path)
        wait_until(lambda: mount.status()["cached_files"] >= 2, timeout=30, what="caching")
        damaged = chunk_of(cache, JOGA)
        damaged.flip_byte(1000)
        for path in paths.values():
            forget_pages(path)
        share.rename(tmp_path / "away")
        try:
            with listening(mount, "--type", "chunk.corrupt") as events:
                verify = run_musicfs("cache", "verify", mount.mountpoint)
                told = events.wait_for(about("chunk.corrupt", JOGA))
            assert "cache verify" in told["details"]["error"]
            assert verify.returncode == 1, describe(verify)
            assert "Traceback" not in verify.stderr
            assert f"damaged chunk: {damaged.digest}" in verify.stdout
            assert f"not re-fetched (dropped; copied again by the mount once its origin " \
                   f"answers): nas/{JOGA}: " in verify.stdout  # fmt: skip
            assert "re-fetched from its origin" not in verify.stdout
            assert not damaged.exists()
            # Never wrong bytes: the dropped file fails; the other one still plays.
            assert errno_of(lambda: sha256_of(paths[JOGA])) == errno.EIO
            assert sha256_of(paths[UNRAVEL]) == origin_hash[UNRAVEL]
        finally:
            (tmp_path / "away").rename(share)
        # Once the share is back, the mount copies the file again by itself.
        wait_until(lambda: mount.status()["cached_files"] == 2, timeout=90,
                   what="the dropped file to be copied again")  # fmt: skip
        share.rename(tmp_path / "away")
        try:
            forget_pages(paths[JOGA])
            assert sha256_of(paths[JOGA]) == origin_hash[JOGA], "the cached copy is wrong"
        finally:
            (tmp_path / "away").rename(share)
