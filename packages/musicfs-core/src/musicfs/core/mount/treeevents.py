"""``tree.changed`` events: which folders of the mount changed, by path.

Every change of the tree (a scan's or a watch's batch, an override, a rebuilt
layout, cover files that appeared) reaches `MusicFS.notify_tree_changes` as
`TreeChange`s of node ids. `TreeEvents.offer` takes them from any thread and
only files the folder ids in a set: no query, no waiting, so the thread that
changed the tree (or the FUSE thread) is never held up. A thread of its own
wakes, takes every folder offered since it last looked (one batch: a folder
named by many changes is one event), resolves their paths with a read-only
connection of the catalog and publishes one ``tree.changed`` event per folder,
``path`` = its path relative to the mountpoint ("" for the root).

Which folder a change names:

- ADDED / REMOVED: the folder it was added to or removed from (its listing
  changed). A folder that is gone by the time it is resolved is skipped: its
  removal is itself a REMOVED change naming its parent.
- CHANGED of a file: the file's folder (the file's content or attributes
  changed, e.g. an override wrote a new header).
- CHANGED of a folder as its own parent (``node == parent``): that folder's
  listing changed (cover files appeared, the whole tree was rebuilt).
- CHANGED of any other folder: its mtime moved because its listing changed,
  which another change of the same batch already names; skipped.

Bounded: past `MAX_PENDING` folders waiting, the batch becomes the root alone
(everything may have changed). Nothing is resolved while no one subscribes to
``tree.changed`` (the common case costs a set insert per change).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from musicfs.core.catalog.layout import ChangeKind, TreeChange
from musicfs.core.catalog.store import ROOT_NODE, Catalog, CatalogError
from musicfs.core.events import EventBus, EventType
from musicfs.core.supervise import Supervisor

log = logging.getLogger(__name__)

#: Folders that may wait to be resolved; past this the batch is "the root".
MAX_PENDING = 10_000
#: How long the thread waits for changes before it looks whether it should stop.
POLL_INTERVAL = 0.5
#: The supervisor's name of the thread.
TASK = "tree events"


class TreeEvents:
    """Turns `TreeChange`s into ``tree.changed`` events, off the caller's thread."""

    def __init__(self, catalog_path: Path, events: EventBus) -> None:
        self.catalog_path = catalog_path
        self.events = events
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._folders: set[int] = set()  # listings that changed
        self._files: set[tuple[int, int]] = set()  # (folder, node) CHANGED: file or folder?
        self._overflow = False
        self._thread: threading.Thread | None = None
        self._supervisor: Supervisor | None = None

    # -- any thread ---------------------------------------------------------------------

    def offer(self, changes: Sequence[TreeChange]) -> None:
        """Note the folders *changes* touched; never blocks (beyond a set insert)."""
        if not changes or not self.events.wanted(EventType.TREE_CHANGED):
            return
        with self._lock:
            for change in changes:
                if change.kind is not ChangeKind.CHANGED or change.node == change.parent:
                    self._folders.add(change.parent)
                else:
                    self._files.add((change.parent, change.node))
            if len(self._folders) + len(self._files) > MAX_PENDING:
                self._overflow = True
                self._folders.clear()
                self._files.clear()
        self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Start the thread; with *supervisor*, a failure is counted and shown by
        status, and the thread starts again later."""
        self._supervisor = supervisor
        self._thread = threading.Thread(target=self._run, name="musicfs-tree-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Publish what is pending, then end the thread (waiting at most *timeout* s)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        if self._supervisor is not None:
            self._supervisor.run_thread(TASK, self._loop, self._stop)
        else:
            self._loop()

    def _loop(self) -> None:
        with Catalog.open(self.catalog_path, readonly=True) as catalog:
            if self._supervisor is not None:
                self._supervisor.ok(TASK)
            while True:
                self._wake.wait(POLL_INTERVAL)
                self._wake.clear()
                self.publish_pending(catalog)
                if self._stop.is_set():
                    return

    def publish_pending(self, catalog: Catalog) -> int:
        """Resolve the folders offered so far and publish one event each; how many."""
        with self._lock:
            folders, self._folders = self._folders, set()
            files, self._files = self._files, set()
            overflow, self._overflow = self._overflow, False
        if overflow:
            folders = {ROOT_NODE}
        else:
            for parent, node_id in files:
                if parent in folders:
                    continue
                node = catalog.node(node_id)
                if node is not None and not node.is_dir:
                    folders.add(parent)
        paths = set()
        for folder in folders:
            try:
                paths.add(catalog.path_of(folder))
            except KeyError:  # gone since: its removal names its parent
                continue
            except (CatalogError, sqlite3.Error) as exc:
                log.warning("cannot tell which folder %d is (%s); naming the root", folder, exc)
                paths = {""}
                break
        for path in sorted(paths):
            self.events.publish(EventType.TREE_CHANGED, path=path)
        return len(paths)
