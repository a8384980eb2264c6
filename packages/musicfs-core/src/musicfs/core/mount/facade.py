"""The one door into a mount for `musicfs.control` and `musicfs.cli`.

`MountControl` wraps a `MusicFS` and is all the daemon, the control server, the
metrics exporter and the CLI use of it: its lifecycle (prepare, serve,
shutdown), its status, the numbers the metrics show, cache and origin
administration (`musicfs.core.mount.admin.Admin`), tag edits, plugin reloads
and content verification. The names those callers need (errors, progress
reports, tag views) are imported from here too, so they never reach into the
catalog, the content cache, the FUSE layer or the origins (an import-linter
contract in pyproject.toml keeps it so). The offline cache operations of the
CLI (`check_cache_offline`, `backup_cache`, `restore_cache`) need no mount.

Threads: `status` wants the trio thread; everything else is for any other
thread (it blocks or reads snapshots), unless it says otherwise.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from musicfs.core.catalog.store import Catalog, CatalogError
from musicfs.core.config.collections import BUILTIN, Collection, collection_rule
from musicfs.core.config.settings import Config
from musicfs.core.content.backup import BackupError, backup_cache, restore_cache
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.overlay import TagError, TagRefused, TagView, resolve, view
from musicfs.core.content.stats import TierStats
from musicfs.core.content.verify import VerifyReport, verify_content
from musicfs.core.events import EventBus
from musicfs.core.extensions import Extensions
from musicfs.core.fuse.latency import PROMETHEUS_BOUNDS, Histogram, LatencyRecorder
from musicfs.core.model import TrackTags
from musicfs.core.mount.admin import (
    SETTABLE,
    Admin,
    AdminError,
    CacheVerifyProgress,
    PrefetchProgress,
)
from musicfs.core.mount.assembly import MountState, StartupError, shown_state, version
from musicfs.core.mount.origins import build_origin
from musicfs.core.mount.pins import PinError, PinProgress
from musicfs.core.mount.service import MusicFS
from musicfs.core.namespace.collections import all_collections
from musicfs.core.origins.federation import Health
from musicfs.core.secrets.credentials import Credentials
from musicfs.core.shared.errors import SharedCatalogError
from musicfs.core.sync.changes import ScanRequest
from musicfs.core.sync.scanner import ScanProgress, ScanReport
from musicfs.core.tags.identity import audio_identity_of
from musicfs.core.values import ConfigError

__all__ = [
    "PROMETHEUS_BOUNDS",
    "SETTABLE",
    "AdminError",
    "BackupError",
    "CacheVerifyProgress",
    "CatalogError",
    "Health",
    "Histogram",
    "Imported",
    "LibraryRecord",
    "MountControl",
    "MountState",
    "OfflineCheck",
    "PinProgress",
    "PrefetchProgress",
    "ScanProgress",
    "ScanReport",
    "StartupError",
    "TagError",
    "TagRefused",
    "TagView",
    "TierStats",
    "VerifyReport",
    "add_plays",
    "apply_import",
    "audio_identity_of",
    "backup_cache",
    "catalog_origins",
    "check_cache_offline",
    "imported_plays",
    "library_records",
    "mount_path_of",
    "restore_cache",
    "scan_progress",
    "set_overrides_offline",
    "set_ratings",
    "version",
]


def scan_progress(live: bool) -> ScanProgress:
    """How a scan shows its progress: a live display on a terminal (*live*), else log lines."""
    from musicfs.core.sync.progress import LogScanProgress, progress_for  # rich: slow to import

    return progress_for() if live else LogScanProgress()


class MountControl(Admin):
    """Everything the control API and the CLI do with one mount."""

    def __init__(self, fs: MusicFS) -> None:
        super().__init__(fs)

    @classmethod
    def create(
        cls,
        config: Config,
        mountpoint: str | Path,
        *,
        extensions: Extensions | None = None,
        events: EventBus | None = None,
    ) -> MountControl:
        """A mount of *config* at *mountpoint*, not prepared yet. *extensions*:
        what the plugins add; *events*: the bus (made first, so that plugins and
        webhooks can subscribe before the mount exists)."""
        return cls(MusicFS(config, mountpoint, extensions=extensions, events=events))

    # -- lifecycle (the daemon) -------------------------------------------------------

    @property
    def mountpoint(self) -> Path:
        return self.fs.mountpoint

    @property
    def cache_dir(self) -> Path:
        return self.fs.cache_dir

    @property
    def events(self) -> EventBus:
        return self.fs.events

    @property
    def started(self) -> float:
        """When the mount started (time.time())."""
        return self.fs.life.started

    def prepare(self) -> None:
        """Everything that can fail before mounting (`MusicFS.prepare`)."""
        self.fs.prepare()

    def close(self) -> None:
        """Undo `prepare` when the mount will not be served after all."""
        self.fs.close()

    async def serve(
        self,
        on_ready: Callable[[], Awaitable[None]] | None = None,
        on_scanned: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Mount and serve until unmounted (`MusicFS.serve`)."""
        await self.fs.serve(on_ready=on_ready, on_scanned=on_scanned)

    async def first_requests_served(self, quiet: float = 0.05, at_most: float = 1.0) -> None:
        """Return once no FUSE request has come for *quiet* seconds, or after
        *at_most* seconds (trio thread). *quiet* covers the gap between READY and
        a script's first request (`musicfs mount` returning, the next program
        starting: 20-40 ms).

        For the start-up work that follows READY (importing gRPC, loading
        plugins: a few hundred ms holding the GIL in a worker thread): started
        while a user's or a player's first listing runs, it makes that listing
        wait for the GIL at each of its requests (the first ``ls`` of a root of
        10,000 artists took 80-95 ms instead of 15)."""
        ops = self.fs.operations
        if ops is None:
            return
        deadline = trio.current_time() + at_most
        while trio.current_time() < deadline:
            before = ops.op_counts.total()
            await trio.sleep(quiet)
            if ops.op_counts.total() == before:
                return

    async def shutdown(self, drain_timeout: float = 5.0) -> None:
        """Let open files close (up to *drain_timeout* s), then unmount (trio thread)."""
        await self.fs.shutdown(drain_timeout)

    def show_scan_progress(self, progress: ScanProgress) -> None:
        """Show the first scan's progress on *progress* (before it starts)."""
        self.fs.rescans.progress = progress

    def scan_reports(self) -> dict[str, ScanReport]:
        """Each origin's last scan report."""
        return dict(self.fs.scan_reports)

    def failed(self, name: str, exc: BaseException) -> None:
        """A part the daemon runs beside the mount (*name*) failed: logged,
        counted and shown by status, as the mount's own loops are."""
        self.fs.supervisor.failed(name, exc)

    def origin_ids(self) -> list[str]:
        """The mount's origins, in priority order."""
        return list(self.fs.origins)

    def unknown_origin(self, origin: str) -> str | None:
        """Why *origin* ("": all of them) cannot be asked for; None when it can."""
        if origin and origin not in self.fs.origins:
            return self._unknown_origin(origin)
        return None

    # -- status ---------------------------------------------------------------------------

    def state(self) -> MountState:
        """The state to report (`shown_state`): DEGRADED while an origin is known
        to be offline or a background loop is failing. Any thread."""
        online = [h.online for h in self.origin_health_all().values()]
        if self.fs.shared is not None:  # DEGRADED (catalog) while the server is unreachable
            online.append(self.fs.shared.online)
        return shown_state(self.fs.state, online, failing=bool(self.fs.supervisor.failing))

    def status(self, online: dict[str, bool] | None = None) -> dict[str, Any]:
        """A snapshot of the mount's live state (plain data, JSON-ready); cheap,
        for the trio thread. *online* comes from `origins_online` (all assumed
        online when not given); `counts` adds the catalog's numbers."""
        fs, ops = self.fs, self.fs.operations
        origins = []
        for origin in fs.origins.values():
            report = fs.scan_reports.get(origin.id)
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
        reachable = [bool(o["online"]) for o in origins]
        catalog = self.catalog_status()
        if fs.shared is not None:
            reachable.append(fs.shared.online)  # DEGRADED (catalog) while unreachable
        state = shown_state(fs.state, reachable, failing=bool(fs.supervisor.failing))
        return {
            "version": version(),
            "pid": os.getpid(),
            "state": state.value,
            "cached_files": fs.content.headers.entries if fs.content else 0,
            "mountpoint": str(fs.mountpoint),
            "cache_dir": str(fs.cache_dir),
            "uptime_seconds": round(time.time() - fs.life.started, 3),
            "open_handles": ops.library.open_handles if ops else 0,
            "operations": sum(ops.op_counts.values()) if ops else 0,
            "scanning": fs.rescans.scanning,
            "origins": origins,
            "events_dropped": fs.events.dropped,
            "event_subscribers": fs.events.subscribers,
            "loops": fs.supervisor.snapshot(),
            "catalog": catalog,
        }

    def catalog_status(self) -> dict[str, Any]:
        """How this mount's catalog follows a shared catalog (``{"shared": False}``
        without one): server (no password), online, applied_seq, server_seq, lag,
        bootstrapping and bootstrap_copied, error, scanning_origins. Any thread."""
        shared = self.fs.shared
        return {"shared": False} if shared is None else shared.status()

    def counts(self) -> dict[str, int]:
        """Tracks, directories and unreadable files in the catalog.

        Counting takes a while on a big catalog: call this from any thread but
        the trio one (it opens its own read-only connection).
        """
        if not self.fs.catalog_path.exists():
            return {"tracks": 0, "directories": 0, "unreadable_files": 0}
        with Catalog.open(self.fs.catalog_path, readonly=True) as catalog:
            tracks, dirs, unreadable = catalog.counts()
        return {"tracks": tracks, "directories": dirs, "unreadable_files": unreadable}

    def latency(self) -> dict[str, Any]:
        """p50/p95/p99 (ms) of the FUSE operations since the mount, over all and
        per operation (`LatencyRecorder.summary`). Any thread: it reads a snapshot."""
        ops = self.fs.operations
        return (ops.latency if ops is not None else LatencyRecorder()).summary()

    # -- what the metrics show (any thread: snapshots) ------------------------------------

    @property
    def scanning(self) -> bool:
        return self.fs.rescans.scanning

    def open_handles(self) -> int:
        ops = self.fs.operations
        return ops.library.open_handles if ops is not None else 0

    def op_counts(self) -> dict[str, int]:
        """FUSE requests answered since the mount, by operation."""
        ops = self.fs.operations
        return dict(ops.op_counts) if ops is not None else {}

    def latency_histograms(self) -> dict[str, Histogram]:
        """The time FUSE requests took, by operation."""
        ops = self.fs.operations
        return ops.latency.snapshot() if ops is not None else {}

    def cache_tiers(self) -> dict[str, TierStats]:
        """l1 (directory entries in memory), l2 (file headers), l3 (audio chunks)."""
        tiers: dict[str, TierStats] = {}
        library = self._library()
        if library is not None:
            tiers["l1"] = library.directories.stats
        content = self.fs.content
        if content is not None:
            tiers["l2"] = content.headers
            tiers["l3"] = content.store.stats
        return tiers

    def content_cache(self) -> Mapping[str, int] | None:
        """The content cache's limit and the bytes read from origins to fill it;
        None when the cache is off."""
        content = self.fs.content
        if content is None:
            return None
        return {"limit_bytes": content.store.limit, "origin_bytes": content.origin_bytes}

    def origin_kinds(self) -> dict[str, str]:
        """Each origin's type."""
        return {oid: origin.kind for oid, origin in list(self.fs.origins.items())}

    def origin_health_all(self) -> dict[str, Health]:
        """What the health checks know of each origin now."""
        return dict(self.fs.federation.health)

    # -- pins for offline (mount/pins.py) --------------------------------------------

    def pin(
        self,
        paths: Sequence[str] = (),
        collections: Sequence[str] = (),
        searches: Sequence[str] = (),
        *,
        wait: bool = False,
        import_label: str = "",
        progress: Callable[[PinProgress], None] | None = None,
    ) -> PinProgress:
        """Pin the tracks at or below *paths* (relative to the mountpoint), of
        *collections* and found by *searches*, all or nothing, within ``[cache]
        pin_limit``; with *import_label*, the tracks at *paths* as one request of
        that name. With *wait*, copy them now (telling *progress*), else in the
        background. Raises `AdminError`."""
        if import_label:
            targets = [("import", import_label)]
        else:
            targets = [("path", p) for p in paths] + [("collection", c) for c in collections]
            targets += [("search", q) for q in searches]
        imported = paths if import_label else ()
        try:
            return self.fs.pinning.pin(targets, wait=wait, imported=imported, progress=progress)
        except PinError as exc:
            raise AdminError(str(exc), exc.kind) from None

    def unpin(
        self,
        paths: Sequence[str] = (),
        collections: Sequence[str] = (),
        searches: Sequence[str] = (),
        *,
        everything: bool = False,
    ) -> dict[str, int]:
        """Drop pins: those of *paths* (and path pins below them), *collections*,
        *searches*, or all. Raises `AdminError`."""
        targets = [("path", p) for p in paths] + [("collection", c) for c in collections]
        targets += [("search", q) for q in searches]
        try:
            return self.fs.pinning.unpin(targets, everything)
        except PinError as exc:
            raise AdminError(str(exc), exc.kind) from None

    def pins(self) -> dict[str, Any]:
        """What is pinned: each request with its tracks, size and what of it is
        in the cache now; the totals and the pin limit."""
        return self.fs.pinning.pins()

    # -- ratings -----------------------------------------------------------------------------

    def set_ratings(
        self, ratings: Sequence[tuple[str | int, int | None]], source: str = "user"
    ) -> int:
        """Rate tracks 0-100 (None: no rating), each named by a path of the mount
        or its catalog id; with a shared catalog it is written there first and
        comes back by the feed. Returns how many were rated. Raises `AdminError`."""
        by_id: list[tuple[int, int | None]] = []
        with Catalog.open(self.fs.catalog_path, readonly=True) as catalog:
            for named, value in ratings:
                if value is not None and not 0 <= value <= 100:
                    raise AdminError(f"a rating is 0-100 (20 a star), got {value}")
                if isinstance(named, int):
                    by_id.append((named, value))
                    continue
                try:
                    node = resolve(catalog, named)
                except TagError as exc:
                    raise AdminError(str(exc), "not_found") from None
                assert node.file_id is not None
                by_id.append((node.file_id, value))
        shared = self.fs.shared
        if shared is not None:
            try:
                return shared.publish_ratings(by_id, source)
            except SharedCatalogError as exc:
                raise AdminError(f"{exc}; nothing was rated") from None
        with Catalog.open(self.fs.catalog_path) as catalog, catalog.transaction():
            present = catalog.file_sizes(f for f, _ in by_id)
            for file_id, value in by_id:
                if file_id in present:
                    catalog.set_rating(file_id, value, source)
        return sum(1 for f, _ in by_id if f in present)

    def add_plays(
        self, plays: Sequence[tuple[int, int, float]], source: str = ""
    ) -> dict[int, int]:
        """Add plays an import brought, as (file id, count, last played); with
        *source*, *count* is that program's running total and only what is new
        since its last import is added (`Catalog.import_plays`). With a shared
        catalog they go there first. Returns the plays added, by file id.
        Raises `AdminError`."""
        shared = self.fs.shared
        if shared is not None:
            try:
                return shared.publish_plays(list(plays), source)
            except SharedCatalogError as exc:
                raise AdminError(f"{exc}; no play was added") from None
        added: dict[int, int] = {}
        with Catalog.open(self.fs.catalog_path) as catalog, catalog.transaction():
            present = catalog.file_sizes(f for f, _, _ in plays)
            for file_id, count, last in plays:
                if file_id not in present:
                    continue
                if source:
                    new = catalog.import_plays(file_id, source, count, last)
                else:
                    catalog.add_plays(file_id, count, last)
                    new = count
                if new > 0:
                    added[file_id] = added.get(file_id, 0) + new
        return added

    def set_playlists(
        self, playlists: Mapping[str, Sequence[tuple[int | None, str]]], source: str
    ) -> None:
        """Store playlists an import brought (name -> entries: file id or None,
        the entry's text), each in place of one of that name; with a shared
        catalog there first. Raises `AdminError`."""
        shared = self.fs.shared
        if shared is not None:
            try:
                shared.publish(lambda writer: writer.set_playlists(playlists, source), "playlists")
            except SharedCatalogError as exc:
                raise AdminError(f"{exc}; no playlist was stored") from None
            return
        with Catalog.open(self.fs.catalog_path) as catalog, catalog.transaction():
            for name, entries in playlists.items():
                catalog.replace_playlist(name, source, entries)

    # -- smart collections ----------------------------------------------------------------

    def collections(self) -> list[dict[str, Any]]:
        """Every collection /.collections shows: name, source ("builtin", "config",
        "catalog": defined in the shared catalog) and its conditions."""
        configured = {c.name for c in self.fs.config.collections}
        builtin = {c.name for c in BUILTIN}
        shown = {
            **self.fs.pinning.catalog_collections,
            **all_collections(self.fs.config.collections),
        }
        listed = []
        for name, collection in sorted(shown.items()):
            source = "builtin" if name in builtin else "config" if name in configured else "catalog"
            rule = {
                k: str(v) for k, v in asdict(collection).items()
                if k != "name" and v != getattr(_UNSET, k)
            }  # fmt: skip
            listed.append({"name": name, "source": source, "rule": rule})
        return listed

    def set_collection(
        self, name: str, rule: Mapping[str, str], *, remove: bool = False
    ) -> list[dict[str, Any]]:
        """Define collection *name* in the shared catalog (*rule*: the keys of a
        ``[[collections]]`` table, values as text), or *remove* it; every mount
        shows it in /.collections. Returns the collections. Raises `AdminError`."""
        shared = self.fs.shared
        if shared is None:
            raise AdminError(
                "collections are defined in a shared catalog ([catalog] shared); on this "
                "mount, add a [[collections]] table to the config file instead"
            )
        fixed = {c.name for c in (*BUILTIN, *self.fs.config.collections)}
        if name in fixed:
            raise AdminError(
                f"collection {name!r} is built in or defined in the config file; "
                "choose another name (or change it in the config file)"
            )
        typed: dict[str, Any] | None = None
        if not remove:
            typed = _typed_rule(name, rule)
        try:
            changed = shared.publish_collection(name, typed)
        except SharedCatalogError as exc:
            raise AdminError(f"{exc}; nothing was changed") from None
        if remove and not changed:
            raise AdminError(f"no collection {name!r} in the shared catalog", "not_found")
        return self.collections()

    # -- tags, plugins, content verification --------------------------------------------

    def set_tags(
        self,
        path: str,
        assignments: Mapping[str, str | None],
        clear: Sequence[str] = (),
        source: str = "user",
    ) -> TagView:
        """Override tags of the file at *path* (relative to the mountpoint); the tree
        and the served header follow. Raises `TagError`. Blocking: any thread but trio's."""
        with Catalog.open(self.fs.catalog_path) as catalog:
            editor = self.fs.overlay_editor(catalog)
            if self.fs.shared is not None:  # PostgreSQL first; back through the feed
                editor.publish = self.fs.shared.publish_overrides
            shown, changes = editor.set_tags(path, assignments, clear, source)
        self.fs.notify_tree_changes(changes)
        return shown

    def tag_view(self, path: str) -> TagView:
        """A file's own tags, overrides and effective tags. Raises `TagError`."""
        with Catalog.open(self.fs.catalog_path, readonly=True) as catalog:
            node = resolve(catalog, path)
            assert node.file_id is not None
            return view(catalog, node.file_id)

    def formats_changed(self, formats: Iterable[str]) -> None:
        """The plugins that read these formats came, went or changed: read the
        files of these formats again (a plugin's new code takes effect)."""
        fs, wanted = self.fs, sorted(set(formats))
        changes = []
        if wanted:
            with Catalog.open(fs.catalog_path) as catalog:
                # Their header writers may have changed too: make the overlays again
                # now (before the rows are marked, while they name the version).
                editor = fs.overlay_editor(catalog)
                changes = editor.refresh(catalog.overridden_files(wanted))
                with catalog.transaction():
                    catalog.mark_formats_changed(wanted)
        fs.notify_tree_changes(changes)
        fs.life.call_soon(fs.rescans.request_rescan)

    def rebuild_origins(self, origin_type: str) -> list[str]:
        """Build the origins of *origin_type* again (its plugin was reloaded), and
        rescan them. Returns their ids."""
        fs, rebuilt = self.fs, []
        credentials = Credentials.load()
        for config in fs.config.origins:
            if config.type != origin_type or config.id not in fs.origins:
                continue
            origin = build_origin(config, credentials, fs.extensions)
            old = fs.federation.replace(config.id, origin)
            fs.origins[config.id] = origin
            old.close()
            rebuilt.append(config.id)
            fs.life.call_soon(fs.rescans.request_rescan, config.id)
        return rebuilt

    def verify_content(
        self,
        origin_id: str | None = None,
        progress: Callable[[VerifyReport], None] | None = None,
    ) -> VerifyReport:
        """Hash every file of an origin (all when None) and rescan the ones whose
        content changed unseen (FR-10.5). Blocking, for any thread but trio's."""
        fs = self.fs
        if origin_id is not None and origin_id not in fs.origins:
            raise KeyError(origin_id)
        report = verify_content(
            fs.catalog_path,
            fs.federation,
            fs.content,
            origin_id,
            progress=progress,
            should_stop=lambda: fs.life.stopping,
        )
        requests: dict[str, ScanRequest] = {}
        for track in report.changed:
            requests.setdefault(track.origin, ScanRequest()).dirs.add(
                track.relpath.rpartition("/")[0]
            )
        if requests and fs.life.token is not None:
            for origin, request in requests.items():
                trio.from_thread.run_sync(fs.rescans.ask, origin, request, trio_token=fs.life.token)
        return report


# -- the cache of a mount that is not running (the CLI) -----------------------------------


@dataclass
class OfflineCheck:
    """What `check_cache_offline` found and dropped."""

    catalog: str = ""  # SQLite's integrity check of the catalog ("ok"), or why it failed
    damaged_chunks: list[str] = field(default_factory=list)  # dropped
    damaged_files: int = 0  # cached copies that needed them, dropped
    incomplete: int = 0  # cached copies that had lost chunks, dropped
    chunks: int = 0  # kept
    files: int = 0  # cached files kept


def check_cache_offline(cache_dir: Path, cache_limit: int) -> OfflineCheck:
    """Check the catalog and hash every cached chunk of a cache dir no daemon
    uses (hold its `CacheDirLock`); drop the damaged chunks and the copies that
    needed them. Raises sqlite3.Error when the content cache cannot be read."""
    report = OfflineCheck()
    try:
        with Catalog.open(cache_dir / "catalog.sqlite3", readonly=True) as catalog:
            report.catalog = catalog.integrity_check()
    except (CatalogError, sqlite3.Error) as exc:
        report.catalog = f"damaged: {exc}"
    content_dir = cache_dir / "content"
    if content_dir.exists():
        content = ContentCache(content_dir, cache_limit)
        try:
            check = content.check(deep=True)
            report.damaged_chunks = list(check.damaged_chunks)
            report.damaged_files, report.incomplete = len(check.damaged), check.incomplete
            report.chunks, report.files = content.store.stats.entries, content.headers.entries
        finally:
            content.close()
    return report


@dataclass(frozen=True)
class LibraryRecord:
    """One catalogued track as ``musicfs export``/``import`` see it: where it is,
    its own tags, and what the user did to it (overrides, plays, rating)."""

    file_id: int
    origin: str
    relpath: str
    path: str  # in the mount ("" while it has no place in the tree)
    artist: str | None
    album: str | None
    title: str | None
    track: int | None
    overrides: dict[str, str | None]
    plays: int
    last_played: float | None
    audio_id: str | None = None
    pinned: bool = False  # pinned for offline (``musicfs cache pin``)
    rating: int | None = None
    own: TrackTags = field(default_factory=TrackTags)  # all of the file's own tags


def library_records(catalog_path: Path, used_only: bool) -> list[LibraryRecord]:
    """The tracks of a catalog (read-only, so while it is mounted too): those with
    overrides, plays, pins or a rating when *used_only*, else all of them."""
    with Catalog.open(catalog_path, readonly=True) as catalog:
        overrides = catalog.all_overrides()
        plays = catalog.play_totals()
        pinned = catalog.pinned_file_ids()
        ratings = catalog.all_ratings()
        used = {*overrides, *plays, *pinned, *ratings}
        ids = sorted(used) if used_only else catalog.file_ids()
        records = []
        for file_id in ids:
            track = catalog.track(file_id)
            if track is None:
                continue
            node = catalog.node_of_file(file_id)
            count, last = plays.get(file_id, (0, None))
            tags = track.tags
            records.append(LibraryRecord(
                file_id, track.origin, track.relpath,
                catalog.path_of(node.id) if node is not None else "",
                tags.artist, tags.album, tags.title, tags.track,
                overrides.get(file_id, {}), count, last, catalog.audio_id(file_id),
                file_id in pinned, ratings.get(file_id), tags,
            ))  # fmt: skip
    return records


def catalog_origins(catalog_path: Path) -> list[tuple[str, str, str]]:
    """(id, kind, location) of each origin a catalog has files of (read-only);
    a local origin's location is its folder."""
    with Catalog.open(catalog_path, readonly=True) as catalog:
        return catalog.origins()


def add_plays(catalog_path: Path, plays: Sequence[tuple[int, int, float]]) -> None:
    """Add (file id, how many plays, last played) to a catalog's access log, in one
    transaction (SQLite's WAL lets this run beside the daemon's own writes)."""
    with Catalog.open(catalog_path) as catalog, catalog.transaction():
        for file_id, count, last in plays:
            catalog.add_plays(file_id, count, last)


_UNSET = Collection("")


def _typed_rule(name: str, rule: Mapping[str, str]) -> dict[str, Any]:
    """A collection's rule given as text, with numbers where its keys take them;
    checked as a ``[[collections]]`` table is. Raises `AdminError`."""
    typed: dict[str, Any] = {}
    for key, text in rule.items():
        default = getattr(_UNSET, key, None)
        try:
            typed[key] = (
                int(text) if isinstance(default, int) else
                float(text) if isinstance(default, float) else text
            )  # fmt: skip
        except ValueError:
            raise AdminError(f"collection {name!r}: {key} must be a number, got {text!r}") from None
    try:
        collection_rule(name, typed)
    except ConfigError as exc:
        raise AdminError(f"collection {name!r}: {exc}") from None
    return typed


@dataclass
class Imported:
    """What an import from another program brings, by file id: play counts as
    that program keeps them (its running total and last played), ratings (0-100),
    playlists (name -> entries: file id if matched, and the entry's text)."""

    source: str  # "itunes"...
    plays: list[tuple[int, int, float]] = field(default_factory=list)
    ratings: list[tuple[int, int]] = field(default_factory=list)
    playlists: dict[str, list[tuple[int | None, str]]] = field(default_factory=dict)


def imported_plays(catalog_path: Path, source: str) -> dict[int, int]:
    """The play count each file had in *source* when last imported (read-only)."""
    with Catalog.open(catalog_path, readonly=True) as catalog:
        return catalog.imported_plays(source)


def mount_path_of(catalog_path: Path, file_id: int) -> str:
    """Where a file is in the tree now ("" if nowhere; read-only)."""
    with Catalog.open(catalog_path, readonly=True) as catalog:
        node = catalog.node_of_file(file_id)
        return catalog.path_of(node.id) if node is not None else ""


def apply_import(catalog_path: Path, imported: Imported) -> dict[int, int]:
    """Store an import in one transaction (beside the daemon, as `add_plays`).
    Plays already brought by an earlier import from the same source are not
    added again. Returns the plays added, by file id."""
    added: dict[int, int] = {}
    with Catalog.open(catalog_path) as catalog, catalog.transaction():
        for file_id, count, last in imported.plays:
            new = catalog.import_plays(file_id, imported.source, count, last)
            if new:
                added[file_id] = new
        for file_id, value in imported.ratings:
            catalog.set_rating(file_id, value, imported.source)
        for name, entries in imported.playlists.items():
            catalog.replace_playlist(name, imported.source, entries)
    return added


def set_ratings(catalog_path: Path, ratings: Sequence[tuple[int, int | None]], source: str) -> None:
    """Set (file id, rating 0-100 or None) in one transaction (``import musicfs``)."""
    with Catalog.open(catalog_path) as catalog, catalog.transaction():
        for file_id, value in ratings:
            catalog.set_rating(file_id, value, source)


def set_overrides_offline(
    catalog_path: Path, overrides: Sequence[tuple[int, Mapping[str, str | None]]], source: str
) -> None:
    """Override tags in the catalog of a cache dir that is not mounted: the next
    mount makes their headers and places the files by them (its first scan
    refreshes every overlay that is due). Values as `model.override_value` gives."""
    with Catalog.open(catalog_path) as catalog, catalog.transaction():
        for file_id, fields in overrides:
            catalog.set_overrides(file_id, fields, source)
