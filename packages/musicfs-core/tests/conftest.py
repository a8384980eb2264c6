"""Shared fixtures of the core unit tests: small tagged audio files made in-process.

WAV files are written with the standard library and tagged with mutagen (ID3
inside RIFF), so these tests need no encoder; the end-to-end tests in tests/e2e
use real encoders for every format.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import wave
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from mutagen.id3 import TALB, TCMP, TDRC, TIT2, TPE1, TPE2, TPOS, TRCK
from mutagen.wave import WAVE

from musicfs.core.catalog.store import Catalog
from musicfs.core.content.cas import ChunkStore

CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "corpus" / "realworld"

MakeWav = Callable[..., Path]
CatalogSQL = Callable[..., list[Any]]
Encode = Callable[..., Path]


def write_wav(path: Path, seconds: float = 0.05, **tags: str) -> Path:
    """A mono 8 kHz WAV at *path* with ID3 tags (title, artist, album, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(os.urandom(2) * int(8000 * seconds))
    frames = {
        "title": TIT2,
        "artist": TPE1,
        "album": TALB,
        "albumartist": TPE2,
        "date": TDRC,
        "track": TRCK,
        "disc": TPOS,
        "compilation": TCMP,
    }
    if tags:
        audio: Any = WAVE(str(path))  # mutagen is untyped
        audio.add_tags()
        for key, value in tags.items():
            audio.tags.add(frames[key](encoding=3, text=[value]))
        audio.save()
    return path


@pytest.fixture
def make_wav() -> MakeWav:
    return write_wav


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"real-world corpus not found at {CORPUS}")
    return CORPUS


def encode_tone(out: Path, seconds: float = 1.0, **tags: str) -> Path:
    """A sine tone encoded by ffmpeg into *out* (format from its extension), tagged."""
    metadata = [arg for key, value in tags.items() for arg in ("-metadata", f"{key}={value}")]
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"sine=frequency=440:duration={seconds}", *metadata, str(out)],
        check=True,
    )  # fmt: skip
    return out


@pytest.fixture
def encode() -> Encode:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    return encode_tone


DamageChunk = Callable[[ChunkStore, str, int], None]


@pytest.fixture
def damage_chunk() -> DamageChunk:
    """Invert the bits of byte *at* of a stored chunk, in the file that holds it."""

    def damage(store: ChunkStore, digest: str, at: int) -> None:
        place = store.place(digest)
        assert place is not None, f"chunk {digest} is not stored"
        with open(store.path_of(place.pack, digest), "r+b") as fh:
            fh.seek(place.offset + at % place.size)
            byte = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte[0] ^ 0xFF]))

    return damage


@pytest.fixture
def catalog_sql() -> CatalogSQL:
    """Run SQL on a catalog's file from a connection of the test's own (autocommit):
    tests look at rows, or make the state an older MusicFS left. MusicFS itself runs
    no SQL on the catalog outside musicfs.core.catalog (catalog/test_no_sql.py)."""

    def run(catalog: Catalog, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with closing(sqlite3.connect(catalog.path, isolation_level=None)) as db:
            return db.execute(sql, params).fetchall()

    return run
