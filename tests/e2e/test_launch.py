"""``musicfs mount`` forks its daemon before the command line loads (musicfs.cli.launch).

The early process imports the mount's modules on another core while the
command checks its arguments; it must become the one daemon of a mount that
goes ahead, and vanish without a trace when the mount is refused. Checked from
a small process made a child subreaper (``PR_SET_CHILD_SUBREAPER``): every
process the command leaves behind becomes its child, so it can count them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.helpers import MUSICFS, describe, musicfs_env, pid_alive, run_musicfs, unmount
from tests.e2e.library import Library, make_origin
from tests.e2e.test_offline import JOGA

#: Runs the command as a child subreaper; prints its exit status, its output and
#: the pids of the processes it left behind (reparented here), then reaps the
#: ones that have exited.
LEFT_BEHIND = r"""
import ctypes, json, os, subprocess, sys

PR_SET_CHILD_SUBREAPER = 36
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=60)
left = []
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            left.append(int(entry))
print(json.dumps({"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr,
                  "left": left}))
"""


def _run_left_behind(*args: str | Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", LEFT_BEHIND, MUSICFS, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=90,
        env=musicfs_env(),
        check=False,
    )
    assert out.returncode == 0, describe(out)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_a_refused_mount_leaves_no_process_behind(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    make_origin(library, origin, [JOGA])
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    (mountpoint / "keep.txt").write_text("mine")
    result = _run_left_behind("mount", mountpoint, "--origin", origin,
                              "--cache-dir", tmp_path / "cache")  # fmt: skip
    assert result["code"] == 2, result
    assert "is not empty" in str(result["stderr"]), result
    assert result["left"] == [], "the early daemon outlived a refused mount"
    assert (mountpoint / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "cache" / "daemon.log").exists()


def test_the_early_process_becomes_the_one_daemon(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    make_origin(library, origin, [JOGA])
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    result = _run_left_behind("mount", mountpoint, "--origin", origin,
                              "--cache-dir", tmp_path / "cache", "--wait")  # fmt: skip
    left = result["left"]
    assert isinstance(left, list)
    try:
        assert result["code"] == 0, result
        assert f"(daemon pid {left[0] if left else '?'})" in str(result["stdout"]), result
        assert len(left) == 1, f"one daemon expected, found {left}"
        assert (tmp_path / "cache" / "lock").read_text().strip() == str(left[0])
        assert [p.name for p in mountpoint.rglob("*.flac")] != []
    finally:
        done = run_musicfs("unmount", mountpoint, "--timeout", "20", timeout=30)
        unmount(mountpoint, left[0] if left else None)
    assert done.returncode == 0, describe(done)
    assert not pid_alive(left[0]), "the daemon outlived `musicfs unmount`"
