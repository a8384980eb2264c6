"""A mount on a shared catalog (issue 16, docs/shared-catalog.md): its SQLite
catalog is a replica of the catalog on PostgreSQL, which every write goes to
first.

`SharedMount` is what `musicfs.core.mount.service.MusicFS` runs when
``[catalog] shared`` is set:

- the **follow** thread (`Follower`): copies the shared catalog into an empty
  replica (each batch placed in the tree as it arrives), then applies the
  change feed when NOTIFY wakes it, re-places the changed tracks with this
  mount's own path template and makes the kernel forget their entries
  (*notify*, the path scans use);
- the **locks** loop (trio): takes the lock of each origin no other mount
  holds (`OriginLocks`), and asks a full rescan of an origin it took over; the
  sync loop scans only those origins (`may_scan`), writing into PostgreSQL
  (`scan_writer`);
- the **plays** thread: plays go to a queue file in the cache directory
  (`PlayQueue`, bounded, kept across restarts) and from there to PostgreSQL,
  at once or when the server is back;
- overrides (`tag set`, `publish_overrides`), and pins, ratings and
  collections (`publish`) go to PostgreSQL, then wait for the feed to bring
  them back; with the server unreachable they fail naming it.

Nothing here runs in the FUSE (trio) thread's way: every network call is made
in a thread of its own, and lookup, getattr and readdir read the replica only.
While the server is unreachable the mount serves its replica and reports
DEGRADED (`online`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import trio

from musicfs.core.catalog.layout import ChangeKind, Layout, TreeChange
from musicfs.core.catalog.store import Catalog
from musicfs.core.content.overlay import OverlayEditor, TagError
from musicfs.core.errors import Signal
from musicfs.core.model import ScannedFile
from musicfs.core.mount.pins import PinError
from musicfs.core.secrets.credentials import CredentialError, Credentials
from musicfs.core.shared.connect import CONNECT_TIMEOUT, ServerAddress, parse_url
from musicfs.core.shared.errors import (
    ReplicaBehind,
    SharedCatalogError,
    SharedCatalogUnavailable,
)
from musicfs.core.shared.feed import Applied, Follower, FollowerState, Listener
from musicfs.core.shared.locks import OriginLocks
from musicfs.core.shared.store import SharedCatalog
from musicfs.core.supervise import Supervisor

log = logging.getLogger(__name__)

#: Seconds between attempts to take the locks of origins another mount scans.
LOCK_RETRY = 2.0
#: Plays kept in the queue at most while the server is unreachable (the oldest
#: are dropped beyond, with a warning): a year of listening, a few MiB.
PLAY_QUEUE_LIMIT = 200_000
#: How long `tag set` waits for its override to come back through the feed.
PUBLISH_WAIT = 10.0
#: Seconds a mount that took an origin's lock waits for its replica to catch up
#: with the feed before it scans the origin (then it scans anyway).
CATCH_UP_WAIT = 60.0
#: Seconds between two reports of the last change this replica applied
#: (`SharedCatalog.report_applied`); the feed keeps what a replica still needs.
REPORT_EVERY = 30.0
#: Seconds between two prunes of the feed by a mount holding an origin lock.
PRUNE_EVERY = 600.0
#: Seconds between packings of big folders' listings after rounds of the feed.
PACK_EVERY = 60.0
#: The feed's changes are kept this long at most (and a replica not heard from
#: for this long no longer holds them back): a replica further behind is copied
#: again at its next mount. Two weeks: a laptop back from a holiday catches up.
FEED_KEEP = 14 * 86400.0
#: Seconds an unmount waits for the threads to end by themselves before it cuts
#: their connections (a server gone silent).
STOP_WAIT = 1.5


class _Stopping(Signal):
    """The mount is going: a first copy stops between two batches (the next
    mount starts it over)."""


class _Interruptible(Protocol):
    def interrupt(self) -> None: ...


class PlayQueue:
    """Plays waiting to be sent to the shared catalog: a SQLite file in the
    cache directory, so none is lost by a restart or an outage. Bounded."""

    def __init__(self, path: Path, limit: int = PLAY_QUEUE_LIMIT) -> None:
        self.path = path
        self.limit = limit
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS plays (seq INTEGER PRIMARY KEY, file_id INTEGER, at REAL)"
        )
        # The batch being sent (one row at most): its id, unique, and its last
        # play. Kept until the batch is forgotten, so a batch the server took
        # before a crash is sent again with its id, and not counted twice.
        self._conn.execute("CREATE TABLE IF NOT EXISTS sending (id TEXT, through INTEGER)")
        self.wake = threading.Event()

    def add(self, plays: Sequence[tuple[int, float]]) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany("INSERT INTO plays (file_id, at) VALUES (?, ?)", plays)
            over = self._count() - self.limit
            if over > 0:
                log.warning("play queue full (%d plays): dropping the %d oldest", self.limit, over)
                self._conn.execute(
                    "DELETE FROM plays WHERE seq IN (SELECT seq FROM plays ORDER BY seq LIMIT ?)",
                    (over,),
                )
            self._conn.execute("COMMIT")
        self.wake.set()

    def _count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM plays").fetchone()[0])

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    def send(self, shared: SharedCatalog, batch: int = 1000) -> int:
        """Send the queued plays (oldest first); returns how many were sent.
        Raises `SharedCatalogUnavailable` (the rest stay queued).

        Each batch goes with an id the server remembers (`SharedCatalog.add_plays`),
        chosen before it is sent and forgotten with it: a crash between the
        send and the forgetting sends it again, and the server counts it once."""
        sent = 0
        while True:
            with self._lock:
                sending = self._conn.execute("SELECT id, through FROM sending").fetchone()
                if sending is None:
                    rows = self._conn.execute(
                        "SELECT seq, file_id, at FROM plays ORDER BY seq LIMIT ?", (batch,)
                    ).fetchall()
                    if not rows:
                        return sent
                    sending = (uuid.uuid4().hex, int(rows[-1][0]))
                    self._conn.execute("INSERT INTO sending (id, through) VALUES (?, ?)", sending)
                else:  # a batch sent (or not) before a crash: the same plays, the same id
                    rows = self._conn.execute(
                        "SELECT seq, file_id, at FROM plays WHERE seq <= ? ORDER BY seq",
                        (sending[1],),
                    ).fetchall()
            shared.add_plays([(int(f), float(at)) for _, f, at in rows], str(sending[0]))
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute("DELETE FROM plays WHERE seq <= ?", (sending[1],))
                self._conn.execute("DELETE FROM sending")
                self._conn.execute("COMMIT")
            sent += len(rows)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _ScanWriter:
    """A scan's batches, written to the shared catalog (one transaction each)."""

    def __init__(self, shared: SharedCatalog) -> None:
        self.shared = shared

    def write(self, files: Sequence[ScannedFile]) -> None:
        self.shared.write_scan_batch(files)

    def remove(self, file_ids: Sequence[int]) -> None:
        self.shared.write_scan_batch([], file_ids)


class SharedMount:
    """One mount's side of a shared catalog (see the module docstring)."""

    def __init__(
        self,
        url: str,
        catalog_path: Path,
        cache_dir: Path,
        *,
        origin_ids: Callable[[], list[str]],
        editor: Callable[[Catalog], OverlayEditor],
        notify: Callable[[list[TreeChange]], None],
        took_over: Callable[[str], None],
        first_round: Callable[[], None] = lambda: None,
        after_applied: Callable[[Catalog, Layout, set[int]], None] | None = None,
        user_data_changed: Callable[[Applied], None] | None = None,
        rescan: Callable[[str], None] = lambda origin_id: None,
    ) -> None:
        """*origin_ids*: this mount's origins; *editor*: an overlay editor (and
        layout, with this mount's template) over a catalog connection;
        *notify*: makes the kernel forget changed entries (any thread);
        *took_over*: this mount now scans that origin (trio thread); *first_round*:
        called (follow thread) once the replica is up to date for the first
        time, or the server was found unreachable (``musicfs mount --wait``);
        *after_applied*: what a mount does after a scan batch (overlays due,
        covers of the changed folders, pins), after a round that changed tracks;
        *user_data_changed*: after a round that changed pins or collections
        (or copied the catalog), so the mount takes them up (follow thread);
        *rescan*: another mount asked for a rescan of an origin this one scans
        (trio thread)."""
        self.address: ServerAddress = parse_url(url)
        try:
            self.credentials: Credentials | None = Credentials.load()
        except CredentialError as exc:
            raise SharedCatalogError(str(exc)) from None
        self.catalog_path = catalog_path
        self.origin_ids = origin_ids
        self.editor = editor
        self.notify = notify
        self.took_over = took_over
        self.first_round = first_round
        self.after_applied = after_applied
        self.user_data_changed = user_data_changed
        self.rescan = rescan
        self.locks = OriginLocks(self.address, self.credentials)
        self._locks_lock = threading.Lock()  # the locks loop's thread, and `ask_rescan`
        self.plays = PlayQueue(cache_dir / "shared-plays.sqlite")
        self.state = FollowerState()
        self.error = "not connected yet"
        self.server_seq = 0
        self.bootstrapping = False
        self.copied = 0
        self._placed_upto = 0  # the copy's tracks up to this id are placed
        self._packed_at = -PACK_EVERY  # when listings were last packed (monotonic)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._done = threading.Condition()  # rounds of the follower handled
        self._handled_seq = 0
        self._writer = SharedCatalog(self.address, self.credentials)
        self._writer_lock = threading.Lock()
        self._supervisor: Supervisor | None = None
        self._follower: Follower | None = None
        self._tried = False  # an attempt to reach the server was made
        # The sessions threads may be waiting in: cut at unmount if the server is silent.
        self._sessions: set[_Interruptible] = set()
        self._sessions_lock = threading.Lock()
        self._scan_shared: SharedCatalog | None = None  # the running scan's writes
        # The feed's upkeep (`_upkeep`): this replica's id, read by the follow thread.
        self.replica_id = ""
        self.report_every = REPORT_EVERY
        self.prune_every = PRUNE_EVERY
        self.feed_keep = FEED_KEEP
        self._next_report = 0.0
        self._next_prune = time.monotonic() + self.prune_every

    # -- what status shows ---------------------------------------------------------------

    @property
    def current(self) -> FollowerState:
        """The follower's state as of now (its last round's change number)."""
        return self._follower.state if self._follower is not None else self.state

    @property
    def online(self) -> bool:
        """The server answered the last attempt (or none was made yet: a mount
        is not DEGRADED for the moment it takes to connect)."""
        return self.current.healthy or not self._tried

    def status(self) -> dict[str, Any]:
        applied = self.current.applied_seq
        server = max(self.server_seq, applied)
        return {
            "shared": True,
            "server": str(self.address),
            "online": self.online,
            "applied_seq": applied,
            "server_seq": server,
            "lag": server - applied,
            "bootstrapping": self.bootstrapping,
            "bootstrap_copied": self.copied,
            "error": "" if self.online else self.error,
            "scanning_origins": sorted(self.locks.held),
        }

    # -- running --------------------------------------------------------------------------

    def start(self, supervisor: Supervisor, nursery: trio.Nursery) -> None:
        """Start the follow and plays threads and the locks loop."""
        self._supervisor = supervisor  # before the threads: they report to it
        for name, loop in (("catalog", self._follow), ("plays", self._send_plays)):
            thread = threading.Thread(
                target=supervisor.run_thread, args=(name, loop, self._stop),
                name=f"musicfs-{name}", daemon=True,
            )  # fmt: skip
            thread.start()
            self._threads.append(thread)
        nursery.start_soon(supervisor.run, "catalog locks", self._locks_loop)

    def stop(self) -> None:
        """Stop the threads and free this mount's origin locks (another mount
        takes over at once). Takes a few seconds at most, whatever the server
        does: a thread still waiting on a silent server has its connection cut
        (the server drops the session, and its locks, when it notices)."""
        self._stop.set()
        self.plays.wake.set()
        with contextlib.suppress(SharedCatalogError):
            self.locks.close()
        if not self._join(STOP_WAIT):
            # Cut again and again: a thread may have opened a connection since
            # (one being opened ends with its connect timeout, 3 s).
            deadline = time.monotonic() + CONNECT_TIMEOUT + STOP_WAIT
            while time.monotonic() < deadline:
                self.interrupt()
                if self._join(0.2):
                    break
        self._writer.close()
        if not any(thread.is_alive() for thread in self._threads):
            self.plays.close()  # else left to the process's end: a thread may still use it

    def _join(self, wait: float) -> bool:
        """Wait up to *wait* seconds in all for the threads; True if all ended."""
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def interrupt(self) -> None:
        """End the calls threads are waiting in on the server (the mount is going)."""
        with self._sessions_lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.interrupt()

    @contextlib.contextmanager
    def _session(self, session: Any) -> Iterator[None]:
        """While in the block, *session* (a `SharedCatalog` or `Listener`) is cut at unmount."""
        with self._sessions_lock:
            self._sessions.add(session)
        try:
            yield
        finally:
            with self._sessions_lock:
                self._sessions.discard(session)

    # -- following the feed (thread) --------------------------------------------------------

    def _follow(self) -> None:
        with Catalog.open(self.catalog_path) as catalog:
            shared = SharedCatalog(self.address, self.credentials)
            listener = Listener(self.address, self.credentials)
            self.state.applied_seq = catalog.replica_state()[1]  # shown through an outage
            with catalog.transaction():
                self.replica_id = catalog.replica_id()
            with self._sessions_lock:
                self._sessions.update((shared, listener))
            try:
                self._first_contact(shared)
                if self._stop.is_set():
                    return
                editor = self.editor(catalog)
                editor.layout.with_overrides = True  # overrides come with the feed
                follower = Follower(
                    catalog,
                    shared,
                    listener,
                    on_applied=lambda applied: self._applied(editor, applied),
                    on_state=self._on_state,
                    max_retry=5.0,
                )
                follower.replica.progress = lambda copied: self._copied(editor, copied)
                self.bootstrapping = follower.replica.needs_bootstrap()
                if not self.bootstrapping:
                    self._catch_up_tree(editor, shared)
                follower.state.applied_seq = follower.replica.applied_seq
                with self._done:  # what earlier sessions applied needs no waiting for
                    self._handled_seq = max(self._handled_seq, follower.state.applied_seq)
                self._follower = follower
                follower.run(self._stop)
            finally:
                with self._sessions_lock:
                    self._sessions.difference_update((shared, listener))
                listener.close()
                shared.close()

    def _first_contact(self, shared: SharedCatalog) -> None:
        """Connect once (the catalog's id is needed before a copy), retrying
        with backoff while the server is unreachable."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                self.server_seq = shared.last_seq()
                return
            except SharedCatalogUnavailable as exc:
                self._on_state(FollowerState(False, self.state.applied_seq, str(exc)))
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _on_state(self, state: FollowerState) -> None:
        if not self._tried:
            self.first_round()
        self._tried = True
        self.state = state
        if not state.healthy:
            self.error = state.error
        if state.healthy:
            self.plays.wake.set()  # plays queued meanwhile go now
            self._worked("catalog")

    def _worked(self, loop: str) -> None:
        """Thread *loop* completed a round: a failure it had (restarted by the
        supervisor) is over, and the mount is no longer DEGRADED for it."""
        if self._supervisor is not None:
            self._supervisor.ok(loop)

    def _catch_up_tree(self, editor: OverlayEditor, shared: SharedCatalog) -> None:
        """Do the tree work of the changes the replica applied but the mount
        did not handle (it stopped, or crashed, between the two): re-place
        their tracks and make their overlays, as `_applied` would have."""
        catalog = editor.catalog
        applied_seq = catalog.replica_state()[1]
        handled = catalog.handled_seq()
        if handled is None:  # a replica of an older MusicFS: nothing recorded
            with catalog.transaction():
                catalog.set_handled_seq(applied_seq)
            return
        if handled >= applied_seq:
            return
        redo = Applied(applied_seq, copied=handled < 0)
        if handled >= 0:
            try:
                redo = self._changed_between(shared, handled, applied_seq)
            except ReplicaBehind:  # pruned meanwhile: which changed is not known
                redo.copied = True
        if redo.copied:  # every track may have changed
            redo.tracks = set(catalog.file_ids())
        log.info("re-placing %d tracks of changes %d-%d applied before the mount stopped",
                 len(redo.changed), handled + 1, applied_seq)  # fmt: skip
        self._applied(editor, redo)

    @staticmethod
    def _changed_between(shared: SharedCatalog, after: int, through: int) -> Applied:
        """What the changes after *after* up to *through* changed (not applied again)."""
        redo = Applied(through)
        seq = after
        while seq < through:
            changes = [c for c in shared.changes_after(seq) if c.seq <= through]
            if not changes:
                break
            for change in changes:
                if change.kind in ("pin_request", "pin_dropped", "pins"):
                    redo.pins = True
                elif change.kind == "collection":
                    redo.collections = True
                if change.track_id is None:
                    continue
                if change.kind == "track_removed":
                    redo.removed.add(change.track_id)
                    redo.tracks.discard(change.track_id)
                elif change.kind == "track":
                    redo.tracks.add(change.track_id)
                    redo.removed.discard(change.track_id)
                elif change.kind == "overrides":
                    redo.overrides.add(change.track_id)
                elif change.kind == "plays":
                    redo.played.add(change.track_id)
                elif change.kind == "ratings":
                    redo.rated.add(change.track_id)
            seq = changes[-1].seq
        return redo

    def _copied(self, editor: OverlayEditor, copied: int) -> None:
        """A batch of a copy arrived: place its tracks, so the tree grows as it
        copies; or stop the copy if the mount is going."""
        if self._stop.is_set():
            raise _Stopping("unmounting: the copy starts over at the next mount")
        if copied <= self.copied:  # a new copy: rows of an earlier one may lie anywhere
            self._placed_upto = 0
        self.bootstrapping = True
        self.copied = copied
        catalog = editor.catalog
        changes: list[TreeChange] = []
        with catalog.transaction():
            catalog.set_handled_seq(-1)  # the copy's tree work is done once `_applied` ran
            for count, file_id in enumerate(catalog.unplaced_files(self._placed_upto)):
                if count % 500 == 0 and self._stop.is_set():
                    raise _Stopping("unmounting: the copy starts over at the next mount")
                track = catalog.track(file_id)
                if track is not None:
                    changes += editor.layout.place_track(track)
                self._placed_upto = file_id
        self.notify(changes)

    def _applied(self, editor: OverlayEditor, applied: Applied) -> None:
        """A round of the feed was applied: re-place what changed, with this
        mount's template, and make the kernel forget the old entries."""
        self.bootstrapping = False
        catalog = editor.catalog
        changes: list[TreeChange] = []
        with catalog.transaction():
            for file_id in sorted(applied.removed):
                changes += editor.layout.unplace(file_id)
        again = applied.tracks | applied.overrides
        if applied.copied:  # placed as they came (`_copied`), by their own tags
            again |= set(catalog.unplaced_files()) | set(catalog.all_overrides())
        changes += editor.refresh(sorted(again - applied.removed))
        self.notify(changes)
        if self.after_applied is not None and (applied.tracks or applied.removed or applied.copied):
            folders = {c.parent for c in changes if c.kind is not ChangeKind.REMOVED}
            self.after_applied(catalog, editor.layout, folders)
        # The listings of big folders the feed changed, packed again: at most once
        # a minute (while another machine scans, a round comes every few seconds,
        # and a big folder's row is rewritten whole).
        if time.monotonic() - self._packed_at >= PACK_EVERY:
            self._packed_at = time.monotonic()
            catalog.pack_listings(stop=self._stop.is_set)
        if self.user_data_changed is not None and (
            applied.pins or applied.collections or applied.copied
        ):
            self.user_data_changed(applied)
        with catalog.transaction():  # done: a restart need not do it again
            catalog.set_handled_seq(applied.last_seq)
        self.server_seq = max(self.server_seq, applied.last_seq)
        with self._done:
            self._handled_seq = max(self._handled_seq, applied.last_seq)
            self._done.notify_all()

    # -- origin locks (trio) -------------------------------------------------------------------

    def may_scan(self, origin_id: str) -> bool:
        """Whether this mount scans *origin_id* (it holds its lock)."""
        return origin_id in self.locks.held

    @contextlib.contextmanager
    def scan_writer(self) -> Iterator[_ScanWriter]:
        """Where a scan writes: the shared catalog, on a connection of the scan's own."""
        with SharedCatalog(self.address, self.credentials) as shared:
            self._scan_shared = shared
            try:
                yield _ScanWriter(shared)
            finally:
                self._scan_shared = None

    def cancel_scan(self) -> None:
        """The mount is going (trio thread): a scan's write still waiting on a
        silent server after `STOP_WAIT` seconds has its connection cut, so
        the scan ends and the unmount does not wait for TCP timeouts."""
        shared = self._scan_shared
        if shared is not None:
            timer = threading.Timer(STOP_WAIT, shared.interrupt)
            timer.daemon = True
            timer.start()

    async def _locks_loop(self) -> None:
        """Take the locks of the origins no mount scans; rescan those taken."""
        while True:
            taken, asked = await trio.to_thread.run_sync(self._take_locks, abandon_on_cancel=True)
            if taken:  # compared with the replica: it must hold what the last scanner wrote
                await trio.to_thread.run_sync(
                    self._catch_up, self.server_seq, abandon_on_cancel=True
                )
            for origin_id in taken:
                log.info("scanning origin %s (no other mount does)", origin_id)
                self.took_over(origin_id)
            for origin_id in sorted(asked - set(taken)):  # one taken is rescanned in full anyway
                log.info("rescanning origin %s: another mount asked for it", origin_id)
                self.rescan(origin_id)
            if self._supervisor is not None:
                self._supervisor.ok("catalog locks")
            await trio.sleep(LOCK_RETRY)

    def _catch_up(self, seq: int) -> None:
        """Wait (up to `CATCH_UP_WAIT`) until the replica applied change *seq*:
        a scan compares the origin with the replica, so one that holds every
        row the last scanner wrote (the same mount after a server restart, or
        another that follows the feed) re-reads only what changed since."""
        deadline = time.monotonic() + CATCH_UP_WAIT
        while self.current.applied_seq < seq and not self._stop.is_set():
            if self.bootstrapping:  # a first copy: the catalog as of now, worth the wait
                deadline = time.monotonic() + CATCH_UP_WAIT
            elif time.monotonic() >= deadline:
                log.warning("scanning with a replica behind the shared catalog (at change %d "
                            "of %d): files it lacks are read again", self.current.applied_seq,
                            seq)  # fmt: skip
                return
            self._stop.wait(0.1)

    def _take_locks(self) -> tuple[list[str], set[str]]:
        """The origins whose locks this round took, and those (held) another
        mount asked to rescan."""
        if self._stop.is_set():
            return [], set()
        taken: list[str] = []
        asked: set[str] = set()
        try:
            with self._locks_lock:
                if self.locks.held and not self.locks.alive():
                    log.warning("lost the origin locks (shared catalog %s); trying again",
                                self.address)  # fmt: skip
                for origin_id in self.origin_ids():
                    if origin_id not in self.locks.held and self.locks.try_lock_origin(origin_id):
                        taken.append(origin_id)
                asked = self.locks.rescans_asked()
            with self._writer_lock:
                self.server_seq = max(self.server_seq, self._writer.last_seq())
            self._upkeep()
        except SharedCatalogUnavailable as exc:
            log.debug("origin locks: %s", exc)
        return taken, asked

    def _upkeep(self) -> None:
        """The feed's upkeep (the locks loop's thread): say now and then which
        change this replica has applied; and, on a mount that scans an origin
        (so one or a few mounts, not all), prune the feed every `prune_every`
        seconds of what every replica has applied and of what is older than
        `feed_keep` (`SharedCatalog.prune_feed`)."""
        now = time.monotonic()
        state = self.current
        try:
            reportable = self.replica_id and state.healthy and not self.bootstrapping
            if reportable and now >= self._next_report:
                with self._writer_lock:
                    self._writer.report_applied(self.replica_id, state.applied_seq)
                self._next_report = now + self.report_every
            if self.locks.held and now >= self._next_prune:
                self._next_prune = now + self.prune_every
                with self._writer_lock:
                    pruned = self._writer.prune_feed(self.feed_keep)
                if pruned:
                    log.info("pruned %d changes of shared catalog %s", pruned, self.address)
        except SharedCatalogUnavailable:
            raise
        except SharedCatalogError as exc:  # a server that takes no writes: nothing to keep
            log.debug("feed upkeep: %s", exc)

    def ask_rescan(self, origin_id: str) -> str:
        """A rescan of *origin_id* was asked on this mount (``musicfs origin
        rescan``; a worker thread). Returns "" when this mount scans it (it
        held the origin's lock, or took it now that no mount holds it), else
        says that the mount holding it was asked to. Raises
        `SharedCatalogError` naming the server when it cannot be reached."""
        with self._locks_lock:
            if origin_id in self.locks.held and self.locks.alive():
                return ""
            if self.locks.try_lock_origin(origin_id):
                log.info("scanning origin %s (asked to; no other mount does)", origin_id)
                return ""
            self.locks.ask_rescan(origin_id)
        log.info("asked the mount that scans origin %s to rescan it", origin_id)
        return (
            f"origin {origin_id} is scanned by another mount (it holds the origin's lock in "
            f"shared catalog {self.address}): asked it to rescan; what it finds reaches this "
            "mount through the shared catalog"
        )

    # -- writes (any thread) -------------------------------------------------------------

    def publish_overrides(
        self,
        file_id: int,
        fields: dict[str, str | None],
        clear: list[str] | None,
        source: str,
    ) -> None:
        """Write an override to the shared catalog, then wait (a while) for the
        feed to bring it back to this replica. Raises `TagError` naming the
        server when it cannot be written."""
        try:
            with self._writer_lock:
                if clear is None:
                    self._writer.clear_overrides(file_id)
                elif clear:
                    self._writer.clear_overrides(file_id, clear)
                if fields:
                    self._writer.set_overrides(file_id, fields, source)
                seq = self._writer.last_seq()
        except SharedCatalogError as exc:
            raise TagError(f"{exc}; nothing was changed") from None
        with self._done:
            if not self._done.wait_for(lambda: self._handled_seq >= seq, PUBLISH_WAIT):
                log.info("override of file %d written; this mount shows it once the feed "
                         "catches up", file_id)  # fmt: skip

    def publish(self, write: Callable[[SharedCatalog], object], what: str) -> None:
        """Make one write of user data (ratings, pins, collections) to the shared
        catalog, then wait (a while) for the feed to bring it back to this
        replica. Raises `SharedCatalogError` naming the server when it cannot
        be written (the caller says what was not done)."""
        with self._writer_lock:
            write(self._writer)
            seq = self._writer.last_seq()
        with self._done:
            if not self._done.wait_for(lambda: self._handled_seq >= seq, PUBLISH_WAIT):
                log.info("%s written; this mount shows it once the feed catches up", what)

    def publish_pins(self, requests: dict[tuple[str, str], list[int]], at: float) -> None:
        """Pin requests and their tracks, to the shared catalog (`Pinning.publish`)."""
        try:
            self.publish(lambda writer: writer.set_pins(requests, at), "pin")
        except SharedCatalogError as exc:
            raise PinError(f"{exc}; nothing was pinned") from None

    def unpublish_pins(self, requests: list[tuple[str, str]], everything: bool) -> None:
        """Drop pin requests in the shared catalog (`Pinning.unpublish`)."""
        try:
            self.publish(lambda writer: writer.drop_pins(requests, everything), "unpin")
        except SharedCatalogError as exc:
            raise PinError(f"{exc}; nothing was unpinned") from None

    def publish_ratings(self, ratings: list[tuple[int, int | None]], source: str) -> int:
        """Rate tracks in the shared catalog; how many were. Raises
        `SharedCatalogError` naming the server."""
        rated: list[int] = []
        self.publish(lambda writer: rated.append(writer.set_ratings(ratings, source)), "rating")
        return rated[0]

    def publish_plays(self, plays: list[tuple[int, int, float]], source: str) -> dict[int, int]:
        """Plays an import brought, to the shared catalog (`SharedCatalog.import_plays`);
        the plays added, by track id. Raises `SharedCatalogError` naming the server."""
        added: list[dict[int, int]] = []
        self.publish(lambda writer: added.append(writer.import_plays(plays, source)), "plays")
        return added[0]

    def publish_collection(self, name: str, rule: dict[str, Any] | None) -> bool:
        """Define (None: remove) a collection in the shared catalog; whether
        something changed. Raises `SharedCatalogError` naming the server."""
        changed: list[bool] = []
        self.publish(lambda writer: changed.append(writer.set_collection(name, rule)),
                     f"collection {name!r}")  # fmt: skip
        return changed[0]

    def queue_plays(self, plays: list[tuple[int, float]]) -> None:
        """Plays from the access log: queued, then sent by the plays thread."""
        self.plays.add(plays)

    def _send_plays(self) -> None:
        with SharedCatalog(self.address, self.credentials) as shared, self._session(shared):
            delay = 0.5
            while not self._stop.is_set():
                self.plays.wake.wait(1.0)
                self.plays.wake.clear()
                try:
                    sent = self.plays.send(shared)
                    delay = 0.5
                    self._worked("plays")
                except SharedCatalogUnavailable as exc:
                    log.debug("plays stay queued: %s", exc)
                    self._stop.wait(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if sent:
                    log.debug("sent %d plays to shared catalog %s", sent, self.address)
