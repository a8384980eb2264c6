"""The scanner: bring the catalog in step with what an origin holds.

A scan walks the origin one directory at a time and compares each directory with
what the catalog remembers of it (size, mtime and, where the origin has one,
ctime), so memory stays bounded by the largest directory, not the library. New
and changed files are parsed with mutagen in worker processes (one per core;
a remote origin's in threads, from the few bytes read of each: `sync.remote`);
results are written in batches, each batch one transaction, so a scan killed
half way resumes from the last batch and never leaves duplicate or half-written
rows (NFR-8.3). Files that are gone are removed only after a complete walk: a
directory that could not be listed keeps its files (an unreachable origin is
offline, never deleted).

`Scanner.run` blocks; the daemon calls it in a worker thread. Every committed
batch is reported to ``on_changes`` so the filesystem can invalidate the kernel's
caches.
"""

from __future__ import annotations

import array
import collections
import concurrent.futures
import functools
import logging
import multiprocessing
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from musicfs.core.catalog.identity import Moved
from musicfs.core.catalog.layout import Layout, TreeChange
from musicfs.core.catalog.store import Catalog, Track, join_relpath
from musicfs.core.catalog.templates import PathTemplate
from musicfs.core.extensions import Extensions, TagParser
from musicfs.core.model import AUDIO_EXTENSIONS, FileStat, ScannedFile, TrackTags, format_of
from musicfs.core.origins.base import DirListing, Origin, OriginFile
from musicfs.core.origins.federation import Federation
from musicfs.core.sync.changes import ScanRequest
from musicfs.core.sync.parsing import Parsed, exit_with_parent, parse_file, parse_files
from musicfs.core.sync.playlists import PLAYLIST_EXTENSIONS, PlaylistSync, is_playlist
from musicfs.core.sync.remote import (
    Head,
    Traffic,
    backfill_identities,
    identity_of,
    over_network,
    parse_head,
    reads_heads_alone,
    scan_head,
    scan_heads,
    scan_remote,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


def about_the_file(exc: Exception) -> bool:
    """Whether *exc*, raised writing one file's row, comes from that file's data
    (a value SQLite cannot store, a name or tag the layout chokes on): the file is
    then recorded as unreadable and the scan goes on. False for trouble of the
    catalog itself (locked by another program, disk full, read-only, damaged):
    the batch fails as a whole and the sync loop tries it again later."""
    if isinstance(exc, sqlite3.DatabaseError):
        return isinstance(
            exc, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError)
        )
    return not isinstance(exc, MemoryError)


# Read by mutagen, never by a plugin (built-ins come first: SPEC §8).
_MUTAGEN_FORMATS = frozenset(AUDIO_EXTENSIONS)

# Below this many files a batch is parsed in the scanning thread itself: starting
# worker processes costs more than it saves.
_POOL_THRESHOLD = 64
_BATCH = 256
# Batches being parsed while the one before them is written: with two, the
# workers still have one to parse while this thread walks the next folders
# (with one, they would wait for the walk, and the walk for them).
_IN_FLIGHT = 2
# Files of a remote origin read at once, a thread each (an origin that reads
# many at once, SFTP, has its max_requests in flight through `_HEAD_STREAMS`
# threads instead): sized for latency (at 20 ms a round trip, 32 in flight
# keep ~1,600 requests a second going); the origin's max_requests
# (federation) still bounds its requests in flight. Memory: about
# 100 KiB a file in flight, and the `Head`s read and waiting (`_HEAD_KEPT`).
_REMOTE_THREADS = 32
# Threads that read again the files whose head mutagen read past (`read_head`,
# `scan_heads`): tags longer than `_LONG_TAGS`, an MP3 with only ID3v1 at its
# end (all of an old library's may be: as many as the SFTP connections).
_REREADERS = 8
# Threads that read the heads of an origin that reads many files at once
# (`Origin.heads_at_once`: SFTP), each with a share of the files in flight: as
# many as the SSH connections an SFTP origin makes by default, so each
# connection has a thread turning its replies into the next requests.
_HEAD_STREAMS = 8
# The files of an origin read over the network (no local path: S3, SFTP, SMB)
# go to the reading threads in smaller batches, more of them queued: its
# listings are slow (a round trip or more a folder), and a first batch of
# `_BATCH` files would leave the readers idle until that many were listed (0.8 s
# of a 1.8 s scan of 500 tracks at 20 ms). The files queued at once stay
# `_BATCH * _IN_FLIGHT` (16 batches of 32). Mounted shares (NFS, SMB) keep the
# big batches: their files are parsed by the worker processes, which a batch
# under `_POOL_THRESHOLD` would not use.
_REMOTE_BATCH = _REMOTE_THREADS
_REMOTE_IN_FLIGHT = _BATCH * _IN_FLIGHT // _REMOTE_BATCH
# Folders of an origin that is not a local disk listed ahead of the walk, at
# once: a listing costs a round trip or more (SFTP: two), and a library has a
# folder per album, so listing one at a time would cost more than reading the tags.
_LIST_AHEAD = 16


# What reading one remote file gives the scan thread: its tags, a `Head` to
# parse, or None (read it again: mutagen read past what was read); and its cost.
_Read = tuple[Parsed | Head | None, Traffic]


def _alone(read: Callable[..., tuple[Parsed | Head, Traffic]], *args: Any) -> list[_Read]:
    """*read* (`scan_head`, `scan_remote`) of one file, as `scan_heads` gives many."""
    return [read(*args)]


@dataclass
class ScanReport:
    """What one scan of one origin found and did."""

    origin: str
    seen: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    unreadable: int = 0
    dirs: int = 0
    listing_errors: int = 0
    complete: bool = False
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    #: Files that took over the user data of one that left (moved, renamed).
    moved: list[Moved] = field(default_factory=list)
    #: What reading the files of a remote origin cost (requests, bytes).
    remote: Traffic = field(default_factory=Traffic)
    #: Not scanned here: another mount scans this origin (a shared catalog's
    #: lock) and was asked to; what it finds arrives through the catalog's feed.
    forwarded: str = ""

    def summary(self) -> str:
        rate = self.seen / self.seconds if self.seconds > 0 else 0.0
        return (
            f"origin {self.origin!r}: {self.seen} files in {self.seconds:.1f}s "
            f"({rate:.0f}/s): {self.added} added, {self.changed} changed, "
            f"{self.removed} removed, {self.unreadable} unreadable"
            + ("" if self.complete else " (incomplete: some folders could not be listed)")
            + self._traffic()
        )

    def _traffic(self) -> str:
        files = self.remote.files
        if not files:
            return ""
        return (
            f"; read with {self.remote.requests / files:.2f} requests "
            f"({self.remote.round_trips / files:.2f} round trips) and "
            f"{self.remote.bytes / files / 1024:.0f} KiB per file"
        )


class ScanProgress:
    """Receives progress of a scan. The default does nothing."""

    def update(self, report: ScanReport) -> None:
        pass

    def close(self) -> None:
        pass


class ScanWriter(Protocol):
    """Where a scan's findings go instead of the catalog (a shared catalog's
    writes, issue 16): the catalog then gets them back through its change feed."""

    def write(self, files: Sequence[ScannedFile]) -> None:
        """Record one batch of files added or changed (one transaction)."""

    def remove(self, file_ids: Sequence[int]) -> None:
        """Record that the files with these ids are gone (one transaction)."""


class Scanner:
    """Scans origins into the catalog at *catalog_path* (its own connection)."""

    def __init__(
        self,
        catalog: Catalog,
        template: PathTemplate,
        *,
        workers: int = 0,
        extensions: Iterable[str] = AUDIO_EXTENSIONS,
        skip_unreadable: bool = False,
        on_changes: Callable[[list[TreeChange]], None] | None = None,
        progress: ScanProgress | None = None,
        federation: Federation | None = None,
        plugins: Extensions | None = None,
        writer: ScanWriter | None = None,
    ) -> None:
        """With *federation*, requests to its origins respect their limits
        (bandwidth, requests in flight), are retried, and count for their health.
        With *writer*, what the scan finds goes there, not to *catalog* (which
        the scan only reads to compare)."""
        self.catalog = catalog
        self.writer = writer
        self.federation = federation
        self.plugins = plugins or Extensions()
        self.layout = Layout(catalog, template, skip_unreadable=skip_unreadable)
        self.workers = workers or os.cpu_count() or 1
        # Formats plugins read are listed too (as of this scan: plugins may come and go),
        # and playlist files, which become playlists, not tracks (sync/playlists.py).
        extra = self.plugins.extra_extensions() - set(extensions)
        audio = [e for e in extensions if e not in PLAYLIST_EXTENSIONS]
        self.extensions = (*audio, *sorted(extra - set(PLAYLIST_EXTENSIONS)), *PLAYLIST_EXTENSIONS)
        self.playlists = PlaylistSync(catalog)
        self.on_changes = on_changes
        self.progress = progress or ScanProgress()
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._listers: concurrent.futures.ThreadPoolExecutor | None = None
        self._rereaders: concurrent.futures.ThreadPoolExecutor | None = None
        self._streams: concurrent.futures.ThreadPoolExecutor | None = None
        self._listed: dict[str, concurrent.futures.Future[DirListing]] = {}
        self.report: ScanReport | None = None  # of the scan running (or last run)
        self._inflight: collections.deque[
            tuple[Origin, list[tuple[str, FileStat, bool]], Callable[[], list[Any]]]
        ] = collections.deque()
        self.cancelled = False
        self._adopting = True  # whether a file written now may take over user data
        # Files this scan added without an identity (a remote origin's): they
        # get one at its end if user data left meanwhile (`_adopt_unidentified`).
        self._unidentified: array.array[int] = array.array("q")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
            self._threads = None
        if self._rereaders is not None:
            self._rereaders.shutdown(wait=True, cancel_futures=True)
            self._rereaders = None
        if self._streams is not None:
            self._streams.shutdown(wait=True, cancel_futures=True)
            self._streams = None
        if self._listers is not None:
            # Not waited for: a listing of a share that hangs must not hang closing.
            self._listers.shutdown(wait=False, cancel_futures=True)
            self._listers = None

    def scan(self, origin: Origin) -> ScanReport:
        """Walk *origin* and update the catalog; return what changed."""
        report = self.report = ScanReport(origin.id)
        started = time.monotonic()
        if not self._reachable(origin, report):
            return report
        self.catalog.start_dir_census()
        self.playlists.start_census()
        pending: list[tuple[str, FileStat, bool]] = []
        self._walk(origin, [""], pending, report, record_dirs=True)
        if pending and not self.cancelled:
            self._ingest(origin, pending, report)
        self._drain(report)
        if report.listing_errors == 0 and not self.cancelled:
            vanished = self.catalog.files_in_unseen_dirs(origin.id)
            self._remove(vanished, report)
        if report.listing_errors == 0 and not self.cancelled:
            self.playlists.end_census(origin.id)
            report.complete = True
            with self.catalog.transaction():
                self.catalog.prune_departed()  # data whose audio never came back
        self._adopt_unidentified(origin, report)
        self.playlists.match_unmatched(origin.id)
        return self._finish(report, started)

    def rescan(self, origin: Origin, request: ScanRequest) -> ScanReport:
        """Look again only where *request* says something changed (a watch's events)."""
        if request.full:
            return self.scan(origin)
        report = self.report = ScanReport(origin.id)
        started = time.monotonic()
        if not self._reachable(origin, report):
            return report
        for reldir in sorted(request.gone):
            self._remove(self.catalog.files_under(origin.id, reldir), report)
            self.playlists.gone(origin.id, reldir)
        pending: list[tuple[str, FileStat, bool]] = []
        for reldir in sorted(request.dirs - request.gone - request.trees):
            self._visit(origin, reldir, pending, report)
        self._walk(origin, sorted(request.trees), pending, report, record_dirs=False)
        if pending and not self.cancelled:
            self._ingest(origin, pending, report)
        self._drain(report)
        report.complete = report.listing_errors == 0 and not self.cancelled
        self._adopt_unidentified(origin, report)
        self.playlists.match_unmatched(origin.id)
        return self._finish(report, started)

    def _reachable(self, origin: Origin, report: ScanReport) -> bool:
        try:
            self._call(origin, origin.check)
        except OSError as exc:  # offline, or refusing us (wrong credentials)
            report.errors.append(str(exc))
            report.listing_errors += 1
            log.warning("not scanning: %s (its files stay in the tree)", exc)
            return False
        self.catalog.register_origin(origin.id, origin.kind, origin.location)
        self._backfill_identities(origin)
        return True

    def _backfill_identities(self, origin: Origin) -> None:
        """Fingerprint the files that have user data but no identity (catalogued
        by a MusicFS before identities, or by a remote scan), so that a move
        does not lose it."""
        backfill_identities(self.catalog, origin, self.federation)

    def _finish(self, report: ScanReport, started: float) -> ScanReport:
        if not self.cancelled:  # the listings of big folders it changed, packed again
            self.catalog.pack_listings(stop=lambda: self.cancelled)
        report.seconds = time.monotonic() - started
        self.progress.update(report)
        log.info("scan done: %s", report.summary())
        return report

    def _walk(
        self,
        origin: Origin,
        roots: list[str],
        pending: list[tuple[str, FileStat, bool]],
        report: ScanReport,
        *,
        record_dirs: bool,
    ) -> None:
        """Visit *roots* and every folder below them, ingesting in batches."""
        stack = list(reversed(roots))
        self._listed.clear()  # listings started by a walk that failed half way are stale
        while stack and not self.cancelled:
            self._list_ahead(origin, stack)
            reldir = stack.pop()
            subdirs = self._visit(origin, reldir, pending, report)
            if subdirs is None:
                continue
            if record_dirs:
                self.catalog.saw_dir(reldir)
            stack.extend(join_relpath(reldir, d) for d in sorted(subdirs, reverse=True))
            if len(pending) >= (_REMOTE_BATCH if over_network(origin) else _BATCH):
                self._ingest(origin, pending, report)
                pending.clear()
            self.progress.update(report)
        self._listed.clear()

    def _visit(
        self,
        origin: Origin,
        reldir: str,
        pending: list[tuple[str, FileStat, bool]],
        report: ScanReport,
    ) -> list[str] | None:
        """Compare one folder with the catalog: queue new and changed files, drop
        vanished ones. Returns its subfolders, or None if it could not be listed."""
        try:
            listing = self._list(origin, reldir)
        except FileNotFoundError:
            # The folder is gone (the origin answered): so are its files.
            self._remove(self.catalog.files_under(origin.id, reldir), report)
            self.playlists.gone(origin.id, reldir)
            return None
        except OSError as exc:
            report.listing_errors += 1
            report.errors.append(f"{origin.location}/{reldir}: {exc.strerror or exc}")
            log.warning("cannot list %s/%s: %s", origin.location, reldir, exc)
            return None
        report.dirs += 1
        playlists = [(name, st) for name, st in listing.files if is_playlist(name)]
        self.playlists.visit(origin.id, reldir, playlists, lambda path: self._read(origin, path))
        known = self.catalog.known_files(origin.id, reldir)
        gone = set(known)
        ctimes: list[tuple[int, int]] = []
        for name, st in listing.files:
            if is_playlist(name):
                continue
            report.seen += 1
            gone.discard(name)
            old = known.get(name)
            if old is None or old.changed(st):
                pending.append((join_relpath(reldir, name), st, old is not None))
            elif st.ctime_ns and not old.ctime_ns:
                ctimes.append((old.id, st.ctime_ns))
        if ctimes:
            self.catalog.set_ctimes(ctimes)
        if gone:
            self._remove([known[n].id for n in gone], report)
        return listing.subdirs

    def _list(self, origin: Origin, reldir: str) -> DirListing:
        """The listing of *reldir*: the one `_list_ahead` started, else made now."""
        ahead = self._listed.pop(reldir, None)
        if ahead is not None:
            return ahead.result()
        return self._call(origin, lambda: origin.list_dir(reldir, self.extensions))

    def _list_ahead(self, origin: Origin, stack: list[str]) -> None:
        """Start listing the folders the walk visits next (the top of *stack*),
        unless *origin* is a local disk (its listings are quick)."""
        if origin.inline:
            return
        if self._listers is None:
            self._listers = concurrent.futures.ThreadPoolExecutor(
                _LIST_AHEAD, thread_name_prefix="musicfs-list"
            )
        for reldir in stack[-_LIST_AHEAD:]:
            if reldir not in self._listed:
                listing = functools.partial(origin.list_dir, reldir, self.extensions)
                self._listed[reldir] = self._listers.submit(self._call, origin, listing)

    def _ingest(
        self, origin: Origin, batch: Sequence[tuple[str, FileStat, bool]], report: ScanReport
    ) -> None:
        """Start parsing *batch*, then write the oldest batch being parsed once
        more than `_IN_FLIGHT` are (`_REMOTE_IN_FLIGHT` for an origin read over
        the network).

        Parsing (worker processes) and writing (this thread) overlap: while the
        workers read the tags of the later batches, an earlier one goes to
        SQLite. Call `_drain` once the last batch has been handed in.
        """
        relpaths = [relpath for relpath, _, _ in batch]
        parsers = [self._plugin_parser(relpath) for relpath in relpaths]
        paths = [origin.local_path(relpath) for relpath in relpaths]
        local = [p for p in paths if p is not None]
        if len(local) == len(paths) and not any(parsers):
            parsing = self._submit(local)
        else:  # remote files, or formats only a plugin (in this process) can read
            parsing = self._submit_remote(origin, batch, parsers)
        self._inflight.append((origin, list(batch), parsing))
        while len(self._inflight) > (_REMOTE_IN_FLIGHT if over_network(origin) else _IN_FLIGHT):
            self._write_parsed(report)

    def _drain(self, report: ScanReport) -> None:
        """Write the batches that are being parsed, once their tags are in."""
        while self._inflight:
            self._write_parsed(report)

    def _write_parsed(self, report: ScanReport) -> None:
        """Write the oldest batch being parsed, once its tags are in."""
        try:
            self._write_batch(*self._inflight.popleft(), report)
        except BaseException:
            # The scan fails here (the sync loop tries again later): the batches
            # after this one go too, not into the next scan's report; that scan
            # finds their files unwritten and parses them again.
            self._inflight.clear()
            raise

    def _write_batch(
        self,
        origin: Origin,
        batch: list[tuple[str, FileStat, bool]],
        parsing: Callable[[], list[Any]],
        report: ScanReport,
    ) -> None:
        """Write one parsed batch: rows, places in the tree, the report's counts."""
        results = parsing()
        scanned = [
            ScannedFile(origin.id, relpath, st, format_of(relpath), tags, error, audio_id)
            for (relpath, st, _), (tags, error, audio_id) in zip(batch, results, strict=True)
        ]
        new = [not existed for _, _, existed in batch]
        changes: list[TreeChange] = []
        written: list[ScannedFile] = scanned
        moved: list[Moved] = []
        try:
            if self.writer is not None:  # the tree follows when the feed brings it back
                self.writer.write(scanned)
            else:
                changes, written, moved = self._commit(scanned, new, careful=False)
        except Exception as exc:
            if not about_the_file(exc) or self.writer is not None:
                raise
            # Some file's data cannot be stored: write the batch again one file at
            # a time (a savepoint each; they cost ~10% of a batch, hence not always).
            self.layout.rolled_back()
            changes, written, moved = self._commit(scanned, new, careful=True)
        report.moved += moved
        for (relpath, _, existed), done in zip(batch, written, strict=True):
            if done.error is not None:
                report.unreadable += 1
                log.info("unreadable: %s: %s", relpath, done.error)
            if existed:
                report.changed += 1
            else:
                report.added += 1
        self._publish(changes)

    def _commit(
        self, batch: list[ScannedFile], new: list[bool], *, careful: bool
    ) -> tuple[list[TreeChange], list[ScannedFile], list[Moved]]:
        """Write *batch* in one transaction; return the tree changes, what was
        written and the files that took over a departed file's data (*new*: which
        files the catalog did not have). *careful*: a file whose row cannot be
        written (issue 13.5) is undone alone and kept as unreadable with the
        reason; the scan goes on."""
        changes: list[TreeChange] = []
        written: list[ScannedFile] = []
        moved: list[Moved] = []
        with self.catalog.transaction():
            # Nothing departed, no overrides: no file of this batch can take
            # anything over, so none asks (four queries a file saved).
            self._adopting = self.catalog.may_adopt()
            for item, arrived in zip(batch, new, strict=True):
                if careful:
                    written.append(self._write_or_record(item, arrived, changes, moved))
                else:
                    changes += self._write(item, arrived, moved)
                    written.append(item)
        return changes, written, moved

    def _write_or_record(
        self, item: ScannedFile, arrived: bool, changes: list[TreeChange], moved: list[Moved]
    ) -> ScannedFile:
        """Write *item* in a savepoint; if its data cannot be stored, record it as
        unreadable with the reason instead. Returns what was written."""
        try:
            with self.catalog.savepoint():
                done: list[Moved] = []
                changes += self._write(item, arrived, done)
            moved += done
            return item
        except Exception as exc:
            if not about_the_file(exc):
                raise
            log.warning("cannot catalog %s/%s as read: %s: %s", item.origin, item.relpath,
                        type(exc).__name__, exc, exc_info=True)  # fmt: skip
            reason = f"cannot be catalogued: {type(exc).__name__}: {exc}"
        self.layout.rolled_back()
        kept = ScannedFile(item.origin, item.relpath, item.stat, item.format, TrackTags(), reason)
        changes += self._write(kept, arrived, moved)
        return kept

    def _write(self, scanned: ScannedFile, arrived: bool, moved: list[Moved]) -> list[TreeChange]:
        """The row of one scanned file (a new one takes over the user data its
        audio left behind), and its place in the tree."""
        file_id = self.catalog.upsert_file(scanned)
        if arrived and scanned.audio_id is not None and self._adopting:
            took = self.catalog.adopt(file_id)
            if took is not None:
                moved.append(took)
            if took is not None or self.catalog.overrides(file_id):
                self.layout.with_overrides = True  # place it with what it took over
        changes = self.layout.place(file_id, scanned.relpath, scanned.format, scanned.tags,
                                    scanned.error, stat=scanned.stat)  # fmt: skip
        if arrived and scanned.audio_id is None and scanned.error is None:
            self._unidentified.append(file_id)
        return changes

    def _adopt_unidentified(self, origin: Origin, report: ScanReport) -> None:
        """Give the files this scan added without an identity (a remote
        origin's) the user data that left the catalog, if theirs: the new path
        of a moved file; or a copy of the overrides of the track they are a copy
        of. Only read when data waits (a file with user data left: only files
        long enough to hold that audio), or for files that share their tags and
        size with a track that has overrides: two more ranged reads a file then."""
        arrivals, self._unidentified = self._unidentified, array.array("q")
        if not arrivals or self.writer is not None or self.cancelled:
            return
        ids = sorted(set(arrivals))
        lengths = self.catalog.departed_lengths()
        candidates = self.catalog.unidentified(ids, min(lengths)) if lengths else []
        listed = {file_id for file_id, _ in candidates}
        candidates += [c for c in self.catalog.overridden_copies(ids) if c[0] not in listed]
        if not candidates:
            return
        if self._threads is None:
            self._threads = concurrent.futures.ThreadPoolExecutor(
                _REMOTE_THREADS, thread_name_prefix="musicfs-scan"
            )

        def identify(relpath: str) -> str | None:
            try:
                return identity_of(origin, relpath, self.federation)
            except OSError as exc:
                log.debug("no identity for %s/%s: %s", origin.id, relpath, exc)
                return None

        found = self._threads.map(identify, [relpath for _, relpath in candidates])
        changes: list[TreeChange] = []
        with self.catalog.transaction():
            for (file_id, _), audio_id in zip(candidates, found, strict=True):
                if audio_id is None:
                    continue
                self.catalog.set_audio_id(file_id, audio_id)
                took = self.catalog.adopt(file_id)
                if took is not None:
                    report.moved.append(took)
                if took is not None or self.catalog.overrides(file_id):
                    self.layout.with_overrides = True  # place it with what it took over
                    changes += self.layout.place_track(self._track(file_id))
        self._publish(changes)

    def _remove(self, file_ids: Sequence[int], report: ScanReport) -> None:
        # Checked between batches: a scan cancelled (an unmount) while it takes
        # a whole origin's files out must not hold the unmount for minutes; the
        # rest goes at the next scan.
        if self.writer is not None:
            for start in range(0, len(file_ids), _BATCH):
                if self.cancelled:
                    return
                chunk = file_ids[start : start + _BATCH]
                self.writer.remove(chunk)
                report.removed += len(chunk)
            return
        for start in range(0, len(file_ids), _BATCH):
            if self.cancelled:
                return
            changes: list[TreeChange] = []
            with self.catalog.transaction():
                for file_id in file_ids[start : start + _BATCH]:
                    changes += self.layout.unplace(file_id)
                    moved = self.catalog.forget_file(file_id)
                    if moved is not None:
                        # The heir was placed with its own tags: place it again
                        # with the overrides it now has.
                        self.layout.with_overrides = True
                        changes += self.layout.place_track(self._track(moved.file_id))
                        report.moved.append(moved)
                    report.removed += 1
            self._publish(changes)

    def _track(self, file_id: int) -> Track:
        track = self.catalog.track(file_id)
        if track is None:
            raise KeyError(f"no file with id {file_id} in the catalog")
        return track

    def _publish(self, changes: list[TreeChange]) -> None:
        if changes and self.on_changes is not None:
            try:
                self.on_changes(changes)
            except Exception:  # a failed notification must not lose the scan
                log.exception("could not report %d tree changes", len(changes))

    def _plugin_parser(self, relpath: str) -> TagParser | None:
        fmt = format_of(relpath)
        return None if fmt in _MUTAGEN_FORMATS else self.plugins.tag_parser(fmt)

    def _submit_remote(
        self,
        origin: Origin,
        batch: Sequence[tuple[str, FileStat, bool]],
        parsers: list[TagParser | None],
    ) -> Callable[[], list[Parsed]]:
        """Start reading tags of a remote origin's files in threads (the work is
        waiting on the network, not parsing), each opened as its listing
        described it and read with about one request (`read_remote`)."""
        if self._threads is None:
            self._threads = concurrent.futures.ThreadPoolExecutor(
                _REMOTE_THREADS, thread_name_prefix="musicfs-scan"
            )
        open_listed: Callable[[str, FileStat], OriginFile] = origin.open_listed
        if self.federation is not None and origin.id in self.federation.origins:
            open_listed = functools.partial(self.federation.open_listed, origin.id)
        # A local disk's files (read here for a plugin) get their identity at
        # once; a remote origin's only if they have user data (see `_REMOTE_HEAD`).
        identity = origin.local_path("") is not None
        threads = self._threads
        # Where each file's result will be: (its reading, its place in that reading's list).
        places: list[tuple[concurrent.futures.Future[list[_Read]], int]] = []
        together = [
            i
            for i, ((relpath, _, _), parser) in enumerate(zip(batch, parsers, strict=True))
            if origin.heads_at_once and not identity and parser is None
            and reads_heads_alone(relpath)
        ]  # fmt: skip
        shares = self._submit_heads(origin, [batch[i] for i in together])
        in_shares = {i: place for i, place in zip(together, shares, strict=True)}
        for i, ((relpath, stat, _), parser) in enumerate(zip(batch, parsers, strict=True)):
            if i in in_shares:
                places.append(in_shares[i])
            elif identity or parser is not None:
                read = (scan_remote, open_listed, relpath, stat, parser, identity)
                places.append((threads.submit(_alone, *read), 0))
            else:
                places.append((threads.submit(_alone, scan_head, open_listed, relpath, stat), 0))
        report = self.report
        batch = list(batch)  # the caller goes on with its list

        def wait() -> list[Parsed]:
            results = [future.result()[k] for future, k in places]
            if report is not None:
                for _, traffic in results:
                    report.remote.add(traffic)
            parsed = [
                parse_head(relpath, got) if isinstance(got, Head) else got
                for (relpath, _, _), (got, _) in zip(batch, results, strict=True)
            ]
            # Mutagen looked past what was read (rare: tags longer than the
            # head, or than `_LONG_TAGS`): read those files again, in threads of
            # their own, not behind the queued reads.
            again = {
                i: self._rereading().submit(
                    scan_remote, open_listed, batch[i][0], batch[i][1], None, False
                )
                for i, one in enumerate(parsed)
                if one is None
            }
            for i, future in again.items():
                parsed[i], traffic = future.result()
                traffic.files = 0  # counted once, by its first read
                if report is not None:
                    report.remote.add(traffic)
            return cast(list[Parsed], parsed)

        return wait

    def _submit_heads(
        self, origin: Origin, files: Sequence[tuple[str, FileStat, bool]]
    ) -> list[tuple[concurrent.futures.Future[list[_Read]], int]]:
        """Start reading the heads of *files* of an origin that reads many at
        once (`Origin.heads_at_once`): shared between `_HEAD_STREAMS` threads,
        the origin's ``max_requests`` files in flight in all, rather than a
        thread a file (see `musicfs.core.origins.sftpheads`). Where each
        file's result will be: its share's reading, and its place in it."""
        if not files:
            return []
        read_heads: Callable[[Sequence[tuple[str, FileStat, int]]], list[bytes | OSError]]
        read_heads = origin.read_heads
        in_flight = _REMOTE_THREADS
        if self.federation is not None and origin.id in self.federation.origins:
            read_heads = functools.partial(self.federation.read_heads, origin.id)
            in_flight = self.federation.limits[origin.id].max_requests
        if self._streams is None:
            self._streams = concurrent.futures.ThreadPoolExecutor(
                _HEAD_STREAMS, thread_name_prefix="musicfs-heads"
            )
        listed = [(relpath, stat) for relpath, stat, _ in files]
        # A share a stream (fewer if few files), each of at most the streams'
        # part of max_requests (rounded up: the request slots still bound
        # what is in flight).
        size = max(1, min(-(-len(listed) // _HEAD_STREAMS), -(-in_flight // _HEAD_STREAMS)))
        places: list[tuple[concurrent.futures.Future[list[_Read]], int]] = []
        for start in range(0, len(listed), size):
            share = listed[start : start + size]
            future = self._streams.submit(scan_heads, read_heads, share)
            places += [(future, k) for k in range(len(share))]
        return places

    def _rereading(self) -> concurrent.futures.ThreadPoolExecutor:
        """The threads that read again files whose `Head` was too short."""
        if self._rereaders is None:
            self._rereaders = concurrent.futures.ThreadPoolExecutor(
                _REREADERS, thread_name_prefix="musicfs-reread"
            )
        return self._rereaders

    def _read(self, origin: Origin, relpath: str) -> bytes:
        """The whole of a small file (a playlist) of *origin*."""

        def read() -> bytes:
            with origin.open(relpath) as opened:
                return opened.read(0, opened.size)

        return self._call(origin, read)

    def _call(self, origin: Origin, request: Callable[[], T]) -> T:
        if self.federation is not None and origin.id in self.federation.origins:
            return self.federation.call(origin, request)
        return request()

    def _submit(self, paths: list[str]) -> Callable[[], list[Parsed]]:
        """Start reading the tags of *paths*; return a function that waits for them."""
        if len(paths) < _POOL_THRESHOLD or self.workers <= 1:
            results = parse_files(paths)
            return lambda: results
        if self._pool is None:
            # spawn, not fork: the daemon has threads (FUSE, gRPC) that fork would copy mid-flight.
            ctx = multiprocessing.get_context("spawn")
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )  # fmt: skip
        size = max(1, len(paths) // (self.workers * 4))
        futures = [
            self._pool.submit(parse_files, paths[i : i + size]) for i in range(0, len(paths), size)
        ]

        def wait() -> list[Parsed]:
            try:
                return [result for future in futures for result in future.result()]
            except concurrent.futures.process.BrokenProcessPool:
                # A worker died (e.g. killed by the OOM killer on a hostile file):
                # parse this batch in-process so one bad file cannot stop the scan.
                log.warning("a tag-reading worker died; reading this batch in-process")
                self._pool = None
                return [parse_file(p) for p in paths]

        return wait
