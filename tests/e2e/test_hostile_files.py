"""One hostile file must never take a mount down (issue 13: "the daemon dies").

Each file here once killed the daemon right after "mounted", and again at every
mount: a file name that is not UTF-8, and track and disc numbers no 64-bit
integer holds. Now such files are listed and read like any other, names shown
with U+FFFD for the bytes that are not UTF-8, the origin's bytes served exactly.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import mounted, require_tools, sha256_of, wait_until, walk_files

pytestmark = [pytest.mark.mount, pytest.mark.media]

NINES = "9" * 40


def encode(path: bytes, *metadata: str) -> None:
    """A short FLAC or MP3 at *path* (bytes: any name the OS takes), tagged."""
    suffix = path.rsplit(b".", 1)[1].decode()
    temporary = os.path.join(os.path.dirname(path), b"encoding." + suffix.encode())
    tags = [arg for item in metadata for arg in ("-metadata", item)]
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=330:duration=1",
         *tags, os.fsdecode(temporary)],
        check=True,
        timeout=60,
    )  # fmt: skip
    os.rename(temporary, path)


@pytest.fixture
def hostile_origin(tmp_path: Path) -> Path:
    require_tools("ffmpeg")
    origin = tmp_path / "music"
    folder = os.fsencode(origin / "Bad") + b"/f\xe9lder"  # a folder name in Latin-1
    os.makedirs(folder)
    encode(folder + b"/inv\xff\xfename.flac", "title=Bytes", "artist=Hostile", "album=Names")
    encode(folder + b"/notag\xe9.mp3")
    encode(os.fsencode(origin / "huge.flac"), "title=Huge", "artist=Hostile", "album=Numbers",
           f"track={NINES}", f"disc={NINES}/{NINES}")  # fmt: skip
    return origin


def test_hostile_names_and_numbers_are_listed_and_read(
    hostile_origin: Path, tmp_path: Path
) -> None:
    origin = hostile_origin
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        files = walk_files(mount.mountpoint)
        tracks = {name for name in files if not name.startswith(".") and "cover" not in name}
        assert tracks == {
            "Hostile/Names (0000) [FLAC]/00 - Bytes.flac",
            "Unknown Artist/Unknown Album (0000) [MP3]/00 - notag\ufffd.mp3",
            "Hostile/Numbers (0000) [FLAC]/00 - Huge.flac",
        }, files
        status = mount.status()
        assert status["tracks"] == 3
        assert status["unreadable_files"] == 0
        folder = os.fsencode(origin / "Bad") + b"/f\xe9lder"
        served = {
            "Hostile/Names (0000) [FLAC]/00 - Bytes.flac": folder + b"/inv\xff\xfename.flac",
            "Unknown Artist/Unknown Album (0000) [MP3]/00 - notag\ufffd.mp3": folder
            + b"/notag\xe9.mp3",
            "Hostile/Numbers (0000) [FLAC]/00 - Huge.flac": os.fsencode(origin / "huge.flac"),
        }
        for name, source in served.items():
            assert sha256_of(mount.mountpoint / name) == sha256_of(Path(os.fsdecode(source)))

        # Followed live too: a new file with such a name shows up by itself.
        encode(folder + b"/later\xff.flac", "title=Later", "artist=Hostile", "album=Names")
        later = mount.mountpoint / "Hostile/Names (0000) [FLAC]/00 - Later.flac"
        wait_until(later.exists, timeout=30, what="the file added while mounted")
        assert sha256_of(later) == sha256_of(Path(os.fsdecode(folder + b"/later\xff.flac")))

    # And at the next mount (the catalog is read back, not rebuilt).
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        assert mount.status()["tracks"] == 4
