"""Claiming the control socket's path: refuse a live one, clear a stale one.

Kept free of gRPC so the daemon can claim the path before it mounts (gRPC is
imported only after the mount is ready).
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from musicfs.core.config.paths import private_runtime_dir, runtime_dir
from musicfs.core.errors import MusicFSError


class SocketInUse(MusicFSError, RuntimeError):
    """Another live daemon answers on the control socket path."""


def claim_socket_path(path: Path) -> None:
    """Make *path* free for a new control socket.

    A socket file nobody listens on is what a killed daemon leaves behind: it is
    removed, so clients never connect to a dead socket. A live one raises
    `SocketInUse`. In the runtime dir (the default place), a folder another
    user could use raises `UnsafeSocketDir`.
    """
    if path.parent == runtime_dir():
        private_runtime_dir(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            path.unlink(missing_ok=True)
            return
        raise
    finally:
        probe.close()
    raise SocketInUse(
        f"control socket {path} is in use by another MusicFS daemon; "
        "unmount that one first or set [control] socket to another path"
    )
