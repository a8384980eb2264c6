"""Prefetch (FR-19): what is learned from opens, what is planned, the limits,
copying in the background, and that nothing it does can slow down the bus.

The remote origin is a local folder declared an ``nfs`` share: not ``inline``,
so it is prefetched like S3 or SFTP would be, and tests need no server.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from musicfs.core.catalog.store import SCHEMA_VERSION, Catalog, Track
from musicfs.core.config.settings import Config, PrefetchSettings, load_config
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.library import version_of
from musicfs.core.events import Event, EventBus, EventType
from musicfs.core.model import FileStat, ScannedFile, TrackTags
from musicfs.core.mount.prefetch import CACHE_SHARE, MAX_GAP, MIN_GAP, Prefetcher
from musicfs.core.origins.federation import Federation
from musicfs.core.origins.local import LocalOrigin

SIZE = 64 * 1024  # bytes per test track


@dataclass
class Setup:
    catalog: Catalog
    roots: dict[str, Path]
    federation: Federation
    content: ContentCache
    events: EventBus
    made: list[Prefetcher]

    def add(self, origin: str, relpath: str, size: int = SIZE, **tags: Any) -> Track:
        path = self.roots[origin] / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        st = path.stat()
        scanned = ScannedFile(origin, relpath, FileStat(st.st_size, st.st_mtime_ns), "mp3",
                              TrackTags(**tags))  # fmt: skip
        with self.catalog.transaction():
            file_id = self.catalog.upsert_file(scanned)
        track = self.catalog.track(file_id)
        assert track is not None
        return track

    def album(self, origin: str, name: str, count: int, size: int = SIZE) -> list[Track]:
        return [
            self.add(origin, f"{name}/{n:02d}.mp3", size, album=name, track=n, title=f"T{n}")
            for n in range(1, count + 1)
        ]

    def prefetcher(self, **options: Any) -> Prefetcher:
        prefetcher = Prefetcher(self.catalog.path, self.events, self.federation, self.content,
                                **options)  # fmt: skip
        self.made.append(prefetcher)
        return prefetcher

    def cached(self, track: Track) -> bool:
        return self.content.has(version_of(track))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    roots = {"cloud": tmp_path / "cloud", "disk": tmp_path / "disk"}
    for root in roots.values():
        root.mkdir()
    origins = {"cloud": LocalOrigin("cloud", roots["cloud"], kind="nfs"),
               "disk": LocalOrigin("disk", roots["disk"])}  # fmt: skip
    assert not origins["cloud"].inline
    assert origins["disk"].inline
    catalog = Catalog.open(tmp_path / "catalog.sqlite3")
    content = ContentCache(tmp_path / "content", limit=100 * 1024**2)
    made: list[Prefetcher] = []
    yield Setup(catalog, roots, Federation(origins), content, EventBus(), made)
    for prefetcher in made:
        prefetcher.stop()
    content.close()
    catalog.close()


def opened(track: Track, at: float) -> Event:
    return Event(EventType.FILE_OPENED, at, track.origin, track.relpath, {"source": "origin"})


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class AlwaysBusy:
    """A foreground that is always busy, counting how often it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return True


def ids(tracks: list[Track]) -> list[int]:
    return [t.id for t in tracks]


# -- the catalog's part ------------------------------------------------------------------


def test_album_successors_follow_disc_then_track_within_the_album(setup: Setup) -> None:
    add = setup.add
    d2t1 = add("cloud", "A/2-01.mp3", album="A", disc=2, track=1)
    d1t2 = add("cloud", "A/1-02.mp3", album="A", disc=1, track=2)
    d1t1 = add("cloud", "A/1-01.mp3", album="A", disc=1, track=1)
    other = add("cloud", "A/bonus.mp3", album="B", track=1)  # another album in the folder
    elsewhere = add("cloud", "B/1-03.mp3", album="A", disc=1, track=3)  # another folder
    untagged = [add("cloud", f"loose/{name}.mp3") for name in ("c", "a", "b")]
    catalog = setup.catalog
    assert ids(catalog.album_successors(d1t1.id, 5)) == [d1t2.id, d2t1.id]
    assert ids(catalog.album_successors(d1t1.id, 1)) == [d1t2.id]
    assert catalog.album_successors(d2t1.id, 5) == []
    assert catalog.album_successors(other.id, 5) == []
    assert catalog.album_successors(elsewhere.id, 5) == []
    by_name = sorted(untagged, key=lambda t: t.relpath)
    assert ids(catalog.album_successors(by_name[0].id, 5)) == ids(by_name[1:])


def test_the_catalog_is_upgraded_to_the_played_after_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    Catalog.open(path).close()
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_9 + "DROP TABLE played_after; PRAGMA user_version = 7;")
    with Catalog.open(path) as catalog:
        assert catalog.schema_version == SCHEMA_VERSION
        assert catalog.played_after(1) == ([], 0)


# -- learning ------------------------------------------------------------------------------


def test_a_file_opened_after_another_is_counted_as_played_after_it(setup: Setup) -> None:
    a, b, c, d = setup.album("cloud", "X", 4)
    prefetcher = setup.prefetcher()
    t = 1000.0
    prefetcher.handle([opened(a, t), opened(b, t + 200)])
    prefetcher.handle([opened(b, t + 201)])  # opened again: still the same play
    prefetcher.handle([opened(c, t + 200 + MIN_GAP / 2)])  # a skip / a scan: not learned
    prefetcher.handle([opened(d, t + 200 + MAX_GAP * 2)])  # a new session: not learned
    prefetcher.handle([opened(a, t + 200 + MAX_GAP * 2 + 300)])
    catalog = setup.catalog
    assert catalog.played_after(a.id) == ([(b.id, 1)], 1)
    assert catalog.played_after(b.id) == ([], 0)
    assert catalog.played_after(c.id) == ([], 0)
    assert catalog.played_after(d.id) == ([(a.id, 1)], 1)
    later = t + 4 * MAX_GAP
    prefetcher.handle([opened(b, later), opened(a, later + 300), opened(b, later + 500)])
    assert catalog.played_after(a.id) == ([(b.id, 2)], 2)
    assert prefetcher.stats.learned == 4


def test_unknown_files_are_ignored(setup: Setup) -> None:
    (a,) = setup.album("cloud", "X", 1)
    prefetcher = setup.prefetcher()
    gone = Event(EventType.FILE_OPENED, 10.0, "cloud", "not/catalogued.mp3")
    assert prefetcher.handle([gone]) == []
    assert prefetcher.handle([opened(a, 20.0), gone]) == []
    assert prefetcher.stats.opens == 3


# -- planning ------------------------------------------------------------------------------


def test_the_plan_is_the_next_tracks_of_the_album(setup: Setup) -> None:
    album = setup.album("cloud", "X", 6)
    assert ids(setup.prefetcher(ahead=4).plan(album[0])) == ids(album[1:5])
    prefetcher = setup.prefetcher(ahead=2)
    assert ids(prefetcher.handle([opened(album[0], 10.0)])) == ids(album[1:3])
    assert ids(prefetcher.handle([opened(album[3], 20.0)])) == ids(album[4:6])
    assert ids(prefetcher.handle([opened(album[5], 30.0)])) == []  # the album's end
    # The listener went from track 1 to track 4 once: it now has a place ahead.
    assert ids(prefetcher.plan(album[0])) == [album[1].id, album[3].id]


def test_a_burst_of_opens_is_planned_for_its_last_file(setup: Setup) -> None:
    album = setup.album("cloud", "X", 8)
    prefetcher = setup.prefetcher(ahead=2)
    burst = [opened(track, 10.0 + i * 0.01) for i, track in enumerate(album[:5])]
    assert ids(prefetcher.handle(burst)) == ids(album[5:7])
    assert prefetcher.stats.learned == 0  # 10 ms apart: browsing, not listening


def test_what_was_played_after_a_track_before_is_planned_too(setup: Setup) -> None:
    album = setup.album("cloud", "X", 5)
    favourite = setup.album("cloud", "Y", 8)[6]
    prefetcher = setup.prefetcher(ahead=2)
    t = 1000.0
    prefetcher.handle([opened(album[2], t), opened(favourite, t + 300)])
    # Once: as likely as the album's next track, which goes first.
    assert ids(prefetcher.plan(album[2])) == [album[3].id, favourite.id]
    prefetcher.handle([opened(album[2], t + 600), opened(favourite, t + 900)])
    # Twice out of twice: first.
    assert ids(prefetcher.plan(album[2])) == [favourite.id, album[3].id]
    # At the album's end what was played after it is all there is.
    prefetcher.handle([opened(album[4], t + 1200), opened(favourite, t + 1500)])
    assert ids(prefetcher.plan(album[4])) == [favourite.id]


def test_a_rare_successor_is_not_worth_a_copy(setup: Setup) -> None:
    album = setup.album("cloud", "X", 1)
    others = setup.album("cloud", "Y", 12)
    prefetcher = setup.prefetcher(ahead=2)
    events = []
    for n, other in enumerate(others):  # after X/01, a different track each time
        events += [opened(album[0], 1000.0 * n), opened(other, 1000.0 * n + 300)]
    prefetcher.handle(events)
    assert prefetcher.plan(album[0]) == []


# -- limits --------------------------------------------------------------------------------


def test_local_disk_and_cached_files_are_not_copied(setup: Setup) -> None:
    local = setup.album("disk", "L", 3)
    prefetcher = setup.prefetcher(ahead=2)
    assert prefetcher.handle([opened(local[0], 10.0)]) == []
    remote = setup.album("cloud", "R", 4)
    prefetcher.handle([opened(remote[0], 20.0)])
    assert prefetcher.step()
    assert setup.cached(remote[1])
    # Track 2 is cached: it keeps its place ahead, so only track 3 is copied.
    assert ids(prefetcher.plan(remote[0])) == [remote[2].id]


def test_a_plan_copies_at_most_max_bytes(setup: Setup) -> None:
    album = setup.album("cloud", "X", 4)
    prefetcher = setup.prefetcher(ahead=3, max_bytes=2 * SIZE + 1)
    assert ids(prefetcher.handle([opened(album[0], 10.0)])) == ids(album[1:3])
    assert prefetcher.stats.skipped == 1


def test_prefetch_takes_at_most_a_tenth_of_the_cache(setup: Setup) -> None:
    album = setup.album("cloud", "X", 6)
    setup.content.store.limit = CACHE_SHARE * (2 * SIZE + 1)  # room for two files ahead
    prefetcher = setup.prefetcher(ahead=5)
    assert ids(prefetcher.handle([opened(album[0], 10.0)])) == ids(album[1:3])
    while prefetcher.step():
        pass
    assert [setup.cached(t) for t in album] == [False, True, True, False, False, False]
    # Two copied files not played yet take the prefetch's share...
    other = setup.album("cloud", "Y", 3)
    prefetcher.handle([opened(other[0], 20.0)])
    while prefetcher.step():
        pass
    assert not setup.cached(other[1])
    # ...until they are played.
    prefetcher.handle([opened(album[1], 30.0), opened(album[2], 40.0), opened(other[0], 50.0)])
    assert prefetcher.stats.hits == 2
    while prefetcher.step():
        pass
    assert setup.cached(other[1])
    assert setup.cached(other[2])


def test_files_of_an_offline_origin_are_not_tried(setup: Setup) -> None:
    album = setup.album("cloud", "X", 3)
    prefetcher = setup.prefetcher()
    prefetcher.handle([opened(album[0], 10.0)])
    setup.federation.failed("cloud", OSError("gone"))
    while prefetcher.step():
        pass
    assert prefetcher.stats.failed == 0
    assert not setup.cached(album[1])


# -- copying in the background ----------------------------------------------------------------


def test_opens_on_the_bus_get_their_next_tracks_copied(setup: Setup) -> None:
    album = setup.album("cloud", "X", 5)
    prefetcher = setup.prefetcher(ahead=2)
    prefetcher.start()
    setup.events.publish(EventType.FILE_OPENED, origin="cloud", path=album[0].relpath)
    wait_for(lambda: setup.cached(album[1]) and setup.cached(album[2]), "tracks 2 and 3")
    setup.events.publish(EventType.FILE_OPENED, origin="cloud", path=album[1].relpath)
    wait_for(lambda: prefetcher.stats.copied == 3, "track 4")  # counted once cached
    assert setup.cached(album[3])
    assert prefetcher.stats.bytes == 3 * SIZE
    assert prefetcher.stats.hits == 1
    assert not setup.cached(album[0])
    assert not setup.cached(album[4])


def test_copies_wait_while_the_foreground_is_busy(setup: Setup) -> None:
    album = setup.album("cloud", "X", 3)
    busy = threading.Event()
    busy.set()
    asked = []

    def foreground_busy() -> bool:
        asked.append(1)
        return busy.is_set()

    prefetcher = setup.prefetcher(busy=foreground_busy)
    prefetcher.start()
    setup.events.publish(EventType.FILE_OPENED, origin="cloud", path=album[0].relpath)
    wait_for(lambda: len(asked) >= 10, "the prefetcher to look at the foreground")
    assert not setup.cached(album[1]), "copied while the foreground was busy"
    busy.clear()
    wait_for(lambda: setup.cached(album[1]) and setup.cached(album[2]), "tracks 2 and 3")
    assert prefetcher.stats.paused > 0


def test_stop_abandons_a_waiting_copy_at_once(setup: Setup) -> None:
    album = setup.album("cloud", "X", 2)
    busy = AlwaysBusy()
    prefetcher = setup.prefetcher(busy=busy)
    prefetcher.start()
    setup.events.publish(EventType.FILE_OPENED, origin="cloud", path=album[0].relpath)
    wait_for(lambda: busy.asked >= 3, "the copy to wait for the foreground")
    started = time.monotonic()
    prefetcher.stop()
    assert time.monotonic() - started < 2
    assert not setup.cached(album[1])


def test_a_full_queue_drops_events_and_never_blocks_publishing(setup: Setup) -> None:
    album = setup.album("cloud", "X", 2)
    busy = AlwaysBusy()
    prefetcher = setup.prefetcher(busy=busy)  # stuck waiting for a quiet foreground
    prefetcher.start()
    setup.events.publish(EventType.FILE_OPENED, origin="cloud", path=album[0].relpath)
    wait_for(lambda: busy.asked >= 3, "the prefetcher to be stuck")
    # Publishing into the stuck subscriber's full queue must not wait for it: all
    # 20,000 publishes finish while it is still stuck (a blocking publish never would).
    published = threading.Event()

    def publish_many() -> None:
        for n in range(20_000):
            setup.events.publish(EventType.FILE_OPENED, origin="cloud", path=f"x/{n}.mp3")
        published.set()

    threading.Thread(target=publish_many, daemon=True).start()
    assert published.wait(60), "publishing blocked on the stuck prefetcher's queue"
    assert prefetcher.dropped >= 20_000 - 1000
    assert setup.events.dropped == prefetcher.dropped


# -- configuration and wiring --------------------------------------------------------------


def test_prefetch_settings(tmp_path: Path) -> None:
    assert (Config().prefetch.enabled, Config().prefetch.ahead) == (True, 2)
    path = tmp_path / "config.toml"
    path.write_text('[prefetch]\nenabled = false\nahead = 3\nmax_bytes = "64MiB"\n')
    config = load_config(path, env={})
    assert (config.prefetch.enabled, config.prefetch.ahead) == (False, 3)
    assert config.prefetch.max_bytes == 64 * 1024**2
    assert load_config(path, env={"MUSICFS_PREFETCH_AHEAD": "5"}).prefetch.ahead == 5


def test_a_mount_gets_a_prefetcher_only_when_it_can_help(setup: Setup) -> None:
    def mount(config: Config, content: ContentCache | None = setup.content,
              origins: tuple[str, ...] = ("cloud", "disk")) -> Prefetcher | None:  # fmt: skip
        federation = Federation({oid: setup.federation.origins[oid] for oid in origins})
        prefetcher = Prefetcher.for_mount(config, setup.catalog.path, events=setup.events,
                                          federation=federation, content=content)  # fmt: skip
        if prefetcher is not None:
            setup.made.append(prefetcher)
        return prefetcher

    made = mount(Config(prefetch=PrefetchSettings(ahead=3, max_bytes=1000)))
    assert made is not None
    assert (made.ahead, made.max_bytes) == (3, 1000)
    assert mount(Config(), content=None) is None  # [cache] mode = "passthrough"
    assert mount(Config(prefetch=PrefetchSettings(enabled=False))) is None
    assert mount(Config(prefetch=PrefetchSettings(ahead=0))) is None
    assert mount(Config(), origins=("disk",)) is None  # local disks only


#: What catalog schema 9 adds, to go back to an older schema in a test.
SCHEMA_9 = (
    "DROP TRIGGER nodes_listing_insert; DROP TRIGGER nodes_listing_delete;"
    "DROP TRIGGER nodes_listing_update; DROP TABLE listings;"  # schema 16
    "DROP TRIGGER overrides_search_insert; DROP TRIGGER overrides_search_delete;"
    "DROP TABLE search_override_terms; DROP TABLE search_overrides;"
    "ALTER TABLE nodes DROP COLUMN version;"  # schema 11
    "DROP TABLE moves; DROP TABLE departed; DROP INDEX files_by_audio_id;"
    "ALTER TABLE files DROP COLUMN audio_id;"  # schema 12
    "DROP TABLE playlist_files; DROP TABLE playlist_entries; DROP TABLE playlists;"  # 13
    "DROP TABLE pins; DROP TABLE pin_requests;"  # schema 14
    "DROP TABLE ratings; DROP TABLE imported_plays;"  # schema 15
)
