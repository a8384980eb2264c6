"""Federation: several origins behaving as one library (FR-13, NFR-6, DESIGN §6).

Origins are dumb: they list, stat and read. Everything that concerns them as a
group lives here, once:

- **health**: each origin is online or offline. A failed request marks it
  offline at once, so the next open goes elsewhere without waiting for a
  timeout; a background check (`Federation.check_due`) probes offline origins
  with exponential backoff and brings them back.
- **preference**: of several replicas of one track, reads go to the healthy
  origin with the best (lowest) priority number.
- **retry**: a request that fails because an origin did not answer is retried
  with backoff before the origin is given up (NFS stale handles, a dropped
  connection).
- **limits**: at most ``max_requests`` requests in flight per origin, and an
  optional bandwidth limit per origin (a token bucket).
- **the request budget**: how long one FUSE request may wait for origins,
  `Federation.request_budget`, stated here once. A request carries it as a
  `Deadline`; `call` starts no attempt, and waits for no slot, past it.

Nothing here knows of FUSE or the catalog; the read policy (`content.openfile`) asks it
which origin to read and reports back how that went.
"""

from __future__ import annotations

import errno
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from musicfs.core.model import FileStat
from musicfs.core.origins.base import Origin, OriginFile, OriginUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_FIRST = 1.0  # seconds before an offline origin is probed again...
BACKOFF_MAX = 60.0  # ...doubling up to this
RETRY_DELAYS = (0.1, 0.4)  # pauses between attempts of one request
# The budget of one request (an open or a read, fail-over included) is every
# attempt of the slowest origin's own timeout, plus this for the rest (queueing
# for a worker or a slot, the retry pauses, reading a cached copy instead).
REQUEST_GRACE = 5.0


class Deadline:
    """When a request must have been answered (monotonic clock)."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at


@dataclass(frozen=True, slots=True)
class OriginLimits:
    """How hard MusicFS may use one origin."""

    priority: int = 0  # lower is preferred
    max_requests: int = 8  # requests in flight at once
    bandwidth: int = 0  # bytes per second read from it; 0 = unlimited
    timeout: float = 10.0  # seconds its driver waits for one answer; see request_budget


@dataclass
class Health:
    """What is known about whether an origin answers."""

    online: bool = True
    failures: int = 0  # consecutive
    last_error: str = ""
    changed_at: float = field(default_factory=time.time)
    next_check: float = 0.0  # monotonic time of the next probe while offline
    latency_ms: float = 0.0  # of the last successful probe


class TokenBucket:
    """A bandwidth limit: `take(n)` blocks until *n* bytes may pass.

    Holds at most a quarter second of credit, so a burst after a quiet spell
    cannot overshoot the rate by much.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._credit = 0.0
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self, amount: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._credit = min(self.rate / 4, self._credit + (now - self._stamp) * self.rate)
            self._stamp = now
            self._credit -= amount
            wait = -self._credit / self.rate if self._credit < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class Slots:
    """At most *n* requests of one origin at once. Tokens in a queue written in C:
    every request takes one, a scan's batch of heads one a file (its reads of
    long tags are bounded by the batch's window of bytes instead:
    `musicfs.core.origins.sftpheads`); threading's semaphores are Python code
    costing ten times as much."""

    __slots__ = ("_taking_several", "_tokens", "size")

    def __init__(self, n: int) -> None:
        self.size = n
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(n):
            self._tokens.put(None)
        # One caller at a time takes several slots: two taking turns could each
        # hold part of what they need and wait for the other's for ever.
        self._taking_several = threading.Lock()

    def acquire(self, timeout: float | None = None, count: int = 1) -> bool:
        """Take *count* slots (at most all of them), waiting at most *timeout*
        seconds (None: as long as it takes); none if not all came in time."""
        count = min(count, self.size)
        if count == 1:
            return self._take(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._taking_several.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        try:
            for taken in range(count):
                left = None if deadline is None else deadline - time.monotonic()
                if not self._take(left):
                    self.release(taken)
                    return False
        finally:
            self._taking_several.release()
        return True

    def release(self, count: int = 1) -> None:
        """Give back *count* slots (as many as `acquire` took for that count)."""
        for _ in range(min(count, self.size)):
            self._tokens.put(None)

    def _take(self, timeout: float | None) -> bool:
        try:
            self._tokens.get(timeout=None if timeout is None else max(0.0, timeout))
        except queue.Empty:
            return False
        return True


class LimitedFile(OriginFile):
    """An origin file whose reads respect the origin's limits and report failures."""

    def __init__(self, federation: Federation, origin: Origin, file: OriginFile) -> None:
        self._federation = federation
        self._origin = origin
        self._file = file
        self.size, self.mtime_ns = file.size, file.mtime_ns
        self.open_requests = file.open_requests
        self.ranges_at_once = file.ranges_at_once

    @property
    def origin_id(self) -> str:
        return self._origin.id

    @property
    def inner(self) -> OriginFile:
        return self._file

    def read(self, offset: int, size: int) -> bytes:
        return self.read_within(offset, size, None)

    def read_within(self, offset: int, size: int, deadline: Deadline | None) -> bytes:
        """`read`, retried only while *deadline* leaves time."""
        request = functools.partial(self._file.read, offset, size)
        data = self._federation.call(self._origin, request, deadline)
        bucket = self._federation.buckets.get(self._origin.id)
        if bucket is not None:
            bucket.take(len(data))
        return data

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """`OriginFile.read_ranges` as one request (one slot, retried as one)."""
        request = functools.partial(self._file.read_ranges, ranges)
        parts = self._federation.call(self._origin, request)
        bucket = self._federation.buckets.get(self._origin.id)
        if bucket is not None:
            bucket.take(sum(map(len, parts)))
        return parts

    def close(self) -> None:
        self._file.close()


class Federation:
    """The configured origins with their limits and health. Thread-safe."""

    def __init__(
        self,
        origins: Mapping[str, Origin],
        limits: Mapping[str, OriginLimits] | None = None,
        *,
        on_health: Callable[[str, Health], None] | None = None,
    ) -> None:
        self.origins = dict(origins)
        self.limits = {oid: (limits or {}).get(oid, OriginLimits()) for oid in self.origins}
        self.health = {oid: Health() for oid in self.origins}
        self.buckets = {
            oid: TokenBucket(lim.bandwidth) for oid, lim in self.limits.items() if lim.bandwidth
        }
        self._slots = {oid: Slots(max(1, lim.max_requests)) for oid, lim in self.limits.items()}
        self._lock = threading.Lock()
        self.on_health = on_health
        slowest = max((lim.timeout for lim in self.limits.values()), default=OriginLimits().timeout)
        # Seconds one request may wait, stated once (see REQUEST_GRACE).
        self.request_budget = (len(RETRY_DELAYS) + 1) * slowest + REQUEST_GRACE

    def replace(self, origin_id: str, origin: Origin) -> Origin:
        """Serve *origin_id* with a new `Origin` (its plugin was reloaded); return
        the old one, for the caller to close. Limits and health stay."""
        with self._lock:
            old = self.origins[origin_id]
            self.origins[origin_id] = origin
        return old

    def __getitem__(self, origin_id: str) -> Origin:
        return self.origins[origin_id]

    def online(self, origin_id: str) -> bool:
        health = self.health.get(origin_id)
        return health is not None and health.online

    def ranked(self, origin_ids: Iterable[str]) -> list[str]:
        """*origin_ids* in the order to try them: online first, then by priority."""
        known = [oid for oid in origin_ids if oid in self.origins]
        return sorted(known, key=lambda oid: (not self.online(oid), self.limits[oid].priority))

    # -- requests -----------------------------------------------------------------

    def call(
        self,
        origin: Origin,
        request: Callable[[], T],
        deadline: Deadline | None = None,
        *,
        requests: int = 1,
    ) -> T:
        """Run *request* against *origin* within its limits, retrying while it does
        not answer and *deadline* leaves time; mark the origin offline if it
        never does. *request* keeps up to *requests* requests in flight at once
        (that many of the origin's slots are taken).

        `FileNotFoundError` and `PermissionError` are answers, not failures:
        they pass through at once.
        """
        slot = self._slots[origin.id]
        for attempt in range(len(RETRY_DELAYS) + 1):
            wait = None if deadline is None else deadline.remaining()
            if not slot.acquire(timeout=wait, count=requests):
                # Every slot is taken by requests that hang: this one will not get
                # an answer within its budget either.
                error: OSError = OriginUnavailable(
                    origin.id, f"{origin.id}: no request slot free in time", errno.ETIMEDOUT
                )
                break
            try:
                result = request()
            except OriginUnavailable as exc:
                error = exc
            else:
                self._succeeded(origin.id)
                return result
            finally:
                slot.release(requests)
            if attempt == len(RETRY_DELAYS) or not self.online(origin.id):
                break
            pause = RETRY_DELAYS[attempt]
            if deadline is not None and deadline.remaining() <= pause:
                break  # no time left for another attempt
            time.sleep(pause)
        self.failed(origin.id, error)
        raise error

    def open(self, origin_id: str, relpath: str, deadline: Deadline | None = None) -> LimitedFile:
        origin = self.origins[origin_id]
        return LimitedFile(self, origin, self.call(origin, lambda: origin.open(relpath), deadline))

    def open_listed(self, origin_id: str, relpath: str, stat: FileStat) -> LimitedFile:
        """`Origin.open_listed` within the origin's limits (for a scan)."""
        origin = self.origins[origin_id]
        opening = functools.partial(origin.open_listed, relpath, stat)
        return LimitedFile(self, origin, self.call(origin, opening))

    def read_heads(
        self, origin_id: str, heads: Sequence[tuple[str, FileStat, int]]
    ) -> list[bytes | OSError]:
        """`Origin.read_heads` within the origin's limits (for a scan): a slot
        per file, as their requests are in flight at once where the origin
        reads them so (`Origin.heads_at_once`)."""
        origin = self.origins[origin_id]
        reading = functools.partial(origin.read_heads, heads)
        at_once = len(heads) if origin.heads_at_once else 1
        read = self.call(origin, reading, requests=max(1, at_once))
        bucket = self.buckets.get(origin_id)
        if bucket is not None:
            bucket.take(sum(len(head) for head in read if isinstance(head, bytes)))
        return read

    # -- health ---------------------------------------------------------------------

    def failed(self, origin_id: str, error: BaseException) -> None:
        """Count a failure: the origin is offline until a probe finds it again."""
        with self._lock:
            health = self.health[origin_id]
            health.failures += 1
            health.last_error = str(error)
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (health.failures - 1))
            health.next_check = time.monotonic() + delay
            went_down = health.online
            if went_down:
                health.online = False
                health.changed_at = time.time()
        if went_down:
            log.warning("origin %s is offline: %s", origin_id, error)
            self._notify(origin_id)

    def _succeeded(self, origin_id: str) -> None:
        health = self.health[origin_id]
        if health.online and not health.failures:
            return
        with self._lock:
            came_back = not health.online
            health.online, health.failures, health.last_error = True, 0, ""
            if came_back:
                health.changed_at = time.time()
        if came_back:
            log.info("origin %s is back online", origin_id)
            self._notify(origin_id)

    def probe(self, origin_id: str) -> bool:
        """Check one origin now (blocking); update and return its health."""
        started = time.monotonic()
        try:
            self.origins[origin_id].check()
        except OSError as exc:
            self.failed(origin_id, exc)
            return False
        self.health[origin_id].latency_ms = (time.monotonic() - started) * 1000
        self._succeeded(origin_id)
        return True

    def check_due(self) -> list[str]:
        """Probe every offline origin whose backoff has run out (blocking); return
        the ids that came back. Call it every second or so from a worker thread."""
        now = time.monotonic()
        due = [oid for oid, h in self.health.items() if not h.online and h.next_check <= now]
        return [oid for oid in due if self.probe(oid)]

    def _notify(self, origin_id: str) -> None:
        if self.on_health is not None:
            try:
                self.on_health(origin_id, self.health[origin_id])
            except Exception:
                log.exception("health listener failed")

    def close(self) -> None:
        for origin in self.origins.values():
            try:
                origin.close()
            except Exception as exc:  # closing must not stop the others closing
                log.debug("closing origin %s: %s", origin.id, exc)
