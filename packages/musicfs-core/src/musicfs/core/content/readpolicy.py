"""The read policy's decisions (DESIGN §13): the order in which copies of a
track are tried, whether asking one may wait, what a failed copy tells the
federation and the event bus, and when a request must be answered.

`ReadPolicy.candidates` is the one place fail-over is defined: for each
replica in the federation's order (online first, then by priority), the
cached copy of its exact version when its origin is remote (the same bytes
without the network), then the origin itself while it is online; last, the
cached copy of any replica. Opening takes the first that answers; a read
whose copy fails takes the first of the others that has the same size and
catalogued version (`take_over`). Wrong bytes are never served.

The requests that walk this order live in `openfile.py`.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from musicfs.core.catalog.store import Track
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.cachedfile import CachedFile
from musicfs.core.content.chunks import CorruptChunk
from musicfs.core.content.manifests import Version
from musicfs.core.events import EventBus, EventType
from musicfs.core.origins.base import FileChanged, OriginFile, OriginUnavailable
from musicfs.core.origins.federation import Deadline, Federation, LimitedFile

log = logging.getLogger(__name__)


def version_of(track: Track) -> Version:
    return Version(track.origin, track.relpath, track.size, track.mtime_ns, track.format)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One copy a request may try: a replica's origin file, or its cached copy."""

    track: Track
    cached: bool
    blocking: bool  # asking it may wait on a network

    @property
    def key(self) -> tuple[int, bool]:
        return self.track.id, self.cached


@dataclass(slots=True)
class Source:
    """The copy an open track reads from now."""

    candidate: Candidate
    file: OriginFile | CachedFile
    failure: Exception | None = None  # why a read failed: the handle is failing over

    @property
    def broken(self) -> bool:
        return self.failure is not None

    @property
    def track(self) -> Track:
        return self.candidate.track

    @property
    def size(self) -> int:
        return self.file.size

    def read(self, offset: int, size: int, deadline: Deadline) -> bytes | memoryview:
        if isinstance(self.file, LimitedFile):
            return self.file.read_within(offset, size, deadline)
        return self.file.read(offset, size)


class ReadPolicy:
    """Fail-over order, the request budget, and what a failure tells the federation."""

    def __init__(
        self, federation: Federation, content: ContentCache | None, events: EventBus
    ) -> None:
        self.federation = federation
        self.content = content
        self.events = events

    def deadline(self) -> Deadline:
        """When a request starting now must have been answered."""
        return Deadline.after(self.federation.request_budget)

    def candidates(
        self, replicas: list[Track], skip: Candidate | None = None
    ) -> Iterator[Candidate]:
        """The copies of a track in the order requests try them (evaluated as
        they go: an origin found offline meanwhile is passed over)."""
        federation = self.federation
        ranked_ids = federation.ranked(dict.fromkeys(t.origin for t in replicas))
        order = {oid: i for i, oid in enumerate(ranked_ids)}
        ranked = sorted((t for t in replicas if t.origin in order), key=lambda t: order[t.origin])
        skipped = skip.key if skip is not None else None
        offered: set[tuple[int, bool]] = set()
        for track in ranked:
            remote = not federation[track.origin].inline
            if remote and self.content is not None:
                offered.add((track.id, True))
                if (track.id, True) != skipped:
                    yield Candidate(track, cached=True, blocking=False)
            if (track.id, False) != skipped and federation.online(track.origin):
                yield Candidate(track, cached=False, blocking=remote)
        if self.content is not None:  # no origin answers: a cached copy of any replica
            for track in replicas:
                if (track.id, True) not in offered and (track.id, True) != skipped:
                    yield Candidate(track, cached=True, blocking=False)

    def describe(self, candidate: Candidate) -> str:
        return "the cached copy" if candidate.cached else f"origin {candidate.track.origin!r}"

    def open_cached(self, track: Track) -> CachedFile | None:
        return self.content.open(version_of(track)) if self.content is not None else None

    def open_origin(self, track: Track, deadline: Deadline) -> OriginFile:
        origin = self.federation[track.origin]
        if origin.inline:  # a local disk: no limits or retries worth their cost
            try:
                return origin.open(track.relpath)
            except OriginUnavailable as exc:
                self.federation.failed(origin.id, exc)
                raise
        return self.federation.open(origin.id, track.relpath, deadline)

    def take_over(
        self, candidate: Candidate, size: int, deadline: Deadline, name: str
    ) -> Source | None:
        """Open *candidate* to go on reading *name*, a track of *size* bytes, if
        it holds exactly those bytes (the same size, and the catalogued version)."""
        track = candidate.track
        if candidate.cached:
            cached = self.open_cached(track)
            if cached is not None and cached.size != size:
                cached.close()  # releases its pins
                return None
            return Source(candidate, cached) if cached is not None else None
        try:
            file = self.open_origin(track, deadline)
        except OSError as exc:
            log.info("%s: replica on %r failed too: %s", name, track.origin, exc)
            return None
        if (file.size, file.mtime_ns) != (size, track.mtime_ns):
            file.close()  # another version than the one catalogued: bytes may differ
            return None
        return Source(candidate, file)

    def failed(self, name: str, source: Source, error: Exception) -> None:
        """Tell who needs to know that *source* failed a read (once per source)."""
        track = source.track
        if source.candidate.cached:
            if isinstance(error, CorruptChunk):  # never wrong bytes: reported once
                self.events.publish(EventType.CHUNK_CORRUPT, origin=track.origin,
                                    path=track.relpath, error=str(error))  # fmt: skip
        elif not source.candidate.blocking and not isinstance(
            error, FileNotFoundError | FileChanged
        ):  # reads of a local disk bypass the federation, which counts the others
            self.federation.failed(track.origin, error)
        log.warning("%s: reading from %s failed (%s); failing over", name,
                    self.describe(source.candidate), error)  # fmt: skip

    def timed_out(self, origin_id: str | None) -> None:
        """A request waiting on *origin_id* got no answer within its budget: the
        origin is offline until a health check finds it again."""
        if origin_id is not None and origin_id in self.federation.origins:
            budget = self.federation.request_budget
            error = OriginUnavailable(
                origin_id, f"no answer within {budget:.0f} s", errno.ETIMEDOUT
            )
            self.federation.failed(origin_id, error)
