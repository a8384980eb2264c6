"""Audio identity (issue 15.1): the same audio keeps its identity through a move
and a retag; different audio never shares one. Real files encoded by ffmpeg,
retagged with mutagen as a tagger would."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import mutagen
import pytest
from mutagen.apev2 import APEv2
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3, TIT2
from mutagen.mp4 import MP4

from musicfs.core.tags.identity import SAMPLE, audio_identity, audio_identity_of, payload_range

Encode = Callable[..., Path]  # the `encode` fixture of conftest.py


def identity(path: Path) -> str:
    found = audio_identity_of(str(path))
    assert found is not None, f"no identity for {path}"
    return found


def payload_start(path: Path) -> int:
    data = path.read_bytes()
    return payload_range(lambda o, n: data[o : o + n], len(data), path.suffix[1:])[0]


def test_a_moved_and_renamed_file_keeps_its_identity(tmp_path: Path, encode: Encode) -> None:
    track = encode(tmp_path / "a.flac", 2.0, title="One")
    before = identity(track)
    moved = tmp_path / "elsewhere" / "renamed.flac"
    moved.parent.mkdir()
    shutil.move(track, moved)
    assert identity(moved) == before


def test_a_retagged_flac_keeps_its_identity(tmp_path: Path, encode: Encode) -> None:
    track = encode(tmp_path / "a.flac", 2.0, title="One")
    before = identity(track)
    start = payload_start(track)
    audio = FLAC(track)
    audio["title"] = "A much longer title " * 50
    picture = Picture()
    picture.type, picture.mime, picture.data = 3, "image/png", os.urandom(20_000)
    audio.add_picture(picture)  # the header grows past its padding: the payload moves
    audio.save()
    assert payload_start(track) > start + 10_000  # past the padding: the audio moved
    assert identity(track) == before


def test_a_retagged_mp3_keeps_its_identity_with_tags_at_both_ends(
    tmp_path: Path, encode: Encode
) -> None:
    track = encode(tmp_path / "a.mp3", 2.0, title="One")
    before = identity(track)
    tags = ID3(track)
    tags.add(TIT2(encoding=3, text="Two " * 300))
    tags.save(track, v1=2)  # ID3v2 grows, and an ID3v1 tag goes at the end
    ape = APEv2()
    ape["Title"] = "Three"
    ape.save(track)  # an APEv2 tag too (before the ID3v1 one)
    data = track.read_bytes()
    assert b"TAG" in data[-400:]  # both tags, in the order mutagen writes them
    assert data[-32:-24] == b"APETAGEX"
    assert identity(track) == before


def test_a_retagged_m4a_keeps_its_identity(tmp_path: Path, encode: Encode) -> None:
    track = encode(tmp_path / "a.m4a", 2.0, title="One")
    before = identity(track)
    audio = MP4(track)
    audio["\xa9nam"] = ["A much longer title " * 100]
    audio.save()
    assert identity(track) == before


@pytest.mark.parametrize("ext", ["flac", "mp3", "ogg", "m4a"])
def test_different_audio_has_a_different_identity(tmp_path: Path, encode: Encode, ext: str) -> None:
    one = encode(tmp_path / f"one.{ext}", 2.0, title="Same")
    two = encode(tmp_path / f"two.{ext}", 2.5, title="Same")
    assert identity(one) != identity(two)


def test_the_payload_excludes_the_tags(tmp_path: Path, encode: Encode) -> None:
    track = encode(tmp_path / "a.flac", 1.0, title="One")
    data = track.read_bytes()
    start, end = payload_range(lambda o, n: data[o : o + n], len(data), "flac")
    assert data[:4] == b"fLaC"
    assert start > 4  # the metadata blocks are not payload
    assert end == len(data)
    assert mutagen.File(track) is not None


def test_ranged_reads_give_the_same_identity_as_the_file(tmp_path: Path, encode: Encode) -> None:
    """The scanner reads a remote file through ranged reads: same identity."""
    track = encode(tmp_path / "a.mp3", 3.0, title="One")
    data = track.read_bytes()
    reads: list[tuple[int, int]] = []

    def read(offset: int, size: int) -> bytes:
        reads.append((offset, size))
        return data[offset : offset + size]

    assert audio_identity(read, len(data), "mp3") == identity(track)
    assert sum(size for _, size in reads) < 6 * SAMPLE  # samples, never a full read
    tail_reads = [r for r in reads if r[0] + r[1] > len(data) - SAMPLE]
    assert len(tail_reads) == 1  # trailing tags and the last sample: one request


def test_an_empty_file_has_no_identity(tmp_path: Path) -> None:
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    assert audio_identity_of(str(empty)) is None
    assert audio_identity_of(str(tmp_path / "missing.flac")) is None
