"""The mount is read-only and answers with the right errno (SPEC FR-4, §2 errors).

Proves, with real syscalls on a real mount: every write-type call — opening for
write, creating, truncating, mkdir, rmdir, unlink, rename, chmod, chown,
setxattr, symlink, link, utime — fails with EROFS and changes nothing (the
origin is never written); unknown paths give ENOENT; getxattr of an existing
file gives ENODATA; treating a file as a directory gives ENOTDIR; and
/proc/mounts lists the mount as ``ro`` with type ``fuse.musicfs``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    Mount,
    errno_name,
    errno_of,
    mount_entry,
    sha256_of,
    walk_dirs,
    walk_files,
)
from tests.e2e.library import Library, render_path

pytestmark = [pytest.mark.mount, pytest.mark.media]

SAMPLE = "Björk/Homogenic/01 Jóga.flac"


@pytest.fixture(scope="module")
def paths(library: Library, library_mount: Mount) -> dict[str, Path]:
    """A file, its directory, the root, and a name that does not exist (all in the mount)."""
    file = library_mount.mountpoint / render_path(library.find(SAMPLE).spec)
    assert file.is_file()
    return {
        "file": file,
        "dir": file.parent,
        "root": library_mount.mountpoint,
        "new": file.parent / "new-file.flac",
        "other_file": next(p for p in file.parent.iterdir() if p != file),
    }


def _open_close(path: Path, flags: int) -> Callable[[], None]:
    def call() -> None:
        os.close(os.open(path, flags, 0o644))

    return call


WRITE_CALLS: dict[str, Callable[[dict[str, Path]], Callable[[], object]]] = {
    "open O_WRONLY": lambda p: _open_close(p["file"], os.O_WRONLY),
    "open O_RDWR": lambda p: _open_close(p["file"], os.O_RDWR),
    "open O_WRONLY|O_APPEND": lambda p: _open_close(p["file"], os.O_WRONLY | os.O_APPEND),
    "open O_TRUNC": lambda p: _open_close(p["file"], os.O_WRONLY | os.O_TRUNC),
    "open O_RDONLY|O_TRUNC": lambda p: _open_close(p["file"], os.O_RDONLY | os.O_TRUNC),
    "open O_CREAT new file": lambda p: _open_close(p["new"], os.O_WRONLY | os.O_CREAT),
    "open O_CREAT|O_EXCL new file": lambda p: _open_close(
        p["new"], os.O_WRONLY | os.O_CREAT | os.O_EXCL
    ),
    "mkdir": lambda p: lambda: os.mkdir(p["dir"] / "newdir"),
    "mkdir in root": lambda p: lambda: os.mkdir(p["root"] / "newdir"),
    "rmdir": lambda p: lambda: os.rmdir(p["dir"]),
    "unlink": lambda p: lambda: os.unlink(p["file"]),
    "rename file": lambda p: lambda: os.rename(p["file"], p["new"]),
    "rename over another file": lambda p: lambda: os.rename(p["file"], p["other_file"]),
    "rename dir": lambda p: lambda: os.rename(p["dir"], p["dir"].with_name("renamed")),
    "chmod file": lambda p: lambda: os.chmod(p["file"], 0o666),
    "chmod dir": lambda p: lambda: os.chmod(p["dir"], 0o777),
    "chown": lambda p: lambda: os.chown(p["file"], 1, 1),
    "truncate": lambda p: lambda: os.truncate(p["file"], 0),
    "setxattr": lambda p: lambda: os.setxattr(p["file"], "user.musicfs.test", b"1"),
    "removexattr": lambda p: lambda: os.removexattr(p["file"], "user.musicfs.test"),
    "symlink": lambda p: lambda: os.symlink("target", p["dir"] / "link"),
    "link": lambda p: lambda: os.link(p["file"], p["dir"] / "hardlink.flac"),
    "utime": lambda p: lambda: os.utime(p["file"], (0, 0)),
    "utime now": lambda p: lambda: os.utime(p["file"]),
    "mknod fifo": lambda p: lambda: os.mkfifo(p["dir"] / "fifo"),
}


@pytest.mark.parametrize("name", sorted(WRITE_CALLS))
def test_write_calls_fail_with_erofs(library: Library, paths: dict[str, Path], name: str) -> None:
    origin = library.find(SAMPLE)
    before = sorted(os.listdir(paths["dir"]))
    code = errno_of(WRITE_CALLS[name](paths))
    assert code == errno.EROFS, f"{name}: expected EROFS, got {errno_name(code)}"
    # nothing changed, in the mount or in the origin
    assert sorted(os.listdir(paths["dir"])) == before
    assert sha256_of(paths["file"]) == origin.sha256
    assert sha256_of(origin.path) == origin.sha256


def test_writing_through_an_open_handle_is_impossible(paths: dict[str, Path]) -> None:
    """A read-only handle cannot write (EBADF), and write-mode opens never succeed."""
    with open(paths["file"], "rb") as fh:
        assert errno_of(lambda: os.write(fh.fileno(), b"x")) == errno.EBADF
    with pytest.raises(OSError, match="Read-only file system"):
        open(paths["file"], "ab")  # noqa: SIM115 - the open itself must fail


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("stat", lambda p: lambda: os.stat(p["dir"] / "no such track.flac")),
        ("lstat", lambda p: lambda: os.lstat(p["root"] / "No Such Artist")),
        ("open", lambda p: _open_close(p["dir"] / "no such track.flac", os.O_RDONLY)),
        ("listdir", lambda p: lambda: os.listdir(p["root"] / "No Such Artist")),
        ("stat deep", lambda p: lambda: os.stat(p["root"] / "No Such Artist" / "x" / "y.flac")),
        ("stat non-UTF-8 name", lambda p: lambda: os.stat(os.fsencode(p["root"]) + b"/\xff\xfe")),
    ],
)
def test_unknown_paths_are_enoent(
    paths: dict[str, Path], name: str, call: Callable[[dict[str, Path]], Callable[[], object]]
) -> None:
    code = errno_of(call(paths))
    assert code == errno.ENOENT, f"{name}: expected ENOENT, got {errno_name(code)}"


def test_getxattr_of_an_existing_file_is_enodata(paths: dict[str, Path]) -> None:
    code = errno_of(lambda: os.getxattr(paths["file"], "user.musicfs.none"))
    assert code == errno.ENODATA, errno_name(code)
    assert os.listxattr(paths["file"]) == []


def test_file_is_not_a_directory(paths: dict[str, Path]) -> None:
    code = errno_of(lambda: os.listdir(paths["file"]))
    assert code == errno.ENOTDIR, errno_name(code)
    code = errno_of(lambda: os.stat(paths["file"] / "child"))
    assert code == errno.ENOTDIR, errno_name(code)


def test_directory_cannot_be_read_as_a_file(paths: dict[str, Path]) -> None:
    code = errno_of(lambda: open(paths["dir"], "rb").close())
    assert code == errno.EISDIR, errno_name(code)


def test_access_reports_read_only(paths: dict[str, Path]) -> None:
    assert os.access(paths["file"], os.R_OK)
    assert not os.access(paths["file"], os.W_OK)
    assert not os.access(paths["dir"], os.W_OK)


def test_proc_mounts_shows_read_only_fuse_musicfs(library_mount: Mount) -> None:
    entry = mount_entry(library_mount.mountpoint)
    assert entry is not None, "the mount is not in /proc/self/mounts"
    assert entry.fstype == "fuse.musicfs"
    assert "ro" in entry.options
    assert "rw" not in entry.options


def test_statvfs_says_read_only(library_mount: Mount) -> None:
    st = os.statvfs(library_mount.mountpoint)
    assert st.f_flag & os.ST_RDONLY


def test_statvfs_counts_the_library(library: Library, library_mount: Mount) -> None:
    st = os.statvfs(library_mount.mountpoint)
    files = walk_files(library_mount.mountpoint)
    dirs = walk_dirs(library_mount.mountpoint)
    assert st.f_files == len(files) + len(dirs) + 1  # and the root
    total = sum((library_mount.mountpoint / f).stat().st_size for f in files)
    assert st.f_blocks * st.f_frsize == pytest.approx(total, abs=st.f_frsize * 2)
    assert st.f_namemax == 255


def test_readlink_and_xattr_listing_of_plain_files(library_mount: Mount) -> None:
    some_file = library_mount.mountpoint / sorted(walk_files(library_mount.mountpoint))[0]
    assert errno_of(lambda: os.readlink(some_file)) == errno.EINVAL
    assert os.listxattr(some_file) == []
