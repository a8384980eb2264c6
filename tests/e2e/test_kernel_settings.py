"""What the daemon asks of the kernel: read-ahead on its mount (DESIGN §4), and
room for as many open files as the system allows."""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Mount, mounted
from tests.e2e.test_offline import write_noise_wav

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


@contextlib.contextmanager
def open_file_limit(soft: int) -> Iterator[None]:
    """This process (and what it starts meanwhile) may open at most *soft* files."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


OPEN_AT_ONCE = 600


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 2 * OPEN_AT_ONCE,
    reason="the hard limit on open files is too low to open this many",
)
def test_many_files_open_at_once_all_read(tmp_path: Path) -> None:
    """A daemon started with the usual soft limit (here 256) still serves more
    files open at once than that: it lifts its limit to the hard one."""
    origin = tmp_path / "music"
    for i in range(OPEN_AT_ONCE):
        write_noise_wav(origin / f"{i:04d}.wav", seed=i, seconds=0.01)
    with contextlib.ExitStack() as stack:
        with open_file_limit(256):  # inherited by the daemon `musicfs mount` starts
            mount = stack.enter_context(mounted([origin], tmp_path / "mnt", tmp_path / "cache"))
        served = sorted(mount.mountpoint.rglob("*.wav"))
        assert len(served) == OPEN_AT_ONCE
        files = [stack.enter_context(open(path, "rb")) for path in served]
        origin_bytes = [(origin / path.name.removeprefix("00 - ")).read_bytes() for path in served]
        wrong = [f.name for f, data in zip(files, origin_bytes, strict=True) if f.read() != data]
        assert not wrong, f"{len(wrong)} files read wrong, e.g. {wrong[:3]}"
