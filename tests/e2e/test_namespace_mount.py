"""The namespace's behaviour cases through a real FUSE mount.

The cases of `tests.vfstest.cases` marked ``mount`` (the tree, the hidden
virtual folders, search and collection links, the ``.prefetch`` mirror, cover
files, missing names) run here against ``musicfs mount`` with os calls, as a
user's tools make them; the in-process suite
(``packages/musicfs-core/tests/namespace/test_namespace.py``) runs them all
against the namespace. A case that passes there and fails here points at the
FUSE skin.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Mount, mounted, require_tools
from tests.vfstest.cases import CASES, Case, build_sample, run_case

pytestmark = [pytest.mark.mount, pytest.mark.media]

MOUNT_CASES = [case for case in CASES if case.mount]


class Mounted:
    """A `Frontend` of plain os calls under a mountpoint."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def kind(self, path: str) -> str:
        mode = os.lstat(self.root / path).st_mode
        return "dir" if stat.S_ISDIR(mode) else "link" if stat.S_ISLNK(mode) else "file"

    def inode(self, path: str) -> int:
        return os.lstat(self.root / path).st_ino

    def listdir(self, path: str) -> set[str]:
        names = os.listdir(self.root / path)
        assert len(names) == len(set(names)), f"listed twice: {names}"
        return set(names)

    def readlink(self, path: str) -> str:
        return os.readlink(self.root / path)

    def read(self, path: str) -> bytes:
        data = (self.root / path).read_bytes()
        size = os.stat(self.root / path).st_size
        assert len(data) == size, f"stat says {size} bytes, read {len(data)}"
        return data

    def retitle(self, path: str, title: str) -> None:
        raise NotImplementedError("tag edits through a mount: tests/e2e/test_overlay.py")


@pytest.fixture(scope="module")
def sample_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mount, Path]]:
    require_tools("ffmpeg")
    base = tmp_path_factory.mktemp("namespace-mount")
    sample = build_sample(base / "lib")
    with mounted([sample], base / "mnt", base / "cache") as mount:
        yield mount, sample


@pytest.mark.parametrize("case", MOUNT_CASES, ids=[case.id for case in MOUNT_CASES])
def test_case_through_a_mount(case: Case, sample_mount: tuple[Mount, Path]) -> None:
    mount, sample = sample_mount
    run_case(case, Mounted(mount.mountpoint), sample)
