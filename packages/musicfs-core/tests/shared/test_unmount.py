"""Unmounting a mount on a shared catalog (`SharedMount.stop`) takes a few
seconds at most, whatever PostgreSQL does: with the server gone silent (its
processes stopped, as a host that froze: no answer, no reset) and in the middle
of a first copy of a large catalog. The origin locks are free for another
machine once the server notices the session gone."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from musicfs.core.mount.shared import SharedMount
from musicfs.core.shared.connect import parse_url
from musicfs.core.shared.locks import OriginLocks
from tests.servers.postgres import PostgresServer
from tests.servers.replicas import Machine, running, scanned, shared_mount, wait_for

#: Far more than an unmount may take, far less than the TCP timeouts (20 s) or forever.
UNMOUNT_BOUND = 10.0


def _stops_in_time(mount: SharedMount) -> threading.Thread:
    """Unmount (`stop`) in a thread; the thread, joined for `UNMOUNT_BOUND` s."""
    stopping = threading.Thread(target=mount.stop, name="test-unmount", daemon=True)
    stopping.start()
    stopping.join(UNMOUNT_BOUND)
    return stopping


@pytest.mark.timeout(120)
def test_unmount_ends_in_seconds_with_the_server_gone_silent(
    machines: tuple[Machine, Machine], postgres: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    a, b = machines
    a.shared.write_scan_batch([scanned("x/song.flac")])
    b.follow()
    mount = shared_mount(postgres_url, b.catalog.path, tmp_path / "cache", ["nas"])

    def scenario() -> None:
        wait_for(lambda: mount.locks.held == {"nas"} and mount.current.healthy, timeout=30,
                 what="the mount to follow and scan its origin")  # fmt: skip
        with postgres.silent():
            stopping = _stops_in_time(mount)
            assert not stopping.is_alive(), "unmount waited for a silent server"
            assert not any(t.is_alive() for t in mount._threads)

    running(mount, scenario)
    # Once the server runs again it drops the session: another machine takes the origin.
    with OriginLocks(parse_url(postgres_url)) as other:
        wait_for(lambda: other.try_lock_origin("nas"), timeout=30,
                 what="the origin's lock to be free")  # fmt: skip


@pytest.mark.timeout(180)
def test_unmount_stops_a_first_copy_of_a_large_catalog(
    machines: tuple[Machine, Machine], postgres_url: str, tmp_path: Path
) -> None:
    a, _ = machines
    a.shared.write_scan_batch([scanned("x/song.flac")])
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # 100,000 tracks, at once
        admin.execute(
            "INSERT INTO tracks (origin, reldir, name, size, mtime_ns, format, scanned_at, "
            "title, artist, album) SELECT 'nas', 'd' || (i / 20), 't' || i || '.flac', 1000, 1, "
            "'flac', 0, 't' || i, 'artist ' || (i / 200), 'album ' || (i / 20) "
            "FROM generate_series(1, 100000) AS i"
        )
    mount = shared_mount(postgres_url, tmp_path / "c" / "catalog.sqlite3", tmp_path / "c", [])

    def scenario() -> None:
        wait_for(lambda: mount.copied > 0, timeout=60, what="the copy to start")
        stopping = _stops_in_time(mount)
        assert not stopping.is_alive(), "unmount waited for the copy"
        # The copy stopped with the mount (the next mount starts it over).
        assert not any(t.is_alive() for t in mount._threads), "the copy goes on"
        assert mount.copied < 100_001

    running(mount, scenario)
