"""Where a mount keeps its state: cache directory, control socket, lock.

Each mountpoint gets its own cache directory under ``$XDG_CACHE_HOME/musicfs``
and its own control socket under the runtime directory, both named after the
mountpoint, so several mounts never share (or fight over) one catalog.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import stat
from pathlib import Path

from musicfs.core.config.settings import Config
from musicfs.core.errors import MusicFSError


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


class UnsafeSocketDir(MusicFSError, RuntimeError):
    """The control socket's folder could be used or swapped by another user."""


def check_private_dir(path: Path) -> None:
    """Refuse a runtime dir another user could use: a symlink, not a folder, not
    ours, or open to group or others (ssh-agent and tmux refuse the same).

    In a shared /tmp, whoever creates ``/tmp/musicfs-<uid>`` first owns it: a
    folder that is not ours would hand our CLI's connections (and our daemon's
    socket) to its owner. Raises `FileNotFoundError` if *path* does not exist.
    """
    info = os.lstat(path)
    uid = os.getuid()
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "is not a folder"
    elif info.st_uid != uid:
        problem = f"belongs to uid {info.st_uid}, not to you (uid {uid})"
    elif info.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(info.st_mode):04o}: other users may use it (0700 needed)"
    else:
        return
    raise UnsafeSocketDir(
        f"the control socket folder {path} {problem}; refusing to use it, since another user "
        f"could receive your musicfs commands. Remove it (rm -r {path}, as its owner or root) "
        "and run again, or set XDG_RUNTIME_DIR to a folder of your own"
    )


def private_runtime_dir(path: Path) -> None:
    """Create the runtime dir *path* (mode 0700) if missing, then `check_private_dir`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # made earlier, by us or not: checked below
        path.mkdir(mode=0o700)
    check_private_dir(path)


def check_socket_dir(socket_path: Path) -> None:
    """`check_private_dir` on *socket_path*'s folder if it is the runtime dir
    (a socket path set in the config is in a folder its owner chose).
    A folder that does not exist yet passes: nothing listens there."""
    if socket_path.parent == runtime_dir():
        with contextlib.suppress(FileNotFoundError):
            check_private_dir(socket_path.parent)


def socket_path_for(config: Config, mountpoint: str | Path) -> Path:
    if config.control.socket:
        return Path(config.control.socket)
    return runtime_dir() / f"{_slug(mountpoint)}.sock"


class CacheDirLocked(MusicFSError, RuntimeError):
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
