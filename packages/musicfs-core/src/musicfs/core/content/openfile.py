"""Open tracks and their requests: what is served on the FUSE thread, what in
a worker, and within which budget (DESIGN §13; the order of copies and what a
failure tells whom are in `readpolicy.py`).

An open track (`OpenTrack`) reads from one `Source` at a time: a file of one
of its origins, or the cached copy of one version. A request to it (an open,
`Opening`, or a read, `Reading`) is served in two steps that the FUSE skin
takes in turn:

- ``now()``: what needs no waiting, on the calling (FUSE) thread. Local
  disks and cached copies answer at once (a thread hop costs more than the
  read, see ENVIRONMENT.md); it returns the result, or None as soon as the
  next copy to ask could wait on a network. What it did is kept.
- ``finish()``: the rest, in a worker thread, from where ``now()`` stopped.
  Nothing is asked twice.

Both walk `ReadPolicy.candidates`; a read that fails over switches its
handle, under the handle's lock, to the copy that answered.

Every request has one budget, `Federation.request_budget` (stated there),
turned into a `Deadline` when the request starts. It is enforced here once:
`in_worker` answers EIO when the deadline passes, leaves the worker to finish
alone (closing what a late open opened) and counts the origin it waited on as
offline, so the next requests fail over, or fail, at once; the worker asks no
further source, and the federation retries no request, past the deadline.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

from musicfs.core.catalog.store import Node, Overlay, Track
from musicfs.core.content.chunks import CorruptChunk
from musicfs.core.content.readpolicy import Candidate, ReadPolicy, Source, version_of
from musicfs.core.errors import MusicFSError
from musicfs.core.origins.federation import Deadline

log = logging.getLogger(__name__)

T = TypeVar("T")


class LibraryError(MusicFSError, OSError):
    """A failed request, with the errno the caller should see."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)


@dataclass(slots=True)
class OpenPlan:
    """What opening a node needs, gathered from the catalog (on the FUSE thread)."""

    node: Node
    replicas: list[Track]  # the node's track first, then its other replicas
    overlay: Overlay | None = None  # the metadata overlay of the node's file


@dataclass(slots=True)
class OpenTrack:
    """An open track: the source it reads from, and what opening it found."""

    policy: ReadPolicy
    node: Node
    replicas: list[Track]
    source: Source | None  # None: every copy failed; reads answer EIO
    size: int  # what it serves: a fail-over only takes copies of this size
    overlay: Overlay | None = None
    stale: list[Track] = field(default_factory=list)  # replicas found changed or gone
    wants_fill: bool = False  # read from its origin, and not cached yet
    lock: threading.Lock = field(default_factory=threading.Lock)  # held while failing over
    closed: bool = False  # released by its caller: a late fail-over keeps nothing open

    @property
    def track(self) -> Track:
        return self.replicas[0] if self.source is None else self.source.track

    @property
    def cached(self) -> bool:
        return self.source is not None and self.source.candidate.cached

    def read(self, offset: int, size: int) -> Reading:
        """A read request of *size* bytes at *offset*: ``now()``, then ``finish()``."""
        return Reading(self, offset, size)

    def close(self) -> None:
        """Its handle is released (a worker given up on may still be reading)."""
        self.closed = True
        self.release()

    def release(self) -> None:
        source, self.source = self.source, None
        if source is not None:
            source.file.close()


class Request(Generic[T]):
    """What `in_worker` needs of a request: its deadline, what it waits on,
    the blocking rest of it, and how to give up."""

    __slots__ = ("deadline", "name", "policy", "waiting_on")

    def __init__(self, policy: ReadPolicy, name: str, deadline: Deadline) -> None:
        self.policy = policy
        self.name = name
        self.deadline = deadline
        self.waiting_on: str | None = None  # the origin asked at this moment

    def finish(self) -> T:
        raise NotImplementedError

    def abandon(self) -> None:
        """Its caller got EIO: whatever finishes later is dropped (by trio)."""


class Opening(Request[OpenTrack]):
    """Opening a planned node: the first candidate that answers becomes the source."""

    __slots__ = ("_abandoned", "_candidates", "_lock", "_next", "_opened", "_problems", "denied",
                 "gone")  # fmt: skip

    def __init__(self, policy: ReadPolicy, plan: OpenPlan, deadline: Deadline) -> None:
        super().__init__(policy, plan.node.name, deadline)
        self._opened = OpenTrack(policy, plan.node, plan.replicas, None, 0, plan.overlay)
        self._candidates = policy.candidates(plan.replicas)
        self._next: Candidate | None = None
        self._problems: list[str] = []
        self.gone = self.denied = 0
        self._abandoned = False
        self._lock = threading.Lock()  # against `abandon` while a late open lands
        if not any(t.origin in policy.federation.origins for t in plan.replicas):
            unknown = plan.replicas[0].origin
            raise LibraryError(errno.EIO, f"{self.name}: origin {unknown!r} is not configured")

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True

    def now(self) -> OpenTrack | None:
        """The open track, if a copy that needs no waiting answers first; else None."""
        return self._walk(stop_at_blocking=True)

    def finish(self) -> OpenTrack:
        opened = self._walk(stop_at_blocking=False)
        assert opened is not None
        with self._lock:
            if self._abandoned:  # answered EIO already: leave nothing open on the origin
                opened.release()
        return opened

    def _walk(self, *, stop_at_blocking: bool) -> OpenTrack | None:
        policy, opened = self._opened.policy, self._opened
        while True:
            candidate = self._next or next(self._candidates, None)
            self._next = None
            if candidate is None:
                raise self._failure(policy)
            if candidate.blocking and stop_at_blocking:
                self._next = candidate  # the worker goes on from here
                return None
            if self.deadline.expired:
                raise LibraryError(errno.EIO, f"{self.name}: no copy answered in time")
            if candidate.cached:
                cached = policy.open_cached(candidate.track)
                if cached is None:
                    continue
                opened.source, opened.size = Source(candidate, cached), cached.size
                return opened
            track = candidate.track
            self.waiting_on = track.origin
            try:
                file = policy.open_origin(track, self.deadline)
            except FileNotFoundError:
                self.gone += 1
                opened.stale.append(track)
                self._problems.append(f"{track.relpath} is gone from origin {track.origin!r}")
                continue
            except PermissionError as exc:
                self.denied += 1
                self._problems.append(str(exc))
                continue
            except OSError as exc:
                self._problems.append(str(exc))
                continue
            finally:
                self.waiting_on = None
            opened.source, opened.size = Source(candidate, file), file.size
            if (file.size, file.mtime_ns) != (track.size, track.mtime_ns):
                # Changed behind our back: serve what is there now, and rescan so the
                # tree (and the size the kernel was told) catches up. The overlay was
                # made for the old header: not for this one.
                opened.stale.append(track)
                opened.overlay = None
            elif policy.content is not None and not policy.content.has(version_of(track)):
                opened.wants_fill = True
            return opened

    def _failure(self, policy: ReadPolicy) -> LibraryError:
        problems = list(self._problems)
        known = [t for t in self._opened.replicas if t.origin in policy.federation.origins]
        for track in known:
            if not policy.federation.online(track.origin):
                problems.append(f"origin {track.origin!r} is offline")
        message = f"{self.name}: {'; '.join(dict.fromkeys(problems))}"
        if self.gone == len(known):
            return LibraryError(errno.ENOENT, message)
        if self.denied and self.denied + self.gone == len(known):
            return LibraryError(errno.EACCES, message)
        return LibraryError(errno.EIO, f"{message}, and it is not cached")


class Reading(Request[bytes]):
    """One read of an open track: overlay header, then bytes of its source."""

    __slots__ = ("_candidates", "_next", "error", "offset", "opened", "prefix", "size")

    def __init__(self, opened: OpenTrack, offset: int, size: int) -> None:
        super().__init__(opened.policy, opened.node.name, opened.policy.deadline())
        self.opened = opened
        self.prefix = b""
        overlay = opened.overlay
        if overlay is not None and overlay.header is not None:
            # The synthesized header, then the file's bytes after its own.
            header = overlay.header
            if offset < len(header):
                self.prefix = header[offset : offset + size]
                offset, size = len(header), size - len(self.prefix)
            offset += overlay.header_length - len(header)
        self.offset, self.size = offset, size
        self._candidates: Iterator[Candidate] | None = None  # set once failing over
        self._next: Candidate | None = None
        self.error: Exception | None = None  # what made this read fail over

    def now(self) -> bytes | memoryview | None:
        """The bytes, if the source and any copy it fails over to need no
        waiting; else None (what was tried is not tried again)."""
        if self.size <= 0:
            return self.prefix
        opened = self.opened
        if self._candidates is None:
            source = opened.source
            if source is None:
                raise self._no_copy()
            if source.candidate.blocking or source.broken:
                return None
            try:
                data = source.read(self.offset, self.size, self.deadline)
            except (CorruptChunk, OSError) as exc:
                if not opened.lock.acquire(blocking=False):
                    self.error = exc
                    return None  # another read is failing over: wait for it in a worker
                try:
                    return self._fail_over(source, exc, stop_at_blocking=True)
                finally:
                    opened.lock.release()
            # (b"" + a view of the cache's bytes would copy them)
            return self.prefix + data if self.prefix else data
        return None

    def finish(self) -> bytes:
        if self.size <= 0:
            return self.prefix
        opened = self.opened
        if self._candidates is None:
            source = opened.source
            if source is None:
                raise self._no_copy()
            if not source.broken and self.error is None:  # (else `now()` saw it fail)
                self.waiting_on = None if source.candidate.cached else source.track.origin
                try:
                    return self.prefix + source.read(self.offset, self.size, self.deadline)
                except (CorruptChunk, OSError) as exc:
                    self.error = exc
                finally:
                    self.waiting_on = None
        with opened.lock:
            source = opened.source
            if self._candidates is None and source is not None:
                data = self._fail_over(source, self.error, stop_at_blocking=False)
            else:  # `now()` stopped at a copy that may block: go on from there
                data = self._walk(stop_at_blocking=False)
            assert data is not None
            return data

    def _no_copy(self) -> LibraryError:
        return LibraryError(errno.EIO, f"{self.name}: no copy of it can be read")

    def _fail_over(
        self, failed: Source, error: Exception | None, *, stop_at_blocking: bool
    ) -> bytes | None:
        """Under the track's lock: *failed* did not answer; finish from another copy."""
        opened = self.opened
        current = opened.source
        if current is not failed:  # another read failed over meanwhile: use its choice
            if current is None:
                raise self._no_copy()
            if current.candidate.blocking and stop_at_blocking:
                return None
            return self.prefix + current.read(self.offset, self.size, self.deadline)
        if failed.failure is None:  # the first read to see it fail reports it
            failed.failure = error if error is not None else OSError(errno.EIO, "read failed")
            opened.policy.failed(self.name, failed, failed.failure)
        self.error = self.error or failed.failure
        self._candidates = opened.policy.candidates(opened.replicas, skip=failed.candidate)
        return self._walk(stop_at_blocking=stop_at_blocking)

    def _walk(self, *, stop_at_blocking: bool) -> bytes | None:
        opened, policy = self.opened, self.opened.policy
        assert self._candidates is not None
        while True:
            candidate = self._next or next(self._candidates, None)
            self._next = None
            if candidate is None:
                opened.release()  # the handle stays failed: later reads answer EIO at once
                raise LibraryError(
                    errno.EIO, f"{self.name}: {self.error}; no other copy can be read"
                )
            if candidate.blocking and stop_at_blocking:
                self._next = candidate
                return None
            if self.deadline.expired:
                raise LibraryError(errno.EIO, f"{self.name}: no copy answered in time")
            current = opened.source
            if current is not None and not current.broken:
                # Another read failed over meanwhile (we waited for the lock).
                if current.candidate.blocking and stop_at_blocking:
                    return None
                return self.prefix + current.read(self.offset, self.size, self.deadline)
            self.waiting_on = None if candidate.cached else candidate.track.origin
            try:
                source = policy.take_over(candidate, opened.size, self.deadline, self.name)
            finally:
                self.waiting_on = None
            if source is None:
                continue
            self.waiting_on = None if candidate.cached else candidate.track.origin
            try:
                data = source.read(self.offset, self.size, self.deadline)
            except (CorruptChunk, OSError) as exc:
                log.info("%s: %s failed too: %s", self.name, policy.describe(candidate), exc)
                source.file.close()  # releases a cached copy's pins
                continue
            finally:
                self.waiting_on = None
            if opened.closed:  # its caller is gone (it gave up on this read)
                source.file.close()
                return self.prefix + data
            old, opened.source = opened.source, source
            if old is not None:
                old.file.close()
            log.info("%s: now reading %s", self.name, policy.describe(candidate))
            return self.prefix + data


async def in_worker(request: Request[T], limiter: trio.CapacityLimiter) -> T:
    """``request.finish()`` in a worker thread, answered by the request's deadline.

    Past it the caller gets EIO at once: the worker is left to finish alone
    (a late open closes what it opened), and the origin it waited on counts
    as offline, so the next requests fail over, or fail, without waiting.
    """
    finish: Callable[[], T] = request.finish
    with trio.move_on_after(request.deadline.remaining()):
        return await trio.to_thread.run_sync(finish, limiter=limiter, abandon_on_cancel=True)
    policy = request.policy
    request.abandon()
    policy.timed_out(request.waiting_on)
    waited = f"origin {request.waiting_on!r}" if request.waiting_on else "a worker"
    budget = policy.federation.request_budget
    raise LibraryError(errno.EIO, f"{request.name}: {waited} gave no answer within {budget:.0f} s")
