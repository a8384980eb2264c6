"""tree.changed events: the folders whose listing changed, by path, one per batch."""

from __future__ import annotations

from pathlib import Path

from musicfs.core.catalog.layout import ChangeKind, Layout, TreeChange
from musicfs.core.catalog.store import ROOT_NODE, Catalog
from musicfs.core.catalog.templates import PathTemplate
from musicfs.core.events import EventBus, EventType, Subscription
from musicfs.core.model import FileStat, ScannedFile, TrackTags
from musicfs.core.mount import treeevents
from musicfs.core.mount.treeevents import TreeEvents


def place(catalog: Catalog, layout: Layout, relpath: str, **tags: str) -> list[TreeChange]:
    with catalog.transaction():
        scanned = ScannedFile("lib", relpath, FileStat(100, 1), "flac", TrackTags(**tags))  # type: ignore[arg-type]
        file_id = catalog.upsert_file(scanned)
        return layout.place(file_id, relpath, "flac", TrackTags(**tags))  # type: ignore[arg-type]


def drain(subscription: Subscription) -> list[str]:
    paths = []
    while (event := subscription.get(timeout=0)) is not None:
        assert event.type is EventType.TREE_CHANGED
        paths.append(event.path)
    return paths


def setup(tmp_path: Path) -> tuple[Catalog, Layout, EventBus, TreeEvents]:
    catalog = Catalog.open(tmp_path / "catalog.sqlite3")
    layout = Layout(catalog, PathTemplate.parse("$artist/$album/$title.$format"))
    bus = EventBus()
    return catalog, layout, bus, TreeEvents(tmp_path / "catalog.sqlite3", bus)


def test_a_move_names_every_folder_whose_listing_changed_once(tmp_path: Path) -> None:
    catalog, layout, bus, tree = setup(tmp_path)
    place(catalog, layout, "t.flac", artist="A", album="X", title="T")
    place(catalog, layout, "u.flac", artist="A", album="Y", title="U")
    with bus.subscribe([EventType.TREE_CHANGED]) as events:
        # A retag moves T from A/X (left empty, so removed) to a new artist B.
        tree.offer(place(catalog, layout, "t.flac", artist="B", album="X", title="T"))
        assert tree.publish_pending(catalog) == 4
        assert sorted(drain(events)) == ["", "A", "B", "B/X"]
        # A new header at the same path: only its folder (not its parent, whose
        # entry's mtime moved with it).
        track, folder = catalog.resolve("A/Y/U.flac"), catalog.resolve("A/Y")
        assert track is not None
        assert folder is not None
        changes = [
            TreeChange(ChangeKind.CHANGED, track.parent, track.name, track.id),
            TreeChange(ChangeKind.CHANGED, folder.parent, folder.name, folder.id),
        ]
        tree.offer(changes)
        tree.offer(changes)  # twice in one batch: one event
        tree.publish_pending(catalog)
        assert drain(events) == ["A/Y"]


def test_nothing_is_resolved_without_a_subscriber_and_an_overflow_names_the_root(
    tmp_path: Path,
) -> None:
    catalog, layout, bus, tree = setup(tmp_path)
    changes = place(catalog, layout, "t.flac", artist="A", album="X", title="T")
    tree.offer(changes)  # nobody listens: dropped at once
    with bus.subscribe([EventType.TREE_CHANGED]) as events:
        assert tree.publish_pending(catalog) == 0
        assert drain(events) == []
        many = [TreeChange(ChangeKind.ADDED, 10_000 + i, "x", 20_000 + i)
                for i in range(treeevents.MAX_PENDING + 1)]  # fmt: skip
        tree.offer(many)
        tree.publish_pending(catalog)
        assert drain(events) == [""]
        tree.offer([TreeChange(ChangeKind.CHANGED, ROOT_NODE, "", ROOT_NODE)])  # a rebuild
        tree.publish_pending(catalog)
        assert drain(events) == [""]


def test_the_thread_publishes_what_is_offered_and_stops(tmp_path: Path) -> None:
    catalog, layout, bus, tree = setup(tmp_path)
    with bus.subscribe([EventType.TREE_CHANGED]) as events:
        tree.start()
        try:
            tree.offer(place(catalog, layout, "t.flac", artist="A", album="X", title="T"))
            seen: set[str] = set()
            while len(seen) < 3:
                event = events.get(timeout=10)
                assert event is not None, f"only {seen} within 10 s"
                seen.add(event.path)
            assert seen == {"", "A", "A/X"}
        finally:
            tree.stop()
