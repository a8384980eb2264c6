"""Reading tags with mutagen: every field, every container, never an exception."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from musicfs.core.model import override_value
from musicfs.core.tags.reader import UnreadableFile, read_tags

MakeWav = Callable[..., Path]  # the make_wav fixture of conftest.py


def test_id3_fields_are_read(tmp_path: Path, make_wav: MakeWav) -> None:
    path = make_wav(tmp_path / "a.wav", seconds=0.5, title="Jóga", artist="Björk",
                    album="Homogenic", albumartist="Björk", date="1997-09-22",
                    track="3/10", disc="1/2", compilation="1")  # fmt: skip
    tags = read_tags(str(path))
    assert (tags.title, tags.artist, tags.album, tags.albumartist) == (
        "Jóga", "Björk", "Homogenic", "Björk",
    )  # fmt: skip
    assert (tags.year, tags.track, tags.tracktotal, tags.disc, tags.disctotal) == (
        1997,
        3,
        10,
        1,
        2,
    )
    assert tags.compilation
    assert tags.samplerate == 8000
    assert tags.channels == 1
    assert tags.duration == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    "content", [b"", b"\x00" * 100, b"fLaC\x00\x00", b"ID3\x04" + b"\xff" * 50]
)
def test_garbage_is_unreadable_not_an_exception(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.flac"
    path.write_bytes(content)
    with pytest.raises(UnreadableFile):
        read_tags(str(path))


def test_every_corpus_file_is_read_or_reported(corpus: Path) -> None:
    readable = unreadable = 0
    for name in sorted(os.listdir(corpus)):
        try:
            read_tags(str(corpus / name))
            readable += 1
        except UnreadableFile as exc:
            reason = str(exc)
            unreadable += 1
        else:
            reason = "ok"
        assert reason, f"{name}: an unreadable file must say why"
    assert readable > 80
    assert unreadable > 0


def test_corpus_m4a_tags_and_art(corpus: Path) -> None:
    tags = read_tags(str(corpus / "has-tags.m4a"))
    assert tags.artist == "Test Artist"
    assert tags.has_art


def test_compilation_flag_from_txxx_frame(tmp_path: Path, make_wav: MakeWav) -> None:
    from mutagen.id3 import TXXX
    from mutagen.wave import WAVE

    path = make_wav(tmp_path / "c.wav", title="T")
    audio: Any = WAVE(str(path))
    audio.tags.add(TXXX(encoding=3, desc="compilation", text=["1"]))
    audio.save()
    assert read_tags(str(path)).compilation


NINES = "9" * 40  # seen in the wild: a track number no 64-bit integer holds


# (Not M4A: its track and disc numbers are 16-bit.)
@pytest.mark.parametrize("extension", ["flac", "mp3", "ogg"])
def test_numbers_beyond_any_integer_are_dropped_not_raised(
    tmp_path: Path, encode: Callable[..., Path], extension: str
) -> None:
    path = encode(tmp_path / f"huge.{extension}", 0.2, title="Huge", track=f"{NINES}/{NINES}",
                  disc=f"{NINES}/{NINES}")  # fmt: skip
    tags = read_tags(str(path))
    assert tags.title == "Huge"
    assert (tags.track, tags.tracktotal, tags.disc, tags.disctotal) == (None,) * 4


def test_a_track_number_that_fits_is_kept(tmp_path: Path, make_wav: MakeWav) -> None:
    tags = read_tags(str(make_wav(tmp_path / "a.wav", track="2147483647/12")))
    assert (tags.track, tags.tracktotal) == (2147483647, 12)


@pytest.mark.parametrize("value", [NINES, "2147483648", "9" * 5000])
def test_an_override_beyond_the_largest_number_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="track must be at most 2147483647"):
        override_value("track", value)
