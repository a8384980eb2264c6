"""Supervised background loops: a loop that raises is counted, shown and
restarted after a pause that doubles (1 s ... 60 s); one that works again is
shown recovered; unmounting (cancellation) is not a failure (issue 13.5)."""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading

import pytest
import trio
import trio.testing

from musicfs.core.supervise import Backoff, Supervisor


def test_backoff_doubles_up_to_the_longest_pause_and_resets() -> None:
    backoff = Backoff(1.0, 60.0)
    assert [backoff.next() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    backoff.reset()
    assert backoff.next() == 1.0


def test_backoff_refuses_pauses_that_make_no_sense() -> None:
    with pytest.raises(ValueError, match="first <= longest"):
        Backoff(10.0, 1.0)
    with pytest.raises(ValueError, match="0 < first"):
        Backoff(0.0, 1.0)


def test_a_failing_trio_loop_is_restarted_with_growing_pauses_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor()
    starts: list[float] = []

    async def loop() -> None:
        starts.append(trio.current_time())
        if len(starts) <= 3:
            raise sqlite3.OperationalError("database is locked")
        supervisor.ok("sync")  # a round went through
        # Status while it runs again: still listed, no longer failing.
        assert supervisor.failing == []
        [entry] = supervisor.snapshot()
        assert entry["failures"] == 3
        assert entry["last_error"] == "OperationalError: database is locked"
        assert entry["failing"] is False

    async def main() -> None:
        await supervisor.run("sync", loop)

    with caplog.at_level(logging.ERROR, logger="musicfs.core.supervise"):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # Started 4 times: pauses of 1, 2 and 4 s between them.
    assert [b - a for a, b in itertools.pairwise(starts)] == [1.0, 2.0, 4.0]
    failures = [r for r in caplog.records if "background task 'sync' failed" in r.getMessage()]
    assert len(failures) == 3
    assert all(r.exc_info is not None for r in failures)  # the traceback is in the log


def test_a_loop_that_fails_while_failing_is_shown_failing_and_degrades() -> None:
    supervisor = Supervisor()
    seen: list[list[str]] = []

    async def loop() -> None:
        seen.append(supervisor.failing)
        raise RuntimeError("boom")

    async def main() -> None:
        with trio.move_on_after(10):  # mock time: restarts at 1, 3 and 7 s
            await supervisor.run("health", loop)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert seen == [[], ["health"], ["health"], ["health"]]
    assert supervisor.snapshot()[0]["failures"] == 4


def test_unmounting_cancels_a_loop_without_counting_a_failure() -> None:
    supervisor = Supervisor()

    async def loop() -> None:
        await trio.sleep_forever()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.run, "watch music", loop)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert supervisor.snapshot() == []
    assert supervisor.failing == []


def test_a_loop_that_ends_is_not_restarted() -> None:
    supervisor = Supervisor()
    runs: list[int] = []

    async def loop() -> None:
        runs.append(1)

    trio.run(supervisor.run, "ready", loop)
    assert runs == [1]


def test_a_failing_thread_loop_is_restarted_until_stopped() -> None:
    supervisor = Supervisor(first=0.01, longest=0.02)
    stop = threading.Event()
    runs: list[int] = []

    def loop() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise OSError(28, "No space left on device")
        supervisor.ok("access log")

    supervisor.run_thread("access log", loop, stop)
    assert len(runs) == 3
    [entry] = supervisor.snapshot()
    assert (entry["failures"], entry["failing"]) == (2, False)
    assert entry["last_error"] == "OSError: [Errno 28] No space left on device"


def test_a_thread_loop_torn_down_at_shutdown_is_not_a_failure() -> None:
    supervisor = Supervisor()
    stop = threading.Event()

    def loop() -> None:
        stop.set()  # shutdown closes what the loop uses: it raises
        raise ValueError("I/O on closed file")

    supervisor.run_thread("prefetch", loop, stop)
    assert supervisor.snapshot() == []


def test_one_failed_job_of_many_is_counted_but_does_not_degrade() -> None:
    supervisor = Supervisor()
    supervisor.failed("covers", OSError("cannot identify image file"), lasting=False)
    assert supervisor.failing == []
    [entry] = supervisor.snapshot()
    assert (entry["name"], entry["failures"], entry["failing"]) == ("covers", 1, False)
    assert entry["last_error"] == "OSError: cannot identify image file"
