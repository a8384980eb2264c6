"""Where a mount keeps its state: cache directory, control socket, lock.

Each mountpoint gets its own cache directory under ``$XDG_CACHE_HOME/musicfs``
and its own control socket under the runtime directory, both named after the
mountpoint, so several mounts never share (or fight over) one catalog.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
from pathlib import Path

from musicfs.core.config import Config


def _slug(mountpoint: str | Path) -> str:
    path = os.path.abspath(mountpoint)
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", path).strip("-.")[-40:] or "root"
    digest = hashlib.sha256(path.encode()).hexdigest()[:10]
    return f"{readable}-{digest}"


def cache_root(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "musicfs"


def cache_dir_for(config: Config, mountpoint: str | Path) -> Path:
    """The configured cache dir, or ``$XDG_CACHE_HOME/musicfs/mounts/<mountpoint>``."""
    if config.cache_dir:
        return Path(config.cache_dir)
    return cache_root() / "mounts" / _slug(mountpoint)


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/musicfs``, ``/run/musicfs`` for root, else a private /tmp dir."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "musicfs"
    if os.getuid() == 0:
        return Path("/run/musicfs")
    return Path(f"/tmp/musicfs-{os.getuid()}")


def socket_path_for(config: Config, mountpoint: str | Path) -> Path:
    if config.socket:
        return Path(config.socket)
    return runtime_dir() / f"{_slug(mountpoint)}.sock"


class CacheDirLocked(RuntimeError):
    """Another daemon already uses this cache directory."""


class CacheDirLock:
    """An exclusive lock on a cache directory, held for the life of the daemon.

    Two daemons must never share one catalog and cache (DESIGN §10). The lock is
    an flock, so it is released by the kernel even if the daemon is killed.
    """

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise CacheDirLocked(
                    f"cache directory {self.path.parent} is in use by another MusicFS "
                    f"daemon (pid {holder}); unmount it first or pass another --cache-dir"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def holder(self) -> str | None:
        """The pid of the daemon that holds this cache dir, None if none does.

        Creates nothing: ``musicfs mount`` asks before it makes folders or opens
        logs, so a mount that is refused leaves another mount's files alone.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None  # no lock file: never used, or not readable (the daemon says)
        try:
            # Shared and at once: taken only if no daemon holds it exclusively.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            return None
        finally:
            os.close(fd)  # also drops the shared lock
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
