"""The scanner: bring the catalog in step with what an origin holds.

A scan walks the origin one directory at a time and compares each directory with
what the catalog remembers of it (size, mtime and, where the origin has one,
ctime), so memory stays bounded by the largest directory, not the library. New
and changed files are parsed with mutagen in worker processes (one per core);
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

import concurrent.futures
import functools
import io
import logging
import multiprocessing
import os
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

from musicfs.core.catalog.identity import Moved
from musicfs.core.catalog.layout import Layout, TreeChange
from musicfs.core.catalog.store import Catalog, Track, join_relpath
from musicfs.core.catalog.templates import PathTemplate
from musicfs.core.extensions import Extensions, TagParser
from musicfs.core.model import AUDIO_EXTENSIONS, FileStat, ScannedFile, TrackTags, format_of
from musicfs.core.origins.base import Origin, OriginFile, RangeReader
from musicfs.core.origins.federation import Federation
from musicfs.core.sync.changes import ScanRequest
from musicfs.core.sync.playlists import PLAYLIST_EXTENSIONS, PlaylistSync, is_playlist

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
_REMOTE_BUFFER = 64 * 1024  # tags usually fit in the first request
_REMOTE_THREADS = 8  # files of a remote origin whose tags are read at once


class Parsed(NamedTuple):
    """What parsing one file gave: its tags, or why they could not be read, and
    its audio identity (`musicfs.core.tags.identity`; None if unreadable)."""

    tags: TrackTags
    error: str | None = None
    audio_id: str | None = None


def parse_file(path: str) -> Parsed:
    """Read one file's tags and identity; never raises. Runs in worker processes."""
    from musicfs.core.tags.identity import audio_identity_of  # loaded on first scan
    from musicfs.core.tags.reader import UnreadableFile, read_tags

    try:
        tags = read_tags(path)
    except UnreadableFile as exc:
        return Parsed(TrackTags(), str(exc))
    except Exception as exc:  # pragma: no cover - read_tags already catches
        return Parsed(TrackTags(), f"{type(exc).__name__}: {exc}")
    return Parsed(tags, None, audio_identity_of(path))


def parse_remote(
    open_file: Callable[[str], OriginFile], relpath: str, parser: TagParser | None = None
) -> Parsed:
    """Read the tags and identity of a file through ranged reads (only the parts
    of the file mutagen, or the plugin *parser*, looks at are fetched, and the
    identity's samples); never raises."""
    from musicfs.core.tags.identity import audio_identity
    from musicfs.core.tags.reader import UnreadableFile, read_tags

    try:
        with open_file(relpath) as opened:
            reader = io.BufferedReader(RangeReader(opened), _REMOTE_BUFFER)
            if parser is None:
                tags = read_tags(relpath, reader)
            else:
                try:
                    tags = parser.parse(reader)
                except OSError:
                    raise
                except Exception as exc:  # plugin code: whatever it raises, the file is unreadable
                    return Parsed(TrackTags(), f"plugin {parser.name}: {exc}")

            def read(offset: int, length: int) -> bytes:
                # Through the buffer: the samples in the head cost no request.
                reader.seek(offset)
                return reader.read(length)

            return Parsed(tags, None, audio_identity(read, opened.size, format_of(relpath)))
    except UnreadableFile as exc:
        return Parsed(TrackTags(), str(exc))
    except OSError as exc:
        return Parsed(TrackTags(), f"cannot read: {exc}")


def parse_files(paths: list[str]) -> list[Parsed]:
    """`parse_file` for several files: one round trip to a worker process for all."""
    return [parse_file(p) for p in paths]


def exit_with_parent(parent: int) -> None:
    """Worker initializer: exit as soon as the daemon (*parent*) is gone.

    A daemon killed with SIGKILL cannot stop its workers, and they never see EOF
    on their pipes (each holds a write end itself), so without this they live on
    forever, with the resource tracker they keep alive. A pidfd becomes readable
    when its process exits. (Not PR_SET_PDEATHSIG: it fires when the *thread*
    that started the worker ends, and pool workers are started by scan threads.)
    """
    try:
        pidfd = os.pidfd_open(parent)
    except ProcessLookupError:
        os._exit(1)

    def wait() -> None:
        select.select([pidfd], [], [])
        os._exit(1)

    threading.Thread(target=wait, name="musicfs-exit-with-parent", daemon=True).start()


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
        self.report: ScanReport | None = None  # of the scan running (or last run)
        self._inflight: (
            tuple[Origin, list[tuple[str, FileStat, bool]], Callable[[], list[Any]]] | None
        ) = None
        self.cancelled = False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
            self._threads = None

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
            self.playlists.end_census(origin.id)
            report.complete = True
            with self.catalog.transaction():
                self.catalog.prune_departed()  # data whose audio never came back
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
        by a MusicFS before identities), so that a move does not lose it."""
        from musicfs.core.tags.identity import audio_identity, audio_identity_of

        for file_id, relpath in self.catalog.without_identity(origin.id):
            local = origin.local_path(relpath)
            try:
                if local is not None:
                    audio_id = audio_identity_of(local)
                else:
                    opening = functools.partial(origin.open, relpath)
                    with self._call(origin, opening) as opened:
                        audio_id = audio_identity(opened.read, opened.size, format_of(relpath))
            except OSError as exc:
                log.debug("no identity for %s/%s: %s", origin.id, relpath, exc)
                continue
            if audio_id is not None:
                with self.catalog.transaction():
                    self.catalog.set_audio_id(file_id, audio_id)

    def _finish(self, report: ScanReport, started: float) -> ScanReport:
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
        while stack and not self.cancelled:
            reldir = stack.pop()
            subdirs = self._visit(origin, reldir, pending, report)
            if subdirs is None:
                continue
            if record_dirs:
                self.catalog.saw_dir(reldir)
            stack.extend(join_relpath(reldir, d) for d in sorted(subdirs, reverse=True))
            if len(pending) >= _BATCH:
                self._ingest(origin, pending, report)
                pending.clear()
            self.progress.update(report)

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
            listing = self._call(origin, lambda: origin.list_dir(reldir, self.extensions))
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

    def _ingest(
        self, origin: Origin, batch: Sequence[tuple[str, FileStat, bool]], report: ScanReport
    ) -> None:
        """Start parsing *batch*, then write the batch parsed before it.

        Parsing (worker processes) and writing (this thread) overlap: while the
        workers read the tags of one batch, the previous one goes to SQLite.
        Call `_drain` once the last batch has been handed in.
        """
        relpaths = [relpath for relpath, _, _ in batch]
        parsers = [self._plugin_parser(relpath) for relpath in relpaths]
        paths = [origin.local_path(relpath) for relpath in relpaths]
        local = [p for p in paths if p is not None]
        if len(local) == len(paths) and not any(parsers):
            parsing = self._submit(local)
        else:  # remote files, or formats only a plugin (in this process) can read
            parsing = self._submit_remote(origin, relpaths, parsers)
        self._drain(report)
        self._inflight = (origin, list(batch), parsing)

    def _drain(self, report: ScanReport) -> None:
        """Write the batch that is being parsed, once its tags are in."""
        if self._inflight is None:
            return
        origin, batch, parsing = self._inflight
        self._inflight = None
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
        if arrived and scanned.audio_id is not None:
            took = self.catalog.adopt(file_id)
            if took is not None:
                moved.append(took)
            if took is not None or self.catalog.overrides(file_id):
                self.layout.with_overrides = True  # place it with what it took over
        return self.layout.place(file_id, scanned.relpath, scanned.format, scanned.tags,
                                 scanned.error, stat=scanned.stat)  # fmt: skip

    def _remove(self, file_ids: Sequence[int], report: ScanReport) -> None:
        if self.writer is not None:
            for start in range(0, len(file_ids), _BATCH):
                chunk = file_ids[start : start + _BATCH]
                self.writer.remove(chunk)
                report.removed += len(chunk)
            return
        for start in range(0, len(file_ids), _BATCH):
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
        self, origin: Origin, relpaths: list[str], parsers: list[TagParser | None]
    ) -> Callable[[], list[Parsed]]:
        """Start reading tags of a remote origin's files in threads (the work is
        waiting on the network, not parsing)."""
        if self._threads is None:
            self._threads = concurrent.futures.ThreadPoolExecutor(
                _REMOTE_THREADS, thread_name_prefix="musicfs-scan"
            )
        open_file: Callable[[str], OriginFile] = origin.open
        if self.federation is not None and origin.id in self.federation.origins:
            open_file = functools.partial(self.federation.open, origin.id)
        futures = [
            self._threads.submit(parse_remote, open_file, relpath, parser)
            for relpath, parser in zip(relpaths, parsers, strict=True)
        ]
        return lambda: [future.result() for future in futures]

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
            results = [parse_file(p) for p in paths]
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
