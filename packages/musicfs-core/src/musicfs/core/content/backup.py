"""Backup and restore of a mount's catalog and content cache (FR-25.4).

A backup is a tar file: consistent snapshots of the SQLite databases (taken
with SQLite's online backup API, so a running daemon need not stop) and the
chunk store's pack files (append-only: a pack grows after the snapshot, or
a chunk evicted since reads back as zeros). Restoring refuses a cache dir
that a daemon is using, unpacks next to it, checks what it unpacked (the
catalog's integrity, and every chunk against its hash: a damaged one is
dropped with the cached files that need it), and only then swaps it in, in
one step (``renameat2`` with ``RENAME_EXCHANGE``): a failed or killed restore
leaves the old cache as it was, and what a killed one unpacked is removed by
the next.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from musicfs.core.catalog.store import Catalog, CatalogError
from musicfs.core.config.paths import CacheDirLock
from musicfs.core.content.cache import ContentCache
from musicfs.core.errors import MusicFSError

log = logging.getLogger(__name__)

FORMAT = 1
_INDEX = "content/chunks/index.sqlite3"
_DATABASES = ("catalog.sqlite3", "content/manifests.sqlite3", _INDEX)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically; False where the kernel or filesystem cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # a C library without it
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code), str(b))


class BackupError(MusicFSError, RuntimeError):
    """A backup could not be made or restored; the message says why."""


def backup_cache(cache_dir: Path, target: Path) -> dict[str, int]:
    """Write the catalog and content cache of *cache_dir* to the tar file *target*."""
    if not (cache_dir / "catalog.sqlite3").exists():
        raise BackupError(f"no MusicFS catalog in {cache_dir}")
    tmp_target = target.with_name(f".{target.name}.partial")
    try:
        counts = _write_backup(cache_dir, tmp_target)
        tmp_target.replace(target)
    except BaseException:
        tmp_target.unlink(missing_ok=True)  # a failed backup leaves no half-written file
        raise
    return counts


def _write_backup(cache_dir: Path, tmp_target: Path) -> dict[str, int]:
    import tarfile  # here: the daemon imports this module before it mounts

    counts = {"databases": 0, "chunks": 0, "bytes": 0}
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(tmp_target, "w") as tar:
        for name in _DATABASES:
            source = cache_dir / name
            if not source.exists():
                continue
            snapshot = Path(tmp) / name.replace("/", "_")
            with sqlite3.connect(source) as src, sqlite3.connect(snapshot) as dst:
                src.backup(dst)
            tar.add(snapshot, arcname=name)
            counts["databases"] += 1
            if name == _INDEX:
                with sqlite3.connect(snapshot) as index:
                    counts["chunks"] = index.execute("SELECT count(*) FROM chunks").fetchone()[0]
        store = cache_dir / "content" / "chunks"
        for folder in (store / "packs", store / "chunks"):  # chunks/: stores from before packs
            for path in sorted(folder.rglob("*")) if folder.exists() else []:
                if path.is_file() and not path.name.startswith("."):
                    tar.add(path, arcname=str(path.relative_to(cache_dir)))
                    counts["bytes"] += path.stat().st_size
        info = Path(tmp) / "musicfs-backup.json"
        info.write_text(json.dumps({"format": FORMAT, "created": time.time(), **counts}))
        tar.add(info, arcname="musicfs-backup.json")
    return counts


def restore_cache(source: Path, cache_dir: Path) -> dict[str, int]:
    """Replace *cache_dir* with the backup *source*. The mount must be unmounted."""
    if not source.is_file():
        raise BackupError(f"backup file {source} does not exist")
    lock = CacheDirLock(cache_dir)
    lock.acquire()  # raises CacheDirLocked while a daemon uses it
    try:
        return _restore(source, cache_dir)
    finally:
        lock.release()


def _restore(source: Path, cache_dir: Path) -> dict[str, int]:
    import tarfile

    prefix = f".{cache_dir.name}.restore-"
    for stale in cache_dir.parent.glob(f"{prefix}*"):  # a restore killed midway (we hold
        shutil.rmtree(stale, ignore_errors=True)  # the lock: none of this dir runs now)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=cache_dir.parent))
    try:
        try:
            with tarfile.open(source) as tar:
                tar.extractall(staging, filter="data")  # no absolute paths, no escapes
        except (tarfile.TarError, OSError) as exc:
            raise BackupError(f"{source} is not a readable MusicFS backup: {exc}") from None
        try:
            meta = json.loads((staging / "musicfs-backup.json").read_text())
        except (OSError, ValueError):
            raise BackupError(
                f"{source} is not a MusicFS backup (no musicfs-backup.json)"
            ) from None
        if meta.get("format") != FORMAT:
            raise BackupError(f"{source} has backup format {meta.get('format')}, expected {FORMAT}")
        try:
            with Catalog.open(staging / "catalog.sqlite3") as catalog:
                verdict = catalog.integrity_check()
        except CatalogError as exc:
            raise BackupError(f"the catalog in {source} cannot be used: {exc}") from None
        if verdict != "ok":
            raise BackupError(f"the catalog in {source} is damaged: {verdict}")
        dropped = 0
        if (staging / "content").exists():
            content = ContentCache(staging / "content")
            try:
                # Every chunk hashed: one evicted while the backup was being
                # taken reads as zeros, of the right size.
                _, dropped = content.verify(deep=True)
            finally:
                content.close()
        (staging / "musicfs-backup.json").unlink()
        if not (cache_dir.exists() and _exchange(staging, cache_dir)):
            old = cache_dir.with_name(f"{prefix}old-{int(time.time())}")
            if cache_dir.exists():
                cache_dir.rename(old)
            staging.rename(cache_dir)
            shutil.rmtree(old, ignore_errors=True)
        # (After an exchange, staging holds the old cache: removed below.)
        log.info("restored %s into %s", source, cache_dir)
        return {"chunks": int(meta.get("chunks", 0)), "cached_files_dropped": dropped}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
