"""The sync and watch loops of a mount (`musicfs.core.mount.loops.Rescans`),
run in trio without mounting: what a user would see as a change that never
reaches the tree.

A mount exercises them end to end (tests/e2e/test_watch.py); this pins an
ordering that a mount shows only by chance.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import trio

from musicfs.core.catalog.store import Catalog
from musicfs.core.config.settings import Config
from musicfs.core.events import EventBus
from musicfs.core.extensions import Extensions
from musicfs.core.mount.assembly import Lifecycle
from musicfs.core.mount.loops import Rescans
from musicfs.core.origins.federation import Federation
from musicfs.core.origins.local import LocalOrigin
from musicfs.core.supervise import Supervisor

MakeWav = Callable[..., Path]  # the make_wav fixture of conftest.py


def test_a_change_made_right_after_the_first_scan_is_not_missed(
    tmp_path: Path, make_wav: MakeWav
) -> None:
    """The first scan waits for the origin's inotify watch: a folder added the
    moment that scan ends reaches the catalog, even when setting the watch up
    is slow (a big tree, a sleepy disk) and would otherwise finish after it."""
    root = tmp_path / "music"
    make_wav(root / "a" / "one.wav", title="One", artist="X")
    origins = {"music": LocalOrigin("music", root)}
    federation = Federation(origins)
    changed = threading.Event()
    probe = federation.probe

    def slow_probe(origin_id: str) -> bool:
        # The watch probes its origin before watching it. Here that takes until
        # the test has changed the origin, or a second if it cannot yet.
        changed.wait(timeout=1.0)
        return probe(origin_id)

    federation.probe = slow_probe  # type: ignore[method-assign]
    catalog_path = tmp_path / "catalog.sqlite3"
    rescans = Rescans(
        Lifecycle(Config()),
        catalog_path,
        origins=origins,
        federation=federation,
        events=EventBus(),
        supervisor=Supervisor(),
        plugins=Extensions(),
        notify=lambda changes: None,
        after_scan=lambda catalog, layout, folders: None,
    )

    def catalogued(reldir: str) -> set[str]:
        with Catalog.open(catalog_path) as catalog:
            return set(catalog.known_files("music", reldir))

    async def main() -> set[str]:
        async with trio.open_nursery() as nursery:
            rescans.start(nursery)
            rescans.request_rescan()
            await rescans.first_scan.wait()
            make_wav(root / "b" / "two.wav", title="Two", artist="X")
            changed.set()
            with trio.move_on_after(15):
                while not (found := await trio.to_thread.run_sync(catalogued, "b")):
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        return found

    try:
        assert trio.run(main) == {"two.wav"}, "the new folder never reached the catalog"
    finally:
        federation.close()
