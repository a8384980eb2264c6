"""``mount -t fuse.musicfs`` and /etc/fstab lines, through mount(8) and mount.musicfs.

mount(8) finds its helper in /sbin only (libmount's search path), where the
packages put it. So that no test writes to the machine's /sbin, each test runs
mount(8) in a private mount namespace whose /usr/sbin (/sbin is a link to it)
is an overlay of the real one and a folder holding ``mount.fuse.musicfs`` and
``mount.musicfs``, links to the helper of the virtualenv under test
(`Namespace`). Everything else is real: mount(8) of util-linux, its fstab
parsing (``LIBMOUNT_FSTAB`` names the test's fstab), the helper, the daemon,
the FUSE mount (seen from outside through ``/proc/PID/root``), ``umount``.
Needs root, as CI is.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    describe,
    musicfs_env,
    pid_alive,
    require_fuse,
    require_tools,
    wait_until,
    walk_files,
    write_config,
)
from tests.e2e.library import Library, TrackSpec, make_origin, render_path

pytestmark = [pytest.mark.mount, pytest.mark.media]

#: The helper console script of the virtualenv running the tests.
HELPER = Path(sys.executable).with_name("mount.musicfs")
TEMPLATE = "$artist/$album/$track - $title.$format"
TRACKS = ("Björk/Homogenic/01 Jóga.flac", "Sigur Rós/svefn-g-englar.mp3", "jp/光.opus")


class Namespace:
    """A private mount namespace in which mount(8) finds mount.fuse.musicfs."""

    def __init__(self, holder: subprocess.Popen[str]) -> None:
        self.holder = holder
        self.pid = holder.pid

    def run(
        self, *cmd: str | os.PathLike[str], env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run *cmd* inside the namespace (nsenter), as the test's user."""
        return subprocess.run(
            ["nsenter", f"--target={self.pid}", "--mount", "--", *map(str, cmd)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**musicfs_env(), **(env or {})},
            check=False,
        )

    def path(self, path: Path) -> Path:
        """*path* as the namespace sees it, reachable from outside."""
        return Path(f"/proc/{self.pid}/root") / path.relative_to("/")

    def mount_entry(self, mountpoint: Path) -> list[str] | None:
        """The namespace's /proc/mounts fields for *mountpoint*, or None."""
        found = None
        with open(f"/proc/{self.pid}/mounts", encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                if fields[1] == str(mountpoint):
                    found = fields
        return found

    def daemon_pid(self, mountpoint: Path) -> int | None:
        result = self.run(sys.executable, "-m", "musicfs.cli", "status", mountpoint, "--json")
        return int(json.loads(result.stdout)["pid"]) if result.returncode == 0 else None


@contextlib.contextmanager
def namespace(tmp_path: Path) -> Iterator[Namespace]:
    """A `Namespace`, ended (with anything still mounted in it) afterwards."""
    require_fuse()
    require_tools("unshare", "nsenter", "mount", "umount")
    if os.geteuid() != 0:
        pytest.skip("mount(8) with a helper needs root (CI runs as root)")
    if not HELPER.exists():
        pytest.fail(f"{HELPER} is missing: reinstall musicfs-cli (nox -s tests installs it)")
    extra = tmp_path / "sbin"
    extra.mkdir()
    for name in ("mount.fuse.musicfs", "mount.musicfs"):
        (extra / name).symlink_to(HELPER)
    script = (
        f"mount -t overlay musicfs-test-sbin -o lowerdir={extra}:/usr/sbin /usr/sbin "
        "&& echo ready && exec cat"  # lives until the test closes its stdin
    )
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    try:
        if holder.stdout.readline().strip() != "ready":
            pytest.skip("no private mount namespace with an overlay here (unshare, overlayfs)")
        yield Namespace(holder)
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


@contextlib.contextmanager
def unmounted_after(ns: Namespace, mountpoint: Path) -> Iterator[None]:
    """Whatever the test did, nothing is mounted on *mountpoint* in *ns* afterwards
    and the daemon serving it is gone."""
    try:
        yield
    finally:
        pid = ns.daemon_pid(mountpoint) if ns.mount_entry(mountpoint) else None
        if ns.mount_entry(mountpoint):
            ns.run("umount", mountpoint)
        if ns.mount_entry(mountpoint):
            ns.run("umount", "-l", mountpoint)
        if pid is not None:
            with contextlib.suppress(AssertionError):
                wait_until(lambda: not pid_alive(pid), timeout=15, what=f"daemon {pid} to exit")
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def origin(library: Library, tmp_path: Path) -> tuple[Path, dict[str, TrackSpec]]:
    folder = tmp_path / "music"
    return folder, make_origin(library, folder, TRACKS)


def _expected(specs: dict[str, TrackSpec]) -> set[str]:
    return {render_path(spec, TEMPLATE) for spec in specs.values()}


def _check_served_then_umount(ns: Namespace, mnt: Path, specs: dict[str, TrackSpec]) -> None:
    """The mount is MusicFS's, shows the tracks by the template and plays; then
    ``umount`` takes it down and the daemon ends."""
    entry = ns.mount_entry(mnt)
    assert entry is not None, f"nothing mounted on {mnt}"
    assert entry[2] == "fuse.musicfs"
    assert "ro" in entry[3].split(",")
    seen = ns.path(mnt)
    assert walk_files(seen) == _expected(specs)
    track = seen / render_path(specs[TRACKS[0]], TEMPLATE)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format_tags=title", "-of", "json", track],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    tags = json.loads(probe.stdout)["format"]["tags"]
    assert {key.lower(): value for key, value in tags.items()}["title"] == "Jóga"
    pid = ns.daemon_pid(mnt)
    assert pid is not None
    result = ns.run("umount", mnt)
    assert result.returncode == 0, describe(result)
    assert ns.mount_entry(mnt) is None
    wait_until(lambda: not pid_alive(pid), timeout=30, what="the daemon to exit after umount")


def test_mount_t_fuse_musicfs_mounts_the_source_with_its_options(
    origin: tuple[Path, dict[str, TrackSpec]], tmp_path: Path
) -> None:
    require_tools("ffprobe")
    folder, specs = origin
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    mnt.mkdir()
    with namespace(tmp_path) as ns, unmounted_after(ns, mnt):
        options = (
            f"cache_dir={cache},template={TEMPLATE},log_level=info,wait,"
            "_netdev,nofail,noatime,x-systemd.idle-timeout=5min"
        )
        result = ns.run("mount", "-t", "fuse.musicfs", folder, mnt, "-o", options)
        assert result.returncode == 0, describe(result)
        # cache_dir= was taken: the catalog is there, not in root's ~/.cache.
        assert (cache / "musicfs.log").exists()
        _check_served_then_umount(ns, mnt, specs)


def test_fstab_line_with_config_file_mounts_by_mountpoint(
    origin: tuple[Path, dict[str, TrackSpec]], tmp_path: Path
) -> None:
    require_tools("ffprobe")
    folder, specs = origin
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    mnt.mkdir()
    config = write_config(
        tmp_path / "music.toml",
        [{"id": "music", "path": str(folder)}],
        template=TEMPLATE,
        cache_dir=str(cache),
    )
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# the line README.md shows, with the test's paths\n"
        f"none  {mnt}  fuse.musicfs  config={config},wait,_netdev,nofail,"
        "x-systemd.automount,noauto  0 0\n"
    )
    with namespace(tmp_path) as ns, unmounted_after(ns, mnt):
        result = ns.run("mount", mnt, env={"LIBMOUNT_FSTAB": str(fstab)})
        assert result.returncode == 0, describe(result)
        _check_served_then_umount(ns, mnt, specs)


def test_unknown_option_is_refused_by_name(
    origin: tuple[Path, dict[str, TrackSpec]], tmp_path: Path
) -> None:
    folder, _ = origin
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with namespace(tmp_path) as ns, unmounted_after(ns, mnt):
        result = ns.run("mount", "-t", "fuse.musicfs", folder, mnt, "-o", "allow_other,uid=1000")
        assert result.returncode == 1, describe(result)
        assert "unknown mount option 'uid'" in result.stderr
        assert "Traceback" not in result.stderr
        assert ns.mount_entry(mnt) is None
