"""The fill queue: files opened from their origins are copied into the content
cache in the background, one at a time, and damaged cached copies are copied
again when their origins answer.

`FillQueue.on_fill` is the `Library`'s hook (trio thread); `run` is the loop a
`Supervisor` keeps going (it also copies the pinned tracks that are not cached
in the version the tree shows: pins for offline, `musicfs.core.mount.pins`);
`copy_to_cache` and `refetch` are also what a ``musicfs prefetch``, a
``/.prefetch`` hint, ``musicfs cache pin --wait`` and ``musicfs cache verify``
use (blocking, any thread but trio's).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import trio

from musicfs.core.catalog.store import Catalog, Track, split_relpath
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.library import version_of
from musicfs.core.mount.assembly import Lifecycle
from musicfs.core.mount.pins import Pinning
from musicfs.core.origins.base import Origin
from musicfs.core.origins.federation import Federation
from musicfs.core.supervise import Supervisor

log = logging.getLogger(__name__)

_FILL_QUEUE = 10_000


class FillQueue:
    """Copies into one mount's content cache (*content*; None: the cache is off)."""

    def __init__(
        self,
        life: Lifecycle,
        catalog_path: Path,
        *,
        origins: Mapping[str, Origin],
        federation: Federation,
        content: ContentCache | None,
        supervisor: Supervisor,
    ) -> None:
        self.life = life
        self.catalog_path = catalog_path
        self.origins = origins  # the mount's: origins rebuilt while mounted show here
        self.federation = federation
        self.content = content
        self.supervisor = supervisor
        self._to_fill: dict[tuple[str, str], Track] = {}
        # The mount's pins (set by it): which files to keep, which to copy; looked
        # at after a `wake` (a pin, a rescan, an origin back), not after every open.
        self.pins: Pinning | None = None
        self._check_pins = True
        self._wakeup = trio.Event()
        if content is not None:
            content.on_damaged = self.wake  # copied again when its origin answers

    def wake(self) -> None:
        """Have the fill loop look for work (any thread)."""
        self.life.in_trio(self._set_wakeup)

    def _set_wakeup(self) -> None:
        self._check_pins = True
        self._wakeup.set()  # the event of now: the loop makes a new one each round

    def on_fill(self, track: Track) -> None:
        """Keep a copy of a file that was just opened from its origin (trio thread)."""
        if len(self._to_fill) < _FILL_QUEUE:
            self._to_fill[(track.origin, track.relpath)] = track
            self._wakeup.set()

    async def run(self) -> None:
        """Copy opened files into the content cache, one at a time, in the background.

        Starts with a quick integrity check of the cache (FR-25.5): chunks that
        are missing or the wrong size are dropped, with the copies needing them.
        Copies dropped as damaged are copied again whenever their origins answer
        (`_repair`): at start, after damage is found, when an origin comes back.
        """
        if self.content is not None:
            if self.pins is not None:  # before anything is copied (and evicted)
                await trio.to_thread.run_sync(self.pins.load)
            await trio.to_thread.run_sync(self.content.verify, False)
            await trio.to_thread.run_sync(self._repair)
            await self._keep_pins()  # pinned before, not all copied yet
        self.supervisor.ok("fill")
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while self._to_fill:
                key = next(iter(self._to_fill))
                track = self._to_fill.pop(key)
                await trio.to_thread.run_sync(self._fill, track)
            if self.content is not None:
                await trio.to_thread.run_sync(self._repair)
                await self._keep_pins()
            self.supervisor.ok("fill")

    async def _keep_pins(self) -> None:
        """Copy the pinned tracks the cache lacks (new pins, files changed on their
        origins, origins back), one at a time; files just opened go first."""
        if self.pins is None or not self._check_pins:
            return
        self._check_pins = False
        try:
            due = await trio.to_thread.run_sync(self.pins.due)
        except (OSError, sqlite3.Error) as exc:  # tried again at the next wake-up
            log.warning("could not list the pinned tracks to copy: %s", exc)
            self._check_pins = True
            return
        for track in due:
            if self.life.stopping:
                return
            if self._to_fill:
                self._check_pins = True  # the rest of the pins in the next round
                self._wakeup.set()
                return
            await trio.to_thread.run_sync(self._fill, track)

    def _repair(self) -> None:
        """Drop the copies that lost chunks, and copy the files of damaged ones
        again from their origins that are online (worker thread)."""
        content = self.content
        if content is None:
            return
        try:
            content.sweep()
            wanted = []
            for origin, relpath, listing in content.wanted():
                if origin not in self.origins:
                    content.unwant(origin, relpath)  # no longer configured
                elif self.federation.online(origin):
                    wanted.append((origin, relpath, listing))
            if not wanted:
                return
            with Catalog.open(self.catalog_path, readonly=True) as catalog:
                for origin, relpath, listing in wanted:
                    if self.life.stopping:
                        return
                    problem, _ = self.refetch(catalog, origin, relpath, listing)
                    if problem:
                        log.warning("could not re-fetch the damaged cached copy of %s/%s: %s",
                                    origin, relpath, problem)  # fmt: skip
                    else:
                        log.info("re-fetched the damaged cached copy of %s/%s", origin, relpath)
        except (OSError, sqlite3.Error) as exc:  # tried again at the next wake-up
            log.warning("could not repair the content cache: %s", exc)

    def refetch(
        self, catalog: Catalog, origin: str, relpath: str, listing: str = ""
    ) -> tuple[str, bool]:
        """Copy a file whose cached copy was dropped as damaged into the cache
        again, in the version the tree shows (blocking; any thread but trio's).
        *listing*: the dropped copy's chunk list, whose chunks still stored are
        checked first. Returns ("", False) when done, else why not and whether
        it is tried again (the origin did not answer: when it does)."""
        content = self.content
        if content is None:
            return "the cache is off", False
        problem, later = self._refetch(content, catalog, origin, relpath, listing)
        if not later:
            content.unwant(origin, relpath)  # done, or given up
        return problem, later

    def _refetch(
        self, content: ContentCache, catalog: Catalog, origin: str, relpath: str, listing: str
    ) -> tuple[str, bool]:
        reldir, filename = split_relpath(relpath)
        known = catalog.known_files(origin, reldir).get(filename)
        track = catalog.track(known.id) if known is not None else None
        if track is None:
            return "no longer in the library", False
        if track.origin not in self.origins:
            return "its origin is no longer configured", False
        try:
            content.recheck(listing)
            self.copy_to_cache(track)
        except FileNotFoundError:
            return "it is gone from its origin", False
        except PermissionError as exc:
            return f"its origin refused it: {exc}", False
        except OSError as exc:
            return f"its origin did not answer: {exc}", True
        if not content.has(version_of(track)):
            return (
                "it changed on its origin since the last scan; it is copied when next read",
                False,
            )
        return "", False

    def _fill(self, track: Track) -> None:
        try:
            self.copy_to_cache(track)
        except OSError as exc:
            log.warning("could not cache %s/%s: %s", track.origin, track.relpath, exc)

    def copy_to_cache(self, track: Track) -> int:
        """Copy one file into the content cache (blocking, any thread but trio's);
        return the bytes read from its origin (0: nothing to do). Raises OSError."""
        if track.origin not in self.origins or self.content is None:
            return 0
        if self.content.has(version_of(track)):
            return 0
        before = self.content.origin_bytes
        with self.federation.open(track.origin, track.relpath) as file:
            self.content.fill(version_of(track), file)
        return self.content.origin_bytes - before
