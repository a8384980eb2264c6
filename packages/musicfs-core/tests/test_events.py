"""The event bus: filters, bounded queues that drop instead of blocking, redaction."""

from __future__ import annotations

import threading

import pytest

from musicfs.core.events import EventBus, EventType, event_type
from musicfs.core.secrets.redact import clear_secrets, register_secret


def test_subscribers_get_only_the_types_and_origin_they_asked_for() -> None:
    bus = EventBus()
    everything = bus.subscribe()
    corrupt_on_nas = bus.subscribe([EventType.CHUNK_CORRUPT], origin="nas")
    bus.publish(EventType.CHUNK_CORRUPT, origin="nas", path="a.flac", error="hash")
    bus.publish(EventType.CHUNK_CORRUPT, origin="disk", path="b.flac")
    bus.publish(EventType.FILE_OPENED, origin="nas", path="a.flac")
    got = corrupt_on_nas.get(timeout=0)
    assert got is not None
    assert (got.type, got.origin, got.path) == (
        EventType.CHUNK_CORRUPT,
        "nas",
        "a.flac",
    )
    assert got.details == {"error": "hash"}
    assert corrupt_on_nas.get(timeout=0) is None
    assert [e.type for e in iter(lambda: everything.get(timeout=0), None)] == [
        EventType.CHUNK_CORRUPT, EventType.CHUNK_CORRUPT, EventType.FILE_OPENED,
    ]  # fmt: skip
    assert bus.published[EventType.CHUNK_CORRUPT] == 2


def test_a_full_queue_drops_and_counts_and_never_blocks_the_publisher() -> None:
    bus = EventBus()
    slow = bus.subscribe(maxsize=3)
    done = threading.Event()

    def publish_many() -> None:
        for i in range(100):
            bus.publish(EventType.FILE_OPENED, path=f"{i}.flac")
        done.set()

    threading.Thread(target=publish_many).start()
    assert done.wait(timeout=10), "publish blocked on a subscriber that does not read"
    assert (slow.dropped, bus.dropped) == (97, 97)
    kept = [e.path for e in iter(lambda: slow.get(timeout=0), None)]
    assert kept == ["0.flac", "1.flac", "2.flac"]  # the oldest are kept, in order


def test_closed_subscriptions_receive_nothing() -> None:
    bus = EventBus()
    with bus.subscribe() as subscription:
        assert bus.subscribers == 1
    assert bus.subscribers == 0
    bus.publish(EventType.SYNC_STARTED, origin="x")
    assert subscription.get(timeout=0) is None


def test_secrets_in_details_are_redacted() -> None:
    register_secret("hunter2-very-secret")
    try:
        bus = EventBus()
        sub = bus.subscribe()
        bus.publish(EventType.ORIGIN_HEALTH, origin="s3", online=False,
                    error="auth failed for key hunter2-very-secret")  # fmt: skip
        event = sub.get(timeout=0)
        assert event is not None
        assert "hunter2-very-secret" not in str(event.as_dict())
        assert event.details["online"] is False
    finally:
        clear_secrets()


def test_unknown_type_names_are_refused_with_the_list() -> None:
    assert event_type("chunk.corrupt") is EventType.CHUNK_CORRUPT
    with pytest.raises(ValueError, match=r"unknown event type 'chunk\.broken'.*chunk\.corrupt"):
        event_type("chunk.broken")
