"""Events through a real daemon: ``musicfs events`` and the SubscribeEvents stream.

A listener started with ``musicfs events --json`` sees what happens in the
mount as it happens: files opened, rescans, an origin going away and coming
back, and a damaged cached chunk. The damaged chunk is also the integrity
test of issue 3 with the origin present: the read reports it, drops it,
fetches the bytes again from the origin, and serves them right.
"""

from __future__ import annotations

import errno
import os
import signal
import time
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
from tests.e2e.test_federation import BUCKET, mount_with, s3_env, s3_origin
from tests.e2e.test_offline import JOGA, UNRAVEL, chunk_of
from tests.servers.s3 import S3Server

pytestmark = [pytest.mark.mount, pytest.mark.media]


def test_opens_rescans_and_origin_health_are_streamed(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        with listening(mount) as events:
            sha256_of(mount.mountpoint / render_path(specs[JOGA]))
            opened = events.wait_for(about("file.opened", JOGA))
            assert opened["origin"] == "music"
            assert opened["details"]["source"] == "origin"
            run_musicfs("status", str(mount.mountpoint))  # not an event
            os.kill(mount.pid, signal.SIGHUP)  # rescan
            events.wait_for(about("sync.started"))
            done = events.wait_for(about("sync.completed", complete=True))
            assert done["details"]["seen"] == 2
            origin.rename(tmp_path / "unplugged")
            try:
                down = events.wait_for(about("origin.health", online=False), timeout=60)
                assert down["origin"] == "music"
            finally:
                (tmp_path / "unplugged").rename(origin)
            events.wait_for(about("origin.health", online=True), timeout=60)
        assert not any(e["type"] == "chunk.corrupt" for e in events.seen)


def test_filters_by_type_and_origin(library: Library, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    specs = make_origin(library, first, [JOGA]) | make_origin(library, second, [UNRAVEL])
    with mounted([first, second], tmp_path / "mnt", tmp_path / "cache") as mount:
        unravel = mount.mountpoint / render_path(specs[UNRAVEL])
        with listening(mount, "--type", "file.opened", "--origin", "second") as events:
            sha256_of(mount.mountpoint / render_path(specs[JOGA]))
            sha256_of(unravel)
            events.wait_for(about("file.opened", UNRAVEL))
            before = mount.status()
            os.kill(mount.pid, signal.SIGHUP)  # sync.* events for both origins
            mount.wait_for_scan(after=before)
            sha256_of(unravel)
            # Events arrive in order: anything the filter let through by mistake
            # came before this second open of UNRAVEL.
            events.wait_for(about("file.opened", UNRAVEL), count=2)
        shown = [(e["type"], e["origin"], e["path"]) for e in events.seen]
        assert shown == [("file.opened", "second", UNRAVEL)] * 2, shown


def test_bad_filters_and_no_daemon_are_clear_errors(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    make_origin(library, origin, [JOGA])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        bad_type = run_musicfs("events", str(mount.mountpoint), "--type", "chunk.broken")
        assert bad_type.returncode == 2, describe(bad_type)
        assert "chunk.broken" in bad_type.stderr
        assert "chunk.corrupt" in bad_type.stderr
        bad_origin = run_musicfs("events", str(mount.mountpoint), "--origin", "nowhere")
        assert bad_origin.returncode == 2, describe(bad_origin)
        assert "nowhere" in bad_origin.stderr
        assert "music" in bad_origin.stderr
    gone = run_musicfs("events", str(tmp_path / "mnt"))
    assert gone.returncode == 3, describe(gone)
    assert "is it mounted?" in gone.stderr or "no MusicFS daemon" in gone.stderr


def test_a_damaged_chunk_is_reported_dropped_and_fetched_again(
    library: Library, s3: S3Server, tmp_path: Path
) -> None:
    """Issue 3, integrity: a remote file's cached copy is served from the cache;
    flip a byte in one of its chunks and the next read reports a chunk.corrupt
    event (and a log line), drops the chunk, reads the origin again and returns
    the right bytes. Then a copy is made again."""
    track = library.find(JOGA)
    s3.put_many(BUCKET, {f"lib/{JOGA}": track.path.read_bytes()})
    config = write_config(tmp_path / "config.toml", [s3_origin(s3)])
    cache = tmp_path / "cache"
    with mount_with(config, tmp_path / "mnt", cache, s3_env(s3)) as mount:
        virtual = mount.mountpoint / render_path(track.spec)
        assert sha256_of(virtual) == track.sha256
        wait_until(lambda: mount.status()["cached_files"] >= 1, timeout=30, what="caching")
        chunk = chunk_of(cache, JOGA)
        chunk.flip_byte(1000)
        damaged_at = chunk.place()
        forget_pages(virtual)
        with listening(mount, "--type", "chunk.corrupt") as events:
            assert sha256_of(virtual) == track.sha256, "wrong bytes after a damaged chunk"
            corrupt = events.wait_for(about("chunk.corrupt", JOGA))
        assert corrupt["origin"] == "cloud"
        # Dropped (and perhaps stored afresh already: a place is never used twice).
        assert chunk.place() != damaged_at, "the damaged chunk was kept"
        log = (cache / "musicfs.log").read_text()
        assert "corrupt" in log
        forget_pages(virtual)
        assert sha256_of(virtual) == track.sha256  # from the origin, or the copy made again
        wait_until(chunk.exists, timeout=30, what="the chunk to be cached again")
        s3.stop()
        forget_pages(virtual)
        assert sha256_of(virtual) == track.sha256  # the new copy, origin gone


def test_a_damaged_chunk_with_the_origin_gone_fails_with_eio_and_an_event(
    library: Library, tmp_path: Path
) -> None:
    origin, cache = tmp_path / "music", tmp_path / "cache"
    specs = make_origin(library, origin, [JOGA])
    with mounted([origin], tmp_path / "mnt", cache) as mount:
        virtual = mount.mountpoint / render_path(specs[JOGA])
        sha256_of(virtual)
        wait_until(lambda: mount.status()["cached_files"] >= 1, timeout=30, what="caching")
        chunk_of(cache, JOGA).flip_byte(0)
        forget_pages(virtual)
        with listening(mount, "--type", "chunk.corrupt") as events:
            origin.rename(tmp_path / "unplugged")
            try:
                assert errno_of(lambda: sha256_of(virtual)) == errno.EIO
                events.wait_for(about("chunk.corrupt", JOGA))
            finally:
                (tmp_path / "unplugged").rename(origin)


def test_a_stalled_listener_loses_events_but_never_slows_the_mount(
    library: Library, tmp_path: Path
) -> None:
    """A consumer that stops reading (SIGSTOP) fills its bounded queue; then events
    for it are dropped and counted, and opens and reads go on at full speed."""
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        path = mount.mountpoint / render_path(specs[JOGA])
        expected = sha256_of(path)
        with listening(mount, "--type", "file.opened") as events:
            events.process.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                opens = 0
                while mount.status()["events_dropped"] == 0:
                    for _ in range(500):
                        os.close(os.open(path, os.O_RDONLY))
                    opens += 500
                    assert opens <= 20_000, "no event was ever dropped: is the queue unbounded?"
                took = time.monotonic() - started
                assert sha256_of(path) == expected
            finally:
                events.process.send_signal(signal.SIGCONT)
        print(f"{opens} opens in {took:.2f} s with a stalled listener")
        assert took / opens < 0.01, "opens were held up by the stalled listener"
