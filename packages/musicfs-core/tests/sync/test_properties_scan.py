"""Property: whatever bytes a file holds, the scanner records it; it never raises.

Any byte string (random, behind the magic bytes of a known format, or a real
encoded file with bytes flipped, cut short or spliced), under any audio
extension, goes through the scanner's tag reading (`parse_file`, what the
worker processes run, and `parse_remote`, the ranged reads of a remote
origin) and then into a real catalog and tree, as a scan records it. The result
is tags or an `UnreadableFile` reason; nothing may raise on the way, since one
such file used to take the whole mount down.

Example counts come from the hypothesis profile (root conftest.py):
``HYPOTHESIS_PROFILE=long`` runs many more.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mutagen
import pytest
from hypothesis import given
from hypothesis import strategies as st

from musicfs.core.catalog.layout import Layout
from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.model import AUDIO_EXTENSIONS, FileStat, ScannedFile, TrackTags
from musicfs.core.origins import LocalOrigin
from musicfs.core.sync.parsing import parse_file
from musicfs.core.sync.remote import parse_remote

#: The first bytes of the formats mutagen knows, so random bytes get past the sniffing.
MAGIC = [b"fLaC", b"ID3\x04\x00\x00", b"ID3\x03\x00\x00", b"OggS\x00\x02", b"\xff\xfb\x90",
         b"\x00\x00\x00\x20ftypM4A ", b"RIFF\x00\x00\x00\x00WAVE", b"FORM\x00\x00\x00\x00AIFF",
         b"wvpk", b"MAC ", b"MPCK", b"APETAGEX", b"0&\xb2u\x8ef\xcf\x11", b"DSD ", b"TTA1",
         b"tBaK", b"OFR ", b"\x0bw", b"MThd"]  # fmt: skip
SEEDS = {"flac": [], "mp3": [], "ogg": ["-c:a", "libvorbis"], "opus": [], "m4a": []}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Small real files to damage, one per format (none without ffmpeg)."""
    if shutil.which("ffmpeg") is None:
        return {}
    root = tmp_path_factory.mktemp("seeds")
    made = {}
    for ext, codec in SEEDS.items():
        out = root / f"seed.{ext}"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=0.2", *codec,
             "-metadata", "title=Seed", "-metadata", "track=3/9", str(out)],
            check=True,
        )  # fmt: skip
        made[ext] = out.read_bytes()
    return made


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


@st.composite
def contents(draw: st.DrawFn, seeds: dict[str, bytes]) -> tuple[bytes, str | None]:
    """Some bytes, and the extension they must have (None: any)."""
    kinds = ["random", "magic", "seed", "tagged"] if seeds else ["random", "magic"]
    kind = draw(st.sampled_from(kinds))
    if kind == "random":
        return draw(st.binary(max_size=4096)), None
    if kind == "magic":
        return draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=4096)), None
    if kind == "tagged":
        ext = draw(st.sampled_from(["flac", "mp3"]))
        return _tagged(seeds[ext], ext, draw), ext
    data = bytearray(seeds[draw(st.sampled_from(sorted(seeds)))])
    for _ in range(draw(st.integers(1, 8))):  # flip bytes, mostly in the header
        at = draw(st.integers(0, min(len(data), 8192) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):  # another format's header in front
        other = seeds[draw(st.sampled_from(sorted(seeds)))]
        data = bytearray(other[: draw(st.integers(0, 4096))]) + data
    return bytes(data), None


#: Tag text as files really hold it: numbers of any length, dates, junk.
TAG_TEXT = st.one_of(
    st.text(max_size=50),
    st.integers(min_value=-(10**50), max_value=10**50).map(str),
    st.from_regex(r"\A[0-9]{1,60}(/[0-9]{1,60})?\Z"),
)


def _tagged(seed: bytes, ext: str, draw: st.DrawFn) -> bytes:
    """A real FLAC or MP3 whose tags mutagen set to any text."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t.{ext}"
        path.write_bytes(seed)
        audio: Any = mutagen.File(path, easy=True)  # mutagen is untyped
        for key in draw(st.lists(st.sampled_from(EASY_KEYS), min_size=1, max_size=4)):
            audio[key] = [draw(TAG_TEXT)]
        audio.save()
        return path.read_bytes()


EASY_KEYS = ["title", "artist", "album", "genre", "date", "tracknumber", "discnumber",
             "composer", "albumartist", "compilation"]  # fmt: skip


@given(data=st.data(), ext=st.sampled_from(AUDIO_EXTENSIONS))
def test_any_bytes_are_recorded_never_raised(
    seeds: dict[str, bytes], workdir: Path, data: st.DataObject, ext: str
) -> None:
    content, must = data.draw(contents(seeds))
    ext = must or ext
    path = workdir / f"file.{ext}"
    path.write_bytes(content)
    tags, error, _ = parse_file(str(path))
    assert isinstance(tags, TrackTags)
    assert error is None or (isinstance(error, str) and error)
    remote = parse_remote(LocalOrigin("lib", workdir).open, path.name)
    assert remote[1] is None or remote[1]
    # Recorded as a scan records it: a row and a place in the tree (or none, if skipped).
    with Catalog.open(workdir / "c.sqlite3") as catalog, catalog.transaction():
        layout = Layout(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))
        scanned = ScannedFile("lib", path.name, FileStat(len(content), 1), ext, tags, error)
        file_id = catalog.upsert_file(scanned)
        layout.place(file_id, path.name, ext, tags, error)
        assert catalog.node_of_file(file_id) is not None
        row = catalog.track(file_id)
        assert row is not None
        assert row.error == error
