"""The change feed: how a machine's SQLite catalog follows the shared catalog.

Every write to the shared catalog records its changes (`store.Change`) under a
sequence number that grows in commit order. A replica remembers which shared
catalog it follows and the last sequence number it applied
(`musicfs.core.catalog.replica`); `apply_changes` reads the changes after it
and applies them through the catalog's named methods, all of one batch and
the new sequence number in one SQLite transaction. It returns what changed
(`Applied`: file ids), so the mount can re-place those tracks and invalidate
the kernel's entries. `Listener.wait_for_notify` sleeps until a write is
notified (LISTEN musicfs_changes), so a change reaches a mount at once
without polling. `Follower` is the loop a mount runs in a thread of its own:
copy if new, apply when woken (and every `Follower.poll` seconds anyway), and
through an outage keep the replica as it is, say so (`FollowerState`), retry
with backoff and catch up when the server is back.

A new replica starts with `bootstrap`: one consistent snapshot of the shared
catalog (REPEATABLE READ), copied in batches through server-side cursors; the
applied sequence number becomes the last one the snapshot saw, so the feed
takes over exactly where the copy ended. A bootstrap that was cut short starts
over (what it had copied is kept and overwritten).

    writer ──one transaction──▶ PostgreSQL: tables + changes(seq) + NOTIFY
                                     │ LISTEN wakes      │ changes after seq
                                     ▼                   ▼
                       Listener.wait_for_notify ──▶ apply_changes ──▶ SQLite replica
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from musicfs.core.catalog.rows import join_relpath
from musicfs.core.catalog.store import Catalog
from musicfs.core.model import TAG_FIELDS, FileStat, ScannedFile, TrackTags
from musicfs.core.secrets.credentials import Credentials
from musicfs.core.shared import schema
from musicfs.core.shared.connect import (
    CONNECT_TIMEOUT,
    ServerAddress,
    connect,
    interrupt,
    unavailable,
)
from musicfs.core.shared.errors import (
    ReplicaBehind,
    SharedCatalogError,
    SharedCatalogUnavailable,
)
from musicfs.core.shared.store import Change, SharedCatalog

log = logging.getLogger(__name__)

#: Changes applied per SQLite transaction.
BATCH = 5000


@dataclass(slots=True)
class Applied:
    """What one `apply_changes` did to the replica, by file id."""

    last_seq: int
    tracks: set[int] = field(default_factory=set)  # added or changed rows
    removed: set[int] = field(default_factory=set)  # rows gone
    overrides: set[int] = field(default_factory=set)  # overrides set or cleared
    played: set[int] = field(default_factory=set)  # plays added
    rated: set[int] = field(default_factory=set)  # ratings set or cleared
    pins: bool = False  # the pin set changed (requests, or the tracks they pin)
    collections: bool = False  # a collection was defined, changed or removed
    changes: int = 0  # how many changes were applied
    # The replica was copied (a new one, or one behind a pruned feed) before these
    # changes: every track is new to it, and its copied overrides were not
    # reported one by one.
    copied: bool = False

    @property
    def changed(self) -> set[int]:
        """Every file whose entry in the tree may show something new."""
        return self.tracks | self.removed | self.overrides | self.played


def track_from_row(row: Mapping[str, Any]) -> tuple[ScannedFile, float]:
    """A ``tracks`` row (or a track change's payload) as a scanned file and its scan time."""
    tags = TrackTags(**{name: row[name] for name in TAG_FIELDS})
    scanned = ScannedFile(
        origin=row["origin"],
        relpath=join_relpath(row["reldir"], row["name"]),
        stat=FileStat(int(row["size"]), int(row["mtime_ns"]), int(row["ctime_ns"])),
        format=row["format"],
        tags=tags,
        error=row["error"],
        audio_id=row["audio_id"],
    )
    return scanned, float(row["scanned_at"])


def _check_follows(catalog: Catalog, shared: SharedCatalog) -> int:
    """The last sequence number *catalog* applied of *shared*; raises if it
    follows another catalog or was never copied."""
    catalog_id, applied, bootstrapping = catalog.replica_state()
    if catalog_id is None or bootstrapping:
        raise SharedCatalogError(
            f"catalog {catalog.path} is not a replica of shared catalog {shared.address} yet; "
            "bootstrap it first (its first mount copies the shared catalog)"
        )
    if catalog_id != shared.catalog_id:
        raise SharedCatalogError(
            f"catalog {catalog.path} is a replica of another shared catalog (id {catalog_id}, "
            f"{shared.address} has id {shared.catalog_id}); move it away: the next mount "
            "copies the shared catalog again"
        )
    return applied


def apply_changes(
    catalog: Catalog, shared: SharedCatalog, after_seq: int | None = None, *, batch: int = BATCH
) -> Applied:
    """Apply every change past *after_seq* (default: the last one *catalog*
    applied) to *catalog*; return what changed."""
    applied = _check_follows(catalog, shared)
    result = Applied(applied if after_seq is None else after_seq)
    while True:
        changes = shared.changes_after(result.last_seq, batch)
        if not changes:
            return result
        with catalog.transaction():
            for change in changes:
                _apply(catalog, change, result)
            catalog.set_replica_state(shared.catalog_id, changes[-1].seq)
        result.last_seq = changes[-1].seq
        result.changes += len(changes)
        if len(changes) < batch:
            return result


def _apply_global(catalog: Catalog, change: Change, result: Applied) -> bool:
    """Apply a change that names no one track (pins, collections); False if
    *change* is not one of those."""
    payload = change.payload
    if change.kind == "pin_request":
        request = int(payload["id"])
        catalog.replicate_pin_request(request, payload["kind"], payload["value"], payload["at"])
        present = catalog.file_sizes(int(f) for f in payload.get("files", []))
        catalog.set_pinned(request, present)
        result.pins = True
    elif change.kind == "pin_dropped":
        catalog.drop_pin_request(int(payload["id"]))
        result.pins = True
    elif change.kind == "playlist":
        entries = [(e[0], str(e[1])) for e in payload.get("entries", [])]
        present = catalog.file_sizes(f for f, _ in entries if f is not None)
        kept = [(f if f in present else None, text) for f, text in entries]
        catalog.replace_playlist(str(payload["name"]), str(payload["source"]), kept)
    elif change.kind == "collection":
        rule = payload.get("rule")
        catalog.set_shared_collection(str(payload["name"]), None if rule is None else dict(rule))
        result.collections = True
    else:
        return False
    return True


def _apply(catalog: Catalog, change: Change, result: Applied) -> None:
    file_id = change.track_id
    if _apply_global(catalog, change, result):
        return
    if file_id is None:
        log.debug("change %d (%s) names no track; skipped", change.seq, change.kind)
        return
    if change.kind == "track":
        scanned, scanned_at = track_from_row(change.payload)
        stale = catalog.replicate_file(file_id, scanned, scanned_at)
        result.tracks.add(file_id)
        result.removed.discard(file_id)
        if stale is not None:
            result.removed.add(stale)
    elif change.kind == "track_removed":
        catalog.delete_file(file_id)
        result.removed.add(file_id)
        result.tracks.discard(file_id)
    elif catalog.origin_of(file_id) is None:
        # A change of a track this replica does not have: it was removed later
        # in the feed, or the row never arrived (a bug); nothing to attach it to.
        log.debug("change %d (%s) of unknown track %d skipped", change.seq, change.kind, file_id)
    elif change.kind == "overrides":
        set_fields = change.payload.get("set") or {}
        if set_fields:
            catalog.set_overrides(file_id, set_fields, str(change.payload.get("source", "user")))
        cleared = change.payload.get("clear") or []
        if cleared:
            catalog.clear_overrides(file_id, cleared)
        result.overrides.add(file_id)
    elif change.kind == "plays":
        catalog.record_plays([(file_id, float(at)) for at in change.payload.get("at", [])])
        result.played.add(file_id)
    elif change.kind == "ratings":
        value = change.payload.get("value")
        catalog.set_rating(file_id, None if value is None else int(value),
                           str(change.payload.get("source", "")))  # fmt: skip
        result.rated.add(file_id)
    elif change.kind == "imported_plays":
        payload = change.payload
        catalog.set_imported_plays(file_id, str(payload["source"]), int(payload["count"]))
    elif change.kind == "moves":
        catalog.set_moves(file_id, change.payload.get("moves", []))
    elif change.kind == "pins":
        catalog.add_pins(file_id, [int(r) for r in change.payload.get("requests", [])])
        result.pins = True
    else:  # a kind of a newer MusicFS: its schema check refuses that server first
        log.warning("change %d has unknown kind %r; skipped", change.seq, change.kind)


def bootstrap(
    catalog: Catalog,
    shared: SharedCatalog,
    *,
    batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Copy the whole shared catalog into *catalog* (a new replica); return how
    many tracks were copied. *progress* is called with the count after each batch."""
    catalog_id, _, bootstrapping = catalog.replica_state()
    if catalog_id is None and not bootstrapping and catalog.has_user_data():
        raise SharedCatalogError(
            f"catalog {catalog.path} holds overrides or plays of its own, which a copy of "
            f"shared catalog {shared.address} would replace; move the catalog away first"
        )
    with catalog.transaction():
        if catalog_id is None and not bootstrapping:
            # Rows of a scan this machine made on its own: their ids are its own
            # and name other tracks in the shared catalog, whose ids the copy
            # takes. Dropped with what hangs on them and the tree made of them,
            # so that no entry or rating of one song lands on another; the
            # mount places every copied track anew.
            catalog.forget_files()
            catalog.clear_tree()
        catalog.begin_bootstrap(shared.catalog_id)
        catalog.clear_user_data()
    leftover = set(catalog.file_ids())  # rows of an earlier copy, or of a local scan
    copied = 0
    with shared.snapshot() as snapshot:
        for rows in snapshot.tracks(batch):
            with catalog.transaction():
                for row in rows:
                    scanned, scanned_at = track_from_row(row)
                    catalog.replicate_file(int(row["id"]), scanned, scanned_at)
                    leftover.discard(int(row["id"]))
            copied += len(rows)
            if progress is not None:
                progress(copied)
        with catalog.transaction():
            for file_id in sorted(leftover):
                catalog.delete_file(file_id)
        for rows in snapshot.overrides(batch):
            by_file: dict[tuple[int, str], dict[str, str | None]] = {}
            for row in rows:
                by_file.setdefault((int(row["file_id"]), row["source"]), {})[row["field"]] = row[
                    "value"
                ]
            with catalog.transaction():
                for (file_id, source), fields in by_file.items():
                    catalog.set_overrides(file_id, fields, source)
        for rows in snapshot.plays(batch):
            with catalog.transaction():
                catalog.record_plays([(int(r["file_id"]), float(r["at"])) for r in rows])
        for rows in snapshot.ratings(batch):
            with catalog.transaction():
                for r in rows:
                    catalog.set_rating(int(r["file_id"]), int(r["value"]), r["source"])
        for rows in snapshot.imported_plays(batch):
            with catalog.transaction():
                for r in rows:
                    catalog.set_imported_plays(int(r["file_id"]), r["source"], int(r["count"]))
        for rows in snapshot.moves(batch):
            with catalog.transaction():
                for r in rows:
                    catalog.set_moves(int(r["file_id"]), [(r["origin"], r["relpath"], r["at"])])
        with catalog.transaction():
            for r in snapshot.pin_requests():
                catalog.replicate_pin_request(int(r["id"]), r["kind"], r["value"], r["at"])
                catalog.set_pinned(int(r["id"]), [int(f) for f in r["files"]])
            for r in snapshot.playlists():
                entries = [(e[0], str(e[1])) for e in r["entries"]]
                present = catalog.file_sizes(f for f, _ in entries if f is not None)
                kept = [(f if f in present else None, text) for f, text in entries]
                catalog.replace_playlist(str(r["name"]), str(r["source"]), kept)
            for r in snapshot.collections():
                catalog.set_shared_collection(str(r["name"]), dict(r["rule"]))
        with catalog.transaction():
            catalog.set_replica_state(shared.catalog_id, snapshot.seq)
    log.info("copied %d tracks of shared catalog %s (up to change %d)",
             copied, shared.address, snapshot.seq)  # fmt: skip
    return copied


class Replica:
    """A SQLite catalog following a shared catalog: bootstrap once, then apply changes."""

    def __init__(
        self,
        catalog: Catalog,
        shared: SharedCatalog,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """*progress*: called with the count of tracks copied after each batch of
        a copy (a mount places them in its tree as they arrive)."""
        self.catalog = catalog
        self.shared = shared
        self.progress = progress

    @property
    def applied_seq(self) -> int:
        return self.catalog.replica_state()[1]

    def needs_bootstrap(self) -> bool:
        catalog_id, _, bootstrapping = self.catalog.replica_state()
        return catalog_id is None or bootstrapping

    def sync(self) -> Applied:
        """Bootstrap if this is a new replica (or one so far behind that the
        changes it needs were pruned), then apply every change since. After a
        copy, `Applied.copied` says so (the changes after it are reported
        as usual)."""
        if self.needs_bootstrap():
            bootstrap(self.catalog, self.shared, progress=self.progress)
            applied = apply_changes(self.catalog, self.shared)
            applied.copied = True
            return applied
        try:
            return apply_changes(self.catalog, self.shared)
        except ReplicaBehind as exc:
            log.warning("%s", exc)
            before = set(self.catalog.file_ids())
            bootstrap(self.catalog, self.shared, progress=self.progress)
            applied = apply_changes(self.catalog, self.shared)
            after = set(self.catalog.file_ids())
            applied.tracks.update(after)  # any of them may have changed
            applied.removed.update(before - after)
            applied.copied = True  # handed on even when no change follows the copy
            return applied


class Listener:
    """A connection that LISTENs for the shared catalog's writes."""

    def __init__(
        self,
        address: ServerAddress,
        credentials: Credentials | None = None,
        *,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.address = address
        self.credentials = credentials
        self.timeout = timeout
        self._conn: psycopg.Connection[Any] | None = None

    def wait_for_notify(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for a write; True if one was notified,
        or if the connection was (re)made (changes may have come meanwhile)."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            conn = connect(self.address, self.credentials, autocommit=True, timeout=self.timeout)
            try:
                conn.execute(f"LISTEN {schema.CHANNEL}".encode())
            except psycopg.Error as exc:
                conn.close()
                raise unavailable(self.address, exc) from None
            self._conn = conn
            return True
        try:
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                return True
        except psycopg.Error as exc:
            self.close()
            raise unavailable(self.address, exc) from None
        return False

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def interrupt(self) -> None:
        """End a wait another thread is in on a server gone silent (the mount is going)."""
        interrupt(self._conn)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(slots=True)
class FollowerState:
    """How a replica follows its shared catalog (for ``musicfs status``)."""

    healthy: bool = False  # the last attempt reached the server
    applied_seq: int = 0
    error: str = ""  # why not, when not healthy
    since: float = field(default_factory=time.time)  # when *healthy* last changed


class Follower:
    """Keeps one replica up to date until stopped (`run`, in a thread of its own).

    *catalog* must be a connection of that thread's own. *on_applied* gets what
    each round changed (to re-place tracks, invalidate kernel entries), and the
    round that copied a new replica; ``replica.progress`` gets the count of tracks a copy has made;
    *on_state* gets the state whenever it changes (healthy or not, and why).
    """

    def __init__(
        self,
        catalog: Catalog,
        shared: SharedCatalog,
        listener: Listener,
        *,
        on_applied: Callable[[Applied], None] | None = None,
        on_state: Callable[[FollowerState], None] | None = None,
        poll: float = 30.0,
        retry: float = 0.5,
        max_retry: float = 30.0,
    ) -> None:
        self.replica = Replica(catalog, shared)
        self.listener = listener
        self.on_applied = on_applied
        self.on_state = on_state
        self.poll = poll
        self.retry = retry
        self.max_retry = max_retry
        self.state = FollowerState()

    def run(self, stop: threading.Event) -> None:
        """Follow until *stop* is set (checked at least every half second)."""
        delay = self.retry
        due = 0.0  # when to apply even without a notification
        while not stop.is_set():
            try:
                if time.monotonic() >= due or self.listener.wait_for_notify(0.5):
                    applied = self.replica.sync()
                    due = time.monotonic() + self.poll
                    self._set(True, "", applied.last_seq)
                    if (applied.changes or applied.copied) and self.on_applied is not None:
                        self.on_applied(applied)
                    delay = self.retry
            except SharedCatalogUnavailable as exc:
                self._set(False, str(exc), self.state.applied_seq)
                due = 0.0  # look again as soon as the server answers
                stop.wait(delay)
                delay = min(delay * 2, self.max_retry)
            except SharedCatalogError as exc:  # no waiting fixes this one: say why, end
                self._set(False, str(exc), self.state.applied_seq)
                raise

    def _set(self, healthy: bool, error: str, applied_seq: int) -> None:
        changed = healthy != self.state.healthy or error != self.state.error
        since = time.time() if healthy != self.state.healthy else self.state.since
        self.state = FollowerState(healthy, applied_seq, error, since)
        if changed:
            if healthy:
                log.info("shared catalog %s: following (change %d)", self.replica.shared.address,
                         applied_seq)  # fmt: skip
            else:
                log.warning("%s", error)
            if self.on_state is not None:
                self.on_state(self.state)
