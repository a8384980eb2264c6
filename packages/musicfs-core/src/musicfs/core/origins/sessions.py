"""Sessions of network origins: one bounded pool and one deadline watchdog.

Job: what the SFTP and SMB drivers (`musicfs.core.origins.sftp`,
`musicfs.core.origins.smb`) share about holding connections to a server, so
that each driver only speaks its protocol:

- `SessionPool`: up to *size* sessions of one origin, made when first needed.
  A caller leases one (an idle one first, else a new one while there is room,
  else the least busy one, shared) and releases it; a session found dead is
  dropped and replaced; `SessionPool.run` runs one call on a leased session and
  tries it once more on a new connection if a session that had been idle turned
  out to have dropped, never past the call's deadline; `SessionPool.close`
  closes them all (the pool may be used again after).
- `Watchdog`: a call that must finish by a deadline. The client libraries wait
  on sockets, some without any limit (smbprotocol), so a server that stops
  answering would hold a worker thread for ever. Each call arms a deadline with
  a *cut* (shut the socket the call waits on); when the deadline passes, one
  thread per origin runs the cut, the call fails at once, and the caller gets
  the origin's `OriginUnavailable` (ETIMEDOUT), never a hang.

Boundaries: no protocol here, and no policy over time. Retries with backoff,
health, failover and limits belong to `musicfs.core.origins.federation`; the
only retry here is the reconnect-once of a pooled session that went stale
while idle (a new connection cannot have gone stale: that failure is the
server's and goes up at once).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, NoReturn, TypeVar

from musicfs.core.errors import Signal
from musicfs.core.origins.base import OriginUnavailable

log = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")

#: How long the watchdog thread lingers without deadlines before it exits.
WATCHDOG_IDLE = 30.0


class SessionLost(Signal):
    """The session was dropped (its connection broke, or the pool closed) before
    the call could use it."""


# -- the watchdog ---------------------------------------------------------------------


class ArmedDeadline:
    """One armed deadline of a `Watchdog` (see `Watchdog.bound`)."""

    def __init__(self, watchdog: Watchdog, token: int, at: float) -> None:
        self._watchdog = watchdog
        self._token = token
        self.at = at
        self._expired = False

    @property
    def expired(self) -> bool:
        """Whether the deadline passed (and the cut ran or is running)."""
        return self._expired or self._watchdog.expired(self._token)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def _disarm(self) -> None:
        self._expired = self._watchdog.disarm(self._token) or self._expired


class Watchdog:
    """Runs the cut of each call that outlives its deadline (one origin's calls).

    One daemon thread checks the deadlines; it exits after *idle* seconds
    without any and starts again with the next. It holds the cuts it was given,
    never the origin (an origin nobody closed can still be collected).
    """

    def __init__(self, name: str, *, idle: float = WATCHDOG_IDLE) -> None:
        self.name = name
        self._idle = idle
        self._cond = threading.Condition()
        self._deadlines: dict[int, tuple[float, Callable[[], None]]] = {}
        self._expired: set[int] = set()
        self._tokens = 0
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        """Whether the watchdog thread is alive now."""
        with self._cond:
            return self._thread is not None

    @contextlib.contextmanager
    def bound(self, seconds: float, cut: Callable[[], None]) -> Iterator[ArmedDeadline]:
        """Within the block, *cut* runs (in the watchdog thread) if the block is
        still running *seconds* from now; ``deadline.expired`` then says so."""
        at = time.monotonic() + seconds
        deadline = ArmedDeadline(self, self.arm(at, cut), at)
        try:
            yield deadline
        finally:
            deadline._disarm()

    def call(
        self,
        seconds: float,
        function: Callable[[], T],
        *,
        cut: Callable[[], None],
        unavailable: Callable[[], OriginUnavailable],
    ) -> T:
        """*function*'s result, if it returns within *seconds*; else *cut* runs
        (which must make *function* fail: close the socket it waits on) and
        ``unavailable()`` is raised. A result that comes as the deadline passes
        is not trusted: the cut may have closed what it is made of."""
        with self.bound(seconds, cut) as deadline:
            try:
                result = function()
            except Exception as exc:
                if deadline.expired and not isinstance(exc, OriginUnavailable):
                    raise unavailable() from exc
                raise
        if deadline.expired:
            raise unavailable()
        return result

    def arm(self, at: float, cut: Callable[[], None]) -> int:
        """Run *cut* at monotonic time *at* unless disarmed first; a token."""
        with self._cond:
            self._tokens += 1
            self._deadlines[self._tokens] = (at, cut)
            self._stopping = False  # a thread told to stop and not gone yet goes on
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            else:
                self._cond.notify_all()  # the new deadline may be the earliest
            return self._tokens

    def disarm(self, token: int) -> bool:
        """Forget *token*; True if its deadline had passed."""
        with self._cond:
            self._deadlines.pop(token, None)
            if token in self._expired:
                self._expired.discard(token)
                return True
            return False

    def expired(self, token: int) -> bool:
        with self._cond:
            return token in self._expired

    def stop(self) -> None:
        """Let the thread end as soon as no deadline is armed (it starts again
        with the next one); calls still running keep their deadline."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._cond:
                now = time.monotonic()
                due = [(t, cut) for t, (at, cut) in self._deadlines.items() if at <= now]
                for token, _ in due:
                    del self._deadlines[token]
                    self._expired.add(token)
                if self._deadlines or due:
                    idle_since = now
                idle = now - idle_since > self._idle
                if not self._deadlines and not due and (self._stopping or idle):
                    self._thread = None
                    return
                if not due:
                    earliest = min((at for at, _ in self._deadlines.values()), default=None)
                    wait = self._idle if earliest is None else earliest - now
                    self._cond.wait(max(0.0, wait))
                    continue
            log.debug("%s: %d call(s) outlived their deadline; cutting", self.name, len(due))
            for _, cut in due:
                try:
                    cut()
                except Exception:  # a cut must not stop the watchdog
                    log.exception("%s: cutting a call failed", self.name)


# -- the pool -------------------------------------------------------------------------


class Pooled(Generic[S]):
    """One session of a `SessionPool` with its bookkeeping."""

    def __init__(self, session: S) -> None:
        self.session = session
        #: Held for each call on a session that serves one caller at a time
        #: (`SessionPool.run` with ``exclusive``).
        self.lock = threading.Lock()
        #: How many callers (open files, running calls) hold the session.
        self.users = 0
        #: Dropped from the pool: whoever still holds it must get another.
        self.broken = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a driver makes of an exception raised on (or while making) a session."""

    error: BaseException  # what to raise to the caller
    lost: bool = False  # the session's connection is gone: drop it
    retry: bool = False  # a stale session may have caused it: once more on a new one


class SessionPool(Generic[S]):
    """Up to *size* sessions of one origin (see the module docstring).

    *connect* makes a session within the seconds it is given (at most
    *timeout*, less when a call's deadline is nearer; e.g. with a `Watchdog`);
    *alive* tells cheaply, without the network, whether one still works;
    *close* closes one without waiting for the server. Thread-safe; the pool's
    lock is never held while the network is used.

    With *grow_behind* (sessions that many callers share cheaply, as SFTP's
    multiplexed ones), a caller that finds every session busy and room for
    another shares the least busy one at once, while the new one is made in a
    background thread: a scan's first listings then cost a round trip, not a
    connection each (~0.5 s at 20 ms).
    """

    def __init__(
        self,
        origin_id: str,
        where: str,
        connect: Callable[[float], S],
        *,
        alive: Callable[[S], bool],
        close: Callable[[S], None],
        size: int,
        timeout: float,
        grow_behind: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError("a session pool needs room for at least one session")
        self.origin_id = origin_id
        self.where = where  # names the origin in messages; never a secret
        self.size = size
        self.timeout = timeout
        self._connect = connect
        self._alive = alive
        self._close = close
        self._sessions: list[Pooled[S]] = []
        self._connecting = 0
        self._cond = threading.Condition()
        self._grow_behind = grow_behind
        self._generation = 0  # `close` counts up: a session made before it is not kept

    @property
    def connections(self) -> int:
        """How many sessions are open or being opened now."""
        with self._cond:
            return len(self._sessions) + self._connecting

    def sessions(self) -> list[Pooled[S]]:
        """The sessions open now (a snapshot)."""
        with self._cond:
            return list(self._sessions)

    def lease(self, within: float | None = None) -> tuple[Pooled[S], bool]:
        """A session to use, and whether it was just made: an idle one, else a
        new one if there is room, else the least busy one, shared (so more
        callers than sessions never deadlock). Dead sessions are dropped on the
        way. Raises what *connect* raises, or `OriginUnavailable` if every slot
        is a connection being made and none is done in time.

        It takes at most *timeout*, or *within* seconds if that is less (what is
        left of a call's deadline)."""
        allowed = self.timeout if within is None else max(0.0, min(within, self.timeout))
        deadline = time.monotonic() + allowed
        dead: list[Pooled[S]] = []
        try:
            with self._cond:
                while True:
                    for pooled in [p for p in self._sessions if not self._usable(p)]:
                        pooled.broken = True
                        self._sessions.remove(pooled)
                        dead.append(pooled)
                    idle = [p for p in self._sessions if p.users == 0]
                    if idle:
                        idle[-1].users += 1
                        return idle[-1], False
                    if len(self._sessions) + self._connecting < self.size:
                        self._connecting += 1
                        if not (self._grow_behind and self._sessions):
                            break  # this caller makes it
                        self._grow(self._generation)  # and shares one meanwhile
                    if self._sessions:
                        pooled = min(self._sessions, key=lambda p: p.users)
                        pooled.users += 1
                        return pooled, False
                    remaining = deadline - time.monotonic()  # every slot is connecting
                    if remaining <= 0:
                        raise OriginUnavailable(
                            self.origin_id,
                            f"{self.where}: no connection within {allowed:g}s",
                            errno.ETIMEDOUT,
                        )
                    self._cond.wait(remaining)
        finally:
            for pooled in dead:
                self._close_quietly(pooled)
        try:
            session = self._connect(max(0.0, deadline - time.monotonic()))
        except BaseException:
            self._connected(None)
            raise
        made = self._connected(session, users=1)
        assert made is not None
        return made, True

    def _grow(self, generation: int) -> None:
        """Make one more session in a thread of its own (one connecting slot
        is counted already); kept unless the pool was closed meanwhile."""

        def grow() -> None:
            try:
                session = self._connect(self.timeout)
            except Exception as exc:  # the callers' own connections report it
                log.debug("origin %s: an extra connection failed: %s", self.origin_id, exc)
                self._connected(None)
                return
            if self._connected(session, generation=generation) is None:
                self._close_quietly(Pooled(session))

        threading.Thread(target=grow, name=f"connect-{self.origin_id}", daemon=True).start()

    def _connected(
        self, session: S | None, *, users: int = 0, generation: int | None = None
    ) -> Pooled[S] | None:
        """A connecting slot is done: pool *session* (None: connecting failed)
        with *users* holding it, unless the pool was closed since *generation*
        (then None: the caller closes it); wake whoever waits for a slot."""
        with self._cond:
            self._connecting -= 1
            pooled = None
            if session is not None and generation in (None, self._generation):
                pooled = Pooled(session)
                pooled.users = users
                self._sessions.append(pooled)
            self._cond.notify_all()
        return pooled

    def release(self, pooled: Pooled[S]) -> None:
        with self._cond:
            pooled.users = max(0, pooled.users - 1)
            self._cond.notify_all()

    def drop(self, pooled: Pooled[S]) -> None:
        """Forget a session whose connection broke, and close it (its holders
        find it `broken`)."""
        with self._cond:
            pooled.broken = True
            if pooled not in self._sessions:
                return  # dropped and closed already
            self._sessions.remove(pooled)
            self._cond.notify_all()
        self._close_quietly(pooled)

    def run(
        self,
        operation: Callable[[Pooled[S]], T],
        judge: Callable[[BaseException, Pooled[S] | None], Verdict],
        *,
        exclusive: bool = False,
        hold: bool = False,
        deadline: float | None = None,
    ) -> T:
        """*operation* on a leased session, released after (kept leased on
        success with *hold*: the result then owns it).

        *judge* maps what it raised (or what connecting raised, with no
        session) to a `Verdict`: a lost session is dropped, and the call is
        tried once more on a new connection if the verdict allows a retry, the
        session had been idle in the pool (a stale connection) and *deadline*
        (monotonic time) has not passed: the caller's watchdog cuts at its
        deadline once, so a retry begun after it would have no bound. With
        *exclusive* the call holds the session's lock (one caller at a time).
        """
        for attempt in range(2):
            within = None if deadline is None else deadline - time.monotonic()
            try:
                pooled, fresh = self.lease(within)
            except Exception as exc:
                _raise(judge(exc, None).error, exc)
            keep = False
            try:
                if exclusive:
                    with pooled.lock:
                        if pooled.broken:
                            raise SessionLost
                        result = operation(pooled)
                else:
                    if pooled.broken:
                        raise SessionLost
                    result = operation(pooled)
                keep = hold
                return result
            except Exception as exc:
                verdict = judge(exc, pooled)
                if verdict.lost or pooled.broken:
                    self.drop(pooled)
                in_time = deadline is None or time.monotonic() < deadline
                if not (verdict.retry and not fresh and attempt == 0 and in_time):
                    _raise(verdict.error, exc)
                log.debug("origin %s: a pooled session went stale; reconnecting", self.origin_id)
            finally:
                if not keep:
                    self.release(pooled)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every session. Holders find theirs `broken`; the pool makes new
        ones when next leased. A session being made behind a caller
        (*grow_behind*) is closed as soon as it is made."""
        with self._cond:
            self._generation += 1
            sessions, self._sessions = self._sessions, []
            for pooled in sessions:
                pooled.broken = True
            self._cond.notify_all()
        for pooled in sessions:
            self._close_quietly(pooled)

    def _usable(self, pooled: Pooled[S]) -> bool:
        if pooled.broken:
            return False
        try:
            return self._alive(pooled.session)
        except Exception as exc:  # a half-torn-down client object
            log.debug("origin %s: checking a session: %s", self.origin_id, exc)
            return False

    def _close_quietly(self, pooled: Pooled[S]) -> None:
        try:
            self._close(pooled.session)
        except Exception as exc:  # closing a dead connection may fail; nothing is left
            log.debug("origin %s: closing a session: %s", self.origin_id, exc)


def _raise(error: BaseException, cause: BaseException) -> NoReturn:
    """Raise *error* (what a driver made of *cause*) from *cause*."""
    if error is cause:
        raise error
    raise error from cause
