"""One mounted library, start to finish: prepare, mount, serve, unmount.

`MusicFS` is the lifecycle of a mount, in the order DESIGN §1 asks for: open
the catalog and mount at once (the tree is served from the catalog, O(1) in
the library size), then bring the catalog up to date with a background rescan
whose changes reach the kernel as invalidations. It builds its parts
(`musicfs.core.mount.assembly`) and runs them: the sync, health and watch
loops (`loops.Rescans`), the fill queue (`fill.FillQueue`), the ``/.prefetch``
executor (`hints.PrefetchHints`) and the prefetcher (`prefetch.Prefetcher`).

Threads: the trio loop owns the FUSE session and the read connection of the
catalog; the scanner runs in a worker thread with its own connection. Other
threads (the control server) talk to a running mount only through its facade,
`musicfs.core.mount.facade.MountControl`, which hops into trio with
`trio.from_thread` where it must.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pyfuse3
import trio

from musicfs.core.catalog.layout import TEMPLATE_SETTING, Layout, TreeChange
from musicfs.core.catalog.store import Catalog, CatalogError, Track, damaged
from musicfs.core.config.catalog import CATALOG
from musicfs.core.config.collections import catalog_collections
from musicfs.core.config.paths import CacheDirLock, cache_dir_for
from musicfs.core.config.settings import Config
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.overlay import OverlayEditor
from musicfs.core.events import EventBus, EventType
from musicfs.core.extensions import Extensions
from musicfs.core.fuse.fs import MusicFSOperations, mount_options
from musicfs.core.mount.assembly import (
    CHECK_BEFORE_MOUNT,
    CHECK_BUDGET,
    Lifecycle,
    MountState,
    StartupError,
    build_operations,
    build_origins,
    check_catalog,
    check_catalog_later,
    check_mountpoint,
    cover_files,
    open_content,
    overlay_editor,
    set_read_ahead,
)
from musicfs.core.mount.fill import FillQueue
from musicfs.core.mount.hints import PrefetchHints
from musicfs.core.mount.loops import Rescans
from musicfs.core.mount.pins import Pinning
from musicfs.core.mount.prefetch import Prefetcher
from musicfs.core.mount.treeevents import TreeEvents
from musicfs.core.namespace.collections import AccessLog
from musicfs.core.origins.base import Origin, OriginUnavailable
from musicfs.core.origins.federation import Federation, Health
from musicfs.core.origins.local import LocalOrigin
from musicfs.core.supervise import Supervisor
from musicfs.core.sync.scanner import ScanProgress, ScanReport

if TYPE_CHECKING:  # psycopg is loaded only by a mount with a shared catalog
    from musicfs.core.mount.shared import SharedMount
    from musicfs.core.shared.feed import Applied

__all__ = ["LAYOUT_SETTING", "MountState", "MusicFS", "StartupError"]

log = logging.getLogger(__name__)

LAYOUT_SETTING = "skip_unreadable"


class MusicFS:
    """A library mounted at one mountpoint."""

    def __init__(
        self,
        config: Config,
        mountpoint: str | Path,
        *,
        progress: ScanProgress | None = None,
        extensions: Extensions | None = None,
        events: EventBus | None = None,
    ) -> None:
        """*extensions*: what plugins add (origin types, formats, the overlay's
        header writers); none when not given. *events*: the bus the mount
        publishes on (a new one when not given; pass one to subscribe before
        the mount exists, as plugins and webhooks do)."""
        self.life = Lifecycle(config)
        self.extensions = extensions or Extensions()
        self.mountpoint = Path(os.path.abspath(mountpoint))
        self.cache_dir = cache_dir_for(config, self.mountpoint)
        self.catalog_path = self.cache_dir / "catalog.sqlite3"
        self.events = events or EventBus()
        # Background loops: one that fails is logged, counted, shown by status and
        # started again with backoff; it never takes the mount down (issue 13.5).
        self.supervisor = Supervisor()
        # Built by `prepare` (remote origins need their credentials).
        self.origins: dict[str, Origin] = {}
        self.federation = Federation({})
        # With [catalog] shared: the replica's side of the shared catalog (`prepare`).
        self.shared: SharedMount | None = None
        self.rescans = self._rescans(progress)
        self.pinning = Pinning(self.life, self.catalog_path, self.events, self.federation)
        # tree.changed events (media servers, `musicfs events`): resolved off the
        # thread that changed the tree, by a thread of their own started by `serve`.
        self.tree_events = TreeEvents(self.catalog_path, self.events)
        # Built by `serve`.
        self.content: ContentCache | None = None
        self.fill: FillQueue | None = None
        self.operations: MusicFSOperations | None = None
        self._lock = CacheDirLock(self.cache_dir)
        self._catalog: Catalog | None = None
        self._checked = False  # the catalog's pages were all checked before mounting

    def _rescans(self, progress: ScanProgress | None) -> Rescans:
        return Rescans(
            self.life,
            self.catalog_path,
            origins=self.origins,
            federation=self.federation,
            events=self.events,
            supervisor=self.supervisor,
            plugins=self.extensions,
            notify=self.notify_tree_changes,
            after_scan=self._after_scan,
            progress=progress,
            rights=self.shared,
        )

    @property
    def config(self) -> Config:
        return self.life.config

    @property
    def state(self) -> MountState:
        return self.life.state

    @state.setter
    def state(self, state: MountState) -> None:
        self.life.state = state

    @property
    def scan_reports(self) -> dict[str, ScanReport]:
        """Each origin's last scan report."""
        return self.rescans.scan_reports

    # -- preparing --------------------------------------------------------------

    def prepare(self) -> None:
        """Everything that can fail before mounting: lock, catalog, origins, template."""
        if not self.config.origins:
            raise StartupError(
                "no origin given: pass --origin DIR (or list [[origins]] in the config file)"
            )
        check_mountpoint(self.mountpoint)
        origins, self.federation = build_origins(self.config, self.extensions, self._on_health)
        self.origins.update(origins)
        self.shared = self._shared_mount()
        if self.shared is not None:  # pins go to the shared catalog first
            self.pinning.publish = self.shared.publish_pins
            self.pinning.unpublish = self.shared.unpublish_pins
        self.rescans = self._rescans(self.rescans.progress)
        self.pinning.federation = self.federation
        self._lock.acquire()
        try:
            self._catalog = catalog = Catalog.open(self.catalog_path)
            self._checked = check_catalog(catalog, CHECK_BEFORE_MOUNT, CHECK_BUDGET)
            self._reconcile(catalog)
        except sqlite3.OperationalError as exc:  # locked by another program, disk full
            self.close()
            raise CatalogError(
                f"cannot update catalog {self.catalog_path}: {exc}; if another program has "
                "it open, close that program and mount again"
            ) from None
        except sqlite3.DatabaseError as exc:
            self.close()
            problem = f"catalog {self.catalog_path} is damaged ({exc})"
            raise CatalogError(damaged(problem, certain=True)) from None
        except BaseException:
            self.close()
            raise

    def _shared_mount(self) -> SharedMount | None:
        """The mount's side of ``[catalog] shared``, if set (nothing is contacted
        yet: the mount never waits for the server)."""
        url = self.config.section(CATALOG).shared
        if url is None:
            return None
        from musicfs.core.mount.shared import SharedMount
        from musicfs.core.shared.errors import SharedCatalogError

        try:
            return SharedMount(
                url,
                self.catalog_path,
                self.cache_dir,
                origin_ids=lambda: list(self.origins),
                editor=self.overlay_editor,
                notify=self.notify_tree_changes,
                took_over=self._took_over,  # `rescans` is built again with the origins
                first_round=self._followed,
                after_applied=self._after_scan,  # the feed brings the scans' rows
                user_data_changed=self._shared_user_data,
                rescan=self._rescan_asked,
            )
        except SharedCatalogError as exc:
            raise StartupError(str(exc)) from None

    def _shared_user_data(self, applied: Applied) -> None:
        """The feed changed pins or collections (another machine's, or this
        one's coming back), or copied the catalog: take them up (follow thread)."""
        if applied.pins or applied.copied:
            self.pinning.changed()
        if applied.collections or applied.copied:
            self.load_catalog_collections()

    def load_catalog_collections(self) -> None:
        """Show the collections defined in the shared catalog in /.collections,
        beside the config's (any thread but trio's)."""
        if self.operations is None:
            return
        with Catalog.open(self.catalog_path, readonly=True) as catalog:
            rules = catalog.shared_collections()
        found = catalog_collections(rules)
        self.operations.namespace.set_catalog_collections(found)
        self.pinning.catalog_collections = found

    def _took_over(self, origin_id: str) -> None:
        self.rescans.took_over(origin_id)

    def _rescan_asked(self, origin_id: str) -> None:
        """Another mount asked for a rescan of an origin this one scans."""
        self.rescans.request_rescan(origin_id)

    def _followed(self) -> None:
        """The replica caught up with the shared catalog once (a new one: copied),
        or the server is unreachable: what ``--wait`` waits for instead of a scan."""
        self.life.call_soon(self.rescans.first_scan.set)

    def close(self) -> None:
        """Undo `prepare` when the mount will not be served after all."""
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None
        self._lock.release()

    def _reconcile(self, catalog: Catalog) -> None:
        known = {row[0]: (row[1], row[2]) for row in catalog.origins()}
        known_ids = set(known)
        layout = Layout(
            catalog, self.config.path_template, skip_unreadable=self.config.scan.skip_unreadable
        )
        with catalog.transaction():
            for origin_id, (kind, location) in known.items():
                origin = self.origins.get(origin_id)
                if origin is not None and (origin.kind, origin.location) == (kind, location):
                    continue
                if self.shared is not None:
                    continue  # another machine's origin: the shared catalog decides
                # Gone from the config, or the id now names another place: its rows
                # describe files that are not where the id points any more.
                log.info("origin %r (%s) is no longer configured; removing its tracks",
                         origin_id, location)  # fmt: skip
                # Its tracks' user data goes to their copies elsewhere, or waits for their audio.
                heirs = catalog.depart_origin(origin_id)
                for file_id in catalog.forget_origin(origin_id):
                    layout.unplace(file_id)
                for heir in heirs:  # placed again with what they took over
                    if (track := catalog.track(heir)) is not None:
                        layout.place_track(track)
                known_ids.discard(origin_id)
            for origin in self.origins.values():
                # A new local folder must exist (a typo should fail at once); a remote
                # origin that is down must not delay the mount: it is scanned when it
                # answers.
                if origin.id not in known_ids and isinstance(origin, LocalOrigin):
                    try:
                        origin.check()
                    except OriginUnavailable as exc:
                        raise StartupError(
                            f"{exc.strerror}; check the path given to --origin or in the "
                            "config file's [[origins]] table"
                        ) from None
                catalog.register_origin(origin.id, origin.kind, origin.location)
            wanted = (self.config.template, str(self.config.scan.skip_unreadable))
            stored = (catalog.get_setting(TEMPLATE_SETTING), catalog.get_setting(LAYOUT_SETTING))
            if stored != wanted:
                if stored[0] is not None:
                    log.info("layout changed (%r → %r): rebuilding the tree", stored, wanted)
                with catalog.page_cache(64):
                    layout.rebuild()
                catalog.set_setting(LAYOUT_SETTING, wanted[1])

    # -- serving ------------------------------------------------------------------

    async def serve(
        self,
        on_ready: Callable[[], Awaitable[None]] | None = None,
        on_scanned: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Mount, answer requests until unmounted or `shutdown`, then clean up.

        *on_ready* is awaited once the mount answers, *on_scanned* once the scan
        of every origin started at mount has finished (at once without
        ``[scan] on_start``); `scan_reports` then holds its reports.
        """
        assert self._catalog is not None, "call prepare() first"
        config, life = self.config, self.life
        life.token = trio.lowlevel.current_trio_token()
        self.content = content = open_content(config, self.cache_dir, self.events)
        self.fill = fill = FillQueue(
            life,
            self.catalog_path,
            origins=self.origins,
            federation=self.federation,
            content=content,
            supervisor=self.supervisor,
        )
        hints = PrefetchHints(life, self.catalog_path, fill.copy_to_cache, self.supervisor)
        pinning = self.pinning
        pinning.content, pinning.copy, pinning.wake = content, fill.copy_to_cache, fill.wake
        fill.pins = pinning
        self.operations = ops = build_operations(
            config,
            self._catalog,
            self.federation,
            content,
            self.events,
            on_stale=self._on_stale,
            on_fill=fill.on_fill,
            prefetch_hint=hints.hint if content is not None else None,
        )
        library = ops.library
        shared = self.shared
        if shared is not None:  # the collections the shared catalog defines, as last seen
            self.load_catalog_collections()
        # For smart collections; with a shared catalog, plays go there first.
        sink = shared.queue_plays if shared is not None else None
        access_log = AccessLog(self.catalog_path, self.events, sink)
        # None: no cache, prefetch off, or only local disks.
        prefetcher = Prefetcher.for_mount(
            config,
            self.catalog_path,
            events=self.events,
            federation=self.federation,
            content=content,
            ops=ops,
        )
        options = mount_options(allow_other=config.mount.allow_other)
        try:
            pyfuse3.init(ops, str(self.mountpoint), options)
        except RuntimeError as exc:
            raise StartupError(f"cannot mount on {self.mountpoint}: {exc}", refused=False) from None
        log.info("mounted %s (%s)", self.mountpoint, ", ".join(sorted(options)))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._main_then_cancel, nursery)
                st = await trio.to_thread.run_sync(os.stat, self.mountpoint)  # INIT is done
                set_read_ahead(st.st_dev, config.mount.read_ahead_kb)
                # Before READY, so the first listing already shows the covers made in
                # earlier sessions: this opens the cover store's index only (Pillow and
                # mutagen's picture code are imported when a picture is first made).
                ops.covers = await trio.to_thread.run_sync(
                    cover_files,
                    self.cache_dir,
                    self.catalog_path,
                    self.federation,
                    self.supervisor,
                    self.notify_tree_changes,
                )
                self.state = MountState.READY
                log.info("ready: serving %s", self.mountpoint)
                if on_ready is not None:
                    await on_ready()
                run = self.supervisor.run
                nursery.start_soon(run, "signals", self._signals)
                nursery.start_soon(run, "fill", fill.run)
                self.rescans.start(nursery)
                if shared is not None:
                    shared.start(self.supervisor, nursery)
                access_log.start(self.supervisor)
                self.tree_events.start(self.supervisor)
                if prefetcher is not None:
                    prefetcher.start(self.supervisor)
                if shared is not None:
                    pass  # the locks loop asks for the scans; `_followed` sets first_scan
                elif config.scan.on_start:
                    self.rescans.request_rescan()
                else:
                    self.rescans.first_scan.set()
                if on_scanned is not None:
                    scanned = functools.partial(self._when_scanned, on_scanned)
                    nursery.start_soon(run, "ready", scanned)
                if not self._checked:
                    nursery.start_soon(
                        check_catalog_later, life, self.catalog_path, self.supervisor
                    )
        finally:
            self.state = MountState.UNMOUNTING
            access_log.stop()
            if shared is not None:  # its origin locks freed: another mount takes over
                await trio.to_thread.run_sync(shared.stop)
            self.tree_events.stop()
            hints.close()
            if ops.covers is not None:
                ops.covers.close()
            if prefetcher is not None:
                prefetcher.stop()
            library.close_all()
            await trio.to_thread.run_sync(self.federation.close)
            if content is not None:
                content.close()
            pyfuse3.close(unmount=True)
            self._catalog.close()
            self._lock.release()
            log.info("unmounted %s", self.mountpoint)

    async def _when_scanned(self, on_scanned: Callable[[], Awaitable[None]]) -> None:
        await self.rescans.first_scan.wait()
        await on_scanned()
        self.supervisor.ok("ready")

    async def _main_then_cancel(self, nursery: trio.Nursery) -> None:
        await pyfuse3.main()
        # Unmounted (shutdown, or fusermount3 -u from outside): stop the other tasks.
        self.life.stopping = True
        self.rescans.cancel()
        nursery.cancel_scope.cancel()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            self.supervisor.ok("signals")
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: rescanning")
                    self.rescans.request_rescan()
                else:
                    log.info("%s: unmounting", signal.Signals(signum).name)
                    await self.shutdown()

    async def shutdown(self, drain_timeout: float = 5.0) -> None:
        """Stop: let open files close (up to *drain_timeout* s), then unmount."""
        if self.life.stopping:
            return
        self.life.stopping = True
        self.state = MountState.UNMOUNTING
        self.rescans.cancel()
        library = self.operations.library if self.operations else None
        with trio.move_on_after(drain_timeout):
            while library is not None and library.open_handles:
                await trio.sleep(0.05)
        if library is not None and library.open_handles:
            log.warning("unmounting with %d files still open", library.open_handles)
        pyfuse3.terminate()

    # -- what the parts tell the mount ----------------------------------------------

    def overlay_editor(self, catalog: Catalog, layout: Layout | None = None) -> OverlayEditor:
        """Makes and refreshes the overlays (tag overrides) of files in *catalog*."""
        return overlay_editor(catalog, self.config, self.federation, self.extensions, layout)

    def _after_scan(self, catalog: Catalog, layout: Layout, changed: set[int]) -> None:
        # Files that changed need their overlay made again (a new header).
        editor = self.overlay_editor(catalog, layout)
        self.notify_tree_changes(editor.refresh(catalog.overlays_due()))
        # Their covers, ahead of the first listing (this session or the next).
        covers = self.operations.covers if self.operations is not None else None
        if covers is not None and changed and not self.life.stopping:
            covers.warm(catalog.folders_with_art(sorted(changed)))
        # Pins: what a pinned folder, collection or search matches now; pinned files
        # that changed on their origin are copied again.
        self.pinning.refresh(catalog)

    def _on_health(self, origin_id: str, health: Health) -> None:
        """An origin went offline or came back (any thread)."""
        self.events.publish(EventType.ORIGIN_HEALTH, origin=origin_id, online=health.online,
                            error=health.last_error)  # fmt: skip
        if health.online:
            if self.fill is not None:
                self.fill.wake()  # damaged copies of its files are copied again
            self.life.in_trio(self.rescans.came_back, origin_id)

    def _on_stale(self, track: Track) -> None:
        log.info("%s/%s changed since it was scanned; rescanning", track.origin, track.relpath)
        self.rescans.request_rescan()

    def notify_tree_changes(self, changes: list[TreeChange]) -> None:
        """Make the kernel forget what *changes* made stale, and tell whoever listens
        for ``tree.changed`` which folders changed (any thread but trio's)."""
        if self.operations is not None and not self.life.stopping:
            self.operations.invalidate(changes)
        self.tree_events.offer(changes)
