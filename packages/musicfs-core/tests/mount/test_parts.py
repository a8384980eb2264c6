"""The parts of a mount without mounting: the fill queue's copies, the
``/.prefetch`` executor, and what the facade answers before the mount serves.

A mount exercises them end to end (tests/e2e/test_prefetch.py, test_cache_repair.py,
test_commands.py); these pin what a mount shows only by timing: a hinted folder
is copied once however often it is listed, a hint that breaks is counted by
status, a file is copied once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from musicfs.core.catalog.layout import Layout
from musicfs.core.catalog.store import ROOT_NODE, Catalog, Track
from musicfs.core.config.settings import Config
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.library import version_of
from musicfs.core.model import FileStat, ScannedFile, TrackTags
from musicfs.core.mount.assembly import Lifecycle
from musicfs.core.mount.facade import MountControl
from musicfs.core.mount.fill import FillQueue
from musicfs.core.mount.hints import PrefetchHints
from musicfs.core.mount.service import MusicFS
from musicfs.core.origins.federation import Federation
from musicfs.core.origins.local import LocalOrigin
from musicfs.core.supervise import Supervisor

SIZE = 48 * 1024


@dataclass
class Parts:
    root: Path
    catalog: Catalog
    content: ContentCache
    fill: FillQueue
    supervisor: Supervisor

    def add(self, relpath: str) -> Track:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(SIZE))
        st = path.stat()
        scanned = ScannedFile("music", relpath, FileStat(st.st_size, st.st_mtime_ns), "mp3",
                              TrackTags(artist="A", album=relpath.partition("/")[0],
                                        title=relpath))  # fmt: skip
        with self.catalog.transaction():
            file_id = self.catalog.upsert_file(scanned)
            Layout(self.catalog, Config().path_template).rebuild()
        track = self.catalog.track(file_id)
        assert track is not None
        return track

    def cached(self, track: Track) -> bool:
        return self.content.has(version_of(track))


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    root = tmp_path / "music"
    root.mkdir()
    origins = {"music": LocalOrigin("music", root)}
    federation = Federation(origins)
    catalog = Catalog.open(tmp_path / "catalog.sqlite3")
    content = ContentCache(tmp_path / "content", limit=100 * 1024**2)
    supervisor = Supervisor()
    fill = FillQueue(Lifecycle(Config()), catalog.path, origins=origins,
                     federation=federation, content=content, supervisor=supervisor)  # fmt: skip
    yield Parts(root, catalog, content, fill, supervisor)
    content.close()
    catalog.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_file_is_copied_into_the_cache_once(parts: Parts) -> None:
    track = parts.add("Album/01.mp3")
    assert parts.fill.copy_to_cache(track) == SIZE  # read from its origin
    assert parts.cached(track)
    assert parts.fill.copy_to_cache(track) == 0  # cached already: nothing read


def test_a_file_of_an_origin_no_longer_configured_is_not_copied(parts: Parts) -> None:
    track = parts.add("Album/01.mp3")
    origins = parts.fill.origins
    assert isinstance(origins, dict)  # the mount's own: an origin dropped shows here
    del origins["music"]
    assert parts.fill.copy_to_cache(track) == 0
    assert not parts.cached(track)
    assert parts.fill.refetch(parts.catalog, "music", track.relpath) == (
        "its origin is no longer configured",
        False,
    )


def test_without_a_cache_nothing_is_copied(parts: Parts, tmp_path: Path) -> None:
    track = parts.add("Album/01.mp3")
    fill = FillQueue(Lifecycle(Config()), parts.catalog.path, origins=parts.fill.origins,
                     federation=parts.fill.federation, content=None,
                     supervisor=parts.supervisor)  # fmt: skip
    assert fill.copy_to_cache(track) == 0
    assert fill.refetch(parts.catalog, "music", track.relpath) == ("the cache is off", False)


def test_a_hinted_folder_is_copied_once_however_often_it_is_listed(parts: Parts) -> None:
    tracks = [parts.add(f"Album/{n:02d}.mp3") for n in range(1, 4)]
    copies: list[Track] = []
    release = threading.Event()

    def copy(track: Track) -> int:
        release.wait(10)  # the first copy holds the hint until every listing came
        copies.append(track)
        return parts.fill.copy_to_cache(track)

    hints = PrefetchHints(Lifecycle(Config()), parts.catalog.path, copy, parts.supervisor)
    try:
        for _ in range(5):  # a file manager lists /.prefetch/... again and again
            hints.hint(ROOT_NODE)
        release.set()
        wait_for(lambda: all(parts.cached(t) for t in tracks), "the hinted files in the cache")
        wait_for(lambda: not hints._hinted, "the hint to finish")
    finally:
        hints.close()
    assert sorted(t.id for t in copies) == sorted(t.id for t in tracks)
    assert parts.supervisor.snapshot() == []


def test_a_hint_that_breaks_is_counted_by_status_and_the_next_one_runs(parts: Parts) -> None:
    track = parts.add("Album/01.mp3")
    broken = True

    def copy(track: Track) -> int:
        if broken:
            raise RuntimeError("unexpected")
        return parts.fill.copy_to_cache(track)

    hints = PrefetchHints(Lifecycle(Config()), parts.catalog.path, copy, parts.supervisor)
    try:
        hints.hint(ROOT_NODE)
        wait_for(lambda: parts.supervisor.snapshot() != [], "the failure to be counted")
        [entry] = parts.supervisor.snapshot()
        assert entry["name"] == "prefetch hint"
        assert entry["last_error"] == "RuntimeError: unexpected"
        assert entry["failing"] is False  # one job failed: the mount is not DEGRADED
        wait_for(lambda: not hints._hinted, "the broken hint to end")
        broken = False
        hints.hint(ROOT_NODE)  # listed again: tried again
        wait_for(lambda: parts.cached(track), "the file in the cache")
    finally:
        hints.close()


def test_the_facade_of_a_mount_not_serving_yet(tmp_path: Path) -> None:
    config = Config(cache_dir=str(tmp_path / "cache"))
    control = MountControl(MusicFS(config, tmp_path / "mnt"))
    assert control.counts() == {"tracks": 0, "directories": 0, "unreadable_files": 0}
    status = control.status()
    assert (status["state"], status["open_handles"], status["scanning"]) == ("MOUNTING", 0, False)
    assert control.unknown_origin("") is None  # all of them
    assert control.unknown_origin("nas") == "no origin 'nas' in this mount; its origins are: "
    assert control.op_counts() == {}
    assert control.cache_tiers() == {}
    assert control.content_cache() is None


def test_start_up_work_waits_for_the_first_requests_to_quiet_down(tmp_path: Path) -> None:
    """The daemon starts gRPC and plugins (a few hundred ms holding the GIL) only
    once FUSE has had no request for a moment: a listing made right after
    `musicfs mount` returns is not slowed by them; a mount never quiet waits a
    bounded time."""
    from collections import Counter
    from types import SimpleNamespace

    import trio
    import trio.testing

    config = Config(cache_dir=str(tmp_path / "cache"))
    fs = MusicFS(config, tmp_path / "mnt")
    control = MountControl(fs)
    counts: Counter[str] = Counter()
    fs.operations = SimpleNamespace(op_counts=counts)  # type: ignore[assignment]

    async def requests_for(seconds: float) -> None:
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            counts["readdir"] += 1
            await trio.sleep(0.005)

    async def main() -> tuple[float, float, float]:
        start = trio.current_time()
        await control.first_requests_served(quiet=0.02, at_most=1.0)
        idle = trio.current_time() - start
        async with trio.open_nursery() as nursery:
            nursery.start_soon(requests_for, 0.3)
            start = trio.current_time()
            await control.first_requests_served(quiet=0.02, at_most=1.0)
            busy = trio.current_time() - start
        async with trio.open_nursery() as nursery:
            nursery.start_soon(requests_for, 5.0)
            start = trio.current_time()
            await control.first_requests_served(quiet=0.02, at_most=1.0)
            never_quiet = trio.current_time() - start
            nursery.cancel_scope.cancel()
        return idle, busy, never_quiet

    idle, busy, never_quiet = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert idle == pytest.approx(0.02)  # no one listing: at once
    assert 0.3 <= busy <= 0.35  # until the listing is over
    assert never_quiet == pytest.approx(1.0, abs=0.03)  # bounded
