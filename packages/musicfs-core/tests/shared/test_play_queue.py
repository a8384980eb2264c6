"""Plays a mount queues for the shared catalog (`PlayQueue`, issue 16.6): kept
in a file across restarts and outages, sent when the server answers, bounded
(the oldest dropped beyond the limit), none lost by a failed send."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from musicfs.core.mount.shared import PlayQueue
from musicfs.core.shared.errors import SharedCatalogUnavailable
from tests.servers.postgres import PostgresServer
from tests.servers.replicas import Machine, scanned


def test_plays_queued_through_an_outage_are_sent_when_the_server_is_back(
    machines: tuple[Machine, Machine], postgres: PostgresServer, tmp_path: Path
) -> None:
    a, b = machines
    (track,) = a.shared.write_scan_batch([scanned("Björk/Jóga.flac")])
    b.follow()
    queue = PlayQueue(tmp_path / "plays.sqlite")
    queue.add([(track, 1000.0)])
    postgres.stop("immediate")
    try:
        queue.add([(track, 2000.0)])
        with pytest.raises(SharedCatalogUnavailable, match="is unavailable"):
            queue.send(a.shared)
        assert len(queue) == 2  # nothing lost by the failed send
        queue.close()
        queue = PlayQueue(tmp_path / "plays.sqlite")  # the mount restarted meanwhile
        assert len(queue) == 2
    finally:
        postgres.start()
    assert queue.send(a.shared) == 2
    assert len(queue) == 0
    b.follow()
    assert b.catalog.play_stats(track) == (2, 2000.0)
    queue.close()


def test_the_queue_is_bounded_dropping_the_oldest(tmp_path: Path) -> None:
    queue = PlayQueue(tmp_path / "plays.sqlite", limit=3)
    queue.add([(1, 1.0), (2, 2.0)])
    queue.add([(3, 3.0), (4, 4.0)])
    assert len(queue) == 3
    rows = queue._conn.execute("SELECT file_id FROM plays ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [2, 3, 4]
    queue.close()


class _Crash(Exception):
    """The daemon dying right after the server took a batch."""


def test_a_batch_sent_before_a_crash_is_counted_once_when_sent_again(
    machines: tuple[Machine, Machine], tmp_path: Path
) -> None:
    a, b = machines
    (track,) = a.shared.write_scan_batch([scanned("Björk/Jóga.flac")])
    b.follow()
    queue = PlayQueue(tmp_path / "plays.sqlite")
    queue.add([(track, 1000.0), (track, 2000.0)])
    sent = a.shared.add_plays

    def send_then_crash(*args: Any, **kwargs: Any) -> int:
        sent(*args, **kwargs)  # the server commits the batch...
        raise _Crash  # ...and the daemon dies before forgetting it

    a.shared.add_plays = send_then_crash  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        queue.send(a.shared)
    a.shared.add_plays = sent  # type: ignore[method-assign]
    queue.close()
    queue = PlayQueue(tmp_path / "plays.sqlite")  # the daemon started again
    queue.add([(track, 3000.0)])  # a play made since, in the next batch
    queue.send(a.shared)
    assert len(queue) == 0
    b.follow()
    # Each play counted once: two of the batch sent again, one new.
    assert b.catalog.play_stats(track) == (3, 3000.0)
    queue.close()
