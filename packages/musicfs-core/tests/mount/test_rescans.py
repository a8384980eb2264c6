"""The sync and watch loops of a mount (`musicfs.core.mount.loops.Rescans`),
run in trio without mounting: what a user would see as a change that never
reaches the tree.

A mount exercises them end to end (tests/e2e/test_watch.py); these pin an
ordering that a mount shows only by chance: the origin's watch is made slow to
set up (its probe waits), and a folder is added after the first scan.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from musicfs.core.catalog.store import Catalog
from musicfs.core.config.settings import Config
from musicfs.core.events import EventBus
from musicfs.core.extensions import Extensions
from musicfs.core.mount import loops
from musicfs.core.mount.assembly import Lifecycle
from musicfs.core.mount.loops import Rescans
from musicfs.core.origins.federation import Federation
from musicfs.core.origins.local import LocalOrigin
from musicfs.core.supervise import Supervisor

MakeWav = Callable[..., Path]  # the make_wav fixture of conftest.py


def change_after_the_first_scan(tmp_path: Path, make_wav: MakeWav, probe_wait: float) -> set[str]:
    """Mount-like loops over one local origin whose watch waits in its probe
    until folder ``b`` is added (at most *probe_wait* s); ``b`` is added once
    the first scan is done. Returns what the catalog holds of ``b``, once it
    holds anything or after 15 s."""
    root = tmp_path / "music"
    make_wav(root / "a" / "one.wav", title="One", artist="X")
    origins = {"music": LocalOrigin("music", root)}
    federation = Federation(origins)
    changed = threading.Event()
    probe = federation.probe

    def slow_probe(origin_id: str) -> bool:
        changed.wait(timeout=probe_wait)  # the watch probes its origin first
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
            with trio.fail_after(20):  # a sync loop that never starts fails here
                await rescans.first_scan.wait()
            make_wav(root / "b" / "two.wav", title="Two", artist="X")
            changed.set()
            with trio.move_on_after(15):
                while not (found := await trio.to_thread.run_sync(catalogued, "b")):
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        return found

    try:
        return trio.run(main)
    finally:
        federation.close()


def test_a_change_made_right_after_the_first_scan_is_not_missed(
    tmp_path: Path, make_wav: MakeWav
) -> None:
    """The first scan waits for the origin's inotify watch: a folder added the
    moment that scan ends reaches the catalog, even when setting the watch up
    is slow (a big tree, a sleepy disk) and would otherwise finish after it."""
    found = change_after_the_first_scan(tmp_path, make_wav, probe_wait=1.0)
    assert found == {"two.wav"}, "the new folder never reached the catalog"


def test_a_watch_set_up_after_the_first_scan_rescans_its_origin(
    tmp_path: Path, make_wav: MakeWav, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch that takes longer than the first scan waits for (a folder on a
    hung disk must not hold every scan) looks at its whole origin once it is
    set up: what changed before it watched still reaches the catalog."""
    monkeypatch.setattr(loops, "_WATCH_WAIT", 0.2)
    found = change_after_the_first_scan(tmp_path, make_wav, probe_wait=15.0)
    assert found == {"two.wav"}, "the folder added before the watch was set up was missed"
