"""``musicfs tag set`` read back by independent tag readers, through a real mount (issue 12.4).

For every format MusicFS overlays — FLAC, MP3, Ogg Vorbis, Opus, M4A (AAC with
``moov`` before the audio, as ``-movflags +faststart`` writes it, and after it,
ffmpeg's default) and ALAC — a new title and genre are set, then read from the
mount by mutagen, ffprobe, exiftool and mediainfo. The audio decodes to the
origin's PCM, ``st_size`` is the number of bytes read, and the origin file is
never written. An Ogg comment header spread over several pages is served too.

The rule behind it: the tree never shows a title the served file's own tags do
not carry. Tags that cannot be served (comments that outgrow the Ogg header's
pages, a format without a header writer) are refused: ``tag set`` exits
non-zero, says why, and the tree, the overrides and the bytes stay as they were.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mutagen
import pytest

from tests.e2e.helpers import (
    Mount,
    describe,
    mounted,
    require_tools,
    run_musicfs,
    sha256_of,
    wait_until,
    walk_files,
)

pytestmark = [pytest.mark.mount, pytest.mark.media]

_TOOLS = ("ffmpeg", "ffprobe", "exiftool", "mediainfo", "flac", "lame", "oggenc", "opusenc")
NEW_TITLE = "Neuer Titel: Grüße"
NEW_GENRE = "Jazz Fusion"


@dataclass(frozen=True)
class Case:
    ext: str
    encode: tuple[str, ...]  # the command, with {wav} {out} {title} {genre}


_FF = ("ffmpeg", "-nostdin", "-v", "error", "-y", "-i", "{wav}", "-metadata", "title={title}",
       "-metadata", "artist=Reader Test", "-metadata", "album={title} Album",
       "-metadata", "genre={genre}", "-metadata", "date=2000")  # fmt: skip
CASES = {
    "flac": Case("flac", ("flac", "--silent", "--force", "-T", "TITLE={title}",
                          "-T", "ARTIST=Reader Test", "-T", "ALBUM={title} Album",
                          "-T", "GENRE={genre}", "-T", "DATE=2000", "-o", "{out}", "{wav}")),
    "mp3": Case("mp3", ("lame", "--quiet", "--id3v2-only", "--tt", "{title}", "--ta",
                        "Reader Test", "--tl", "{title} Album", "--tg", "{genre}", "--ty", "2000",
                        "{wav}", "{out}")),
    "vorbis": Case("ogg", ("oggenc", "-Q", "-t", "{title}", "-a", "Reader Test",
                           "-l", "{title} Album", "-G", "{genre}", "-d", "2000",
                           "-o", "{out}", "{wav}")),
    "opus": Case("opus", ("opusenc", "--quiet", "--title", "{title}", "--artist", "Reader Test",
                          "--album", "{title} Album", "--genre", "{genre}", "--date", "2000",
                          "{wav}", "{out}")),
    "m4a-moov-first": Case("m4a", (*_FF, "-c:a", "aac", "-b:a", "64k",
                                   "-movflags", "+faststart", "{out}")),
    "m4a-moov-last": Case("m4a", (*_FF, "-c:a", "aac", "-b:a", "64k", "{out}")),
    "alac": Case("m4a", (*_FF, "-c:a", "alac", "{out}")),
}  # fmt: skip


def run(*args: str | Path) -> str:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def encode(case: Case, origin: Path, name: str, frequency: int, genre: str = "Rock") -> Path:
    wav, out = origin / f"{name}.wav.tmp", origin / f"{name}.{case.ext}"
    run("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
        f"sine=frequency={frequency}:duration=3", "-ac", "2", "-ar", "44100", "-f", "wav",
        wav)  # fmt: skip
    values = {"wav": str(wav), "out": str(out), "title": f"Old {name}", "genre": genre}
    run(*(part.format(**values) for part in case.encode))
    wav.unlink()
    return out


def pcm(path: Path) -> str:
    """md5 of the decoded audio (what a player hears)."""
    return run("ffmpeg", "-v", "error", "-i", path, "-map", "0:a", "-f", "md5", "-").strip()


def readers(path: Path) -> dict[str, tuple[str | None, str | None]]:
    """(title, genre) as each of the four independent readers sees *path*."""
    audio: Any = mutagen.File(path, easy=True)
    seen: dict[str, tuple[str | None, str | None]] = {
        "mutagen": (audio.get("title", [None])[0], audio.get("genre", [None])[0])
    }
    probed = json.loads(run("ffprobe", "-v", "error", "-show_entries",
                            "format_tags:stream_tags", "-of", "json", path))  # fmt: skip
    tags = {k.lower(): v for k, v in probed["format"].get("tags", {}).items()}
    for stream in probed.get("streams", []):
        tags.update({k.lower(): v for k, v in stream.get("tags", {}).items()})
    seen["ffprobe"] = (tags.get("title"), tags.get("genre"))
    exif = json.loads(run("exiftool", "-json", "-Title", "-Genre", path))[0]
    seen["exiftool"] = (exif.get("Title"), exif.get("Genre"))
    title, genre = run("mediainfo", "--Inform=General;%Title%|%Genre%", path).strip().split("|")
    seen["mediainfo"] = (title or None, genre or None)
    return seen


def in_tree(mount: Mount, name: str) -> Path:
    """The file whose title is ``Old <name>`` (the name the template gave it)."""
    found = [p for p in walk_files(mount.mountpoint) if f"Old {name}." in p]
    assert len(found) == 1, f"{name}: {found}"
    return mount.mountpoint / found[0]


def tag_set(path: Path, *assignments: str) -> subprocess.CompletedProcess[str]:
    return run_musicfs("tag", "set", path, *assignments, "--json", timeout=120)


@pytest.fixture(scope="module")
def tagged_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mount, Path]]:
    require_tools(*_TOOLS)
    root = tmp_path_factory.mktemp("readers")
    origin = root / "music"
    origin.mkdir()
    for i, (name, case) in enumerate(sorted(CASES.items())):
        encode(case, origin, name, 300 + 40 * i)
    # A Vorbis comment header over several pages (150 KB of lyrics).
    big = encode(CASES["vorbis"], origin, "big-vorbis", 700)
    audio: Any = mutagen.File(big)
    audio["lyrics"] = ["la " * 50_000]
    audio.save()
    encode(CASES["opus"], origin, "full-opus", 740)  # will be refused 100 KB of lyrics
    run("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=780:duration=1",
        origin / "Old plain-wav.wav")  # fmt: skip  # no header writer for WAV
    with mounted([origin], root / "mnt", root / "cache") as mount:
        yield mount, origin


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_reader_sees_the_new_title_and_genre(
    tagged_mount: tuple[Mount, Path], name: str
) -> None:
    mount, origin = tagged_mount
    source = origin / f"{name}.{CASES[name].ext}"
    origin_sha = sha256_of(source)
    before = in_tree(mount, name)
    assert readers(before)["mutagen"] == (f"Old {name}", "Rock")

    result = tag_set(before, f"title={NEW_TITLE}", f"genre={NEW_GENRE}")
    assert result.returncode == 0, describe(result)
    info = json.loads(result.stdout)
    assert info["overlaid"] is True
    served = mount.mountpoint / info["path"]
    assert NEW_TITLE in served.name
    assert not before.exists()

    expected = (NEW_TITLE, NEW_GENRE)
    assert readers(served) == dict.fromkeys(("mutagen", "ffprobe", "exiftool", "mediainfo"),
                                            expected)  # fmt: skip
    data = served.read_bytes()
    assert served.stat().st_size == len(data)
    assert pcm(served) == pcm(source)
    assert sha256_of(source) == origin_sha, "the origin file was written"


def test_an_ogg_comment_header_over_several_pages_is_served(
    tagged_mount: tuple[Mount, Path],
) -> None:
    mount, origin = tagged_mount
    source = origin / "big-vorbis.ogg"
    origin_sha = sha256_of(source)
    result = tag_set(in_tree(mount, "big-vorbis"), f"title={NEW_TITLE}", f"genre={NEW_GENRE}")
    assert result.returncode == 0, describe(result)
    served = mount.mountpoint / json.loads(result.stdout)["path"]
    assert set(readers(served).values()) == {(NEW_TITLE, NEW_GENRE)}
    audio: Any = mutagen.File(served)
    assert audio["lyrics"] == ["la " * 50_000]  # the other comments stay
    assert served.stat().st_size == len(served.read_bytes())
    assert pcm(served) == pcm(source)
    assert sha256_of(source) == origin_sha


@pytest.mark.parametrize(
    ("name", "assignments", "reason"),
    [
        (
            "full-opus",
            ("title=Too Long", "lyrics=" + "x" * 100_000),
            "do not fit in the 1 Ogg page(s)",
        ),
        ("plain-wav", ("title=No Writer",), "cannot write tags into .wav files"),
    ],
)
def test_tags_that_cannot_be_served_are_refused_and_nothing_changes(
    tagged_mount: tuple[Mount, Path], name: str, assignments: tuple[str, ...], reason: str
) -> None:
    mount, _ = tagged_mount
    path = in_tree(mount, name)
    served_sha = sha256_of(path)
    tree = walk_files(mount.mountpoint)

    result = tag_set(path, *assignments)
    assert result.returncode != 0, describe(result)
    assert reason in result.stderr, describe(result)
    assert "nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr

    assert walk_files(mount.mountpoint) == tree
    assert sha256_of(path) == served_sha
    shown = run_musicfs("tag", "show", path, "--json")
    assert shown.returncode == 0, describe(shown)
    assert json.loads(shown.stdout)["overrides"] == {}


def test_an_override_that_cannot_be_served_after_the_file_changed_shows_its_own_tags(
    tmp_path: Path,
) -> None:
    """The origin file is replaced by one the writer refuses (a fragmented MP4):
    after the rescan the tree shows the tags the served bytes carry, not the
    overrides, and they come back once the overlay can be made again."""
    require_tools(*_TOOLS)
    origin = tmp_path / "music"
    origin.mkdir()
    source = encode(CASES["m4a-moov-last"], origin, "changing", 500)
    plain = source.read_bytes()
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        result = tag_set(in_tree(mount, "changing"), f"title={NEW_TITLE}")
        assert result.returncode == 0, describe(result)
        served = mount.mountpoint / json.loads(result.stdout)["path"]
        assert readers(served)["mutagen"][0] == NEW_TITLE

        fragmented = tmp_path / "fragmented.m4a"
        run("ffmpeg", "-v", "error", "-i", source, "-c", "copy", "-movflags",
            "frag_keyframe+empty_moov", fragmented)  # fmt: skip
        fragmented.replace(source)

        def own_title_shown() -> Path | None:
            found = [p for p in walk_files(mount.mountpoint) if "Old changing." in p]
            return mount.mountpoint / found[0] if found else None

        shown = wait_until(own_title_shown, timeout=30, what="the rescan to place it by its tags")
        assert not any(NEW_TITLE in p for p in walk_files(mount.mountpoint))
        assert readers(shown)["mutagen"][0] == "Old changing"
        assert shown.stat().st_size == len(shown.read_bytes()) == source.stat().st_size
        info = json.loads(run_musicfs("tag", "show", shown, "--json").stdout)
        assert info["overrides"] == {"title": NEW_TITLE}
        assert info["overlaid"] is False

        again = tmp_path / "again.m4a"
        again.write_bytes(plain)
        again.replace(source)

        def overridden_title_shown() -> Path | None:
            found = [p for p in walk_files(mount.mountpoint) if NEW_TITLE in p]
            return mount.mountpoint / found[0] if found else None

        served = wait_until(overridden_title_shown, timeout=30, what="the overlay made again")
        assert readers(served)["mutagen"][0] == NEW_TITLE
        assert served.stat().st_size == len(served.read_bytes())
