"""Who may use a mount's control socket (issue 13, points 9 and 11), through
real mounts and real users.

Without ``XDG_RUNTIME_DIR`` the socket folder is ``/tmp/musicfs-<uid>/``:
another user who makes it first would receive the CLI's commands, so a folder
that is not ours, is open to others or is a symlink is refused by the daemon
and by the commands. A user who cannot reach another user's socket is told
whose it is and what to do, never shown a ``PermissionError`` traceback.

The tests run as root, whose default folder (``/run/musicfs``) every mount of
the machine shares: they choose theirs with ``XDG_RUNTIME_DIR`` (the same check
guards all three), and run the real ``/tmp/musicfs-<uid>`` case as uid 65534.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    describe,
    is_mounted,
    mount_command,
    mounted,
    require_fuse,
    run_musicfs,
    unmount,
)
from tests.e2e.library import Library, make_origin
from tests.e2e.test_offline import JOGA

pytestmark = [pytest.mark.mount, pytest.mark.media]

EXIT_USAGE = 2
NOBODY = 65534


@pytest.fixture
def run_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A runtime dir of this test's own, which other users may pass through."""
    path = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # socket paths are short
    path.chmod(0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_socket_folder_another_user_made_first_is_refused(
    library: Library, tmp_path: Path, run_dir: Path
) -> None:
    require_fuse()
    origin, mnt, cache = tmp_path / "music", tmp_path / "mnt", tmp_path / "cache"
    make_origin(library, origin, [JOGA])
    folder = run_dir / "musicfs"
    folder.mkdir()
    folder.chmod(0o777)  # what someone else leaves for us to use
    os.chown(folder, NOBODY, NOBODY)
    mnt.mkdir()
    try:
        refused = run_musicfs(*mount_command([origin], mnt, cache))
        assert refused.returncode == EXIT_USAGE, describe(refused)
        assert not is_mounted(mnt)
    finally:
        unmount(mnt)
    assert "Traceback" not in refused.stderr
    assert f"the control socket folder {folder} belongs to uid {NOBODY}" in refused.stderr
    assert f"Remove it (rm -r {folder}" in refused.stderr
    assert list(folder.iterdir()) == []  # no socket left for its owner to take
    # The commands do not talk to whatever listens there either.
    for args in (["status"], ["status", "--mount", str(mnt)]):
        result = run_musicfs(*args)
        assert result.returncode == EXIT_USAGE, describe(result)
        assert f"the control socket folder {folder} belongs to uid {NOBODY}" in result.stderr
    # Removed as the message says: the daemon makes it again, ours and 0700.
    shutil.rmtree(folder)
    with mounted([origin], mnt, cache) as mount:
        assert Path(mount.status()["socket"]).parent == folder
        info = os.lstat(folder)
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (os.getuid(), 0o700)


def run_as_nobody(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``musicfs ARGS`` run by uid 65534. The test venv's interpreter lives under
    /root, closed to that user: the system's Python 3.11 runs the same code with
    the venv's packages (also in the daemon ``musicfs mount`` starts)."""
    packages = [p for p in sys.path if p.endswith("site-packages") or "/packages/musicfs-" in p]
    return subprocess.run(
        ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
         "/usr/bin/python3.11", "-m", "musicfs.cli", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "XDG_CONFIG_HOME": "/nonexistent",
             "PYTHONPATH": os.pathsep.join(packages), **env},
    )  # fmt: skip


NEEDS_NOBODY = pytest.mark.skipif(
    os.getuid() != 0 or not Path("/usr/bin/python3.11").exists() or not shutil.which("setpriv"),
    reason="needs root (to become uid 65534), setpriv and /usr/bin/python3.11",
)


@NEEDS_NOBODY
def test_another_user_at_the_socket_is_told_whose_mount_it_is(
    library: Library, tmp_path: Path, run_dir: Path
) -> None:
    origin = tmp_path / "music"
    make_origin(library, origin, [JOGA])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        socket_path = Path(mount.status()["socket"])
        env = {"XDG_RUNTIME_DIR": str(run_dir)}  # looking where root's daemon is
        for args in (
            ["status", "--mount", str(mount.mountpoint)],
            ["unmount", str(mount.mountpoint)],
            ["status", "--socket", str(socket_path)],
        ):
            result = run_as_nobody(*args, env=env)
            assert result.returncode == EXIT_USAGE, describe(result)
            assert result.stderr == (
                f"musicfs: error: permission denied on the control socket {socket_path} "
                "(it belongs to root (uid 0)); run the command as the user who mounted it, "
                "or as root\n"
            )
        assert mount.status()["state"]  # still mounted and answering its own user


@NEEDS_NOBODY
def test_a_users_daemon_refuses_the_tmp_folder_another_user_made_first(
    library: Library, tmp_path: Path
) -> None:
    """The real case: a user without XDG_RUNTIME_DIR, whose socket folder is
    /tmp/musicfs-<uid>, made first (mode 0777) by another user - root here."""
    folder = Path(f"/tmp/musicfs-{NOBODY}")
    if folder.exists() or folder.is_symlink():
        pytest.skip(f"{folder} exists already: not ours to replace")
    home = Path(tempfile.mkdtemp(prefix="n", dir="/tmp"))  # tmp_path is closed to nobody
    origin, mnt, cache = home / "music", home / "mnt", home / "cache"
    try:
        home.chmod(0o755)
        make_origin(library, origin, [JOGA])
        mnt.mkdir()
        cache.mkdir()
        for path in (origin, *origin.rglob("*"), mnt, cache):
            os.chown(path, NOBODY, NOBODY)
        folder.mkdir()
        folder.chmod(0o777)
        refused = run_as_nobody(*mount_command([origin], mnt, cache), env={})
        assert refused.returncode == EXIT_USAGE, describe(refused)
        assert f"the control socket folder {folder} belongs to uid 0, not to you" in (
            refused.stderr
        )
        assert f"Remove it (rm -r {folder}" in refused.stderr
        assert list(folder.iterdir()) == []
        status = run_as_nobody("status", env={})
        assert status.returncode == EXIT_USAGE, describe(status)
        assert f"the control socket folder {folder} belongs to uid 0" in status.stderr
    finally:
        unmount(mnt)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
