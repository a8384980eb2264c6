"""Manual prefetch hints: listing a folder of ``/.prefetch`` copies the files at
or below it into the content cache, in the background, one at a time.

The FUSE layer calls `PrefetchHints.hint` (trio thread; it must not block); the
copies run in one worker thread through `FillQueue.copy_to_cache`. At most
`MAX_HINTS` folders wait at once; a folder already waiting is not queued twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from musicfs.core.catalog.store import Catalog, Track
from musicfs.core.mount.assembly import Lifecycle
from musicfs.core.supervise import Supervisor

log = logging.getLogger(__name__)

MAX_HINTS = 16  # /.prefetch folders waiting to be copied at once


class PrefetchHints:
    """The ``/.prefetch`` executor of one mount."""

    def __init__(
        self,
        life: Lifecycle,
        catalog_path: Path,
        copy: Callable[[Track], int],
        supervisor: Supervisor,
    ) -> None:
        """*copy*: copies one file into the cache (`FillQueue.copy_to_cache`)."""
        self.life = life
        self.catalog_path = catalog_path
        self.copy = copy
        self.supervisor = supervisor
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="musicfs-hint")
        self._lock = threading.Lock()
        self._hinted: set[int] = set()

    def hint(self, node_id: int) -> None:
        """Copy the files at or below tree node *node_id* into the cache, in the
        background, one at a time (a manual hint: a folder of /.prefetch listed)."""
        with self._lock:
            if node_id in self._hinted or len(self._hinted) >= MAX_HINTS:
                return
            self._hinted.add(node_id)
        self._executor.submit(self._copy_under, node_id)

    def _copy_under(self, node_id: int) -> None:
        try:
            with Catalog.open(self.catalog_path, readonly=True) as catalog:
                tracks = [t for f in catalog.file_ids_under(node_id) if (t := catalog.track(f))]
            log.info("prefetch hint: copying %d files into the cache", len(tracks))
            for track in tracks:
                if self.life.stopping:
                    return
                try:
                    self.copy(track)
                except OSError as exc:
                    log.info("prefetch hint: %s/%s: %s", track.origin, track.relpath, exc)
        except Exception as exc:  # counted and shown by status, never silent
            self.supervisor.failed("prefetch hint", exc, lasting=False)
        finally:
            with self._lock:
                self._hinted.discard(node_id)

    def close(self) -> None:
        """Drop the hints still waiting; a copy in progress stops at its next file."""
        self._executor.shutdown(wait=False, cancel_futures=True)
