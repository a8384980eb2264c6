"""What the daemon asks of the kernel for speed: read-ahead on its mount (DESIGN §4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.helpers import Mount, mounted

pytestmark = pytest.mark.mount


def read_ahead_kb(mountpoint: Path) -> int:
    dev = os.stat(mountpoint).st_dev
    return int(Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb").read_text())


@pytest.mark.skipif(os.getuid() != 0, reason="only root may set a mount's read-ahead")
def test_read_ahead_is_raised_to_1_mib(library_mount: Mount) -> None:
    assert read_ahead_kb(library_mount.mountpoint) == 1024


@pytest.mark.skipif(os.getuid() != 0, reason="only root may set a mount's read-ahead")
def test_read_ahead_follows_the_config(tmp_path: Path) -> None:
    origin = tmp_path / "music"
    origin.mkdir()
    env = {"MUSICFS_MOUNT_READ_AHEAD_KB": "512"}
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache", env=env) as mount:
        assert read_ahead_kb(mount.mountpoint) == 512
