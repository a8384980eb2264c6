"""Machines sharing one catalog on the test PostgreSQL (tests/servers/postgres.py):
each has its own connection to the shared catalog and its own SQLite replica,
as two computers mounting one library would. Used by the shared catalog's tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from musicfs.core.catalog.layout import Layout
from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.content.overlay import OverlayEditor
from musicfs.core.extensions import Extensions
from musicfs.core.model import FileStat, ScannedFile, TrackTags
from musicfs.core.mount.shared import SharedMount
from musicfs.core.origins.federation import Federation
from musicfs.core.secrets.credentials import Credentials
from musicfs.core.shared.feed import Applied, apply_changes, bootstrap
from musicfs.core.shared.store import SharedCatalog
from musicfs.core.supervise import Supervisor

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Call *probe* until it returns a true value; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def scanned(relpath: str, origin: str = "nas", *, size: int = 1000, **tags: Any) -> ScannedFile:
    """A file of *origin* as the scanner reports it, with these tags."""
    return ScannedFile(
        origin=origin,
        relpath=relpath,
        stat=FileStat(size=size, mtime_ns=1_700_000_000_000_000_000, ctime_ns=0),
        format=relpath.rpartition(".")[2],
        tags=TrackTags(**tags),
        audio_id=f"audio-{relpath}",
    )


class Machine:
    """One machine: its connection to the shared catalog and its SQLite replica
    (bootstrapped unless ``bootstrapped=False``)."""

    def __init__(
        self,
        url: str,
        path: Path,
        *,
        credentials: Credentials | None = None,
        bootstrapped: bool = True,
    ) -> None:
        self.shared = SharedCatalog.open(url, credentials)
        self.catalog = Catalog.open(path)
        if bootstrapped:
            bootstrap(self.catalog, self.shared)

    def follow(self) -> Applied:
        """Apply the changes since the last ones this machine applied."""
        return apply_changes(self.catalog, self.shared)

    def close(self) -> None:
        self.shared.close()
        self.catalog.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def overlay_editor(catalog: Catalog) -> OverlayEditor:
    """What a mount re-places applied changes with (the default template, no origins)."""
    layout = Layout(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))
    return OverlayEditor(catalog, layout, Federation({}), Extensions())


def shared_mount(url: str, catalog: Path, cache: Path, origins: list[str]) -> SharedMount:
    """A `SharedMount` of replica *catalog* scanning *origins* (its cache dir made)."""
    cache.mkdir(parents=True, exist_ok=True)
    return SharedMount(
        url,
        catalog,
        cache,
        origin_ids=lambda: list(origins),
        editor=overlay_editor,
        notify=lambda changes: None,
        took_over=lambda origin_id: None,
    )


def running(mount: SharedMount, scenario: Callable[[], None]) -> None:
    """Run *mount* (its threads and locks loop) while *scenario* runs in a thread."""

    async def run() -> None:
        try:
            async with trio.open_nursery() as nursery:
                mount.start(Supervisor(first=0.2, longest=0.5), nursery)
                try:
                    await trio.to_thread.run_sync(scenario)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            await trio.to_thread.run_sync(mount.stop)  # again, if the scenario failed first

    trio.run(run)
