"""Property: any override of a real file is served as a file that carries exactly it.

One file per format (FLAC, MP3, Ogg Vorbis, Opus, M4A) is made once by ffmpeg
and scanned into a real catalog; each example then sets overrides (any Unicode
text for the text fields, numbers in range) the way ``musicfs tag set`` does
(`OverlayEditor.set_tags` with the built-in format plugins) and reads the file
back through `Library`, the read path under FUSE, without a mount. The served
bytes must be the synthesized header followed by the origin's audio unchanged,
their length the size stat reports, and mutagen (through the catalog's own
reader) must read the effective tags back from them. Where a writer cannot
serve a value, the refusal must be the documented `TagRefused` (nothing
changed), never a writer failing with some other exception.

Example counts come from the hypothesis profile (root conftest.py):
``HYPOTHESIS_PROFILE=long`` runs many more.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from musicfs.core.catalog.layout import Layout
from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import PathTemplate
from musicfs.core.content.library import Library
from musicfs.core.content.overlay import OverlayEditor, TagRefused
from musicfs.core.model import MAX_TAG_NUMBER, TrackTags
from musicfs.core.origins import LocalOrigin
from musicfs.core.origins.federation import Federation
from musicfs.core.sync.scanner import Scanner
from musicfs.core.tags.reader import read_tags
from musicfs.plugins.manager import PluginManager

pytestmark = [
    pytest.mark.media,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed"),
]

#: extension -> ffmpeg encoder arguments.
FORMATS = {
    "flac": ["-c:a", "flac"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "0"],
    "opus": ["-c:a", "libopus", "-b:a", "32k"],
    "m4a": ["-c:a", "aac", "-b:a", "64k"],
}
TEMPLATE = "$artist/$album/$track - $title.$format"
TEXT_FIELDS = ("title", "artist", "album", "albumartist", "genre", "composer")
NUMBER_FIELDS = ("track", "tracktotal", "disc", "disctotal")
#: What every writer writes (the rest describes the audio).
WRITTEN = (*TEXT_FIELDS, "year", *NUMBER_FIELDS, "compilation")
#: How a writer says it cannot serve a value: `set_tags` turns its
#: NotImplementedError into "cannot serve these tags: <writer>: <why>".
#: A writer that raised anything else is reported as "<writer> failed (...)".
UNDOCUMENTED = (" failed (", "returned no header", "finds no header")


class Served:
    """One origin file, scanned into its own catalog, with the overlay machinery."""

    def __init__(
        self, path: Path, catalog: Catalog, editor: OverlayEditor, library: Library, out: Path
    ) -> None:
        self.path, self.original = path, path.read_bytes()
        self.catalog, self.editor, self.library = catalog, editor, library
        (self.file_id,) = catalog.file_ids()
        self.out = out  # where served bytes are written for mutagen to read

    def __repr__(self) -> str:  # hypothesis prints its arguments: not the file's bytes
        return f"Served({self.path.name})"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """Each format's file, encoded once, scanned once; the examples only vary tags."""
    root = tmp_path_factory.mktemp("overlay-props")
    manager = PluginManager()
    manager.load_builtin()
    made: dict[str, Served] = {}
    for fmt, codec in FORMATS.items():
        origin_dir = root / fmt / "origin"
        origin_dir.mkdir(parents=True)
        path = origin_dir / f"tone.{fmt}"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
             *codec, "-metadata", "title=Own Title", "-metadata", "artist=Own Artist", str(path)],
            check=True,
        )  # fmt: skip
        catalog = Catalog.open(root / fmt / "catalog.sqlite3")
        template = PathTemplate.parse(TEMPLATE)
        origin = LocalOrigin("lib", origin_dir)
        Scanner(catalog, template).scan(origin)
        federation = Federation({"lib": origin})
        layout = Layout(catalog, template)
        editor = OverlayEditor(catalog, layout, federation, manager.extensions())
        made[fmt] = Served(path, catalog, editor, Library(catalog, federation),
                           root / fmt / f"served.{fmt}")  # fmt: skip
    yield made
    for one in made.values():
        one.catalog.close()


#: Any text a user can send (gRPC strings are valid UTF-8: no lone surrogates).
TEXT = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=60),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=3).map(lambda s: s * 700),
)
OVERRIDES = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(TEXT_FIELDS, TEXT),
        "year": st.integers(1, 9999).map(str),
        **dict.fromkeys(NUMBER_FIELDS, st.integers(1, MAX_TAG_NUMBER).map(str)),
        "compilation": st.sampled_from(["0", "1"]),
    },
)


def _read_whole(one: Served) -> tuple[bytes, int]:
    """The bytes the file is served with, and the size stat gives for it."""
    node = one.catalog.node_of_file(one.file_id)
    assert node is not None
    size = one.library.node(node.id).size
    handle = one.library.open(node.id)
    try:
        return one.library.read(handle, 0, size + 65536), size
    finally:
        one.library.close(handle)


def _written(tags: TrackTags) -> dict[str, object]:
    return {name: getattr(tags, name) for name in WRITTEN}


@given(fmt=st.sampled_from(sorted(FORMATS)), overrides=OVERRIDES)
def test_any_override_is_served_with_its_tags_and_the_same_audio(
    served: dict[str, Served], fmt: str, overrides: dict[str, str]
) -> None:
    one = served[fmt]
    node = one.catalog.node_of_file(one.file_id)
    assert node is not None
    refusal = None
    try:
        view, _ = one.editor.set_tags(one.catalog.path_of(node.id), overrides, clear=["*"])
    except TagRefused as exc:
        refusal = str(exc)
    if refusal is not None:
        assert not any(mark in refusal for mark in UNDOCUMENTED), f"a writer crashed: {refusal}"
        assert "cannot serve these tags" in refusal
        event(f"{fmt}: refused")
        return
    data, size = _read_whole(one)
    assert len(data) == size, "stat's size is the number of bytes read"
    track = one.catalog.track(one.file_id)
    assert track is not None
    overlay = one.catalog.overlay(one.file_id, track.size, track.mtime_ns)
    if overlay is None or overlay.header is None:
        assert data == one.original  # nothing to change: the origin's bytes
        assert _written(view.effective) == _written(view.own)
        return
    event(f"{fmt}: served with a new header")
    header = overlay.header
    assert data[: len(header)] == header
    assert data[len(header) :] == one.original[overlay.header_length :], "audio changed"
    one.out.write_bytes(data)
    assert _written(read_tags(str(one.out))) == _written(view.effective)
