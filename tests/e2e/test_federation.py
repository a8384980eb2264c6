"""Several origins as one library, through a real mount (issue 4, FR-13, NFR-13).

Local folders, a real S3 server (moto_server) and a real OpenSSH sshd, all on
127.0.0.1, mounted together: every file reads back identical to its source; a
track on two origins shows once and keeps reading when the preferred origin's
server is stopped in the middle of a read; an origin that is down at mount
time does not hold the mount up; and no secret shows anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.eventstream import about, listening
from tests.e2e.helpers import (
    Mount,
    assert_no_secret_shown,
    mounted,
    wait_until,
    walk_files,
    write_config,
)
from tests.e2e.library import BuiltTrack, Library, render_path
from tests.servers.s3 import S3Server
from tests.servers.sshd import SSHServer, sshd_server

pytestmark = [pytest.mark.mount, pytest.mark.media]

BUCKET = "music"


def sftp_origin(server: SSHServer, **more: object) -> dict[str, object]:
    return {"id": "ssh", "path": f"sftp://{server.user}@127.0.0.1:{server.port}{server.root}",
            "key_file": server.key_file, "known_hosts": server.known_hosts, "timeout": 3,
            **more}  # fmt: skip


def s3_origin(server: S3Server, prefix: str = "lib", **more: object) -> dict[str, object]:
    return {"id": "cloud", "path": f"s3://{BUCKET}/{prefix}", "endpoint_url": server.endpoint_url,
            "timeout": 3, **more}  # fmt: skip


def s3_env(server: S3Server, origin_id: str = "cloud") -> dict[str, str]:
    name = origin_id.upper()
    return {f"MUSICFS_SECRET_{name}_ACCESS_KEY": server.access_key,
            f"MUSICFS_SECRET_{name}_SECRET_KEY": server.secret_key}  # fmt: skip


def mount_with(
    config: Path, mnt: Path, cache: Path, env: dict[str, str], *, wait_scan: bool = True
) -> contextlib.AbstractContextManager[Mount]:
    return mounted([], mnt, cache, "--config", str(config), wait_scan=wait_scan, env=env)


def unique_tracks(library: Library) -> list[BuiltTrack]:
    """Tracks that have their template path to themselves (no ``(2)`` names)."""
    return [group[0] for group in library.groups().values() if len(group) == 1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_local_s3_and_sftp_as_one_library(library: Library, s3: S3Server, tmp_path: Path) -> None:
    tracks = unique_tracks(library)
    local_tracks, s3_tracks, ssh_tracks = tracks[0::3], tracks[1::3], tracks[2::3]
    local = tmp_path / "local"
    for track in local_tracks:
        (local / track.spec.relpath).parent.mkdir(parents=True, exist_ok=True)
        (local / track.spec.relpath).write_bytes(track.path.read_bytes())
    s3.put_many(BUCKET, {f"lib/{t.spec.relpath}": t.path.read_bytes() for t in s3_tracks})
    remote = tmp_path / "remote"
    for track in ssh_tracks:
        (remote / track.spec.relpath).parent.mkdir(parents=True, exist_ok=True)
        (remote / track.spec.relpath).write_bytes(track.path.read_bytes())
    with sshd_server(remote) as sshd:
        config = write_config(tmp_path / "config.toml", [
            {"id": "disk", "path": str(local)}, s3_origin(s3), sftp_origin(sshd),
        ])  # fmt: skip
        with mount_with(config, tmp_path / "mnt", tmp_path / "cache", s3_env(s3)) as mount:
            assert sorted(o["id"] for o in mount.status()["origins"]) == ["cloud", "disk", "ssh"]
            for track in tracks:
                virtual = mount.mountpoint / render_path(track.spec)
                assert virtual.stat().st_size == track.path.stat().st_size, virtual
                assert digest(virtual) == track.sha256, f"{virtual}: wrong bytes"


def _read_slowly_with_failover(virtual: Path, sshd: SSHServer) -> bytes:
    """Read *virtual* in 64 KiB requests, stopping the sshd half way."""
    size = virtual.stat().st_size
    out = bytearray()
    fd = os.open(virtual, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead past our requests
        while len(out) < size // 2:
            out += os.pread(fd, 65536, len(out))
        sshd.stop()
        while len(out) < size:
            block = os.pread(fd, 65536, len(out))
            if not block:
                break
            out += block
    finally:
        os.close(fd)
    return bytes(out)


def test_a_read_fails_over_to_another_origin_when_the_sshd_stops(tmp_path: Path) -> None:
    # Larger than the sftp origin's read-ahead window (4 MiB), so the second
    # half must really be fetched after the stop.
    source = tmp_path / "long.flac"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anoisesrc=d=40:c=white:r=96000:a=1",
         "-sample_fmt", "s32", "-metadata", "title=Long", "-metadata", "artist=Noise",
         "-metadata", "album=Failover", str(source)],
        check=True,
    )  # fmt: skip
    assert source.stat().st_size > 10 * 1024 * 1024
    local, remote = tmp_path / "local", tmp_path / "remote"
    for root in (local, remote):
        root.mkdir()
        shutil.copy(source, root / "long.flac")
    with sshd_server(remote) as sshd:
        # passthrough: no cached copy to fall back on, so the bytes after the
        # stop can only come from the other origin.
        config = write_config(tmp_path / "config.toml", [
            sftp_origin(sshd, priority=0), {"id": "disk", "path": str(local), "priority": 1},
        ], {"cache": {"mode": "passthrough"}})  # fmt: skip
        with mount_with(config, tmp_path / "mnt", tmp_path / "cache", {}) as mount:
            shown = walk_files(mount.mountpoint)
            assert len(shown) == 1, f"the track on two origins must show once: {shown}"
            virtual = mount.mountpoint / shown.pop()
            data = _read_slowly_with_failover(virtual, sshd)
            assert data == source.read_bytes()
            log = (mount.cache_dir / "musicfs.log").read_text()
            assert "failing over" in log, "the read never went to the sftp origin"
            health = {o["id"]: o["online"] for o in mount.status()["origins"]}
            assert health == {"ssh": False, "disk": True}


def test_an_origin_that_is_down_at_mount_time_does_not_delay_the_mount(
    library: Library, tmp_path: Path
) -> None:
    track, other = unique_tracks(library)[:2]
    local, remote = tmp_path / "local", tmp_path / "remote"
    (local / track.spec.relpath).parent.mkdir(parents=True, exist_ok=True)
    (local / track.spec.relpath).write_bytes(track.path.read_bytes())
    (remote / other.spec.relpath).parent.mkdir(parents=True, exist_ok=True)
    (remote / other.spec.relpath).write_bytes(other.path.read_bytes())
    with sshd_server(remote) as sshd:
        sshd.stop()
        # A long origin timeout: if mounting waited on it, it would take 30 s.
        config = write_config(tmp_path / "config.toml", [
            {"id": "disk", "path": str(local)}, sftp_origin(sshd, timeout=30),
        ])  # fmt: skip
        started = time.monotonic()
        with mount_with(config, tmp_path / "mnt", tmp_path / "cache", {},
                        wait_scan=False) as mount:  # fmt: skip
            took = time.monotonic() - started
            assert took < 10, f"mount took {took:.1f} s with an origin down"
            local_file = mount.mountpoint / render_path(track.spec)
            wait_until(local_file.exists, timeout=30, what="the local origin's track")
            assert digest(local_file) == track.sha256
            sshd.start()
            remote_file = mount.mountpoint / render_path(other.spec)
            wait_until(remote_file.exists, timeout=60, what="the sftp origin's track, once up")
            assert digest(remote_file) == other.sha256


def test_no_secret_appears_in_logs_status_errors_or_the_process_list(
    library: Library, s3: S3Server, tmp_path: Path
) -> None:
    track = unique_tracks(library)[0]
    s3.put(BUCKET, f"lib/{track.spec.relpath}", track.path.read_bytes())
    access_key, secret_key = s3.require_signatures()
    wrong = "not-the-real-secret-0123456789"
    config = write_config(tmp_path / "config.toml", [
        s3_origin(s3), s3_origin(s3, prefix="lib") | {"id": "broken"},
    ], log_level="debug")  # fmt: skip
    env = {"MUSICFS_SECRET_CLOUD_ACCESS_KEY": access_key, "MUSICFS_SECRET_CLOUD_SECRET_KEY":
           secret_key, "MUSICFS_SECRET_BROKEN_ACCESS_KEY": access_key,
           "MUSICFS_SECRET_BROKEN_SECRET_KEY": wrong}  # fmt: skip
    # The broken origin keeps the mount DEGRADED: wait for the good one's track.
    with mount_with(config, tmp_path / "mnt", tmp_path / "cache", env, wait_scan=False) as mount:
        virtual = mount.mountpoint / render_path(track.spec)
        wait_until(virtual.exists, timeout=60, what="the S3 origin's track")
        assert digest(virtual) == track.sha256
        wait_until(lambda: "broken" in (mount.cache_dir / "musicfs.log").read_text(),
                   timeout=30, what="the broken origin to be tried")  # fmt: skip
        assert_no_secret_shown(mount, secret_key, wrong)
        with listening(mount) as events:  # events carry error messages too
            os.kill(mount.pid, signal.SIGHUP)
            failed = events.wait_for(about("sync.completed", complete=False), timeout=60)
            assert failed["origin"] == "broken"
            assert failed["details"]["error"], "the failed scan's event says nothing"
    for number, secret in enumerate((secret_key, wrong), 1):
        leaked = secret in json.dumps(events.seen)
        assert not leaked, f"secret #{number} appears in an event"


def test_a_frozen_s3_origin_makes_the_mount_degraded_at_once(
    library: Library, s3: S3Server, tmp_path: Path
) -> None:
    """The S3 server stops answering (SIGSTOP) and a rescan runs into it: from
    the moment ``status`` says an origin is offline, the mount is DEGRADED,
    whatever the scan is still doing (issue 13.13: it said SYNCING for seconds).
    Two origins on the one server: the scan of the second goes on after the
    first was found offline."""
    tracks = unique_tracks(library)[:4]
    prefixes = ["lib", "lib", "more", "more"]
    s3.put_many(BUCKET, {f"{prefix}/{t.spec.relpath}": t.path.read_bytes()
                         for prefix, t in zip(prefixes, tracks, strict=True)})  # fmt: skip
    config = write_config(tmp_path / "config.toml", [
        s3_origin(s3), s3_origin(s3, prefix="more") | {"id": "cloud2"},
    ])  # fmt: skip
    env = s3_env(s3) | s3_env(s3, "cloud2")
    with mount_with(config, tmp_path / "mnt", tmp_path / "cache", env) as mount:
        assert mount.status()["state"] == "READY"
        samples: list[tuple[str, dict[str, bool]]] = []  # (state, origin -> online)

        def degraded() -> bool:
            status = mount.status()
            samples.append((status["state"], {o["id"]: o["online"] for o in status["origins"]}))
            return bool(status["state"] == "DEGRADED")

        s3.freeze()
        try:
            os.kill(mount.pid, signal.SIGHUP)  # a rescan, which runs into the frozen server
            wait_until(degraded, timeout=120, what="the mount to say DEGRADED")
            for _ in range(20):  # and it stays so while the scan goes on
                degraded()
        finally:
            s3.thaw()
        offline = [state for state, online in samples if not all(online.values())]
        assert offline, f"no sample saw an origin offline: {samples}"
        assert set(offline) == {"DEGRADED"}, f"an origin offline, yet the mount said: {samples}"
