"""MusicFS control: the daemon that serves a mount, and its gRPC control API.

`run_daemon` runs one mount in this process; `ControlClient` talks to a running
daemon over its Unix socket (mode 0600)::

    from musicfs.control import ControlClient
    with ControlClient("/run/musicfs/....sock") as client:
        print(client.status()["state"])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from musicfs.control.client import ControlClient, ControlError, DaemonUnreachable
    from musicfs.control.daemon import run_daemon

__all__ = ["ControlClient", "ControlError", "DaemonUnreachable", "run_daemon"]

# Imported on first use: `musicfs mount` forks the daemon before gRPC and trio
# may be imported (neither survives a fork once started).
_HOMES = {
    "ControlClient": "client",
    "ControlError": "client",
    "DaemonUnreachable": "client",
    "run_daemon": "daemon",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"musicfs.control.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'musicfs.control' has no attribute {name!r}")
