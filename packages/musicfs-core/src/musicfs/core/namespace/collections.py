"""Smart collections (FR-15): ``/.collections/<name>/``, folders of symlinks to the
tracks that match a rule, always computed from the catalog as it is now.

Built in: ``recently-added``, ``recently-played`` and ``most-played`` (from the
access log). More are defined in the config file::

    [[collections]]
    name = "90s rock"
    genre = "Rock"
    year_from = 1990
    year_to = 1999
    # also: artist, albumartist, album, format, added_within_days,
    # played_within_days, min_plays, order ("artist", "year", "added",
    # "played", "plays"), limit (default 500)

`AccessLog` keeps the access log: it listens to ``file.opened`` events (its
own bounded queue: never slowing FUSE) and writes them to the catalog's
``plays`` table from one thread, at most one row per file and minute.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from musicfs.core.catalog.store import Catalog
from musicfs.core.config.collections import BUILTIN, Collection
from musicfs.core.events import EventBus, EventType
from musicfs.core.supervise import Supervisor

log = logging.getLogger(__name__)

_DEDUP_SECONDS = 60.0


def file_ids(catalog: Catalog, collection: Collection, now: float | None = None) -> list[int]:
    """The files of *collection*, in its order."""
    return catalog.collection_file_ids(collection, now)


class AccessLog:
    """Writes file opens to the catalog's ``plays`` table, from its own thread."""

    def __init__(
        self,
        catalog_path: str | Path,
        events: EventBus,
        sink: Callable[[list[tuple[int, float]]], None] | None = None,
    ) -> None:
        """*sink*: where the (file id, time) plays go instead of the catalog (a
        shared catalog's queue: the catalog gets them back through its feed)."""
        self.catalog_path = Path(catalog_path)
        self._sink = sink
        self._subscription = events.subscribe([EventType.FILE_OPENED], maxsize=10_000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="musicfs-access-log", daemon=True)
        self._last: dict[tuple[str, str], float] = {}
        self._supervisor: Supervisor | None = None

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Start the thread; with *supervisor*, a failure (the catalog cannot be
        opened) is counted and shown by status, and the loop starts again later."""
        self._supervisor = supervisor
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        self._subscription.close()

    def _run(self) -> None:
        if self._supervisor is not None:
            self._supervisor.run_thread("access log", self._loop, self._stop)
        else:
            self._loop()

    def _loop(self) -> None:
        with Catalog.open(self.catalog_path) as catalog:
            if self._supervisor is not None:
                self._supervisor.ok("access log")
            while not self._stop.is_set():
                event = self._subscription.get(timeout=0.5)
                if event is None:
                    continue
                batch = [event]
                while len(batch) < 500 and (more := self._subscription.get(timeout=0)):
                    batch.append(more)
                try:
                    self._write(catalog, [(e.origin, e.path, e.time) for e in batch])
                except Exception as exc:  # the log is a nicety: never take anything down
                    if self._supervisor is None:
                        log.exception("could not write the access log")
                    else:  # counted and shown by status; these plays are lost
                        self._supervisor.failed("access log", exc, lasting=False)

    def _write(self, catalog: Catalog, opens: Sequence[tuple[str, str, float]]) -> None:
        rows = []
        for origin, relpath, at in opens:
            if at - self._last.get((origin, relpath), 0.0) < _DEDUP_SECONDS:
                continue
            self._last[(origin, relpath)] = at
            file_id = catalog.file_id_at(origin, relpath)
            if file_id is not None:
                rows.append((file_id, at))
        if rows and self._sink is not None:
            self._sink(rows)
        elif rows:
            with catalog.transaction():
                catalog.record_plays(rows)


def all_collections(configured: Iterable[Collection]) -> dict[str, Collection]:
    return {c.name: c for c in (*BUILTIN, *configured)}
