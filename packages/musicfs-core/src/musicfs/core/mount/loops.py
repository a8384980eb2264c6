"""The background loops that keep a mounted catalog up to date: the sync loop
(rescans, in a worker thread), origin health probes, inotify watches of local
origins and polls of the others.

Each runs under the mount's `Supervisor` (`musicfs.core.supervise`): one that
fails is logged, counted, shown by status and started again with backoff; it
never takes the mount down. What to rescan is asked with `Rescans.ask` (trio
thread); requests made while a scan runs are merged and done in the next batch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, TypeGuard

import trio

from musicfs.core.catalog.layout import ChangeKind, Layout, TreeChange
from musicfs.core.catalog.store import Catalog, CatalogError, damaged
from musicfs.core.events import EventBus, EventType
from musicfs.core.extensions import Extensions
from musicfs.core.mount.assembly import Lifecycle, MountState
from musicfs.core.origins.base import Origin
from musicfs.core.origins.federation import Federation
from musicfs.core.origins.local import LocalOrigin
from musicfs.core.supervise import Supervisor, describe
from musicfs.core.sync.changes import ScanRequest
from musicfs.core.sync.remote import IDENTITY_ROUND, backfill_identities
from musicfs.core.sync.scanner import Scanner, ScanProgress, ScanReport, ScanWriter
from musicfs.core.sync.watch import LocalWatch

log = logging.getLogger(__name__)

_ORIGIN_RETRY = 2.0  # seconds between checks of an origin that went away
_HEALTH_ROUND = 30.0  # seconds between probes of remote origins that are online
# The longest the first scan waits for the local origins' watches (a folder on a
# hung mount must not hold every scan); a watch set up later asks for a rescan.
_WATCH_WAIT = 10.0

#: Called in the scan's thread once a batch is scanned: the catalog, the layout
#: the scanner used, and the folders whose files were added or changed.
AfterScan = Callable[[Catalog, Layout, set[int]], None]


class ScanRights(Protocol):
    """Which origins this mount may scan, and where their scans write: with a
    shared catalog, only those whose lock it holds, into PostgreSQL
    (`musicfs.core.mount.shared.SharedMount`)."""

    def may_scan(self, origin_id: str) -> bool: ...

    def scan_writer(self) -> contextlib.AbstractContextManager[ScanWriter]: ...

    def cancel_scan(self) -> None: ...


class Rescans:
    """The sync, health, watch and poll loops of one mount."""

    def __init__(
        self,
        life: Lifecycle,
        catalog_path: Path,
        *,
        origins: Mapping[str, Origin],
        federation: Federation,
        events: EventBus,
        supervisor: Supervisor,
        plugins: Extensions,
        notify: Callable[[list[TreeChange]], None],
        after_scan: AfterScan,
        progress: ScanProgress | None = None,
        rights: ScanRights | None = None,
    ) -> None:
        """*notify*: makes the kernel forget what changes made stale (any thread).
        *rights*: which origins to scan and where to write (all, into the
        catalog, when None)."""
        self.rights = rights
        self.life = life
        self.catalog_path = catalog_path
        self.origins = origins  # the mount's: origins rebuilt while mounted show here
        self.federation = federation
        self.events = events
        self.supervisor = supervisor
        self.plugins = plugins
        self.notify = notify
        self.after_scan = after_scan
        self.progress = progress  # a live display of the first scan
        self.scan_reports: dict[str, ScanReport] = {}
        self.scanning = False
        self.first_scan = trio.Event()  # set when the scan started at mount is done
        self._scanner: Scanner | None = None
        self._requests: dict[str, ScanRequest] = {}  # origin id -> what to look at again
        self._watching: set[str] = set()  # origins whose inotify watch is set up
        # One per watched origin, set once its watch is set up or cannot be: the
        # first scan waits for them, or a change made between that scan and the
        # watch would be missed until the next rescan.
        self._watch_tried: dict[str, trio.Event] = {}
        self._scans_started = False  # a watch set up from now on asks for a rescan
        self._wakeup = trio.Event()

    # -- asking (trio thread) -----------------------------------------------------------

    def ask(self, origin_id: str, request: ScanRequest) -> None:
        if self.rights is not None and not self.rights.may_scan(origin_id):
            # Another machine scans it; its changes arrive through the shared
            # catalog's feed (and this mount rescans it all if it takes over).
            log.debug("not scanning %s: another mount holds its lock", origin_id)
            return
        self._requests.setdefault(origin_id, ScanRequest()).merge(request)
        self._wakeup.set()

    def request_rescan(self, origin_id: str | None = None) -> None:
        """Rescan one origin completely, or all of them (call in the trio thread)."""
        for oid in [origin_id] if origin_id else list(self.origins):
            self.ask(oid, ScanRequest(full=True))

    @property
    def current_scan(self) -> ScanReport | None:
        """The report of the scan running now (it grows as the scan goes)."""
        scanner = self._scanner
        return scanner.report if scanner is not None and self.scanning else None

    def cancel(self) -> None:
        """Stop the scan running now at its next file (the mount is going)."""
        if self._scanner is not None:
            self._scanner.cancelled = True
        if self.rights is not None:  # a write waiting on a silent server: cut it
            self.rights.cancel_scan()

    def _watched(self, origin: Origin) -> TypeGuard[LocalOrigin]:
        return isinstance(origin, LocalOrigin) and origin.watchable and self.life.config.scan.watch

    def _ours(self, origin_id: str) -> bool:
        """Whether this mount scans *origin_id* (always, without a shared catalog)."""
        return self.rights is None or self.rights.may_scan(origin_id)

    def took_over(self, origin_id: str) -> None:
        """This mount now holds *origin_id*'s lock (trio thread): rescan it all
        (compared with the replica: only what changed is read). A watched
        origin is rescanned by its watch, once watching, so that nothing
        changed between the scan and the watch is missed; if its watch never
        stopped (the lock was lost and taken again within a second, as across
        a server restart), now: its events were dropped while the lock was away."""
        origin = self.origins.get(origin_id)
        if origin is not None and (not self._watched(origin) or origin_id in self._watching):
            self.ask(origin_id, ScanRequest(full=True))

    def start(self, nursery: trio.Nursery) -> None:
        """Start the sync and health loops, and a watch or poll per origin."""
        run, config = self.supervisor.run, self.life.config
        nursery.start_soon(run, "sync", self._sync_loop)
        nursery.start_soon(run, "health", self._health_loop)
        nursery.start_soon(run, "identities", self._identity_loop)
        for origin in self.origins.values():
            if self._watched(origin):
                self._watch_tried[origin.id] = trio.Event()
                watch = functools.partial(self._watch, origin)
                nursery.start_soon(run, f"watch {origin.id}", watch)
            elif config.scan.poll_interval > 0:
                poll = functools.partial(self._poll, origin, config.scan.poll_interval)
                nursery.start_soon(run, f"poll {origin.id}", poll)

    # -- the sync loop ------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        """Run the rescans that were asked for, one batch at a time, in a worker thread."""
        life = self.life
        with trio.move_on_after(_WATCH_WAIT):
            for tried in self._watch_tried.values():
                await tried.wait()
        self._scans_started = True
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            requests, self._requests = self._requests, {}
            if not requests:
                continue
            self.scanning = True
            life.state = MountState.SYNCING
            before = dict(self.scan_reports)
            try:
                await trio.to_thread.run_sync(self._scan, requests)
            except Exception as exc:
                # Asked again: the supervisor restarts this loop, which does them then.
                for origin_id, request in requests.items():
                    self.ask(origin_id, request)
                    if self.scan_reports.get(origin_id) is before.get(origin_id):  # not done
                        self.scan_reports[origin_id] = ScanReport(
                            origin_id, errors=[f"the scan failed: {describe(exc)}"]
                        )
                if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
                    exc,
                    sqlite3.OperationalError,  # busy, full disk: may pass
                ):
                    problem = f"catalog {self.catalog_path} is damaged ({exc})"
                    raise CatalogError(damaged(problem, certain=True)) from exc
                raise
            finally:
                self.scanning = False
                self.first_scan.set()  # the first batch holds every origin (request_rescan)
                if life.state is MountState.SYNCING:
                    degraded = any(not r.complete for r in self.scan_reports.values())
                    life.state = MountState.DEGRADED if degraded else MountState.READY
            self.supervisor.ok("sync")

    def _scan(self, requests: dict[str, ScanRequest]) -> None:
        changed: set[int] = set()  # folders whose files were added or changed

        def on_changes(changes: list[TreeChange]) -> None:
            self.notify(changes)
            changed.update(c.parent for c in changes if c.kind is not ChangeKind.REMOVED)

        config = self.life.config
        writing = self.rights.scan_writer() if self.rights is not None else contextlib.nullcontext()
        with Catalog.open(self.catalog_path, cache_mib=32) as catalog, writing as writer:
            self._scanner = scanner = Scanner(
                catalog,
                config.path_template,
                workers=config.scan.workers,
                extensions=config.scan.extensions,
                skip_unreadable=config.scan.skip_unreadable,
                on_changes=on_changes,
                progress=self.progress,
                federation=self.federation,
                plugins=self.plugins,
                writer=writer,
            )
            try:
                for origin_id, request in requests.items():
                    origin = self.origins.get(origin_id)
                    if self.life.stopping or origin is None:
                        continue
                    if self.rights is not None and not self.rights.may_scan(origin_id):
                        continue  # its lock was lost since it was asked
                    self.events.publish(EventType.SYNC_STARTED, origin=origin_id,
                                        full=request.full)  # fmt: skip
                    report = self.scan_reports[origin_id] = scanner.rescan(origin, request)
                    self.events.publish(
                        EventType.SYNC_COMPLETED,
                        origin=origin_id,
                        complete=report.complete,
                        seen=report.seen,
                        added=report.added,
                        changed=report.changed,
                        removed=report.removed,
                        unreadable=report.unreadable,
                        error=report.errors[0] if report.errors else "",
                    )
                    for moved in report.moved:
                        self.events.publish(
                            EventType.TRACK_MOVED,
                            origin=moved.origin,
                            path=moved.relpath,
                            from_origin=moved.from_origin,
                            from_path=moved.from_relpath,
                        )
                self.after_scan(catalog, scanner.layout, changed)
                # What after_scan re-placed (overlays due) unpacked its folders again.
                catalog.pack_listings(stop=lambda: self.life.stopping)
            finally:
                scanner.close()
                if self.progress is not None:
                    self.progress.close()
                    self.progress = None  # a live display only for the first scan

    # -- identities of remote files with user data ---------------------------------------

    async def _identity_loop(self) -> None:
        """Every `IDENTITY_ROUND` seconds, give the remote files that got user
        data since (a play, ``tag set``, a rating) their audio identity, which a
        remote scan leaves out (it costs two more reads a file), so that a move
        of the file keeps its data. Runs in a worker thread, its requests
        within the origin's limits (the federation); finding nothing to do
        costs one query of the user data, no request."""
        skip: set[int] = set()  # files with no audio payload: no identity to find
        while True:
            await trio.sleep(IDENTITY_ROUND)
            remote = [
                origin
                for origin in self.origins.values()
                if origin.local_path("") is None
                and self._ours(origin.id)
                and self.federation.online(origin.id)
            ]
            if remote and not self.life.stopping:
                await trio.to_thread.run_sync(self._backfill, remote, skip)
            self.supervisor.ok("identities")

    def _backfill(self, origins: list[Origin], skip: set[int]) -> None:
        with Catalog.open(self.catalog_path) as catalog:
            for origin in origins:
                if not self.life.stopping:
                    backfill_identities(catalog, origin, self.federation, skip)

    # -- origins: health, watches, polls ------------------------------------------------

    async def _health_loop(self) -> None:
        """Probe offline origins (with backoff) and online remote ones now and then;
        rescan an origin that came back, since it may have changed meanwhile."""
        last_round = -_HEALTH_ROUND
        while True:
            now = time.monotonic()
            if now - last_round >= _HEALTH_ROUND:
                last_round = now
                remote = [o.id for o in self.origins.values() if not o.inline]
                for origin_id in remote:
                    if self.federation.online(origin_id):
                        await trio.to_thread.run_sync(
                            self.federation.probe, origin_id, abandon_on_cancel=True
                        )
            await trio.to_thread.run_sync(self.federation.check_due, abandon_on_cancel=True)
            self.supervisor.ok("health")
            await trio.sleep(1.0)

    async def _watch(self, origin: LocalOrigin) -> None:
        """Follow a local origin: while it is there, turn its inotify events into
        rescans of what changed; when it goes, wait for it and rescan it all."""
        while True:
            while not self._ours(origin.id):  # another mount watches it (its lock)
                self._tried_watching(origin.id)
                await trio.sleep(_ORIGIN_RETRY / 4)
            try:
                await self._watch_once(origin)
            finally:  # also when it failed: the scans must not wait for it
                self._tried_watching(origin.id)
            if not self._ours(origin.id):
                log.info("not watching %s any more: another mount scans it", origin.location)
                continue
            log.warning("origin %s is gone; serving from the cache until it returns", origin.id)
            while not await trio.to_thread.run_sync(self.federation.probe, origin.id):
                await trio.sleep(_ORIGIN_RETRY)
            log.info("origin %s is back; rescanning it once watched", origin.id)

    async def _watch_once(self, origin: LocalOrigin) -> None:
        if not await trio.to_thread.run_sync(self.federation.probe, origin.id):
            return
        watch = await trio.to_thread.run_sync(
            functools.partial(LocalWatch, origin.location, include_hidden=origin.include_hidden)
        )
        log.info("watching %s (%d folders)", origin.location, watch.watched)
        self._tried_watching(origin.id)
        if self.rights is not None or self._scans_started:
            # Taken over, back, or watched after the first scan began: look at it
            # all now that it is watched (asked before, it could miss a change).
            self.ask(origin.id, ScanRequest(full=True))
        self._watching.add(origin.id)
        try:
            while watch.watched and self._ours(origin.id):  # 0: the origin's folder went
                events = await trio.to_thread.run_sync(
                    watch.events, 1000, 200, abandon_on_cancel=True
                )
                self.supervisor.ok(f"watch {origin.id}")
                request = ScanRequest(full=watch.overflowed)
                watch.overflowed = False
                for event in events:
                    request.add(event)
                if request:
                    log.debug("changes under %s: %s", origin.location, request)
                    self.ask(origin.id, request)
        finally:
            self._watching.discard(origin.id)
            watch.close()

    def came_back(self, origin_id: str) -> None:
        """*origin_id* is online again (trio thread): rescan it all, now, or once
        it is watched again if it has a watch (its loop asks then)."""
        if origin_id not in self._watch_tried:
            self.ask(origin_id, ScanRequest(full=True))

    def _tried_watching(self, origin_id: str) -> None:
        tried = self._watch_tried.get(origin_id)
        if tried is not None:
            tried.set()

    async def _poll(self, origin: Origin, interval: float) -> None:
        """Rescan an origin that cannot report its changes every *interval* seconds."""
        while True:
            await trio.sleep(interval)
            self.ask(origin.id, ScanRequest(full=True))
            self.supervisor.ok(f"poll {origin.id}")
