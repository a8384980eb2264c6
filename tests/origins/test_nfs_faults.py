"""A mounted network share as an origin (``LocalOrigin`` of kind ``nfs``) under faults.

No NFS server is needed: `tests.servers.faultfs` mirrors a folder of real audio
files (made with ffmpeg) through FUSE and injects what a failing share does —
stale file handles after a server restart, EIO, a share that answers nothing —
at the moment the test says. Checked here: the origin contract holds on such a
share; a read whose handle goes stale finishes on a fresh handle with the same
bytes, but never onto a file that was replaced meanwhile; EIO makes the files
offline (`OriginUnavailable`), not gone; and the same origin object works again
once the share recovers.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from musicfs.core.model import AUDIO_EXTENSIONS
from musicfs.core.origins import FileChanged, OriginFile, OriginUnavailable
from musicfs.core.origins.federation import Federation
from musicfs.core.origins.local import LocalFile, LocalOrigin
from tests.origins.contract import check_contract, check_tags_readable, walk
from tests.servers.faultfs import FaultFS, fault_fs, missing_fuse

if shutil.which("ffmpeg") is None:
    pytest.skip("needs ffmpeg (see ENVIRONMENT.md, 'Media tools')", allow_module_level=True)
if missing_fuse() is not None:
    pytest.skip(str(missing_fuse()), allow_module_level=True)

pytestmark = [pytest.mark.mount, pytest.mark.media]

BIG = "Big/long.flac"
BLOCK = 64 * 1024

# relpath -> ffmpeg output options (codec and tags)
AUDIO = {
    "top.flac": ["-metadata", "title=Top"],
    "Artist/Album/01 One.flac": ["-metadata", "title=One", "-metadata", "artist=Artist"],
    "Artist/Album/02 Two.mp3": ["-c:a", "libmp3lame", "-metadata", "title=Two"],
    "Artist/Other/03 Three.ogg": ["-c:a", "libvorbis", "-metadata", "title=Three"],
    "Ünïcødé/Ça va.flac": ["-metadata", "title=Ça va"],
}
# Never listed: hidden, or not audio.
OTHER = {
    ".hidden/secret.flac": b"fLaC hidden folder",
    "Artist/.hidden.flac": b"fLaC hidden file",
    "Artist/Album/cover.jpg": b"\xff\xd8\xff not audio",
    "notes.txt": b"liner notes",
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The share's content, encoded once: the files above and a long FLAC."""
    root = tmp_path_factory.mktemp("nfs-export")
    for relpath, options in AUDIO.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", *options, str(root / relpath))
    for relpath, data in OTHER.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(data)
    # White noise does not compress: some MiB of real FLAC, read in many blocks.
    (root / BIG).parent.mkdir(parents=True)
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=8:c=white:r=96000:a=1", "-sample_fmt", "s32",
           "-metadata", "title=Long", str(root / BIG))  # fmt: skip
    assert (root / BIG).stat().st_size > 1024 * 1024
    return root


@pytest.fixture
def export(library: Path, tmp_path: Path) -> Path:
    """A copy of the library for one test (tests replace files in it)."""
    target = tmp_path / "export"
    shutil.copytree(library, target)
    return target


@pytest.fixture
def share(export: Path, tmp_path: Path) -> Iterator[FaultFS]:
    """The export, mounted through the fault filesystem (no faults yet)."""
    with fault_fs(export, tmp_path / "mnt") as mounted:
        yield mounted


@pytest.fixture
def origin(share: FaultFS) -> LocalOrigin:
    return LocalOrigin("nas", share.mountpoint, kind="nfs")


def contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def read_all(opened: OriginFile, start: int = 0) -> bytes:
    """The rest of *opened* from *start*, in `BLOCK` requests."""
    out = bytearray()
    while block := opened.read(start + len(out), BLOCK):
        out += block
    return bytes(out)


def replace_file(path: Path, data: bytes, mtime_ns: int) -> None:
    """Put a new version at *path* the way tools do (a new file renamed over it)."""
    new = path.with_name(path.name + ".new")
    new.write_bytes(data)
    os.utime(new, ns=(mtime_ns, mtime_ns))
    os.replace(new, path)


def test_the_contract_holds_on_a_share(origin: LocalOrigin, export: Path) -> None:
    assert (origin.kind, origin.inline, origin.watchable) == ("nfs", False, False)
    assert LocalOrigin("disk", export).inline  # the class default is untouched
    check_contract(origin, contents(export))
    check_tags_readable(origin, "Artist/Album/02 Two.mp3")
    check_tags_readable(origin, BIG)


def test_a_handle_that_goes_stale_mid_read_is_reopened(
    origin: LocalOrigin, share: FaultFS, export: Path
) -> None:
    source = (export / BIG).read_bytes()
    third = len(source) // 3
    with origin.open(BIG) as opened:
        assert isinstance(opened, LocalFile)
        first = opened.read(0, third)
        share.set(stale_handles=True)  # the server restarted: our handle is stale
        second = opened.read(third, third)
        share.set(stale_handles=True)  # and again, on the reopened handle
        rest = read_all(opened, 2 * third)
    assert first + second + rest == source
    assert share.stats()["estale"] == 2, "each switch must have hit the open handle once"


@pytest.mark.parametrize("change", ["other size", "same size, other mtime"])
def test_a_stale_handle_is_not_reopened_onto_a_replaced_file(
    origin: LocalOrigin, share: FaultFS, export: Path, change: str
) -> None:
    path = export / BIG
    old = path.read_bytes()
    old_mtime = path.stat().st_mtime_ns
    new = old[::-1] if change.startswith("same size") else old + b"\0" * 4096
    with origin.open(BIG) as opened:
        assert opened.read(0, BLOCK) == old[:BLOCK]
        replace_file(path, new, old_mtime + 5_000_000_000)
        share.set(stale_handles=True)
        # FileChanged, not OriginUnavailable: the share answers, it is this file
        # that changed (the reader fails over; the share stays online).
        with pytest.raises(FileChanged) as raised:
            opened.read(BLOCK, BLOCK)
        assert raised.value.errno == errno.ESTALE
        assert not isinstance(raised.value, OriginUnavailable | FileNotFoundError)
        # Still the old version's handle: it neither switched nor mixes versions.
        assert (opened.size, opened.mtime_ns) == (len(old), old_mtime)
        with pytest.raises(FileChanged):
            opened.read(BLOCK, BLOCK)
    with origin.open(BIG) as reopened:  # a new open sees the new version
        assert (reopened.size, read_all(reopened)) == (len(new), new)


def assert_offline(error: pytest.ExceptionInfo[OriginUnavailable], what: str) -> None:
    assert error.value.errno == errno.EIO, what
    assert error.value.origin_id == "nas", what
    assert not isinstance(error.value, FileNotFoundError), what


def test_eio_makes_files_offline_not_gone(
    origin: LocalOrigin, share: FaultFS, export: Path
) -> None:
    opened = origin.open(BIG)
    try:
        assert opened.read(0, BLOCK) == (export / BIG).read_bytes()[:BLOCK]
        share.set(eio=True)
        assert not origin.reachable()
        calls = {
            "check": origin.check,
            "list_dir root": lambda: origin.list_dir("", AUDIO_EXTENSIONS),
            "list_dir": lambda: origin.list_dir("Artist/Album", AUDIO_EXTENSIONS),
            "stat": lambda: origin.stat("top.flac"),
            "stat of a missing file": lambda: origin.stat("no/such/file.flac"),
            "open": lambda: origin.open("top.flac"),
            "read of an open file": lambda: opened.read(BLOCK, BLOCK),
        }
        for what, call in calls.items():
            with pytest.raises(OriginUnavailable) as raised:
                call()
            assert_offline(raised, what)
        assert share.stats()["eio"] >= len(calls)
    finally:
        opened.close()


def test_the_same_origin_works_again_when_the_share_recovers(
    origin: LocalOrigin, share: FaultFS, export: Path
) -> None:
    source = contents(export)
    with origin.open(BIG) as opened:
        first = opened.read(0, BLOCK)
        share.set(eio=True)
        with pytest.raises(OriginUnavailable):
            opened.read(BLOCK, BLOCK)
        with pytest.raises(OriginUnavailable):
            walk(origin)
        share.clear()
        assert first + read_all(opened, BLOCK) == source[BIG]  # the same handle reads on
    assert origin.reachable()
    check_contract(origin, source)


def test_a_file_the_share_cannot_stat_is_not_left_out_of_a_listing(
    origin: LocalOrigin, share: FaultFS
) -> None:
    share.set(eio_paths=["Artist/Album/01 One.flac"])
    try:
        listing = origin.list_dir("Artist/Album", AUDIO_EXTENSIONS)
    except OriginUnavailable:
        return  # offline, not gone: what the interface asks for
    names = sorted(name for name, _ in listing.files)
    assert names == ["01 One.flac", "02 Two.mp3"], "a file that did not answer was left out"


def test_a_replaced_file_does_not_take_the_share_offline(share: FaultFS, export: Path) -> None:
    origin = LocalOrigin("nas", share.mountpoint, kind="nfs")
    federation = Federation({"nas": origin})
    path = export / BIG
    opened = federation.open("nas", BIG)
    try:
        opened.read(0, BLOCK)
        replace_file(path, path.read_bytes() + b"\0" * 4096, path.stat().st_mtime_ns + 10**9)
        share.set(stale_handles=True)
        try:
            opened.read(BLOCK, BLOCK)
        except OSError:
            pass  # the old version cannot be read on: right
        else:
            pytest.fail("a stale handle read on from a replaced file")
    finally:
        opened.close()
    assert federation.online("nas"), "one changed file took every file of the share offline"
