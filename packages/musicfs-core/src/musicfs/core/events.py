"""The event bus: what happened in a mount, told to whoever listens (SPEC §9).

Any thread may `EventBus.publish` — the FUSE thread when a file is opened, a
worker when a chunk turns out corrupt, the trio loop when an origin's health
changes. Publishing never blocks: each subscriber (a gRPC stream, the webhook
sender, the metrics) has its own bounded queue, and an event that does not fit
is dropped and counted, so a slow consumer can never slow down a read.

Event details pass through `redact`, so a secret inside an error message never
leaves the daemon in an event.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from musicfs.core.secrets.redact import redact

log = logging.getLogger(__name__)

DetailValue = str | int | float | bool


class EventType(enum.StrEnum):
    """Every kind of event, named ``subject.what`` (the name used in filters)."""

    FILE_OPENED = "file.opened"
    SYNC_STARTED = "sync.started"
    SYNC_COMPLETED = "sync.completed"
    TRACK_MOVED = "track.moved"
    ORIGIN_HEALTH = "origin.health"
    CACHE_EVICTED = "cache.evicted"
    CACHE_PINNED = "cache.pinned"
    CACHE_UNPINNED = "cache.unpinned"
    CHUNK_CORRUPT = "chunk.corrupt"
    PLUGIN_LOADED = "plugin.loaded"
    PLUGIN_UNLOADED = "plugin.unloaded"
    PLUGIN_FAILED = "plugin.failed"
    TREE_CHANGED = "tree.changed"  # path: a folder of the mount whose listing changed


def event_type(name: str) -> EventType:
    """The `EventType` called *name*; a ValueError listing the valid names if none is."""
    try:
        return EventType(name)
    except ValueError:
        valid = ", ".join(t.value for t in EventType)
        raise ValueError(f"unknown event type {name!r}; the types are: {valid}") from None


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened. *origin* and *path* are empty when they do not apply."""

    type: EventType
    time: float
    origin: str = ""
    path: str = ""
    details: dict[str, DetailValue] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "type": self.type.value,
            "time": self.time,
            "origin": self.origin,
            "path": self.path,
            "details": dict(self.details),
        }


class Subscription:
    """The events one consumer asked for, in a bounded queue of its own."""

    def __init__(
        self,
        bus: EventBus,
        types: frozenset[EventType] | None,
        origin: str | None,
        maxsize: int,
    ) -> None:
        self._bus = bus
        self.types = types
        self.origin = origin
        self._queue: queue.Queue[Event] = queue.Queue(maxsize)
        self.dropped = 0  # events that found the queue full

    def wants(self, event: Event) -> bool:
        if self.types is not None and event.type not in self.types:
            return False
        return self.origin is None or event.origin == self.origin

    def offer(self, event: Event) -> bool:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None if none came within *timeout* seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fans events out to subscribers; counts what was published and dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscription, ...] = ()
        self.published: dict[EventType, int] = dict.fromkeys(EventType, 0)
        self.dropped = 0

    def subscribe(
        self,
        types: Iterable[EventType] | None = None,
        origin: str | None = None,
        maxsize: int = 1000,
    ) -> Subscription:
        """Receive the events of *types* (all when None) about *origin* (any when None)."""
        wanted = None if types is None else frozenset(types) or None
        subscription = Subscription(self, wanted, origin or None, maxsize)
        with self._lock:
            self._subscribers = (*self._subscribers, subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscription)

    def publish(
        self, type: EventType, *, origin: str = "", path: str = "", **details: DetailValue
    ) -> Event:
        """Tell every interested subscriber; never blocks."""
        clean = {k: redact(v) if isinstance(v, str) else v for k, v in details.items()}
        event = Event(type, time.time(), origin, path, clean)
        dropped = 0
        for subscription in self._subscribers:  # a tuple: replaced, never mutated
            if subscription.wants(event) and not subscription.offer(event):
                dropped += 1
        with self._lock:
            self.published[type] += 1
            self.dropped += dropped
        return event

    def wanted(self, type: EventType) -> bool:
        """Whether any subscriber wants events of *type* (to skip costly details)."""
        return any(s.types is None or type in s.types for s in self._subscribers)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
