"""Hidden origin files (issue 12, point 7): names starting with a dot are not
shown unless ``[scan] include_hidden`` is on; AppleDouble ``._*`` files (what
macOS writes beside each file on shares and FAT disks) never are."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.helpers import mounted, wait_until
from tests.e2e.library import Library, make_origin, render_path, retag_flac
from tests.e2e.test_offline import JOGA

pytestmark = [pytest.mark.mount, pytest.mark.media]

#: The start of an AppleDouble file: its magic number, then no audio at all.
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00" + bytes(4000)


def hidden_copy(source: Path, target: Path, title: str, track: str) -> None:
    """A copy of *source* at *target*, retagged, that appears there in one step."""
    staging = target.parent.parent / f"staging-{title}.flac"
    shutil.copy2(source, staging)
    retag_flac(staging, title=title, tracknumber=track)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)


def test_hidden_files_show_only_when_included_and_appledouble_never(
    library: Library, tmp_path: Path
) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA])
    joga = origin / JOGA
    album = joga.parent
    hidden_copy(joga, album / ".03 Hidden.flac", "Hidden", "3")
    hidden_copy(joga, origin / ".stash" / "04 Stashed.flac", "Stashed", "4")
    (album / f"._{joga.name}").write_bytes(APPLEDOUBLE)
    (origin / ".stash" / "._04 Stashed.flac").write_bytes(APPLEDOUBLE)
    shown = render_path(specs[JOGA])
    folder = Path(shown).parent.as_posix()

    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        assert mount.files() == {shown}  # the default: hidden files are skipped

    include = {"MUSICFS_SCAN_INCLUDE_HIDDEN": "true"}
    with mounted([origin], tmp_path / "mnt2", tmp_path / "cache2", env=include) as mount:
        everything = {shown, f"{folder}/03 - Hidden.flac", f"{folder}/04 - Stashed.flac"}
        assert mount.files() == everything  # no ._ file, not even under a fallback name
        # Live (inotify): an AppleDouble file, then a hidden track. Events come in
        # order, so once the track shows, the AppleDouble file had its chance.
        (album / "._05 Late.flac").write_bytes(APPLEDOUBLE)
        hidden_copy(joga, album / ".05 Late.flac", "Late", "5")
        late = f"{folder}/05 - Late.flac"
        wait_until(lambda: late in mount.files(), timeout=30, what="the hidden track to show")
        assert mount.files() == everything | {late}
