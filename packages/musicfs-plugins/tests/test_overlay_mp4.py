"""The MP4 (M4A) header writer of the metadata overlay, on files ffmpeg makes.

Served the way the filesystem serves a file: ``synthesize_for_file`` + the
bytes after ``header_length``. AAC with ``moov`` before the audio (``-movflags
+faststart``) and after it (ffmpeg's default), and ALAC: the served bytes give
the new tags to the catalog's reader, ffprobe, exiftool and mediainfo, decode
to the very same PCM, and keep the cover art and the tags that did not change.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import mutagen.mp4
import pytest

from musicfs.core.model import TrackTags
from musicfs.core.tags.reader import read_tags
from musicfs.plugins.builtin import Mp4Format

_TOOLS = ("ffmpeg", "ffprobe", "exiftool", "mediainfo")
_MISSING = [tool for tool in _TOOLS if shutil.which(tool) is None]

pytestmark = [
    pytest.mark.media,
    pytest.mark.skipif(bool(_MISSING), reason=f"not installed: {', '.join(_MISSING)}"),
]

CHANGES: dict[str, Any] = {
    "title": "Neuer Titel: Grüße",
    "genre": "Jazz",
    "album": None,
    "year": 2024,
    "track": 7,
    "tracktotal": 12,
    "disc": 1,
    "disctotal": 2,
    "compilation": True,
}
WRITTEN = ("title", "artist", "album", "genre", "year", "track", "tracktotal", "disc",
           "disctotal", "composer", "compilation")  # fmt: skip


def run(*args: str | Path) -> str:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def serve(original: bytes, meta: TrackTags) -> tuple[bytes, int]:
    """The served bytes for *meta*, and the original header's length."""

    def read(offset: int, size: int) -> bytes:
        return original[offset : offset + size]

    plugin = Mp4Format()
    length = plugin.header_length(read, len(original))
    assert length > 0
    return plugin.synthesize_for_file(meta, read, len(original), length) + original[length:], length


def pcm(path: Path) -> str:
    return run("ffmpeg", "-v", "error", "-i", path, "-map", "0:a", "-f", "md5", "-").strip()


def covers(path: Path) -> list[bytes]:
    tags: Any = mutagen.mp4.MP4(path).tags
    return [bytes(c) for c in tags["covr"]]


def top_atoms(data: bytes) -> list[bytes]:
    names, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        if size == 1:
            size = int.from_bytes(data[at + 8 : at + 16], "big")
        names.append(data[at + 4 : at + 8])
        at += size
    return names


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mp4")
    run("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=4",
        "-ac", "2", "-ar", "44100", root / "tone.wav")  # fmt: skip
    run("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120", "-frames:v", "1",
        root / "cover.png")  # fmt: skip
    return root


def make(media: Path, name: str, codec: str, *flags: str) -> Path:
    out = media / name
    run("ffmpeg", "-v", "error", "-y", "-i", media / "tone.wav", "-i", media / "cover.png",
        "-map", "0:a", "-map", "1:v", "-c:a", codec, "-c:v", "copy",
        "-disposition:v", "attached_pic", "-metadata", "title=Old Title",
        "-metadata", "artist=Old Artist", "-metadata", "album=Old Album",
        "-metadata", "genre=Rock", "-metadata", "composer=Old Composer",
        "-metadata", "date=1999", *flags, out)  # fmt: skip
    return out


CASES = {
    "aac-moov-first": ("aac", "-movflags", "+faststart"),
    "aac-moov-last": ("aac",),
    "alac": ("alac",),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_served_file_has_the_new_tags_the_same_audio_and_its_cover(
    media: Path, tmp_path: Path, case: str
) -> None:
    codec, *flags = CASES[case]
    path = make(media, f"{case}.m4a", codec, *flags)
    original = path.read_bytes()
    own = read_tags(str(path))
    meta = own.replace(**CHANGES)
    served, length = serve(original, meta)
    out = tmp_path / f"served-{case}.m4a"
    out.write_bytes(served)

    got = read_tags(str(out))
    assert {f: getattr(got, f) for f in WRITTEN} == {f: getattr(meta, f) for f in WRITTEN}
    assert (got.artist, got.composer) == ("Old Artist", "Old Composer")
    assert served.endswith(original[length:])
    assert pcm(out) == pcm(path)
    assert covers(out) == covers(path)
    probed = json.loads(run("ffprobe", "-v", "error", "-show_entries", "format_tags",
                            "-of", "json", out))["format"]["tags"]  # fmt: skip
    assert (probed["title"], probed["genre"]) == (CHANGES["title"], "Jazz")
    assert "album" not in probed
    exif = json.loads(run("exiftool", "-json", "-Title", "-Genre", "-Warning", out))[0]
    assert (exif["Title"], exif["Genre"]) == (CHANGES["title"], "Jazz")
    assert "Warning" not in exif
    info = run("mediainfo", "--Inform=General;%Title%|%Genre%", out).strip()
    assert info == f"{CHANGES['title']}|Jazz"
    # moov always comes before the audio in what is served, and only once.
    names = top_atoms(served)
    assert names.count(b"moov") == 1
    assert names.index(b"moov") < names.index(b"mdat")


def test_moov_after_the_audio_needs_the_whole_file(media: Path) -> None:
    path = make(media, "last.m4a", "aac")
    original = path.read_bytes()
    plugin = Mp4Format()
    length = plugin.header_length(lambda o, s: original[o : o + s], len(original))
    assert top_atoms(original).index(b"moov") > top_atoms(original).index(b"mdat")
    with pytest.raises(NotImplementedError, match="follows the audio"):
        plugin.synthesize_header(TrackTags(title="x"), original[:length])


def test_unchanged_tags_give_the_original_header(media: Path) -> None:
    for name, flags in (("same-first.m4a", ("-movflags", "+faststart")), ("same-last.m4a", ())):
        path = make(media, name, "aac", *flags)
        original = path.read_bytes()
        served, _ = serve(original, read_tags(str(path)))
        assert served == original


def test_a_file_without_tags_gets_an_ilst(media: Path, tmp_path: Path) -> None:
    path = tmp_path / "bare.m4a"
    run("ffmpeg", "-v", "error", "-i", media / "tone.wav", "-c:a", "aac", "-map_metadata", "-1",
        "-fflags", "+bitexact", "-movflags", "+faststart", path)  # fmt: skip
    assert not mutagen.mp4.MP4(path).tags
    served, _ = serve(path.read_bytes(), TrackTags(title="Fresh", genre="Ambient"))
    out = tmp_path / "bare-served.m4a"
    out.write_bytes(served)
    got = read_tags(str(out))
    assert (got.title, got.genre) == ("Fresh", "Ambient")
    assert pcm(out) == pcm(path)


def test_chunk_offsets_follow_the_header(media: Path, tmp_path: Path) -> None:
    """A longer header moves the audio: every stco entry moves with it."""
    path = make(media, "offsets.m4a", "aac", "-movflags", "+faststart")
    original = path.read_bytes()
    served, length = serve(original, read_tags(str(path)).replace(lyrics="la " * 5000))
    delta = len(served) - len(original)
    assert delta > 15_000

    def offsets(data: bytes) -> list[int]:
        at = data.index(b"stco")
        count = int.from_bytes(data[at + 8 : at + 12], "big")
        return [int.from_bytes(data[at + 12 + 4 * i : at + 16 + 4 * i], "big")
                for i in range(count)]  # fmt: skip

    assert offsets(served) == [o + delta for o in offsets(original)]
    assert all(o >= length for o in offsets(original))


def test_fragmented_files_are_refused(media: Path, tmp_path: Path) -> None:
    path = tmp_path / "frag.m4a"
    run("ffmpeg", "-v", "error", "-i", media / "tone.wav", "-c:a", "aac",
        "-movflags", "frag_keyframe+empty_moov", path)  # fmt: skip
    data = path.read_bytes()
    plugin = Mp4Format()
    assert plugin.header_length(lambda o, s: data[o : o + s], len(data)) == 0
    with pytest.raises(NotImplementedError, match="fragmented"):
        plugin.synthesize_for_file(TrackTags(title="x"), lambda o, s: data[o : o + s], len(data), 0)
