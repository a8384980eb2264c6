"""Header/payload split: where the tags end, checked with mutagen-written files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from musicfs.core.tags.headers import RangedRead, header_length

Encode = Callable[..., Path]  # the encode fixture of conftest.py


def reader(path: Path) -> RangedRead:
    data = path.read_bytes()
    return lambda offset, size: data[offset : offset + size]


def test_flac_header_is_every_metadata_block(tmp_path: Path, encode: Encode) -> None:
    path = encode(tmp_path / "out.flac", title="Some Title", artist="Some Artist")
    length = header_length(reader(path), "flac")
    data = path.read_bytes()
    assert data[:4] == b"fLaC"
    assert b"Some Title" in data[:length]
    assert data[length : length + 2] in (b"\xff\xf8", b"\xff\xf9")  # a FLAC frame starts


def test_mp3_header_is_the_id3_tag(tmp_path: Path, encode: Encode) -> None:
    path = encode(tmp_path / "out.mp3", title="Some Title", artist="Some Artist")
    length = header_length(reader(path), "mp3")
    data = path.read_bytes()
    assert data[:3] == b"ID3"
    assert b"Some Title" in data[:length]
    assert data[length] == 0xFF  # an MPEG frame sync follows


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        (b"", "flac"),
        (b"fLaC\x00\x00", "flac"),  # truncated block header
        (b"fLaC\x80\xff\xff\xff", "flac"),  # last block claims 16 MiB that are not there
        (b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f", "mp3"),  # tag claims 256 MiB
        (b"ID3\x04\x00\x00\x80\x00\x00\x00", "mp3"),  # not syncsafe
        (b"RIFF....WAVEfmt ", "wav"),
    ],
)
def test_damaged_or_headerless_files_are_all_payload(content: bytes, fmt: str) -> None:
    assert header_length(lambda o, n: content[o : o + n], fmt) == 0


def test_corpus_files_never_claim_more_than_they_hold(corpus: Path) -> None:
    for path in sorted(corpus.iterdir()):
        fmt = path.suffix.lstrip(".").lower()
        length = header_length(reader(path), fmt)
        assert 0 <= length <= path.stat().st_size, path.name
