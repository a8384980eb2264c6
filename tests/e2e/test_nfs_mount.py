"""A mounted network share as an origin, through a real MusicFS mount (issue 4).

The share is `tests.servers.faultfs` (a FUSE passthrough that injects what a
failing NFS server does) and MusicFS mounts it as an ``nfs://`` origin. Checked
here: a track read while the share's file handles go stale (a server restart)
comes out byte for byte; while the share answers EIO, a file never read fails
with EIO at once, a file read before comes from the cache, nothing leaves the
tree and status says DEGRADED; a share that hangs costs a reader the request
timeout, never more; and once the share answers again the daemon recovers by
itself.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    Mount,
    describe,
    errno_of,
    forget_pages,
    mounted,
    require_fuse,
    require_tools,
    run_musicfs,
    sha256_of,
    wait_until,
    walk_files,
)
from tests.servers.faultfs import FaultFS, FaultFSError, fault_fs

pytestmark = [pytest.mark.mount, pytest.mark.media]

ORIGIN_ID = "nas"
TIMEOUT = 1.0  # the origin's timeout: FUSE requests on it give up after 3 * 1 + 5 s
REQUEST_TIMEOUT = 3 * TIMEOUT + 5
SLACK = 4.0  # what a request may take beyond the request timeout on a busy machine
BLOCK = 64 * 1024
RECOVERY_TIMEOUT = 90.0  # backoff between probes of an offline origin reaches 60 s

# relpath on the share -> (title, ffmpeg input, ffmpeg output options)
TRACKS = {
    "Noise/long.flac": ("Long", "anoisesrc=d=20:c=white:r=96000:a=1", ["-sample_fmt", "s32"]),
    "Tones/one.flac": ("One", "sine=frequency=440:duration=2", []),
    "Tones/two.mp3": ("Two", "sine=frequency=660:duration=2", ["-c:a", "libmp3lame"]),
}
LONG, ONE, TWO = TRACKS


@pytest.fixture(scope="module")
def nfs_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The share's content, encoded once (the long track: several MiB of FLAC)."""
    require_tools("ffmpeg")
    root = tmp_path_factory.mktemp("nfs-library")
    for number, (relpath, (title, source, options)) in enumerate(TRACKS.items(), 1):
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", source, *options,
             "-metadata", f"title={title}", "-metadata", "artist=Share",
             "-metadata", "album=Faults", "-metadata", f"track={number}", str(root / relpath)],
            check=True,
            timeout=120,
        )  # fmt: skip
    assert (root / LONG).stat().st_size > 4 * 1024 * 1024
    return root


@pytest.fixture
def share(nfs_library: Path, tmp_path: Path) -> Iterator[FaultFS]:
    """A copy of the library behind the fault filesystem (no faults yet)."""
    require_fuse()
    export = tmp_path / "export"
    shutil.copytree(nfs_library, export)
    with fault_fs(export, tmp_path / "share") as mounted_share:
        yield mounted_share


def write_config(path: Path, share: FaultFS, **sections: dict[str, object]) -> Path:
    """A config file with the share as the ``nfs://`` origin and *sections* ([scan]...)."""
    lines: list[str] = []
    for name, table in sections.items():
        lines += [f"[{name}]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    path_value = json.dumps(f"nfs://{share.mountpoint}")
    lines += ["[[origins]]", f'id = "{ORIGIN_ID}"', f"path = {path_value}", f"timeout = {TIMEOUT}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def nfs_mount(share: FaultFS, tmp_path: Path, **sections: dict[str, object]) -> Iterator[Mount]:
    """MusicFS mounted over the share, first scan done; always unmounted (before the share)."""
    config = write_config(tmp_path / "config.toml", share, **sections)
    with mounted([], tmp_path / "mnt", tmp_path / "cache", "--config", str(config)) as mount:
        try:
            yield mount
        finally:  # a test that failed mid-fault: let the daemon's requests finish first
            with contextlib.suppress(FaultFSError):
                share.clear()


def virtual(mount: Mount, share_relpath: str) -> Path:
    """Where the track at *share_relpath* shows in the mount (found by its title)."""
    title = TRACKS[share_relpath][0]
    found = [rel for rel in walk_files(mount.mountpoint) if f" - {title}." in rel]
    assert len(found) == 1, f"{title}: {found}"
    return mount.mountpoint / found[0]


def origin_status(mount: Mount) -> tuple[str, bool]:
    """(state of the mount, whether the share's origin is online), per ``musicfs status``."""
    status: dict[str, Any] = mount.status()
    (origin,) = status["origins"]
    assert (origin["id"], origin["type"]) == (ORIGIN_ID, "nfs")
    return status["state"], origin["online"]


def daemon_log(mount: Mount) -> str:
    return (mount.cache_dir / "musicfs.log").read_text(errors="replace")


def test_a_read_survives_the_share_going_stale(share: FaultFS, tmp_path: Path) -> None:
    source = (share.source / LONG).read_bytes()
    # passthrough: no cached copy to fall back on, the bytes can only come from the share.
    with nfs_mount(share, tmp_path, cache={"mode": "passthrough"}) as mount:
        path = virtual(mount, LONG)
        out = bytearray()
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead past our requests
            while len(out) < len(source) // 2:
                out += os.pread(fd, BLOCK, len(out))
            share.set(stale_handles=True)  # the NFS server restarted under the open file
            while block := os.pread(fd, BLOCK, len(out)):
                out += block
        finally:
            os.close(fd)
        assert bytes(out) == source
        assert share.stats()["estale"] >= 1, "the daemon's handle never went stale"
        log = daemon_log(mount)
        assert "is offline" not in log, log[-3000:]
        assert "failing over" not in log, log[-3000:]
        assert origin_status(mount)[1] is True


def test_an_eio_share_is_offline_then_recovers_by_itself(share: FaultFS, tmp_path: Path) -> None:
    # No prefetch: TWO follows ONE on their album, and must stay never read.
    with nfs_mount(
        share, tmp_path, scan={"poll_interval": 1}, prefetch={"enabled": False}
    ) as mount:
        tree = walk_files(mount.mountpoint)
        read_before, never_read = virtual(mount, ONE), virtual(mount, TWO)
        assert sha256_of(read_before) == sha256_of(share.source / ONE)
        wait_until(lambda: mount.status()["cached_files"] >= 1, timeout=30,
                   what="the track read to be cached")  # fmt: skip
        forget_pages(read_before)
        scans_before = daemon_log(mount).count("not scanning")

        share.set(eio=True)
        started = time.monotonic()
        assert errno_of(lambda: sha256_of(never_read)) == errno.EIO
        took = time.monotonic() - started
        assert took < REQUEST_TIMEOUT, f"a read of a failing share took {took:.1f} s"
        assert sha256_of(read_before) == sha256_of(share.source / ONE), "not from the cache"
        # (Not in a tight loop: each status call probes the share, and every failed
        # probe doubles the wait before the daemon's next one.)
        wait_until(lambda: origin_status(mount) == ("DEGRADED", False), timeout=10,
                   what="status DEGRADED with the share offline", interval=0.5)  # fmt: skip
        # A poll of the share while it fails removes nothing: offline is not gone.
        wait_until(lambda: daemon_log(mount).count("not scanning") > scans_before, timeout=30,
                   what="a poll of the failing share", interval=0.2)  # fmt: skip
        assert walk_files(mount.mountpoint) == tree

        share.clear()
        # No status call here (it would probe the share itself): the daemon's own
        # probes must find the share again.
        wait_until(lambda: errno_of(lambda: sha256_of(never_read)) is None,
                   timeout=RECOVERY_TIMEOUT, what="the share to be read again",
                   interval=0.5)  # fmt: skip
        assert sha256_of(never_read) == sha256_of(share.source / TWO)
        assert "is back online" in daemon_log(mount)
        wait_until(lambda: origin_status(mount) == ("READY", True), timeout=RECOVERY_TIMEOUT,
                   what="status READY with the share online", interval=0.5)  # fmt: skip
        assert walk_files(mount.mountpoint) == tree


def test_a_hung_share_costs_a_reader_the_request_timeout_not_more(
    share: FaultFS, tmp_path: Path
) -> None:
    with nfs_mount(share, tmp_path, cache={"mode": "passthrough"}) as mount:
        path = virtual(mount, TWO)
        share.set(delay=3 * REQUEST_TIMEOUT)  # the share answers nothing for longer than that
        started = time.monotonic()
        assert errno_of(lambda: sha256_of(path)) == errno.EIO
        took = time.monotonic() - started
        assert REQUEST_TIMEOUT - 1 < took < REQUEST_TIMEOUT + SLACK, f"gave up after {took:.1f} s"
        assert share.stats()["delayed"] >= 1
        # The share now counts as offline: the next reader is not kept waiting too.
        other = virtual(mount, ONE)
        started = time.monotonic()
        assert errno_of(lambda: sha256_of(other)) == errno.EIO
        assert time.monotonic() - started < SLACK
        assert origin_status(mount)[1] is False
        share.clear()
        expected = sha256_of(share.source / TWO)
        wait_until(lambda: errno_of(lambda: sha256_of(path)) is None, timeout=RECOVERY_TIMEOUT,
                   what="the share to be found again")  # fmt: skip
        assert sha256_of(path) == expected


def test_status_answers_while_the_share_hangs(share: FaultFS, tmp_path: Path) -> None:
    with nfs_mount(share, tmp_path) as mount:
        share.set(delay=60)
        started = time.monotonic()
        result = run_musicfs("status", mount.mountpoint, "--json", timeout=30)
        took = time.monotonic() - started
        assert result.returncode == 0, describe(result)
        assert took < REQUEST_TIMEOUT, f"status took {took:.1f} s"


def test_a_timed_out_open_leaves_no_file_open_on_the_share(share: FaultFS, tmp_path: Path) -> None:
    with nfs_mount(share, tmp_path, cache={"mode": "passthrough"}) as mount:
        path = virtual(mount, TWO)
        opened = share.stats()["opened"]
        share.set(delay=3 * REQUEST_TIMEOUT)
        assert errno_of(lambda: sha256_of(path)) == errno.EIO
        share.clear()  # the open the daemon gave up on goes through now
        wait_until(lambda: share.stats()["opened"] > opened, timeout=10,
                   what="the abandoned open to reach the share")  # fmt: skip
        wait_until(lambda: share.open_files() == 0, timeout=5,
                   what="no file open on the share")  # fmt: skip


def chunk_count(mount: Mount) -> int:
    """Audio chunks in the content cache, per ``musicfs cache stats``."""
    result = run_musicfs("cache", "stats", mount.mountpoint, "--json")
    assert result.returncode == 0, describe(result)
    (chunks,) = [t for t in json.loads(result.stdout)["tiers"] if t["tier"] == "l3"]
    return int(chunks["entries"])


def test_a_read_fails_over_to_the_cached_copy_mid_file(share: FaultFS, tmp_path: Path) -> None:
    source = (share.source / LONG).read_bytes()
    with nfs_mount(share, tmp_path, prefetch={"enabled": False}) as mount:
        path = virtual(mount, LONG)
        out = bytearray()
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            out += os.pread(fd, BLOCK, 0)  # opened from the share: the daemon copies it
            wait_until(lambda: mount.status()["cached_files"] >= 1, timeout=60,
                       what="a complete cached copy")  # fmt: skip
            share.set(eio=True)  # the share fails in the middle of the file
            while block := os.pread(fd, BLOCK, len(out)):
                out += block
        finally:
            os.close(fd)
        assert bytes(out) == source
        assert "now reading the cached copy" in daemon_log(mount)
        # Closed: the copy's chunks are no longer pinned, so clearing frees them all.
        share.clear()
        cleared = run_musicfs("cache", "clear", mount.mountpoint, "--scope", "chunks")
        assert cleared.returncode == 0, describe(cleared)
        assert chunk_count(mount) == 0
