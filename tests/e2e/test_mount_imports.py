"""What ``musicfs mount`` loads before the mounted root answers (issue 17.3).

Mount time is import time: a Python daemon pays for every module it loads
before the kernel's first request is answered. The root needs trio, pyfuse3,
SQLite and the tree; the tag reader (mutagen), the built-in and installed
plugins, the control server (gRPC, protobuf), the scan display (rich), the
metrics exporter, the remote drivers, tarfile and plistlib are loaded once
the mount answers. Proved with the real command: a ``sitecustomize`` (on
PYTHONPATH) watches the daemon's imports. In the daemon it holds back every
import of the modules above until a thread of the daemon has listed the root,
so a module the root needed would hold up that listing (10 s at most, all
imports together) and be named; the modules loaded by then, in the CLI before
its fork or in the daemon, are recorded with those asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.helpers import mounted
from tests.e2e.library import Library, make_origin
from tests.e2e.test_offline import JOGA

#: Nothing the root needs: loaded after it answers (top-level names, or modules).
NOT_BEFORE_ROOT = (
    "mutagen",
    "PIL",
    "grpc",
    "google.protobuf",
    "prometheus_client",
    "rich",
    "boto3",
    "botocore",
    "paramiko",
    "smbprotocol",
    "psycopg",
    "wasmtime",
    "plistlib",
    "tarfile",
    "musicfs.plugins.builtin",
    "musicfs.control.server",
    "musicfs.core.sync.progress",
)

SITECUSTOMIZE = r"""
import json, os, sys, threading, time

_MOUNT = os.environ.get("IMPORTWATCH_MOUNT", "")
_OUT = os.environ.get("IMPORTWATCH_OUT", "")
_WATCHED = tuple(os.environ.get("IMPORTWATCH_MODULES", "").split(","))
_answered = threading.Event()
_asked = []  # (name, monotonic time) of watched imports asked for in the daemon
_state = {"daemon": False, "hold_until": None}
HOLD = 10.0  # seconds, all imports together: a failing mount still comes up in time


def _watched(name):
    return any(name == w or name.startswith(w + ".") for w in _WATCHED)


class _HoldBack:
    def find_spec(self, name, path=None, target=None):
        if _state["daemon"] and not _answered.is_set() and _watched(name):
            now = time.monotonic()
            _asked.append((name, now))
            if _state["hold_until"] is None:
                _state["hold_until"] = now + HOLD
            # A root that needs it stays silent until then.
            _answered.wait(max(0.0, _state["hold_until"] - now))
        return None


def _poll():
    parent = os.stat(os.path.dirname(_MOUNT)).st_dev
    deadline = time.monotonic() + 60
    started = time.monotonic()
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            if os.stat(_MOUNT).st_dev != parent:
                os.listdir(_MOUNT)
                break
        except OSError:
            pass
        time.sleep(0.001)
    loaded = sorted(m for m in list(sys.modules) if _watched(m))
    asked = sorted({name for name, at in _asked if at < started})
    with open(_OUT, "w") as out:
        json.dump({"loaded_before_root": loaded, "asked_before_root": asked}, out)
    _answered.set()


def _in_child():
    if _state["daemon"]:  # the daemon's own children: nothing to watch
        return
    _state["daemon"] = True
    threading.Thread(target=_poll, daemon=True).start()


if _MOUNT and _OUT:
    sys.meta_path.insert(0, _HoldBack())
    os.register_at_fork(after_in_child=_in_child)
"""


def test_nothing_the_root_does_not_need_is_loaded_before_it_answers(
    library: Library, tmp_path: Path
) -> None:
    origin = tmp_path / "origin"
    make_origin(library, origin, [JOGA])
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    report = tmp_path / "imports.json"
    mountpoint = tmp_path / "mnt"
    env = {
        "PYTHONPATH": str(hook),
        "IMPORTWATCH_MOUNT": str(mountpoint),
        "IMPORTWATCH_OUT": str(report),
        "IMPORTWATCH_MODULES": ",".join(NOT_BEFORE_ROOT),
    }
    with mounted([origin], mountpoint, tmp_path / "cache", env=env) as mount:
        assert report.exists(), "the daemon never listed its own root"
        seen = json.loads(report.read_text())
        # Loaded later, as it should be: the mount works and the track is there.
        assert [p.name for p in mount.mountpoint.rglob("*.flac")] != []
        assert mount.status()["state"] == "READY"
    assert seen == {"loaded_before_root": [], "asked_before_root": []}
