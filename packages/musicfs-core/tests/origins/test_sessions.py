"""The session pool and the deadline watchdog that SFTP and SMB origins share.

No server: a "session" is one end of a local socket pair (dead once closed), and
a stuck network call is a ``recv`` on it that nothing will ever answer.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from musicfs.core.origins.base import OriginUnavailable
from musicfs.core.origins.sessions import (
    Pooled,
    SessionPool,
    Verdict,
    Watchdog,
)

HANG = 20.0  # a call still running after this long hangs


def wait_until(condition: Callable[[], bool], timeout: float = HANG) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never came true"
        time.sleep(0.01)


class Session:
    """A connection to nowhere: alive until closed."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.near, self.far = socket.socketpair()
        self.closed = False

    def alive(self) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True
        self.near.close()
        self.far.close()


class Server:
    """Makes sessions; can be told to make them slowly or not at all."""

    def __init__(self) -> None:
        self.made: list[Session] = []
        self.connecting = 0
        self.most_connecting = 0
        self.gate = threading.Event()
        self.gate.set()
        self.refuse = False
        self.allowed: list[float] = []  # the seconds each connection was given
        self._lock = threading.Lock()

    def connect(self, seconds: float) -> Session:
        with self._lock:
            self.allowed.append(seconds)
            self.connecting += 1
            self.most_connecting = max(self.most_connecting, self.connecting)
        try:
            assert self.gate.wait(HANG)
            if self.refuse:
                raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
            with self._lock:
                session = Session(len(self.made))
                self.made.append(session)
            return session
        finally:
            with self._lock:
                self.connecting -= 1


@pytest.fixture
def server() -> Iterator[Server]:
    made = Server()
    yield made
    made.gate.set()
    for session in made.made:
        if not session.closed:
            session.close()


def make_pool(
    server: Server, size: int = 2, timeout: float = 5.0, grow_behind: bool = False
) -> SessionPool[Session]:
    return SessionPool(
        "nas",
        "sftp://nas/music",
        server.connect,
        alive=Session.alive,
        close=Session.close,
        size=size,
        timeout=timeout,
        grow_behind=grow_behind,
    )


def lost_connection(exc: BaseException, pooled: Pooled[Session] | None) -> Verdict:
    """A driver's judge: every failure is a lost connection, worth one retry."""
    error = OriginUnavailable("nas", f"connection lost ({exc})", errno.ECONNRESET)
    return Verdict(error, lost=True, retry=True)


# -- the pool -------------------------------------------------------------------------


def test_pool_reuses_an_idle_session(server: Server) -> None:
    pool = make_pool(server)
    first, fresh = pool.lease()
    assert fresh
    pool.release(first)
    again, fresh = pool.lease()
    assert again is first
    assert not fresh
    assert len(server.made) == 1


def test_pool_is_bounded_and_shares_the_least_busy_session(server: Server) -> None:
    pool = make_pool(server, size=2)
    leases = [pool.lease()[0] for _ in range(5)]
    assert len(server.made) == 2
    assert pool.connections == 2
    assert sorted(p.users for p in pool.sessions()) == [2, 3]
    for pooled in leases:
        pool.release(pooled)
    assert [p.users for p in pool.sessions()] == [0, 0]


def test_many_callers_at_once_never_open_more_than_the_bound(server: Server) -> None:
    pool = make_pool(server, size=3)
    server.gate.clear()  # connections take their time
    got: list[Pooled[Session]] = []
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            pooled, _ = pool.lease()
            got.append(pooled)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(12)]
    for thread in threads:
        thread.start()
    wait_until(lambda: server.connecting == 3)
    assert pool.connections == 3
    server.gate.set()
    for thread in threads:
        thread.join(HANG)
    assert not errors, errors
    assert len(got) == 12
    assert len(server.made) == 3
    assert server.most_connecting == 3


def test_waiting_for_a_connection_gives_up_at_the_timeout(server: Server) -> None:
    pool = make_pool(server, size=1, timeout=0.3)
    server.gate.clear()  # the only slot is a connection that never finishes
    first = threading.Thread(target=pool.lease)
    first.start()
    wait_until(lambda: server.connecting == 1)
    with pytest.raises(OriginUnavailable) as caught:
        pool.lease()
    assert caught.value.errno == errno.ETIMEDOUT
    assert "sftp://nas/music: no connection within 0.3s" in str(caught.value)
    server.gate.set()
    first.join(HANG)


def test_a_failed_connection_frees_its_slot(server: Server) -> None:
    pool = make_pool(server, size=1)
    server.refuse = True
    with pytest.raises(ConnectionRefusedError):
        pool.lease()
    assert pool.connections == 0
    server.refuse = False
    pooled, fresh = pool.lease()
    assert fresh
    assert pooled.session.alive()


def test_a_dead_session_is_dropped_and_replaced(server: Server) -> None:
    pool = make_pool(server)
    old, _ = pool.lease()
    pool.release(old)
    old.session.far.close()
    old.session.closed = True  # the server hung up while the session was idle
    new, fresh = pool.lease()
    assert fresh
    assert new is not old
    assert old.broken
    assert pool.sessions() == [new]
    assert len(server.made) == 2


def test_a_stale_session_is_tried_once_more_on_a_new_one(server: Server) -> None:
    pool = make_pool(server)
    stale, _ = pool.lease()
    pool.release(stale)
    used: list[int] = []

    def operation(pooled: Pooled[Session]) -> str:
        used.append(pooled.session.number)
        if pooled is stale:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        return "answer"

    assert pool.run(operation, lost_connection) == "answer"
    assert used == [0, 1]
    assert stale.broken
    assert stale.session.closed
    assert [p.users for p in pool.sessions()] == [0]


def test_no_retry_once_the_calls_deadline_has_passed(server: Server) -> None:
    """The caller's watchdog cuts once, at its deadline: a retry begun after it
    would hang with nothing to cut it (an SMB read past its budget)."""
    pool = make_pool(server)
    stale, _ = pool.lease()
    pool.release(stale)
    deadline = time.monotonic() + 0.2
    used: list[int] = []

    def operation(pooled: Pooled[Session]) -> str:
        used.append(pooled.session.number)
        wait_until(lambda: time.monotonic() >= deadline)  # the cut came
        raise ConnectionResetError(errno.ECONNRESET, "reset")

    with pytest.raises(OriginUnavailable):
        pool.run(operation, lost_connection, deadline=deadline)
    assert used == [0]
    assert len(server.made) == 1  # no new connection either


def test_a_retry_connects_within_what_is_left_of_the_deadline(server: Server) -> None:
    pool = make_pool(server, timeout=5.0)
    stale, _ = pool.lease()
    pool.release(stale)
    deadline = time.monotonic() + 1.0

    def operation(pooled: Pooled[Session]) -> str:
        if pooled is stale:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        return "answer"

    assert pool.run(operation, lost_connection, deadline=deadline) == "answer"
    assert server.allowed[0] == pytest.approx(5.0, abs=0.1)  # a lease alone: the timeout
    assert 0 < server.allowed[1] <= 1.0  # the retry: only what the call had left


def test_a_new_session_that_fails_is_not_retried(server: Server) -> None:
    pool = make_pool(server)
    calls: list[int] = []

    def failing(pooled: Pooled[Session]) -> None:
        calls.append(pooled.session.number)
        raise ConnectionResetError(errno.ECONNRESET, "reset")

    with pytest.raises(OriginUnavailable) as caught:
        pool.run(failing, lost_connection)
    assert calls == [0]  # a server that fails costs one attempt, not two
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    # Once more with a session that had been idle: one retry, then it gives up.
    pool.lease()  # session 1, released at once
    pool.release(pool.sessions()[0])
    calls.clear()
    with pytest.raises(OriginUnavailable):
        pool.run(failing, lost_connection)
    assert calls == [1, 2]
    assert pool.sessions() == []


def test_an_answer_is_not_a_lost_session(server: Server) -> None:
    pool = make_pool(server)

    def missing(pooled: Pooled[Session]) -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file", "x.flac")

    with pytest.raises(FileNotFoundError):
        pool.run(missing, lambda exc, pooled: Verdict(exc))
    (kept,) = pool.sessions()
    assert kept.users == 0
    assert not kept.broken


def test_a_held_session_stays_leased(server: Server) -> None:
    pool = make_pool(server, size=1)
    held = pool.run(lambda pooled: pooled, lost_connection, exclusive=True, hold=True)
    assert held.users == 1
    pool.release(held)
    assert held.users == 0


def test_close_closes_every_session(server: Server) -> None:
    pool = make_pool(server, size=3)
    held, _ = pool.lease()
    idle, _ = pool.lease()
    pool.release(idle)
    pool.close()
    assert all(session.closed for session in server.made)
    assert held.broken
    assert idle.broken
    assert pool.connections == 0
    # Whoever still holds one finds it dropped; the pool opens a new one.
    pool.release(held)
    assert pool.sessions() == []
    assert pool.run(lambda pooled: pooled.session.number, lost_connection) == 2


def test_growing_behind_a_caller_shares_a_session_while_the_next_is_made(
    server: Server,
) -> None:
    pool = make_pool(server, size=3, grow_behind=True)
    first, fresh = pool.lease()  # no session yet: this caller waits for its connection
    assert fresh
    server.gate.clear()  # connections now take as long as the test says
    second, fresh = pool.lease()  # every session busy, room for more
    assert (second, fresh) == (first, False)  # at once, sharing the one there is
    wait_until(lambda: server.connecting == 1)
    assert pool.connections == 2  # the one being made counts against the bound
    third, _ = pool.lease()  # and another, while the first is still being made
    assert third is first
    assert pool.connections == 3
    server.gate.set()
    wait_until(lambda: len(pool.sessions()) == 3)
    for pooled in (first, second, third):
        pool.release(pooled)
    # The bound holds: nothing more is made, the idle ones are used.
    leased = [pool.lease()[0] for _ in range(5)]
    assert len(server.made) == 3
    assert sorted(p.users for p in pool.sessions()) == [1, 2, 2]
    for pooled in leased:
        pool.release(pooled)


def test_a_session_made_behind_a_caller_after_close_is_not_kept(server: Server) -> None:
    pool = make_pool(server, size=2, grow_behind=True)
    first, _ = pool.lease()
    server.gate.clear()
    pool.lease()
    wait_until(lambda: server.connecting == 1)
    pool.close()
    server.gate.set()
    wait_until(lambda: len(server.made) == 2)
    wait_until(lambda: pool.connections == 0)
    assert pool.sessions() == []
    assert all(session.closed for session in server.made)  # nothing left open behind
    pool.release(first)


def test_an_extra_connection_that_fails_frees_its_slot(server: Server) -> None:
    pool = make_pool(server, size=2, grow_behind=True)
    first, _ = pool.lease()
    server.refuse = True
    assert pool.lease()[0] is first  # the caller is not the one that fails
    wait_until(lambda: pool.connections == 1)
    server.refuse = False
    pool.release(first)
    pool.release(first)


# -- the watchdog ---------------------------------------------------------------------


def timed_out() -> OriginUnavailable:
    return OriginUnavailable("nas", "sftp://nas/music: no answer within 0.2s", errno.ETIMEDOUT)


def run_in_thread(function: Callable[[], object]) -> BaseException | object:
    """What *function* returned or raised; fails if it is still running after HANG."""
    outcome: list[BaseException | object] = []

    def target() -> None:
        try:
            outcome.append(function())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), "the call hangs"
    return outcome[0]


def test_a_stuck_call_is_cut_at_its_deadline() -> None:
    watchdog = Watchdog("test-watchdog")
    near, far = socket.socketpair()  # *far* never writes: recv waits for ever
    try:
        outcome = run_in_thread(
            lambda: watchdog.call(
                0.2,
                lambda: near.recv(1),
                cut=lambda: near.shutdown(socket.SHUT_RDWR),
                unavailable=timed_out,
            )
        )
    finally:
        near.close()
        far.close()
        watchdog.stop()
    assert isinstance(outcome, OriginUnavailable)
    assert outcome.errno == errno.ETIMEDOUT
    assert outcome.origin_id == "nas"


def test_a_call_that_answers_in_time_is_not_cut() -> None:
    watchdog = Watchdog("test-watchdog")
    cut = threading.Event()
    assert watchdog.call(0.2, lambda: 42, cut=cut.set, unavailable=timed_out) == 42
    with pytest.raises(ValueError, match="answered"):
        watchdog.call(0.2, _answer_with_error, cut=cut.set, unavailable=timed_out)
    assert not cut.wait(0.5)  # well past both deadlines
    watchdog.stop()


def _answer_with_error() -> None:
    raise ValueError("the server answered with an error")


def test_a_result_that_comes_as_the_deadline_passes_is_not_trusted() -> None:
    watchdog = Watchdog("test-watchdog")
    cut = threading.Event()

    def slow() -> str:
        assert cut.wait(HANG)  # returns only once the watchdog cut it
        return "half-made"

    outcome = run_in_thread(lambda: watchdog.call(0.1, slow, cut=cut.set, unavailable=timed_out))
    assert isinstance(outcome, OriginUnavailable)
    watchdog.stop()


def test_only_the_late_call_is_cut() -> None:
    watchdog = Watchdog("test-watchdog")
    early, late = threading.Event(), threading.Event()
    with watchdog.bound(HANG, late.set) as patient, watchdog.bound(0.1, early.set) as hasty:
        assert early.wait(HANG)
        assert hasty.expired
        assert not patient.expired
    assert not late.is_set()
    watchdog.stop()


def test_the_watchdog_thread_ends_when_idle_and_comes_back() -> None:
    watchdog = Watchdog("test-watchdog", idle=0.1)
    assert not watchdog.running
    assert watchdog.call(5.0, lambda: "ok", cut=lambda: None, unavailable=timed_out) == "ok"
    wait_until(lambda: not watchdog.running)
    cut = threading.Event()
    with watchdog.bound(0.1, cut.set) as deadline:
        assert cut.wait(HANG)
    assert deadline.expired
    watchdog.stop()
    wait_until(lambda: not watchdog.running)


def test_stopping_the_watchdog_keeps_the_deadlines_of_running_calls() -> None:
    watchdog = Watchdog("test-watchdog")
    cut = threading.Event()
    with watchdog.bound(0.2, cut.set) as deadline:
        watchdog.stop()  # the origin closes while a call still runs
        assert cut.wait(HANG)
    assert deadline.expired
    wait_until(lambda: not watchdog.running)


def test_a_failing_cut_does_not_stop_the_watchdog() -> None:
    watchdog = Watchdog("test-watchdog")
    cut = threading.Event()

    def broken_cut() -> None:
        raise RuntimeError("socket already gone")

    with watchdog.bound(0.05, broken_cut) as first:
        wait_until(lambda: first.expired)
    with watchdog.bound(0.05, cut.set):
        assert cut.wait(HANG)
    watchdog.stop()
