"""Building a mount's parts from its `Config`, and the checks made before mounting.

`MusicFS` (`musicfs.core.mount.service`) calls these in order: check the
mountpoint, build the origins and their federation, check the catalog, then,
once serving, the content cache and the FUSE handlers over the `Library`.
`Lifecycle` is the little every part of a running mount shares: its settings,
its state, and the way into the trio thread.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import logging
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from musicfs.core.catalog.layout import ChangeKind, Layout, TreeChange
from musicfs.core.catalog.store import Catalog, CatalogError, Track, damaged, first_problem
from musicfs.core.config.settings import Config
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.library import Library
from musicfs.core.content.overlay import OverlayEditor
from musicfs.core.errors import MusicFSError
from musicfs.core.events import EventBus
from musicfs.core.extensions import Extensions
from musicfs.core.fuse.fs import MusicFSOperations
from musicfs.core.mount.origins import build_origin, limits_of
from musicfs.core.origins.base import Origin
from musicfs.core.origins.federation import Federation, Health
from musicfs.core.secrets.credentials import CredentialError, Credentials
from musicfs.core.supervise import Supervisor

if TYPE_CHECKING:
    from musicfs.core.namespace.coverfiles import CoverFiles

log = logging.getLogger(__name__)

# The catalog's pages are checked before mounting when the file is at most this
# big (SQLite's quick_check reads it all: 80,000 tracks, 63 MiB, take 0.07-0.13 s
# from the page cache; 1,000,000 tracks 1.3-1.9 s), for at most CHECK_BUDGET
# seconds (a cold, slow disk). A bigger catalog, or the rest, is checked after
# mounting, while it serves: mounting stays O(1) in the library size (FR-1).
CHECK_BEFORE_MOUNT = 64 * 2**20
CHECK_BUDGET = 1.0


class MountState(enum.Enum):
    MOUNTING = "MOUNTING"
    READY = "READY"
    SYNCING = "SYNCING"
    DEGRADED = "DEGRADED"
    UNMOUNTING = "UNMOUNTING"


def shown_state(state: MountState, online: Iterable[bool], *, failing: bool = False) -> MountState:
    """The state to report: an origin known to be offline, or a background task
    failing right now (*failing*), makes a serving mount DEGRADED at once,
    whatever a scan is doing (it may go on for a while against an origin that
    stopped answering)."""
    serving = state in (MountState.READY, MountState.SYNCING)
    return MountState.DEGRADED if serving and (failing or not all(online)) else state


class StartupError(MusicFSError, RuntimeError):
    """The mount cannot start; the message says why and what to do.

    *refused*: because of what it was given (mountpoint, origins, configuration),
    which the user fixes (exit status 2); false for a failure of the machine,
    e.g. FUSE itself (exit status 1). See `musicfs.core.exitcodes`.
    """

    def __init__(self, message: str, *, refused: bool = True) -> None:
        super().__init__(message)
        self.refused = refused


def version() -> str:
    from importlib import metadata  # ~20 ms: not on the way to a mounted root

    try:
        return metadata.version("musicfs-core")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


class Lifecycle:
    """What every part of one running mount shares: its settings (`config`, which
    the control API may replace while mounted), its `state`, whether it is
    `stopping`, and the token into its trio thread (set when it serves)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = MountState.MOUNTING
        self.started = time.time()
        self.stopping = False
        self.token: trio.lowlevel.TrioToken | None = None

    def call_soon(self, function: Callable[..., None], *args: Any) -> None:
        """Run *function* in the trio thread (from any other thread); nothing
        before the mount serves or once it stops."""
        if self.token is None or self.stopping:
            return
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(function, *args, trio_token=self.token)

    def in_trio(self, function: Callable[..., None], *args: Any) -> None:
        """Run *function* in the trio thread, from any thread, trio's own too."""
        if self.token is None or self.stopping:
            return
        try:
            trio.from_thread.run_sync(function, *args, trio_token=self.token)
        except RuntimeError:  # already in the trio thread
            function(*args)


def check_mountpoint(mountpoint: Path) -> None:
    """Refuse an unusable mountpoint; clear a dead one left by a killed daemon."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            log.warning("%s is a dead FUSE mount (daemon killed?); clearing it", mountpoint)
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
            return check_mountpoint(mountpoint)
        if exc.errno == errno.ENOENT:
            raise StartupError(
                f"mountpoint {mountpoint} does not exist; create it with: mkdir -p {mountpoint}"
            ) from None
        raise StartupError(f"mountpoint {mountpoint}: {exc.strerror}") from None
    if not os.path.isdir(mountpoint):
        raise StartupError(f"mountpoint {mountpoint} is not a directory")
    if os.path.ismount(mountpoint) and mountpoint != Path("/"):
        raise StartupError(
            f"{mountpoint} is already a mount point; if MusicFS is mounted there, "
            f"run: musicfs unmount {mountpoint}"
        )


def check_catalog(catalog: Catalog, max_bytes: int, budget: float) -> bool:
    """Check the pages of a catalog file of at most *max_bytes* for damage, for
    up to *budget* seconds: True when all were checked and sound, False when it is
    bigger or time ran out (then check it after mounting). Raises `CatalogError`
    (with the fix) for a damaged one: mounting it would answer from broken pages
    and stop at the first scan (issue 13.4)."""
    try:
        size = os.path.getsize(catalog.path)
    except OSError:
        size = 0
    if size > max_bytes:
        return False
    verdict = catalog.quick_check(budget)
    if verdict is None:
        log.info("catalog %s: not checked within %.1f s; checking it after mounting",
                 catalog.path, budget)  # fmt: skip
        return False
    if verdict != "ok":
        problem = f"catalog {catalog.path} is damaged ({first_problem(verdict)})"
        raise CatalogError(damaged(problem, certain=True))
    return True


async def check_catalog_later(life: Lifecycle, catalog_path: Path, supervisor: Supervisor) -> None:
    """Finish the check of a catalog too big to check before mounting. A
    damaged one is logged and shown by ``musicfs status`` (state DEGRADED, the
    fix in its "catalog check" entry); what can still be read is served."""

    def check() -> str | None:
        with Catalog.open(catalog_path, readonly=True) as catalog:
            return catalog.quick_check(stop=lambda: life.stopping)

    started = time.monotonic()
    try:
        verdict = await trio.to_thread.run_sync(check)
    except CatalogError as exc:
        verdict = str(exc)
    if verdict is None:  # unmounting
        return
    if verdict != "ok":
        problem = f"catalog {catalog_path} is damaged ({first_problem(verdict)})"
        supervisor.failed("catalog check", CatalogError(damaged(problem, certain=True)))
        return
    log.info("catalog checked: no damage (%.1f s)", time.monotonic() - started)


def set_read_ahead(device: int, kib: int) -> None:
    """Let the kernel read ahead *kib* KiB on this mount (0: leave its default).

    FUSE reads arrive in requests of at most the read-ahead size (128 KiB by
    default); 1 MiB requests make a sequential first read several times faster
    in a Python daemon. Needs root; otherwise the default stays.
    """
    if kib <= 0:
        return
    path = f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb"
    try:
        with open(path, "w") as fh:
            fh.write(str(kib))
    except OSError as exc:
        log.info("could not set read-ahead to %d KiB (%s); keeping the default", kib, exc)


def build_origins(
    config: Config,
    extensions: Extensions,
    on_health: Callable[[str, Health], None] | None = None,
) -> tuple[dict[str, Origin], Federation]:
    """The configured origins, by priority, and the federation over them
    (nothing is contacted yet). Raises `StartupError` with the fix."""
    try:
        credentials = Credentials.load()
    except CredentialError as exc:
        raise StartupError(str(exc)) from None
    ordered = sorted(config.origins, key=lambda o: o.priority)
    try:
        origins = {o.id: build_origin(o, credentials, extensions) for o in ordered}
    except (ImportError, ValueError, OSError) as exc:
        raise StartupError(f"cannot set up the origins: {exc}") from None
    for origin in origins.values():
        origin.include_hidden = config.scan.include_hidden  # [scan] include_hidden
    federation = Federation(origins, {o.id: limits_of(o) for o in ordered}, on_health=on_health)
    return origins, federation


def open_content(config: Config, cache_dir: Path, events: EventBus) -> ContentCache | None:
    """The content cache of a mount; None with ``[cache] mode = "passthrough"``."""
    if config.cache.mode != "full":
        return None
    return ContentCache(cache_dir / "content", config.cache.limit, events)


def build_operations(
    config: Config,
    catalog: Catalog,
    federation: Federation,
    content: ContentCache | None,
    events: EventBus,
    *,
    on_stale: Callable[[Track], None],
    on_fill: Callable[[Track], None],
    prefetch_hint: Callable[[int], None] | None,
) -> MusicFSOperations:
    """The FUSE handlers over the `Library` that reads *catalog* and the origins."""
    library = Library(
        catalog,
        federation,
        on_stale=on_stale,
        content=content,
        on_fill=on_fill,
        events=events,
    )
    return MusicFSOperations(
        library,
        entry_timeout=config.mount.entry_timeout,
        attr_timeout=config.mount.attr_timeout,
        collections=config.collections,
        prefetch_hint=prefetch_hint,
    )


def overlay_editor(
    catalog: Catalog,
    config: Config,
    federation: Federation,
    extensions: Extensions,
    layout: Layout | None = None,
) -> OverlayEditor:
    """Makes and refreshes the overlays (tag overrides) of files in *catalog*;
    *layout*: the one placing them (a new one of *config* when not given)."""
    if layout is None:
        layout = Layout(catalog, config.path_template, skip_unreadable=config.scan.skip_unreadable)
    return OverlayEditor(catalog, layout, federation, extensions)


def cover_files(
    cache_dir: Path,
    catalog_path: Path,
    federation: Federation,
    supervisor: Supervisor,
    notify: Callable[[list[TreeChange]], None],
) -> CoverFiles:
    """The cover files of a mount (blocking: it opens the cover store's index).
    *notify* makes the kernel forget what a folder's new covers made stale."""
    from musicfs.core.art.covers import CoverStore
    from musicfs.core.namespace.coverfiles import CoverFiles

    def found(folder: int) -> None:
        """Cover files appeared in *folder* (a cover worker thread): its listing
        changed, so its mtime moves forward (media servers look again) and the
        kernel and L1 forget its listing and attributes."""
        changes = [TreeChange(ChangeKind.CHANGED, folder, "", folder)]
        try:
            with Catalog.open(catalog_path) as catalog, catalog.transaction():
                catalog.touch_dir(folder, time.time_ns())
                node = catalog.node(folder)
        except (CatalogError, sqlite3.Error) as exc:
            log.warning("folder %d has covers, but its mtime stays: %s", folder, exc)
            node = None
        if node is not None:
            changes.append(TreeChange(ChangeKind.CHANGED, node.parent, node.name, node.id))
        notify(changes)

    return CoverFiles(
        CoverStore(cache_dir / "covers", federation),
        catalog_path,
        on_found=found,
        on_error=functools.partial(supervisor.failed, "covers", lasting=False),
    )
