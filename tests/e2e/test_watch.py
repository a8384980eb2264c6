"""Live changes through a real mount: no rescan asked for (FR-10).

With the mount up, files are added, re-tagged, rewritten, renamed and removed
in the origin, and folders created and deleted. Each change must reach the
mounted tree by itself (inotify → partial rescan → kernel invalidation), so
that ``ls``/``stat``/``cat`` of the mount show the new state. The deadline is
generous; how fast it happens is measured by the benchmarks.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Mount, errno_of, mounted, sha256_of, wait_until
from tests.e2e.library import (
    Library,
    TrackSpec,
    assert_serves,
    make_origin,
    render_path,
    retag_flac,
)

pytestmark = [pytest.mark.mount, pytest.mark.media]

JOGA = "Björk/Homogenic/01 Jóga.flac"
UNRAVEL = "Björk/Homogenic/02 Unravel.flac"
SVEFN = "Sigur Rós/svefn-g-englar.mp3"
HIKARI = "jp/光.opus"
DEADLINE = 15.0


@pytest.fixture
def live(library: Library, tmp_path: Path) -> Iterator[tuple[Mount, Path, dict[str, TrackSpec]]]:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL, SVEFN])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        yield mount, origin, specs


def appears(path: Path) -> bool:
    return path.exists()


def test_added_file_appears(
    library: Library, live: tuple[Mount, Path, dict[str, TrackSpec]]
) -> None:
    mount, origin, _ = live
    os.listdir(mount.mountpoint)  # the kernel has seen the root listing before
    specs = make_origin(library, origin, [HIKARI])
    target = mount.mountpoint / render_path(specs[HIKARI])
    wait_until(lambda: appears(target), timeout=DEADLINE, what=f"{target} to appear")
    assert_serves(mount, render_path(specs[HIKARI]), origin / HIKARI)
    assert target.parent.name in os.listdir(target.parent.parent)


def test_removed_file_disappears(live: tuple[Mount, Path, dict[str, TrackSpec]]) -> None:
    mount, origin, specs = live
    target = mount.mountpoint / render_path(specs[UNRAVEL])
    os.stat(target)  # cached in the kernel now
    (origin / UNRAVEL).unlink()
    wait_until(lambda: errno_of(lambda: os.stat(target)) == errno.ENOENT,
               timeout=DEADLINE, what=f"{target} to vanish")  # fmt: skip
    assert target.name not in os.listdir(target.parent)


def test_retagged_file_moves(live: tuple[Mount, Path, dict[str, TrackSpec]]) -> None:
    mount, origin, specs = live
    old = mount.mountpoint / render_path(specs[JOGA])
    os.stat(old)
    retag_flac(origin / JOGA, title="Jóga (Remix)")
    new = old.with_name("01 - Jóga (Remix).flac")
    wait_until(lambda: appears(new), timeout=DEADLINE, what=f"{new} to appear")
    # The kernel forgets the old name moments later (two caches, no common lock).
    wait_until(lambda: errno_of(lambda: os.stat(old)) == errno.ENOENT,
               timeout=DEADLINE, what=f"{old} to vanish")  # fmt: skip
    assert sha256_of(new) == sha256_of(origin / JOGA)


def test_rewritten_file_serves_new_bytes_not_cached_pages(
    library: Library, live: tuple[Mount, Path, dict[str, TrackSpec]]
) -> None:
    mount, origin, specs = live
    target = mount.mountpoint / render_path(specs[JOGA])
    before = sha256_of(target)  # the old pages are now in the kernel's page cache
    data = bytearray((origin / JOGA).read_bytes())
    data[-16:] = bytes(range(16))  # same tags, same path, other bytes at the end
    (origin / JOGA).write_bytes(bytes(data))
    wait_until(lambda: sha256_of(target) != before, timeout=DEADLINE, what="the new bytes")
    assert sha256_of(target) == sha256_of(origin / JOGA)
    assert os.stat(target).st_size == (origin / JOGA).stat().st_size


def test_renamed_file_and_folders(live: tuple[Mount, Path, dict[str, TrackSpec]]) -> None:
    mount, origin, specs = live
    target = mount.mountpoint / render_path(specs[SVEFN])
    (origin / "elsewhere").mkdir()
    shutil.move(origin / "Sigur Rós", origin / "elsewhere" / "Sigur Rós")  # a folder moves
    moved = origin / "elsewhere" / SVEFN

    def serves_moved_file() -> bool:
        try:
            return sha256_of(target) == sha256_of(moved)
        except FileNotFoundError:  # between the move and the rescan that follows it
            return False

    wait_until(serves_moved_file, timeout=DEADLINE, what="the moved folder's file")
    shutil.rmtree(origin / "elsewhere")
    wait_until(lambda: not target.exists(), timeout=DEADLINE, what="the deleted folder's file")
    assert mount.status()["tracks"] == 2


def test_network_share_origins_are_polled(library: Library, tmp_path: Path) -> None:
    """An ``nfs://`` origin is not watched (inotify misses other clients' changes):
    it is rescanned every ``[scan] poll_interval`` seconds instead."""
    origin = tmp_path / "share"
    make_origin(library, origin, [JOGA])
    env = {"MUSICFS_SCAN_POLL_INTERVAL": "0.5"}
    with mounted([f"nfs://{origin}"], tmp_path / "mnt", tmp_path / "cache", env=env) as mount:
        assert mount.status()["origins"][0]["type"] == "nfs"
        specs = make_origin(library, origin, [HIKARI])
        target = mount.mountpoint / render_path(specs[HIKARI])
        wait_until(lambda: appears(target), timeout=DEADLINE, what=f"{target} after a poll")
        log = (tmp_path / "cache" / "musicfs.log").read_text()
        assert "watching" not in log, "a network share must not rely on inotify"
