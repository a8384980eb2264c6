"""Operating a running mount: cache statistics, clearing and verifying, prefetch, origins,
rescans with progress, search, and the settings that can change while mounted (FR-17).

`Admin` is the half of the mount's facade (`musicfs.core.mount.facade.MountControl`,
the only door the control API and the CLI use) that does these. Every method
blocks (catalog queries, origin reads) and is meant for the control server's
threads, never the trio thread; what must happen in the trio thread (asking for
a rescan) goes through `Lifecycle.call_soon`. Errors are `AdminError`s whose
message says what to do; the control server maps them to status codes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from musicfs.core.catalog.layout import ChangeKind, Layout, TreeChange
from musicfs.core.catalog.search import Searcher
from musicfs.core.catalog.store import ROOT_NODE, Catalog, Track
from musicfs.core.catalog.templates import PathTemplate, TemplateError
from musicfs.core.content.library import Library
from musicfs.core.content.manifests import CacheCheck, CopyId
from musicfs.core.errors import MusicFSError
from musicfs.core.events import EventType
from musicfs.core.mount.service import MountState, MusicFS
from musicfs.core.sync.scanner import ScanReport
from musicfs.core.values import parse_size

log = logging.getLogger(__name__)

#: Settings `set_setting` can change while mounted, until the daemon stops.
SETTABLE = ("log_level", "cache.limit", "template")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_POLL = 0.5  # seconds between progress reports
MAX_SEARCH = 1000


class AdminError(MusicFSError):
    """A request that cannot be done. *kind*: "not_found", "invalid" or "busy"."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class PrefetchProgress:
    files: int = 0
    done: int = 0
    bytes: int = 0
    already_cached: int = 0
    failed: list[str] = field(default_factory=list)
    current: str = ""
    finished: bool = False


@dataclass
class CacheVerifyProgress:
    """How far `Admin.verify_cache` got, and what it found and did."""

    chunks: int = 0  # stored when the verify began: the ones it checks
    checked: int = 0
    bytes: int = 0
    damaged_chunks: list[str] = field(default_factory=list)  # hashes, dropped
    damaged_files: list[str] = field(default_factory=list)  # "origin/path": copies dropped
    refetched: list[str] = field(default_factory=list)  # of those, copied again
    not_refetched: list[str] = field(default_factory=list)  # "origin/path: why"
    incomplete_dropped: int = 0  # copies that had lost chunks to eviction
    catalog: str = ""  # SQLite's integrity check of the catalog, at the end
    current: str = ""
    finished: bool = False
    stopped: bool = False  # the mount is shutting down


class Admin:
    """Administration of one `MusicFS` mount."""

    def __init__(self, fs: MusicFS) -> None:
        self.fs = fs
        self._verifying = threading.Lock()

    def _library(self) -> Library | None:
        """The semantic core behind the mount, while it is served."""
        ops = self.fs.operations
        return ops.library if ops is not None else None

    def _copy(self, track: Track) -> int:
        fill = self.fs.fill
        return fill.copy_to_cache(track) if fill is not None else 0

    def origins_online(self) -> dict[str, bool]:
        """Which origins answer now. Stats each origin's root: call it from any
        thread but the trio one (a hung share must not stall FUSE requests)."""
        # A local disk answers at once; a share or a server may hang: for those,
        # what the health checks found (every 30 s, and on every failed request).
        federation = self.fs.federation
        return {
            origin.id: federation.probe(origin.id)
            if origin.inline
            else federation.online(origin.id)
            for origin in self.fs.origins.values()
        }

    # -- the content cache --------------------------------------------------------------

    def cache_stats(self) -> dict[str, Any]:
        fs, tiers = self.fs, []
        library = self._library()
        if library is not None:
            tiers.append(("l1", library.directories.stats))
        if fs.content is not None:
            tiers += [("l2", fs.content.headers), ("l3", fs.content.store.stats)]
        return {
            "tiers": [
                {"tier": name, **asdict(stats), "hit_ratio": stats.hit_ratio}
                for name, stats in tiers
            ],
            "mode": fs.config.cache.mode,
            "limit_bytes": fs.content.store.limit if fs.content else 0,
            "dedup_ratio": fs.content.dedup_ratio() if fs.content else 1.0,
            "origin_bytes": fs.content.origin_bytes if fs.content else 0,
            "cached_files": fs.content.headers.entries if fs.content else 0,
        }

    def clear_cache(self, scope: str, origin: str = "") -> dict[str, int]:
        """Empty a part of the cache. Open files keep reading what they read."""
        fs = self.fs
        if scope not in ("all", "metadata", "chunks", "origin"):
            raise AdminError(f"scope {scope!r}: use all, metadata, chunks or origin")
        if scope == "origin" and origin not in fs.origins:
            raise AdminError(self._unknown_origin(origin), "not_found")
        result = {"files_dropped": 0, "bytes_freed": 0, "entries_dropped": 0}
        library = self._library()
        if scope in ("all", "metadata") and library is not None:
            result["entries_dropped"] = library.directories.stats.entries
            library.directories.clear()
        if scope in ("all", "chunks", "origin") and fs.content is not None:
            files, freed = fs.content.clear(origin if scope == "origin" else None)
            result["files_dropped"], result["bytes_freed"] = files, freed
        log.info("cache cleared (%s%s): %s", scope, f" {origin}" if origin else "", result)
        return result

    def prefetch(
        self, path: str, progress: Callable[[PrefetchProgress], None] | None = None
    ) -> PrefetchProgress:
        """Copy every file at or below *path* of the tree into the content cache."""
        fs = self.fs
        if fs.content is None:
            raise AdminError('the cache is off ([cache] mode = "passthrough"): nothing to fill')
        with Catalog.open(fs.catalog_path, readonly=True) as catalog:
            node = catalog.node_at(path)
            if node is None:
                raise AdminError(f"{path}: not in the mount", "not_found")
            tracks = [t for f in catalog.file_ids_under(node.id) if (t := catalog.track(f))]
        report = PrefetchProgress(files=len(tracks))
        last = 0.0
        for track in tracks:
            report.current = f"{track.origin}/{track.relpath}"
            if progress is not None and time.monotonic() - last >= _POLL:
                last = time.monotonic()
                progress(report)
            try:
                copied = self._copy(track)
            except OSError as exc:
                report.failed.append(f"{report.current}: {exc}")
                continue
            report.done += 1
            report.bytes += copied
            report.already_cached += copied == 0
        report.current, report.finished = "", True
        return report

    def verify_cache(
        self, progress: Callable[[CacheVerifyProgress], None] | None = None
    ) -> CacheVerifyProgress:
        """Hash every cached chunk while the mount serves (as ``zpool scrub`` does):
        drop the damaged ones, and copy the files whose cached copies needed them
        again from their origins. Reads go on meanwhile (`ContentCache.check`
        holds no lock for long); one verify at a time per mount."""
        fs, content = self.fs, self.fs.content
        if content is None:
            raise AdminError('the cache is off ([cache] mode = "passthrough"): nothing to verify')
        if not self._verifying.acquire(blocking=False):
            raise AdminError("a cache verify is running on this mount already; wait for it "
                             "to finish", "busy")  # fmt: skip
        try:
            report = CacheVerifyProgress(current="checking chunks")
            last = 0.0

            def report_now() -> None:
                nonlocal last
                if progress is not None and time.monotonic() - last >= _POLL:
                    last = time.monotonic()
                    progress(report)

            def chunks_done(check: CacheCheck) -> None:
                report.chunks, report.checked = check.chunks, check.checked
                report.bytes = check.bytes
                report.damaged_chunks = list(check.damaged_chunks)
                report_now()

            def stopping() -> bool:
                return fs.state is MountState.UNMOUNTING

            try:
                check = content.check(True, progress=chunks_done, should_stop=stopping)
            except (sqlite3.Error, OSError):
                if not stopping():
                    raise
                report.stopped = True  # the cache was closed under it: the mount is going
                return report
            chunks_done(check)
            report.damaged_files = [f"{c.origin}/{c.relpath}" for c in check.damaged]
            for copy in check.damaged:  # as a read that meets a damaged chunk tells it
                fs.events.publish(
                    EventType.CHUNK_CORRUPT,
                    origin=copy.origin,
                    path=copy.relpath,
                    error="found by cache verify; the cached copy was dropped",
                )
            report.incomplete_dropped = check.incomplete
            report.stopped = check.stopped
            if not report.stopped:
                self._refetch(check.damaged, report, report_now, stopping)
            if not report.stopped:
                report.current = "checking the catalog"
                report_now()
                with Catalog.open(fs.catalog_path, readonly=True) as catalog:
                    report.catalog = catalog.integrity_check()
            report.current, report.finished = "", not report.stopped
            log.info("cache verify: %d chunks checked, %d damaged; re-fetched %d files, "
                     "%d could not be", report.checked, len(report.damaged_chunks),
                     len(report.refetched), len(report.not_refetched))  # fmt: skip
            return report
        finally:
            self._verifying.release()

    def _refetch(
        self,
        copies: list[CopyId],
        report: CacheVerifyProgress,
        report_now: Callable[[], None],
        stopping: Callable[[], bool],
    ) -> None:
        """Copy the files of the damaged *copies* again from their origins (their
        current version: the one the tree shows)."""
        fs = self.fs
        with Catalog.open(fs.catalog_path, readonly=True) as catalog:
            for copy in copies:
                if stopping():
                    report.stopped = True
                    return
                name = f"{copy.origin}/{copy.relpath}"
                report.current = f"re-fetching {name}"
                report_now()
                # The path the daemon takes for damage a read finds (`FillQueue.refetch`).
                assert fs.fill is not None  # the cache is on: the mount has its fill queue
                problem, _ = fs.fill.refetch(catalog, copy.origin, copy.relpath)
                if problem:
                    report.not_refetched.append(f"{name}: {problem}")
                else:
                    report.refetched.append(name)

    # -- origins ------------------------------------------------------------------------

    def origins(self) -> list[dict[str, Any]]:
        fs = self.fs
        online = self.origins_online()
        with Catalog.open(fs.catalog_path, readonly=True) as catalog:
            tracks = catalog.tracks_per_origin()
        out = []
        for config in fs.config.origins:
            origin = fs.origins.get(config.id)
            if origin is None:
                continue
            out.append({
                "id": config.id, "type": origin.kind, "location": origin.location,
                "priority": config.priority, "max_requests": config.max_requests,
                "bandwidth": config.bandwidth, "timeout_seconds": config.timeout,
                "online": online.get(config.id, False), "tracks": tracks.get(config.id, 0),
            })  # fmt: skip
        return out

    def origin_health(self, origin: str) -> dict[str, Any]:
        fs = self.fs
        if origin not in fs.origins:
            raise AdminError(self._unknown_origin(origin), "not_found")
        if fs.origins[origin].inline:
            fs.federation.probe(origin)  # a local disk: ask it now
        health = fs.federation.health[origin]
        report = fs.scan_reports.get(origin)
        return {
            "origin": origin,
            "online": health.online,
            "failures": health.failures,
            "last_error": health.last_error,
            "changed_at": health.changed_at,
            "latency_ms": health.latency_ms,
            "next_check_in": 0.0
            if health.online
            else max(0.0, health.next_check - time.monotonic()),
            "last_scan": report.summary() if report else "",
        }

    def rescan(self, origin: str = "") -> Iterator[tuple[ScanReport, bool]]:
        """Ask for a full rescan and follow it: yields (report so far, finished)
        every half second, then each origin's final report."""
        fs = self.fs
        if origin and origin not in fs.origins:
            raise AdminError(self._unknown_origin(origin), "not_found")
        wanted = [origin] if origin else list(fs.origins)
        if fs.shared is not None:  # another mount may scan it: ask that one
            for oid in list(wanted):
                forwarded = self._forward_rescan(oid)
                if forwarded:
                    wanted.remove(oid)
                    yield ScanReport(oid, complete=True, forwarded=forwarded), True
        before = {oid: fs.scan_reports.get(oid) for oid in wanted}
        for oid in wanted:
            fs.life.call_soon(fs.rescans.request_rescan, oid)
        pending = set(wanted)
        while pending:
            for oid in sorted(pending):
                report = fs.scan_reports.get(oid)
                if report is not None and report is not before[oid]:
                    pending.discard(oid)
                    yield report, True
            running = fs.rescans.current_scan
            if pending and running is not None and running.origin in pending:
                yield running, False
            if pending:
                time.sleep(_POLL)

    def _forward_rescan(self, origin: str) -> str:
        """With a shared catalog: "" if this mount scans *origin*, else what it did
        instead (asked the mount that does)."""
        from musicfs.core.shared.errors import SharedCatalogError

        assert self.fs.shared is not None
        try:
            return self.fs.shared.ask_rescan(origin)
        except SharedCatalogError as exc:
            raise AdminError(f"cannot rescan {origin}: {exc}", "busy") from None

    # -- search ---------------------------------------------------------------------------

    def search(self, query: str, limit: int = 50) -> list[dict[str, Any]]:
        """Tracks matching *query*, best first, with where they are in the tree."""
        if not 0 < limit <= MAX_SEARCH:
            raise AdminError(f"limit must be between 1 and {MAX_SEARCH}, got {limit}")
        hits = []
        with Catalog.open(self.fs.catalog_path, readonly=True) as catalog:
            for hit in Searcher(catalog).search(query, limit):
                node = catalog.node_of_file(hit.track.id)
                if node is None:
                    continue  # not shown in the tree
                tags = catalog.effective_tags(hit.track.id, hit.track.tags)
                hits.append({
                    "path": catalog.path_of(node.id), "origin": hit.track.origin,
                    "relpath": hit.track.relpath, "artist": tags.artist or "",
                    "album": tags.album or "", "title": tags.title or "", "score": hit.score,
                })  # fmt: skip
        return hits

    # -- settings -------------------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        config = self.fs.config
        limit = self.fs.content.store.limit if self.fs.content else config.cache.limit
        return {
            "log_level": logging.getLevelName(logging.getLogger().level).lower(),
            "cache.limit": str(limit),
            "template": config.template,
        }

    def set_setting(self, key: str, value: str) -> dict[str, str]:
        """Change a setting until the daemon stops (the config file is not written)."""
        if key == "log_level":
            if value.lower() not in _LOG_LEVELS:
                raise AdminError(f"log_level: use one of {', '.join(_LOG_LEVELS)}")
            logging.getLogger().setLevel(value.upper())
        elif key == "cache.limit":
            self._set_cache_limit(value)
        elif key == "template":
            self._set_template(value)
        else:
            raise AdminError(f"{key!r} cannot be changed while mounted; these can: "
                             f"{', '.join(SETTABLE)}")  # fmt: skip
        log.info("setting %s changed to %r (until the daemon stops)", key, value)
        return self.settings()

    def _set_cache_limit(self, value: str) -> None:
        fs = self.fs
        try:
            limit = parse_size(value)
        except ValueError as exc:
            raise AdminError(f"cache.limit: {exc}") from None
        pin_limit = fs.config.cache.pin_limit
        if pin_limit is not None and limit < pin_limit:
            raise AdminError(f"cache.limit {limit} is below [cache] pin_limit ({pin_limit} "
                             "bytes): pinned tracks must fit in the cache; give at least "
                             "that much")  # fmt: skip
        fs.life.config = replace(fs.config, cache=replace(fs.config.cache, limit=limit))
        if fs.content is not None:
            fs.content.store.limit = limit
            fs.content.store.evict()

    def _set_template(self, text: str) -> None:
        fs = self.fs
        try:
            template = PathTemplate.parse(text)
        except TemplateError as exc:
            raise AdminError(f"template: {exc}") from None
        if fs.rescans.scanning:
            raise AdminError("a scan is running; change the template when it has finished",
                             "busy")  # fmt: skip
        with Catalog.open(fs.catalog_path) as catalog:
            old = catalog.children(ROOT_NODE, 0, 1_000_000)
            layout = Layout(catalog, template, skip_unreadable=fs.config.scan.skip_unreadable)
            with catalog.transaction():
                layout.rebuild()
            catalog.pack_listings()
        fs.life.config = replace(fs.config, template=text)
        library = self._library()
        if library is not None:
            library.directories.clear()
        # Old top-level entries are gone: the kernel forgets them and asks again.
        changes = [TreeChange(ChangeKind.REMOVED, ROOT_NODE, n.name, n.id) for n in old]
        changes.append(TreeChange(ChangeKind.CHANGED, ROOT_NODE, "", ROOT_NODE))
        fs.notify_tree_changes(changes)

    def _unknown_origin(self, origin: str) -> str:
        known = ", ".join(sorted(self.fs.origins))
        return f"no origin {origin!r} in this mount; its origins are: {known}"
