"""One mounted library, start to finish: prepare, mount, serve, rescan, unmount.

`MusicFS` ties the parts together in the order DESIGN §1 asks for: open the
catalog and mount at once (the tree is served from the catalog, O(1) in the
library size), then bring the catalog up to date with a background rescan whose
changes reach the kernel as invalidations.

Threads: the trio loop owns the FUSE session and the read connection of the
catalog; the scanner runs in a worker thread with its own connection. Other
threads (the control server) talk to a running `MusicFS` only through
`trio.from_thread` with `trio_token` (see `musicfs.control`).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import logging
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyfuse3
import trio

from musicfs.core.catalog.layout import TEMPLATE_SETTING, ChangeKind, Layout, TreeChange
from musicfs.core.catalog.store import (
    Catalog,
    CatalogError,
    Track,
    damaged,
    first_problem,
    split_relpath,
)
from musicfs.core.config.paths import CacheDirLock, cache_dir_for
from musicfs.core.config.settings import Config
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.library import Library, version_of
from musicfs.core.content.overlay import OverlayEditor, TagView, resolve, view
from musicfs.core.content.verify import VerifyReport, verify_content
from musicfs.core.errors import MusicFSError
from musicfs.core.events import EventBus, EventType
from musicfs.core.extensions import Extensions
from musicfs.core.fuse.fs import MusicFSOperations, mount_options
from musicfs.core.fuse.latency import LatencyRecorder
from musicfs.core.mount.origins import build_origin, limits_of
from musicfs.core.mount.prefetch import Prefetcher
from musicfs.core.namespace.collections import AccessLog
from musicfs.core.origins.base import Origin, OriginUnavailable
from musicfs.core.origins.federation import Federation, Health
from musicfs.core.origins.local import LocalOrigin
from musicfs.core.secrets.credentials import CredentialError, Credentials
from musicfs.core.supervise import Supervisor, describe
from musicfs.core.sync.scanner import Scanner, ScanProgress, ScanReport
from musicfs.core.sync.watch import LocalWatch, ScanRequest

if TYPE_CHECKING:
    from musicfs.core.namespace.coverfiles import CoverFiles

log = logging.getLogger(__name__)

_MAX_HINTS = 16  # /.prefetch folders waiting to be copied at once

LAYOUT_SETTING = "skip_unreadable"
_ORIGIN_RETRY = 2.0  # seconds between checks of an origin that went away
_FILL_QUEUE = 10_000
_HEALTH_ROUND = 30.0  # seconds between probes of remote origins that are online
# The catalog's pages are checked before mounting when the file is at most this
# big (SQLite's quick_check reads it all: 80,000 tracks, 63 MiB, take 0.07-0.13 s
# from the page cache; 1,000,000 tracks 1.3-1.9 s), for at most CHECK_BUDGET
# seconds (a cold, slow disk). A bigger catalog, or the rest, is checked after
# mounting, while it serves: mounting stays O(1) in the library size (FR-1).
CHECK_BEFORE_MOUNT = 64 * 2**20
CHECK_BUDGET = 1.0


class MountState(enum.Enum):
    MOUNTING = "MOUNTING"
    READY = "READY"
    SYNCING = "SYNCING"
    DEGRADED = "DEGRADED"
    UNMOUNTING = "UNMOUNTING"


def shown_state(state: MountState, online: Iterable[bool], *, failing: bool = False) -> MountState:
    """The state to report: an origin known to be offline, or a background task
    failing right now (*failing*), makes a serving mount DEGRADED at once,
    whatever a scan is doing (it may go on for a while against an origin that
    stopped answering)."""
    serving = state in (MountState.READY, MountState.SYNCING)
    return MountState.DEGRADED if serving and (failing or not all(online)) else state


class StartupError(MusicFSError, RuntimeError):
    """The mount cannot start; the message says why and what to do.

    *refused*: because of what it was given (mountpoint, origins, configuration),
    which the user fixes (exit status 2); false for a failure of the machine,
    e.g. FUSE itself (exit status 1). See `musicfs.core.exitcodes`.
    """

    def __init__(self, message: str, *, refused: bool = True) -> None:
        super().__init__(message)
        self.refused = refused


def version() -> str:
    try:
        return metadata.version("musicfs-core")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def check_mountpoint(mountpoint: Path) -> None:
    """Refuse an unusable mountpoint; clear a dead one left by a killed daemon."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            log.warning("%s is a dead FUSE mount (daemon killed?); clearing it", mountpoint)
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
            return check_mountpoint(mountpoint)
        if exc.errno == errno.ENOENT:
            raise StartupError(
                f"mountpoint {mountpoint} does not exist; create it with: mkdir -p {mountpoint}"
            ) from None
        raise StartupError(f"mountpoint {mountpoint}: {exc.strerror}") from None
    if not os.path.isdir(mountpoint):
        raise StartupError(f"mountpoint {mountpoint} is not a directory")
    if os.path.ismount(mountpoint) and mountpoint != Path("/"):
        raise StartupError(
            f"{mountpoint} is already a mount point; if MusicFS is mounted there, "
            f"run: musicfs unmount {mountpoint}"
        )


def check_catalog(catalog: Catalog, max_bytes: int, budget: float) -> bool:
    """Check the pages of a catalog file of at most *max_bytes* for damage, for
    up to *budget* seconds: True when all were checked and sound, False when it is
    bigger or time ran out (then check it after mounting). Raises `CatalogError`
    (with the fix) for a damaged one: mounting it would answer from broken pages
    and stop at the first scan (issue 13.4)."""
    try:
        size = os.path.getsize(catalog.path)
    except OSError:
        size = 0
    if size > max_bytes:
        return False
    verdict = catalog.quick_check(budget)
    if verdict is None:
        log.info("catalog %s: not checked within %.1f s; checking it after mounting",
                 catalog.path, budget)  # fmt: skip
        return False
    if verdict != "ok":
        problem = f"catalog {catalog.path} is damaged ({first_problem(verdict)})"
        raise CatalogError(damaged(problem, certain=True))
    return True


def set_read_ahead(device: int, kib: int) -> None:
    """Let the kernel read ahead *kib* KiB on this mount (0: leave its default).

    FUSE reads arrive in requests of at most the read-ahead size (128 KiB by
    default); 1 MiB requests make a sequential first read several times faster
    in a Python daemon. Needs root; otherwise the default stays.
    """
    if kib <= 0:
        return
    path = f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb"
    try:
        with open(path, "w") as fh:
            fh.write(str(kib))
    except OSError as exc:
        log.info("could not set read-ahead to %d KiB (%s); keeping the default", kib, exc)


class MusicFS:
    """A library mounted at one mountpoint."""

    def __init__(
        self,
        config: Config,
        mountpoint: str | Path,
        *,
        progress: ScanProgress | None = None,
        extensions: Extensions | None = None,
    ) -> None:
        """*extensions*: what plugins add (origin types, formats, the overlay's
        header writers); none when not given."""
        self.config = config
        self.extensions = extensions or Extensions()
        self.mountpoint = Path(os.path.abspath(mountpoint))
        self.cache_dir = cache_dir_for(config, self.mountpoint)
        self.catalog_path = self.cache_dir / "catalog.sqlite3"
        self.progress = progress
        self.state = MountState.MOUNTING
        self.started = time.time()
        # Built by `prepare` (remote origins need their credentials).
        self.origins: dict[str, Origin] = {}
        self.federation = Federation({})
        self.scan_reports: dict[str, ScanReport] = {}
        self.scanning = False
        self._lock = CacheDirLock(self.cache_dir)
        self._catalog: Catalog | None = None
        self._ops: MusicFSOperations | None = None
        self._requests: dict[str, ScanRequest] = {}  # origin id -> what to look at again
        self._wakeup = trio.Event()
        self._first_scan = trio.Event()  # set when the scan started at mount is done
        self.content: ContentCache | None = None
        self._to_fill: dict[tuple[str, str], Track] = {}
        self._fill_wakeup = trio.Event()
        self._scanner: Scanner | None = None
        self._stopping = False
        self.trio_token: trio.lowlevel.TrioToken | None = None
        self.events = EventBus()
        # Background loops: one that fails is logged, counted, shown by status and
        # started again with backoff; it never takes the mount down (issue 13.5).
        self.supervisor = Supervisor()
        # Manual prefetch hints (/.prefetch): one copy at a time, in the background.
        self._hints = ThreadPoolExecutor(1, thread_name_prefix="musicfs-hint")
        self._hints_lock = threading.Lock()
        self._hinted: set[int] = set()
        self._checked = False  # the catalog's pages were all checked before mounting

    # -- preparing --------------------------------------------------------------

    def prepare(self) -> None:
        """Everything that can fail before mounting: lock, catalog, origins, template."""
        if not self.config.origins:
            raise StartupError(
                "no origin given: pass --origin DIR (or list [[origins]] in the config file)"
            )
        check_mountpoint(self.mountpoint)
        self._build_origins()
        self._lock.acquire()
        try:
            self._catalog = catalog = Catalog.open(self.catalog_path)
            self._checked = check_catalog(catalog, CHECK_BEFORE_MOUNT, CHECK_BUDGET)
            self._reconcile(catalog)
        except sqlite3.OperationalError as exc:  # locked by another program, disk full
            self._unprepare()
            raise CatalogError(
                f"cannot update catalog {self.catalog_path}: {exc}; if another program has "
                "it open, close that program and mount again"
            ) from None
        except sqlite3.DatabaseError as exc:
            self._unprepare()
            problem = f"catalog {self.catalog_path} is damaged ({exc})"
            raise CatalogError(damaged(problem, certain=True)) from None
        except BaseException:
            self._unprepare()
            raise

    def _unprepare(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None
        self._lock.release()

    def _build_origins(self) -> None:
        try:
            credentials = Credentials.load()
        except CredentialError as exc:
            raise StartupError(str(exc)) from None
        ordered = sorted(self.config.origins, key=lambda o: o.priority)
        try:
            self.origins = {o.id: build_origin(o, credentials, self.extensions) for o in ordered}
        except (ImportError, ValueError, OSError) as exc:
            raise StartupError(f"cannot set up the origins: {exc}") from None
        for origin in self.origins.values():
            origin.include_hidden = self.config.scan.include_hidden  # [scan] include_hidden
        self.federation = Federation(
            self.origins, {o.id: limits_of(o) for o in ordered}, on_health=self._on_health
        )

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
                # Gone from the config, or the id now names another place: its rows
                # describe files that are not where the id points any more.
                log.info("origin %r (%s) is no longer configured; removing its tracks",
                         origin_id, location)  # fmt: skip
                for file_id in catalog.forget_origin(origin_id):
                    layout.unplace(file_id)
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
        """Mount, answer requests until unmounted or `request_shutdown`, then clean up.

        *on_ready* is awaited once the mount answers, *on_scanned* once the scan
        of every origin started at mount has finished (at once without
        ``[scan] on_start``); `scan_reports` then holds its reports.
        """
        assert self._catalog is not None, "call prepare() first"
        self.trio_token = trio.lowlevel.current_trio_token()
        if self.config.cache.mode == "full":
            self.content = ContentCache(
                self.cache_dir / "content", self.config.cache.limit, self.events
            )
            self.content.on_damaged = self._wake_fill  # copied again when its origin answers
        library = Library(
            self._catalog,
            self.federation,
            on_stale=self._on_stale,
            content=self.content,
            on_fill=self._on_fill,
            events=self.events,
        )
        self._ops = ops = MusicFSOperations(
            library,
            entry_timeout=self.config.mount.entry_timeout,
            attr_timeout=self.config.mount.attr_timeout,
            collections=self.config.collections,
            prefetch_hint=self.hint_prefetch if self.content is not None else None,
        )
        access_log = AccessLog(self.catalog_path, self.events)  # for smart collections
        prefetcher = Prefetcher.for_mount(self)  # None: no cache, prefetch off, all local
        options = mount_options(allow_other=self.config.mount.allow_other)
        try:
            pyfuse3.init(ops, str(self.mountpoint), options)
        except RuntimeError as exc:
            raise StartupError(f"cannot mount on {self.mountpoint}: {exc}", refused=False) from None
        log.info("mounted %s (%s)", self.mountpoint, ", ".join(sorted(options)))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._main_then_cancel, nursery)
                st = await trio.to_thread.run_sync(os.stat, self.mountpoint)  # INIT is done
                set_read_ahead(st.st_dev, self.config.mount.read_ahead_kb)
                # Before READY, so the first listing already shows the covers made in
                # earlier sessions: this opens the cover store's index only (Pillow and
                # mutagen's picture code are imported when a picture is first made).
                ops.covers = await trio.to_thread.run_sync(self._cover_files)
                self.state = MountState.READY
                log.info("ready: serving %s", self.mountpoint)
                if on_ready is not None:
                    await on_ready()
                run = self.supervisor.run
                nursery.start_soon(run, "signals", self._signals)
                nursery.start_soon(run, "sync", self._sync_loop)
                nursery.start_soon(run, "fill", self._fill_loop)
                nursery.start_soon(run, "health", self._health_loop)
                access_log.start(self.supervisor)
                if prefetcher is not None:
                    prefetcher.start(self.supervisor)
                for origin in self.origins.values():
                    if (
                        isinstance(origin, LocalOrigin)
                        and origin.watchable
                        and self.config.scan.watch
                    ):
                        watch = functools.partial(self._watch, origin)
                        nursery.start_soon(run, f"watch {origin.id}", watch)
                    elif self.config.scan.poll_interval > 0:
                        poll = functools.partial(self._poll, origin, self.config.scan.poll_interval)
                        nursery.start_soon(run, f"poll {origin.id}", poll)
                if self.config.scan.on_start:
                    self.request_rescan()
                else:
                    self._first_scan.set()
                if on_scanned is not None:
                    scanned = functools.partial(self._when_scanned, on_scanned)
                    nursery.start_soon(run, "ready", scanned)
                if not self._checked:
                    nursery.start_soon(self._check_catalog)
        finally:
            self.state = MountState.UNMOUNTING
            access_log.stop()
            self._hints.shutdown(wait=False, cancel_futures=True)
            if ops.covers is not None:
                ops.covers.close()
            if prefetcher is not None:
                prefetcher.stop()
            library.close_all()
            await trio.to_thread.run_sync(self.federation.close)
            if self.content is not None:
                self.content.close()
            pyfuse3.close(unmount=True)
            self._catalog.close()
            self._lock.release()
            log.info("unmounted %s", self.mountpoint)

    async def _check_catalog(self) -> None:
        """Finish the check of a catalog too big to check before mounting. A
        damaged one is logged and shown by ``musicfs status`` (state DEGRADED, the
        fix in its "catalog check" entry); what can still be read is served."""

        def check() -> str | None:
            with Catalog.open(self.catalog_path, readonly=True) as catalog:
                return catalog.quick_check(stop=lambda: self._stopping)

        started = time.monotonic()
        try:
            verdict = await trio.to_thread.run_sync(check)
        except CatalogError as exc:
            verdict = str(exc)
        if verdict is None:  # unmounting
            return
        if verdict != "ok":
            problem = f"catalog {self.catalog_path} is damaged ({first_problem(verdict)})"
            self.supervisor.failed("catalog check", CatalogError(damaged(problem, certain=True)))
            return
        log.info("catalog checked: no damage (%.1f s)", time.monotonic() - started)

    async def _when_scanned(self, on_scanned: Callable[[], Awaitable[None]]) -> None:
        await self._first_scan.wait()
        await on_scanned()
        self.supervisor.ok("ready")

    async def _main_then_cancel(self, nursery: trio.Nursery) -> None:
        await pyfuse3.main()
        # Unmounted (shutdown, or fusermount3 -u from outside): stop the other tasks.
        self._stopping = True
        if self._scanner is not None:
            self._scanner.cancelled = True
        nursery.cancel_scope.cancel()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            self.supervisor.ok("signals")
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: rescanning")
                    self.request_rescan()
                else:
                    log.info("%s: unmounting", signal.Signals(signum).name)
                    await self.shutdown()

    async def _sync_loop(self) -> None:
        """Run the rescans that were asked for, one batch at a time, in a worker thread."""
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            requests, self._requests = self._requests, {}
            if not requests:
                continue
            self.scanning = True
            self.state = MountState.SYNCING
            before = dict(self.scan_reports)
            try:
                await trio.to_thread.run_sync(self._scan, requests)
            except Exception as exc:
                # Asked again: the supervisor restarts this loop, which does them then.
                for origin_id, request in requests.items():
                    self._ask(origin_id, request)
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
                self._first_scan.set()  # the first batch holds every origin (request_rescan)
                if self.state is MountState.SYNCING:
                    degraded = any(not r.complete for r in self.scan_reports.values())
                    self.state = MountState.DEGRADED if degraded else MountState.READY
            self.supervisor.ok("sync")

    def _scan(self, requests: dict[str, ScanRequest]) -> None:
        changed: set[int] = set()  # folders whose files were added or changed

        def on_changes(changes: list[TreeChange]) -> None:
            self.notify_tree_changes(changes)
            changed.update(c.parent for c in changes if c.kind is not ChangeKind.REMOVED)

        with Catalog.open(self.catalog_path, cache_mib=32) as catalog:
            self._scanner = scanner = Scanner(
                catalog,
                self.config.path_template,
                workers=self.config.scan.workers,
                extensions=self.config.scan.extensions,
                skip_unreadable=self.config.scan.skip_unreadable,
                on_changes=on_changes,
                progress=self.progress,
                federation=self.federation,
                plugins=self.extensions,
            )
            try:
                for origin_id, request in requests.items():
                    origin = self.origins.get(origin_id)
                    if self._stopping or origin is None:
                        continue
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
                # Files that changed need their overlay made again (a new header).
                editor = self._overlay_editor(catalog, scanner.layout)
                self.notify_tree_changes(editor.refresh(catalog.overlays_due()))
                # Their covers, ahead of the first listing (this session or the next).
                covers = self._ops.covers if self._ops is not None else None
                if covers is not None and changed and not self._stopping:
                    covers.warm(catalog.folders_with_art(sorted(changed)))
            finally:
                scanner.close()
                if self.progress is not None:
                    self.progress.close()
                    self.progress = None  # a live display only for the first scan

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

    def _on_health(self, origin_id: str, health: Health) -> None:
        """An origin went offline or came back (any thread)."""
        self.events.publish(EventType.ORIGIN_HEALTH, origin=origin_id, online=health.online,
                            error=health.last_error)  # fmt: skip
        if health.online:
            self._wake_fill()  # damaged copies of its files are copied again
        if health.online and self.trio_token is not None and not self._stopping:
            try:
                trio.from_thread.run_sync(
                    self._ask, origin_id, ScanRequest(full=True), trio_token=self.trio_token
                )
            except RuntimeError:  # already in the trio thread
                self._ask(origin_id, ScanRequest(full=True))
            except trio.RunFinishedError:
                pass

    async def _watch(self, origin: LocalOrigin) -> None:
        """Follow a local origin: while it is there, turn its inotify events into
        rescans of what changed; when it goes, wait for it and rescan it all."""
        while True:
            await self._watch_once(origin)
            log.warning("origin %s is gone; serving from the cache until it returns", origin.id)
            while not await trio.to_thread.run_sync(self.federation.probe, origin.id):
                await trio.sleep(_ORIGIN_RETRY)
            log.info("origin %s is back; rescanning it", origin.id)
            self._ask(origin.id, ScanRequest(full=True))

    async def _watch_once(self, origin: LocalOrigin) -> None:
        if not await trio.to_thread.run_sync(self.federation.probe, origin.id):
            return
        watch = await trio.to_thread.run_sync(
            functools.partial(LocalWatch, origin.location, include_hidden=origin.include_hidden)
        )
        log.info("watching %s (%d folders)", origin.location, watch.watched)
        try:
            while watch.watched:  # 0 once the origin's own folder went away
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
                    self._ask(origin.id, request)
        finally:
            watch.close()

    async def _poll(self, origin: Origin, interval: float) -> None:
        """Rescan an origin that cannot report its changes every *interval* seconds."""
        while True:
            await trio.sleep(interval)
            self._ask(origin.id, ScanRequest(full=True))
            self.supervisor.ok(f"poll {origin.id}")

    def _wake_fill(self) -> None:
        """Have the fill loop look for work (any thread)."""
        if self.trio_token is None or self._stopping:
            return
        try:
            trio.from_thread.run_sync(self._set_fill_wakeup, trio_token=self.trio_token)
        except RuntimeError:  # already in the trio thread
            self._set_fill_wakeup()
        except trio.RunFinishedError:
            pass

    def _set_fill_wakeup(self) -> None:
        self._fill_wakeup.set()  # the event of now: the loop makes a new one each round

    def _on_fill(self, track: Track) -> None:
        """Keep a copy of a file that was just opened from its origin (trio thread)."""
        if len(self._to_fill) < _FILL_QUEUE:
            self._to_fill[(track.origin, track.relpath)] = track
            self._fill_wakeup.set()

    async def _fill_loop(self) -> None:
        """Copy opened files into the content cache, one at a time, in the background.

        Starts with a quick integrity check of the cache (FR-25.5): chunks that
        are missing or the wrong size are dropped, with the copies needing them.
        Copies dropped as damaged are copied again whenever their origins answer
        (`_repair`): at start, after damage is found, when an origin comes back.
        """
        if self.content is not None:
            await trio.to_thread.run_sync(self.content.verify, False)
            await trio.to_thread.run_sync(self._repair)
        self.supervisor.ok("fill")
        while True:
            await self._fill_wakeup.wait()
            self._fill_wakeup = trio.Event()
            while self._to_fill:
                key = next(iter(self._to_fill))
                track = self._to_fill.pop(key)
                await trio.to_thread.run_sync(self._fill, track)
            if self.content is not None:
                await trio.to_thread.run_sync(self._repair)
            self.supervisor.ok("fill")

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
                    if self._stopping:
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

    def _cover_files(self) -> CoverFiles:
        from musicfs.core.art.covers import CoverStore
        from musicfs.core.namespace.coverfiles import CoverFiles

        return CoverFiles(
            CoverStore(self.cache_dir / "covers", self.federation),
            self.catalog_path,
            on_found=self._covers_found,
            on_error=functools.partial(self.supervisor.failed, "covers", lasting=False),
        )

    def _covers_found(self, folder: int) -> None:
        """Cover files appeared in *folder* (a cover worker thread): its listing
        changed, so its mtime moves forward (media servers look again) and the
        kernel and L1 forget its listing and attributes."""
        changes = [TreeChange(ChangeKind.CHANGED, folder, "", folder)]
        try:
            with Catalog.open(self.catalog_path) as catalog, catalog.transaction():
                catalog.touch_dir(folder, time.time_ns())
                node = catalog.node(folder)
        except (CatalogError, sqlite3.Error) as exc:
            log.warning("folder %d has covers, but its mtime stays: %s", folder, exc)
            node = None
        if node is not None:
            changes.append(TreeChange(ChangeKind.CHANGED, node.parent, node.name, node.id))
        self.notify_tree_changes(changes)

    def hint_prefetch(self, node_id: int) -> None:
        """Copy the files at or below tree node *node_id* into the cache, in the
        background, one at a time (a manual hint: a folder of /.prefetch listed)."""
        with self._hints_lock:
            if node_id in self._hinted or len(self._hinted) >= _MAX_HINTS:
                return
            self._hinted.add(node_id)

        def copy() -> None:
            try:
                with Catalog.open(self.catalog_path, readonly=True) as catalog:
                    tracks = [t for f in catalog.file_ids_under(node_id) if (t := catalog.track(f))]
                log.info("prefetch hint: copying %d files into the cache", len(tracks))
                for track in tracks:
                    if self._stopping:
                        return
                    try:
                        self.copy_to_cache(track)
                    except OSError as exc:
                        log.info("prefetch hint: %s/%s: %s", track.origin, track.relpath, exc)
            except Exception as exc:  # counted and shown by status, never silent
                self.supervisor.failed("prefetch hint", exc, lasting=False)
            finally:
                with self._hints_lock:
                    self._hinted.discard(node_id)

        self._hints.submit(copy)

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

    def _ask(self, origin_id: str, request: ScanRequest) -> None:
        self._requests.setdefault(origin_id, ScanRequest()).merge(request)
        self._wakeup.set()

    def _on_stale(self, track: Track) -> None:
        log.info("%s/%s changed since it was scanned; rescanning", track.origin, track.relpath)
        self.request_rescan()

    def notify_tree_changes(self, changes: list[TreeChange]) -> None:
        """Make the kernel forget what *changes* made stale (any thread but trio's)."""
        if self._ops is not None and not self._stopping:
            self._ops.invalidate(changes)

    # -- control (call in the trio thread) ------------------------------------------------

    def verify_content(
        self,
        origin_id: str | None = None,
        progress: Callable[[VerifyReport], None] | None = None,
    ) -> VerifyReport:
        """Hash every file of an origin (all when None) and rescan the ones whose
        content changed unseen (FR-10.5). Blocking, for any thread but trio's."""
        if origin_id is not None and origin_id not in self.origins:
            raise KeyError(origin_id)
        report = verify_content(
            self.catalog_path,
            self.federation,
            self.content,
            origin_id,
            progress=progress,
            should_stop=lambda: self._stopping,
        )
        requests: dict[str, ScanRequest] = {}
        for track in report.changed:
            requests.setdefault(track.origin, ScanRequest()).dirs.add(
                track.relpath.rpartition("/")[0]
            )
        if requests and self.trio_token is not None:
            for origin, request in requests.items():
                trio.from_thread.run_sync(self._ask, origin, request, trio_token=self.trio_token)
        return report

    @property
    def library(self) -> Library | None:
        """The semantic core behind the mount, while it is served."""
        return self._ops.library if self._ops is not None else None

    @property
    def current_scan(self) -> ScanReport | None:
        """The report of the scan running now (it grows as the scan goes)."""
        scanner = self._scanner
        return scanner.report if scanner is not None and self.scanning else None

    def _overlay_editor(self, catalog: Catalog, layout: Layout | None = None) -> OverlayEditor:
        if layout is None:
            layout = Layout(
                catalog, self.config.path_template, skip_unreadable=self.config.scan.skip_unreadable
            )
        return OverlayEditor(catalog, layout, self.federation, self.extensions)

    def set_tags(
        self,
        path: str,
        assignments: Mapping[str, str | None],
        clear: Sequence[str] = (),
        source: str = "user",
    ) -> TagView:
        """Override tags of the file at *path* (relative to the mountpoint); the tree
        and the served header follow. Raises `TagError`. Blocking: any thread but trio's."""
        with Catalog.open(self.catalog_path) as catalog:
            editor = self._overlay_editor(catalog)
            shown, changes = editor.set_tags(path, assignments, clear, source)
        self.notify_tree_changes(changes)
        return shown

    def tag_view(self, path: str) -> TagView:
        """A file's own tags, overrides and effective tags. Raises `TagError`."""
        with Catalog.open(self.catalog_path, readonly=True) as catalog:
            node = resolve(catalog, path)
            assert node.file_id is not None
            return view(catalog, node.file_id)

    # -- plugins changed while mounted (call from any thread but trio's) ------------------

    def formats_changed(self, formats: Iterable[str]) -> None:
        """The plugins that read these formats came, went or changed: read the
        files of these formats again (a plugin's new code takes effect)."""
        wanted = sorted(set(formats))
        changes: list[TreeChange] = []
        if wanted:
            with Catalog.open(self.catalog_path) as catalog:
                # Their header writers may have changed too: make the overlays again
                # now (before the rows are marked, while they name the version).
                editor = self._overlay_editor(catalog)
                changes = editor.refresh(catalog.overridden_files(wanted))
                with catalog.transaction():
                    catalog.mark_formats_changed(wanted)
        self.notify_tree_changes(changes)
        self.call_soon(self.request_rescan)

    def rebuild_origins(self, origin_type: str) -> list[str]:
        """Build the origins of *origin_type* again (its plugin was reloaded), and
        rescan them. Returns their ids."""
        rebuilt = []
        credentials = Credentials.load()
        for config in self.config.origins:
            if config.type != origin_type or config.id not in self.origins:
                continue
            origin = build_origin(config, credentials, self.extensions)
            old = self.federation.replace(config.id, origin)
            self.origins[config.id] = origin
            old.close()
            rebuilt.append(config.id)
            self.call_soon(self.request_rescan, config.id)
        return rebuilt

    def call_soon(self, function: Callable[..., None], *args: Any) -> None:
        """Run *function* in the trio thread (from any other thread)."""
        if self.trio_token is None or self._stopping:
            return
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(function, *args, trio_token=self.trio_token)

    def request_rescan(self, origin_id: str | None = None) -> None:
        """Rescan one origin completely, or all of them (call in the trio thread)."""
        for oid in [origin_id] if origin_id else list(self.origins):
            self._ask(oid, ScanRequest(full=True))

    async def shutdown(self, drain_timeout: float = 5.0) -> None:
        """Stop: let open files close (up to *drain_timeout* s), then unmount."""
        if self._stopping:
            return
        self._stopping = True
        self.state = MountState.UNMOUNTING
        if self._scanner is not None:
            self._scanner.cancelled = True
        library = self._ops.library if self._ops else None
        with trio.move_on_after(drain_timeout):
            while library is not None and library.open_handles:
                await trio.sleep(0.05)
        if library is not None and library.open_handles:
            log.warning("unmounting with %d files still open", library.open_handles)
        pyfuse3.terminate()

    def counts(self) -> dict[str, int]:
        """Tracks, directories and unreadable files in the catalog.

        Counting takes a while on a big catalog: call this from any thread but
        the trio one (it opens its own read-only connection).
        """
        if not self.catalog_path.exists():
            return {"tracks": 0, "directories": 0, "unreadable_files": 0}
        with Catalog.open(self.catalog_path, readonly=True) as catalog:
            tracks, dirs, unreadable = catalog.counts()
        return {"tracks": tracks, "directories": dirs, "unreadable_files": unreadable}

    def origins_online(self) -> dict[str, bool]:
        """Which origins answer now. Stats each origin's root: call it from any
        thread but the trio one (a hung share must not stall FUSE requests)."""
        # A local disk answers at once; a share or a server may hang: for those,
        # what the health checks found (every 30 s, and on every failed request).
        return {
            origin.id: self.federation.probe(origin.id)
            if origin.inline
            else self.federation.online(origin.id)
            for origin in self.origins.values()
        }

    def status(self, online: dict[str, bool] | None = None) -> dict[str, Any]:
        """A snapshot of the mount's live state (plain data, JSON-ready); cheap,
        for the trio thread. *online* comes from `origins_online` (all assumed
        online when not given); `counts` adds the catalog's numbers."""
        ops = self._ops
        origins = []
        for origin in self.origins.values():
            report = self.scan_reports.get(origin.id)
            online_now = True if online is None else online.get(origin.id, True)
            origins.append(
                {
                    "id": origin.id,
                    "type": origin.kind,
                    "location": origin.location,
                    "online": online_now,
                    "last_scan": report.summary() if report else "",
                }
            )
        reachable = (bool(o["online"]) for o in origins)
        state = shown_state(self.state, reachable, failing=bool(self.supervisor.failing))
        return {
            "version": version(),
            "pid": os.getpid(),
            "state": state.value,
            "cached_files": self.content.headers.entries if self.content else 0,
            "mountpoint": str(self.mountpoint),
            "cache_dir": str(self.cache_dir),
            "uptime_seconds": round(time.time() - self.started, 3),
            "open_handles": ops.library.open_handles if ops else 0,
            "operations": sum(ops.op_counts.values()) if ops else 0,
            "scanning": self.scanning,
            "origins": origins,
            "events_dropped": self.events.dropped,
            "event_subscribers": self.events.subscribers,
            "loops": self.supervisor.snapshot(),
        }

    @property
    def operations(self) -> MusicFSOperations | None:
        """The FUSE handlers while mounted; their counters (`op_counts`) and
        `latency` may be read from any thread (the metrics endpoint does)."""
        return self._ops

    def latency(self) -> dict[str, Any]:
        """p50/p95/p99 (ms) of the FUSE operations since the mount, over all and
        per operation (`LatencyRecorder.summary`). Any thread: it reads a snapshot."""
        ops = self._ops
        return (ops.latency if ops is not None else LatencyRecorder()).summary()
