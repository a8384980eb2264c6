"""The metadata overlay through a real mount (FR-5.3, issue 5).

``musicfs tag set`` overrides tags of a file: the file moves in the tree when
path fields change, and is served as a synthesized header + the original
payload. Checked per format with the tools users have: mutagen and ffprobe see
the new tags, the audio decodes to the same PCM as the original, mpv plays and
seeks, stat's size is the number of bytes read, and the origin file is never
written. ``tag clear`` brings the original bytes back; overrides survive a
remount. (M4A, other tag readers and refusals: tests/e2e/test_tag_readers.py.)
Finally the real-world corpus goes through the overlay without a crash.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mutagen
import pytest

from musicfs.core.art.rendering import ART_NAMES
from musicfs.plugins.builtin import BUILTIN_FORMATS
from tests.e2e.helpers import (
    Mount,
    describe,
    mounted,
    require_tools,
    run_musicfs,
    sha256_of,
    walk_files,
)
from tests.e2e.library import Library, make_origin, render_path

pytestmark = [pytest.mark.mount, pytest.mark.media]

OVERLAID = {
    "flac": "Björk/Homogenic/01 Jóga.flac",
    "mp3": "Sigur Rós/svefn-g-englar.mp3",
    "ogg": "Мумий Тролль/Морская/03.ogg",
    "opus": "jp/光.opus",
}


def tag(mount: Mount, action: str, path: Path, *args: str) -> dict[str, Any]:
    result = run_musicfs("tag", action, path, *args, "--json")
    assert result.returncode == 0, describe(result)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def pcm(path: Path) -> str:
    """md5 of the decoded audio (what a player hears)."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a", "-f", "md5", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def ffprobe_tags(path: Path) -> dict[str, str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format_tags:stream_tags", "-of", "json",
         str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    data = json.loads(out.stdout)
    tags = {k.lower(): v for k, v in data.get("format", {}).get("tags", {}).items()}
    for stream in data.get("streams", []):
        tags.update({k.lower(): v for k, v in stream.get("tags", {}).items()})
    return tags


def mpv_plays(path: Path, start: str = "0") -> None:
    result = subprocess.run(
        ["mpv", "--no-config", "--really-quiet", "--ao=null", "--vo=null", f"--start={start}",
         "--length=0.5", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"mpv failed on {path} (start {start}): {result.stderr}"


@pytest.fixture
def overlay_mount(library: Library, tmp_path: Path) -> Iterator[tuple[Mount, Path, Library]]:
    require_tools("ffmpeg", "ffprobe", "mpv")
    origin = tmp_path / "music"
    make_origin(library, origin, list(OVERLAID.values()))
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        yield mount, origin, library


@pytest.mark.parametrize("fmt", sorted(OVERLAID))
def test_overridden_tags_are_served_and_the_audio_is_untouched(
    overlay_mount: tuple[Mount, Path, Library], fmt: str
) -> None:
    mount, origin, library = overlay_mount
    relpath = OVERLAID[fmt]
    track = library.find(relpath)
    before = mount.mountpoint / render_path(track.spec)
    origin_sha = sha256_of(origin / relpath)
    original_pcm = pcm(origin / relpath)

    info = tag(mount, "set", before, "title=Überschrieben", "artist=New Artist", "year=2001",
               "genre=")  # fmt: skip
    assert info["overlaid"] is True
    assert info["effective"]["title"] == "Überschrieben"
    assert "genre" not in info["effective"]
    served = mount.mountpoint / info["path"]
    assert served != before
    assert served.parent.parent.name == "New Artist" or "New Artist" in str(served)
    assert not before.exists()

    data = served.read_bytes()
    assert served.stat().st_size == len(data)
    audio = mutagen_file(data)
    assert audio is not None
    assert audio["title"] == ["Überschrieben"]
    assert audio["artist"] == ["New Artist"]
    assert "genre" not in audio
    assert audio["album"] == [track.spec.tags["album"]]  # untouched fields stay
    probed = ffprobe_tags(served)
    assert probed["title"] == "Überschrieben"
    assert probed["artist"] == "New Artist"
    assert pcm(served) == original_pcm
    mpv_plays(served)
    mpv_plays(served, start="50%")
    assert sha256_of(origin / relpath) == origin_sha, "the origin file was written"

    cleared = tag(mount, "clear", served)
    assert cleared["overrides"] == {}
    assert (mount.mountpoint / cleared["path"]) == before
    assert sha256_of(before) == origin_sha  # exactly the original bytes again


def test_overrides_survive_a_remount_and_bad_input_is_refused(
    library: Library, tmp_path: Path
) -> None:
    origin, cache = tmp_path / "music", tmp_path / "cache"
    relpath = OVERLAID["flac"]
    make_origin(library, origin, [relpath])
    with mounted([origin], tmp_path / "mnt", cache) as mount:
        file = mount.mountpoint / render_path(library.find(relpath).spec)
        info = tag(mount, "set", file, "title=Kept", "track=9")
        found = run_musicfs("search", "kept", "--mount", mount.mountpoint, "--json")
        assert found.returncode == 0, describe(found)
        assert [h["path"] for h in json.loads(found.stdout)["hits"]] == [info["path"]]
        bad = run_musicfs("tag", "set", mount.mountpoint / info["path"], "year=soon")
        assert bad.returncode == 2, describe(bad)
        assert "year must be a whole number" in bad.stderr
        unknown = run_musicfs("tag", "set", mount.mountpoint / info["path"], "bitrate=1")
        assert unknown.returncode == 2, describe(unknown)
        assert "'bitrate' cannot be set" in unknown.stderr
        missing = run_musicfs("tag", "show", mount.mountpoint / "no" / "such.flac")
        assert missing.returncode == 2, describe(missing)
        assert "no such file" in missing.stderr
    with mounted([origin], tmp_path / "mnt", cache) as mount:
        moved = mount.mountpoint / info["path"]
        assert moved.name == "09 - Kept.flac"
        audio = mutagen_file(moved.read_bytes())
        assert audio["title"] == ["Kept"]
        shown = tag(mount, "show", moved)
        assert shown["overrides"] == {"title": "Kept", "track": "9"}
        assert shown["own"]["title"] == library.find(relpath).spec.tags["title"]


def test_the_realworld_corpus_through_the_overlay(corpus: Path, tmp_path: Path) -> None:
    """Every file mutagen can read is either overlaid correctly (new title, same
    payload) or refused and passed through byte for byte; no file crashes anything."""
    from musicfs.control.client import ControlClient, ControlError

    with mounted([corpus], tmp_path / "mnt", tmp_path / "cache") as mount:
        # Tracks only: covers of embedded art are listed too once made (after the scan).
        files = sorted(f for f in walk_files(mount.mountpoint) if Path(f).name not in ART_NAMES)
        status = mount.status()
        overlaid = passed = 0
        with ControlClient(status["socket"], timeout=60) as client:
            for virtual in files:
                try:
                    info = client.set_tags(virtual, {"title": "Corpus Title"})
                except ControlError as exc:  # refused: the file stays as it was
                    refused = str(exc)
                    info = client.get_tags(virtual)
                    assert "nothing was changed" in refused, virtual
                    assert info["overrides"] == {}, virtual
                served = (mount.mountpoint / info["path"]).read_bytes()
                source = (Path(corpus) / info["relpath"]).read_bytes()
                assert len(served) == os.stat(mount.mountpoint / info["path"]).st_size
                if not info["overlaid"]:
                    assert served == source, f"{virtual}: passed through, but changed"
                    passed += 1
                    continue
                writer = next(f() for f in BUILTIN_FORMATS if f().can_handle(info["format"]))
                original = writer.header_length(_reader(source), len(source))
                assert served.endswith(source[original:]), f"{virtual}: the payload changed"
                if _mutagen_reads(source):
                    audio = mutagen_file(served)
                    assert audio is not None, f"{virtual}: mutagen cannot read the overlaid file"
                    assert audio.get("title") == ["Corpus Title"], virtual
                overlaid += 1
        assert overlaid > 0
        print(f"corpus overlay: {overlaid} overlaid, {passed} refused and passed through")
        assert mount.status()["state"] in ("READY", "DEGRADED")  # the daemon is still up


def _reader(data: bytes) -> Callable[[int, int], bytes]:
    return lambda offset, size: data[offset : offset + size]


def mutagen_file(data: bytes) -> Any:
    return mutagen.File(io.BytesIO(data), easy=True)


def _mutagen_reads(data: bytes) -> bool:
    try:
        return mutagen_file(data) is not None
    except Exception:
        return False
