"""A replica that follows the shared catalog by itself (`Follower`, the loop a
mount will run): a write on one machine shows on the other without anyone
asking; through a PostgreSQL outage the replica keeps what it has, the
follower says the server is unavailable, and it catches up when the server
is back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from musicfs.core.catalog.store import Catalog
from musicfs.core.shared.connect import parse_url
from musicfs.core.shared.feed import Applied, Follower, FollowerState, Listener
from musicfs.core.shared.store import SharedCatalog
from tests.servers.postgres import PostgresServer
from tests.servers.replicas import Machine, scanned, wait_for


@contextmanager
def following(
    machine: Machine, url: str, **options: float
) -> Iterator[tuple[Follower, list[Applied], list[FollowerState]]]:
    """A follower of *machine*'s replica running in a thread, stopped on exit."""
    applied: list[Applied] = []
    states: list[FollowerState] = []
    stop = threading.Event()
    errors: list[BaseException] = []
    catalog = Catalog.open(machine.catalog.path)  # the thread's own connection
    shared = SharedCatalog.open(url)
    listener = Listener(parse_url(url))
    follower = Follower(
        catalog, shared, listener, on_applied=applied.append, on_state=states.append, **options
    )

    def run() -> None:
        try:
            follower.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-follower")
    thread.start()
    try:
        yield follower, applied, states
    finally:
        stop.set()
        thread.join(timeout=30)
        listener.close()
        shared.close()
        catalog.close()
    assert not thread.is_alive(), "the follower did not stop"
    assert not errors, errors


def test_a_write_on_one_machine_reaches_a_following_replica_by_itself(
    machines: tuple[Machine, Machine], postgres_url: str
) -> None:
    a, b = machines
    with following(b, postgres_url, poll=600) as (follower, applied, _):
        wait_for(lambda: follower.state.healthy, timeout=30, what="the follower to start")
        (track,) = a.shared.write_scan_batch([scanned("x/song.flac", title="Song")])
        a.shared.set_overrides(track, {"genre": "Jazz"})
        # Woken by NOTIFY: the poll (600 s) would be far too late for this wait.
        wait_for(
            lambda: b.catalog.overrides(track) == {"genre": "Jazz"},
            timeout=30,
            what="the override on B",
        )
        assert track in set().union(*(round.changed for round in applied))
        assert follower.state.applied_seq == a.shared.last_seq()


@pytest.mark.timeout(180)
def test_a_following_replica_rides_out_an_outage_and_catches_up(
    machines: tuple[Machine, Machine], postgres: PostgresServer, postgres_url: str
) -> None:
    a, b = machines
    (track,) = a.shared.write_scan_batch([scanned("x/song.flac", title="Song")])
    with following(b, postgres_url, poll=600, retry=0.2, max_retry=1.0) as (follower, _, states):
        wait_for(lambda: b.catalog.track(track), timeout=30, what="the track on B")
        postgres.stop("immediate")
        try:
            wait_for(
                lambda: not follower.state.healthy,
                timeout=60,
                what="the follower to notice the outage",
            )
            assert f"127.0.0.1:{postgres.port}/" in follower.state.error
            assert b.catalog.track(track) is not None  # the replica keeps serving
        finally:
            postgres.start()
        a.shared.set_overrides(track, {"artist": "after"})
        wait_for(
            lambda: b.catalog.overrides(track) == {"artist": "after"},
            timeout=60,
            what="B to catch up",
        )
        assert follower.state.healthy
        assert [s.healthy for s in states][-2:] == [False, True]


def test_a_new_machine_following_copies_the_catalog_first(
    machines: tuple[Machine, Machine], postgres_url: str, tmp_path: Path
) -> None:
    a, _ = machines
    ids = a.shared.write_scan_batch([scanned(f"album/{n}.flac", title=f"T{n}") for n in range(5)])
    with (
        Machine(postgres_url, tmp_path / "c.sqlite3", bootstrapped=False) as c,
        following(c, postgres_url) as (follower, _, _),
    ):
        wait_for(lambda: follower.state.healthy, timeout=30, what="the copy")
        assert c.catalog.file_ids() == ids


def test_a_replica_copied_again_after_a_pruned_feed_hands_the_round_to_the_mount(
    machines: tuple[Machine, Machine], postgres_url: str
) -> None:
    """B was away while the feed was pruned (or the catalog migrated into after
    B had copied it empty): the follower copies it again, and the mount gets
    that round (tracks to re-place, overlays to make, removed ones to take out
    of the tree), even when no change follows the copy."""
    a, b = machines
    gone, kept = a.shared.write_scan_batch(
        [scanned("x/1.flac", title="One"), scanned("x/2.flac", title="Two")]
    )
    b.follow()
    a.shared.set_overrides(kept, {"genre": "Jazz"})
    a.shared.write_scan_batch([], removed=[gone])
    assert a.shared.prune_changes(older_than=0) > 0
    with following(b, postgres_url, poll=600) as (follower, applied, _):
        wait_for(lambda: follower.state.healthy, timeout=30, what="the follower to start")
        wait_for(lambda: applied, timeout=10, what="the round that copied B again")
        assert gone in applied[0].removed
        assert kept in applied[0].changed
