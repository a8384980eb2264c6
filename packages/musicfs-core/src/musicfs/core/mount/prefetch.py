"""Prefetch (FR-19): the tracks likely to be played next are copied from remote
origins into the content cache before anyone asks for them.

`Prefetcher` listens to ``file.opened`` events on its own bounded queue, so
FUSE never waits for it (a full queue drops events and counts them). It has
one thread, which learns and copies:

- **learning**: each time one file is opened at least `MIN_GAP` s and at most
  `MAX_GAP` s after another, the catalog's ``played_after`` table counts "after
  A, B was played" (quicker opens are a file manager or a skip, not listening);
- **planning**, for the file opened last (once the opens have paused for
  `SETTLE` s, so a burst of opens plans once): its album successors (the files
  of its origin folder with its album tag, in disc/track order;
  `Catalog.album_successors`) scored 0.5/k for the k-th next one, plus the files
  played after it before, scored count / (plays after it + 1). The `ahead`
  best become the plan, which replaces the previous one (the listener moved on);
- **copying**, one file at a time, through the federation (its limits and
  retries) into the content cache (`ContentCache.fill`). Before each MiB it
  waits until the foreground is quiet: no FUSE open or read for `QUIET` s and
  fewer than `BUSY_HANDLES` files open. A copy is stopped at shutdown.

Limits: a plan holds at most `ahead` files; the files it copies total at most
`max_bytes` and a tenth of the cache limit; files copied ahead and not played
yet count against a tenth of the cache limit for an hour. Only remote origins
are prefetched: a local disk (an ``inline`` origin) is read as fast as the cache.
Nothing is published: an open served from the cache says so in its event
(``source = "cache"``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from musicfs.core.catalog.store import Catalog, Track
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.library import version_of
from musicfs.core.errors import Signal
from musicfs.core.events import Event, EventBus, EventType
from musicfs.core.origins.base import OriginFile
from musicfs.core.origins.federation import Federation
from musicfs.core.supervise import Supervisor

if TYPE_CHECKING:
    from musicfs.core.config.settings import Config
    from musicfs.core.fuse.fs import MusicFSOperations

log = logging.getLogger(__name__)

EVENT_QUEUE = 1000  # file.opened events waiting for the thread; more are dropped
SETTLE = 0.3  # seconds without a newer open before a plan is made
COLLECT_MAX = 2.0  # ...but a stream of opens is planned for at least this often
MIN_GAP = 0.5  # seconds: an open sooner after the previous one is no "played after"
MAX_GAP = 3600.0  # seconds: a longer pause starts afresh
MAX_AHEAD = 32
CACHE_SHARE = 10  # copied ahead: at most 1/CACHE_SHARE of the cache limit
OUTSTANDING_FOR = 3600.0  # seconds a copied file not played yet counts against that
MIN_SCORE = 0.1  # a file only ever played after this one rarely is not worth a copy
QUIET = 0.2  # seconds without foreground reads before each copied MiB
BUSY_HANDLES = 8  # this many open files: the foreground is busy
STEP = 1024 * 1024  # bytes copied between looks at the foreground
_POLL = 0.05


class _Stopped(Signal, OSError):
    """The prefetcher was stopped in the middle of a copy."""


@dataclass
class PrefetchStats:
    """What a prefetcher did since it started (written by its thread only)."""

    opens: int = 0  # file.opened events handled
    learned: int = 0  # "played after" pairs counted
    planned: int = 0  # files put in a plan
    copied: int = 0  # files copied into the cache
    bytes: int = 0  # bytes read from origins for them
    hits: int = 0  # files copied ahead that were opened later
    skipped: int = 0  # planned files the limits left out
    failed: int = 0  # copies that failed
    paused: float = 0.0  # seconds waited for the foreground to be quiet


class ForegroundActivity:
    """Whether the mount is busy serving reads: a FUSE open or read in the last
    *quiet* seconds, or at least `BUSY_HANDLES` files open. Any thread."""

    def __init__(self, ops: MusicFSOperations, quiet: float = QUIET) -> None:
        self.ops = ops
        self.quiet = quiet
        self._count = -1
        self._changed = 0.0

    def __call__(self) -> bool:
        counts = self.ops.op_counts
        count = counts["read"] + counts["open"]
        now = time.monotonic()
        if count != self._count:
            self._count, self._changed = count, now
        return self.ops.library.open_handles >= BUSY_HANDLES or now - self._changed < self.quiet


class _YieldingFile(OriginFile):
    """An origin file read for a prefetch: a MiB at a time, each after the
    foreground is quiet; reading stops when the prefetcher does."""

    def __init__(self, file: OriginFile, prefetcher: Prefetcher) -> None:
        self._file = file
        self._prefetcher = prefetcher
        self.size, self.mtime_ns = file.size, file.mtime_ns
        self.bytes = 0

    def read(self, offset: int, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            self._prefetcher.wait_until_quiet()
            if self._prefetcher.stopping:
                raise _Stopped("prefetch stopped")
            want = min(STEP, size - len(out))
            data = self._file.read(offset + len(out), want)
            self.bytes += len(data)
            out += data
            if len(data) < want:
                break  # the end of the file
        return bytes(out)

    def close(self) -> None:
        self._file.close()


class Prefetcher:
    """Learns what is played after what, and copies the likely next files of
    remote origins into the content cache, one at a time, in one thread."""

    def __init__(
        self,
        catalog_path: str | Path,
        events: EventBus,
        federation: Federation,
        content: ContentCache,
        *,
        ahead: int = 2,
        max_bytes: int = 256 * 1024**2,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        """*busy* tells whether foreground reads are going on (never, when None)."""
        self.catalog_path = Path(catalog_path)
        self.federation = federation
        self.content = content
        self.ahead = min(ahead, MAX_AHEAD)
        self.max_bytes = max_bytes
        self.busy = busy or (lambda: False)
        self.stats = PrefetchStats()
        self._subscription = events.subscribe([EventType.FILE_OPENED], maxsize=EVENT_QUEUE)
        self._pending: deque[Track] = deque()  # the plan: files still to copy, best first
        self._outstanding: dict[int, tuple[int, float]] = {}  # copied, not played: size, when
        self._last: tuple[int, float] | None = None  # file id and time of the last open
        self._catalog: Catalog | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="musicfs-prefetch", daemon=True)
        self._supervisor: Supervisor | None = None

    @classmethod
    def for_mount(
        cls,
        config: Config,
        catalog_path: Path,
        *,
        events: EventBus,
        federation: Federation,
        content: ContentCache | None,
        ops: MusicFSOperations | None = None,
    ) -> Prefetcher | None:
        """The prefetcher of a mount being served (*ops*: its FUSE handlers, whose
        activity pauses the copies); None when there is nothing for it to do (no
        content cache, prefetch off, or only local-disk origins)."""
        if content is None or not config.prefetch.enabled or config.prefetch.ahead == 0:
            return None
        if all(origin.inline for origin in federation.origins.values()):
            return None
        return cls(
            catalog_path,
            events,
            federation,
            content,
            ahead=config.prefetch.ahead,
            max_bytes=config.prefetch.max_bytes,
            busy=ForegroundActivity(ops) if ops is not None else None,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Start the thread; with *supervisor*, a failure is counted and shown by
        status, and the loop starts again after a pause (else it ends)."""
        self._supervisor = supervisor
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (a copy in progress is abandoned) and stop listening."""
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        self._subscription.close()
        if self._catalog is not None and not self._thread.is_alive():
            self._catalog.close()
            self._catalog = None
        stats = self.stats
        if stats.opens:
            log.info("prefetch: %d files (%d bytes) copied ahead, %d of them played; "
                     "%d events dropped", stats.copied, stats.bytes, stats.hits,
                     self.dropped)  # fmt: skip

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def dropped(self) -> int:
        """file.opened events that found the queue full."""
        return self._subscription.dropped

    @property
    def pending(self) -> list[Track]:
        """The files of the current plan not copied yet, next first."""
        return list(self._pending)

    def _run(self) -> None:
        if self._supervisor is not None:
            self._supervisor.run_thread("prefetch", self._loop, self._stop)
            return
        try:
            self._loop()
        except Exception:  # prefetch is a nicety: never take anything down
            if not self._stop.is_set():  # else: the cache closed under a copy at shutdown
                log.exception("prefetch stopped after an unexpected error")

    def _loop(self) -> None:
        while not self._stop.is_set():
            events = self._collect(0 if self._pending else 0.5)
            if events:
                self.handle(events)
            elif self._pending:
                self.step()
            if self._supervisor is not None:
                self._supervisor.ok("prefetch")  # a round went through

    def _collect(self, timeout: float) -> list[Event]:
        """The opens that arrived, once none came for `SETTLE` s (or `COLLECT_MAX` s
        have passed): a burst of opens is planned for once."""
        event = self._subscription.get(timeout=timeout)
        if event is None:
            return []
        events, started = [event], time.monotonic()
        while len(events) < EVENT_QUEUE and time.monotonic() - started < COLLECT_MAX:
            more = self._subscription.get(timeout=SETTLE)
            if more is None or self._stop.is_set():
                break
            events.append(more)
        return events

    def _db(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog.open(self.catalog_path)
        return self._catalog

    # -- learning and planning --------------------------------------------------------------

    def handle(self, events: Sequence[Event]) -> list[Track]:
        """Learn from *events* (file opens, oldest first) and plan for the last
        file opened; return the new plan (the old one when nothing was opened)."""
        catalog = self._db()
        pairs, latest = [], None
        for event in events:
            self.stats.opens += 1
            track = catalog.track_at(event.origin, event.path)
            if track is None:
                continue
            if self._outstanding.pop(track.id, None) is not None:
                self.stats.hits += 1
            if self._last is not None and self._last[0] == track.id:
                continue  # opened again (players probe, then play)
            if self._last is not None and MIN_GAP <= event.time - self._last[1] <= MAX_GAP:
                pairs.append((self._last[0], track.id, event.time))
            self._last = (track.id, event.time)
            latest = track
        if pairs:
            try:
                with catalog.transaction():
                    catalog.record_played_after(pairs)
                self.stats.learned += len(pairs)
            except sqlite3.Error as exc:  # busy catalog, file removed meanwhile
                log.debug("prefetch: could not record what was played: %s", exc)
        if latest is not None:
            self._pending = deque(self.plan(latest))
        return list(self._pending)

    def plan(self, track: Track) -> list[Track]:
        """The files to have in the cache after *track* was opened, best first:
        at most `ahead`, within the byte limits; local-disk and cached files
        take their place in the plan but need no copy, so are left out."""
        catalog = self._db()
        scores: dict[int, float] = {}
        order: dict[int, int] = {}
        found: dict[int, Track] = {}
        for k, successor in enumerate(catalog.album_successors(track.id, self.ahead), 1):
            scores[successor.id], order[successor.id] = 0.5 / k, k
            found[successor.id] = successor
        pairs, total = catalog.played_after(track.id, max(8, self.ahead))
        for rank, (file_id, count) in enumerate(pairs, MAX_AHEAD + 1):
            scores[file_id] = scores.get(file_id, 0.0) + count / (total + 1)
            order.setdefault(file_id, rank)
        ranked = sorted(
            (i for i in scores if i != track.id and (i in found or scores[i] >= MIN_SCORE)),
            key=lambda i: (-scores[i], order[i]),
        )
        budget = min(self.max_bytes, self.content.store.limit // CACHE_SHARE)
        plan: list[Track] = []
        for position, file_id in enumerate(ranked[: self.ahead]):
            candidate = found.get(file_id) or catalog.track(file_id)
            if candidate is None or candidate.error is not None:
                continue
            if not self._wanted(candidate):
                continue  # a local disk, or cached already: nothing to copy
            if candidate.size > budget:
                self.stats.skipped += len(ranked[: self.ahead]) - position
                break  # over the byte limit: this file and the ones after it wait
            budget -= candidate.size
            plan.append(candidate)
        self.stats.planned += len(plan)
        return plan

    def _wanted(self, track: Track) -> bool:
        """Whether copying *track* ahead helps: a remote origin's file not cached yet."""
        origin = self.federation.origins.get(track.origin)
        if origin is None or origin.inline:
            return False
        return not self.content.has(version_of(track))

    # -- copying -------------------------------------------------------------------------

    def step(self) -> bool:
        """Copy the next file of the plan (blocking); False when there was none."""
        if not self._pending:
            return False
        track = self._pending.popleft()
        if not self._wanted(track) or not self.federation.online(track.origin):
            return True
        now = time.monotonic()
        for file_id, (_, when) in list(self._outstanding.items()):
            if now - when > OUTSTANDING_FOR:
                del self._outstanding[file_id]
        ahead = sum(size for size, _ in self._outstanding.values())
        if ahead + track.size > self.content.store.limit // CACHE_SHARE:
            self.stats.skipped += 1
            return True
        self.wait_until_quiet()
        if self.stopping:
            return True
        reader: _YieldingFile | None = None
        try:
            with self.federation.open(track.origin, track.relpath) as file:
                reader = _YieldingFile(file, self)
                copied = self.content.fill(version_of(track), reader)
        except _Stopped:
            return True
        except OSError as exc:
            self.stats.failed += 1
            log.info("prefetch of %s/%s failed: %s", track.origin, track.relpath, exc)
            return True
        finally:
            if reader is not None:
                self.stats.bytes += reader.bytes
        if copied:
            self.stats.copied += 1
            self._outstanding[track.id] = (track.size, time.monotonic())
            log.debug("prefetched %s/%s", track.origin, track.relpath)
        return True

    def wait_until_quiet(self) -> None:
        """Block while the foreground is busy (until stopped)."""
        started = time.monotonic()
        while self.busy() and not self._stop.wait(_POLL):
            pass
        self.stats.paused += time.monotonic() - started
