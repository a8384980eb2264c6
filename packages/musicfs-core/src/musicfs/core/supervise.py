"""Background loops that never take a mounted daemon down (issue 13.5).

A mount runs loops beside FUSE: the sync loop (rescans), the cache fill queue,
origin health probes, inotify watches, polls, the prefetcher, the access log.
Any of them may meet something it did not expect (a catalog another program
holds locked, a full disk, a damaged page). Before, an exception there ended
the trio nursery and so the daemon, seconds after ``musicfs mount`` had said
"mounted". Now `Supervisor.run` (trio tasks) and `Supervisor.run_thread`
(threads) catch it: the traceback goes to the log, the failure is counted and
shown by ``musicfs status`` (`snapshot`), and the loop starts again after a
pause that doubles with each failure in a row (`Backoff`: 1 s ... 60 s), so a
lasting fault costs a log line a minute, not a busy loop. A loop tells that it
works again with `Supervisor.ok` (a round went through): status then shows it
recovered, and its next failure waits the shortest pause again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

log = logging.getLogger(__name__)

#: Seconds before the first restart of a failed loop, and the most it waits.
FIRST_PAUSE = 1.0
LONGEST_PAUSE = 60.0


class Backoff:
    """Pauses between restarts: *first*, doubled at each failure in a row, at
    most *longest*; back to *first* after `reset` (the loop worked again)."""

    def __init__(self, first: float = FIRST_PAUSE, longest: float = LONGEST_PAUSE) -> None:
        if not 0 < first <= longest:
            raise ValueError(f"backoff needs 0 < first <= longest, got {first}, {longest}")
        self.first = first
        self.longest = longest
        self._next = first

    def next(self) -> float:
        """The pause before this restart; the following one is twice as long."""
        pause = self._next
        self._next = min(self._next * 2, self.longest)
        return pause

    def reset(self) -> None:
        self._next = self.first


@dataclass
class LoopHealth:
    """What ``musicfs status`` shows of one loop."""

    name: str
    failures: int = 0  # since the mount
    last_error: str = ""  # "ExceptionType: message" of the last failure
    last_failure: float = 0.0  # time.time() of it; 0: never failed
    failing: bool = False  # it failed and has not completed a round since

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_failure": self.last_failure,
            "failing": self.failing,
        }


def describe(exc: BaseException) -> str:
    """An exception as one line: its type and message."""
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Supervisor:
    """Runs a mount's background loops; restarts a loop that raises, with backoff.

    Thread-safe: trio tasks and threads report to the same records.
    """

    def __init__(self, first: float = FIRST_PAUSE, longest: float = LONGEST_PAUSE) -> None:
        self.first = first
        self.longest = longest
        self._lock = threading.Lock()
        self._loops: dict[str, LoopHealth] = {}
        self._backoff: dict[str, Backoff] = {}

    def _health(self, name: str) -> LoopHealth:
        with self._lock:
            if name not in self._loops:
                self._loops[name] = LoopHealth(name)
                self._backoff[name] = Backoff(self.first, self.longest)
            return self._loops[name]

    def ok(self, name: str) -> None:
        """Loop *name* completed a round: it works (again)."""
        health = self._health(name)
        with self._lock:
            health.failing = False
            self._backoff[name].reset()

    def failed(self, name: str, exc: BaseException, *, lasting: bool = True) -> float:
        """Record a failure of loop *name* (traceback to the log); return the
        pause before it is started again. Not *lasting*: one job of many failed
        (a cover, a batch of the access log), the next may well work: counted and
        shown, but the mount is not DEGRADED for it."""
        health = self._health(name)
        with self._lock:
            health.failures += 1
            health.last_error = describe(exc)
            health.last_failure = time.time()
            health.failing = health.failing or lasting
            pause = self._backoff[name].next()
            failures = health.failures
        log.error("background task %r failed (%d so far): %s", name, failures,
                  health.last_error, exc_info=exc)  # fmt: skip
        return pause

    async def run(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run the trio task *loop* until it returns; restart it whenever it raises.

        Cancellation (unmount) is not a failure: it goes through.
        """
        self._health(name)
        while True:
            try:
                await loop()
                return
            except Exception as exc:
                pause = self.failed(name, exc)
            log.info("restarting background task %r in %.0f s", name, pause)
            await trio.sleep(pause)

    def run_thread(self, name: str, loop: Callable[[], None], stop: threading.Event) -> None:
        """The same for a thread's *loop* (call it as the thread's target): it ends
        when *loop* returns or *stop* is set."""
        self._health(name)
        while not stop.is_set():
            try:
                loop()
                return
            except Exception as exc:
                if stop.is_set():  # torn down under it at shutdown: not a failure
                    return
                pause = self.failed(name, exc)
            log.info("restarting background task %r in %.0f s", name, pause)
            stop.wait(pause)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every loop that has failed since the mount, by name (plain data)."""
        with self._lock:
            return [h.as_dict() for _, h in sorted(self._loops.items()) if h.failures]

    @property
    def failing(self) -> list[str]:
        """Names of the loops that failed and have not worked since."""
        with self._lock:
            return sorted(name for name, h in self._loops.items() if h.failing)
