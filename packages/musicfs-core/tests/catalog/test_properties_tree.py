"""Property: whatever the tags say, the tree has valid, unique names, the same in any order.

Hostile tags (any Unicode, NUL, ``/``, ``..``, 10 KB strings, huge and negative
numbers) go through the path template and `Layout` into a real SQLite catalog,
as a scan puts them there. Every name in the resulting tree must be one a
kernel accepts (non-empty, no ``/`` or NUL, not ``.`` or ``..``, valid UTF-8,
at most 255 bytes), unique in its folder, and the tree must not depend on the
order the files arrived in, nor on some of them leaving and coming back.

Example counts come from the hypothesis profile (root conftest.py):
``HYPOTHESIS_PROFILE=long`` runs many more.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from random import Random

from hypothesis import given
from hypothesis import strategies as st

from musicfs.core.catalog.layout import Layout, is_variant
from musicfs.core.catalog.store import ROOT_NODE, Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.model import FileStat, ScannedFile, TrackTags, catalog_name

TEMPLATES = [
    DEFAULT_TEMPLATE,
    "$genre/$artist/$album/$disc-$track $title.$format",
    "$year/$composer - $albumartist/$title",
    "$title.$format",
    "..$artist/.$album/$title$title$title.$format",
]

#: Every code point, surrogates included; and the names a path must never hold.
ANY_CHAR = st.characters(codec=None, exclude_categories=())
HOSTILE = st.sampled_from(["", " ", ".", "..", "/", "../..", "\x00", "a/../b", ".hidden", "\n"])
TEXT = st.one_of(
    st.none(),
    HOSTILE,
    st.text(ANY_CHAR, max_size=40),
    # 10 KB strings: a short piece repeated, mixed with a hostile one.
    st.builds(lambda piece, n, tail: piece * n + tail,
              st.text(ANY_CHAR, min_size=1, max_size=8), st.integers(1, 10_000), HOSTILE),
)  # fmt: skip
NUMBER = st.one_of(st.none(), st.integers(), st.integers(-(2**64), 2**64))
FORMATS = st.sampled_from(["flac", "mp3", "ogg", "opus", "m4a", "wav", "bin", ""])


@st.composite
def track_tags(draw: st.DrawFn) -> TrackTags:
    return TrackTags(
        title=draw(TEXT), artist=draw(TEXT), album=draw(TEXT), albumartist=draw(TEXT),
        genre=draw(TEXT), composer=draw(TEXT), year=draw(NUMBER), track=draw(NUMBER),
        tracktotal=draw(NUMBER), disc=draw(NUMBER), disctotal=draw(NUMBER),
        compilation=draw(st.booleans()),
    )  # fmt: skip


@dataclass(frozen=True)
class File:
    relpath: str
    format: str
    tags: TrackTags


@st.composite
def libraries(draw: st.DrawFn) -> list[File]:
    """1-8 files of one origin; tags often shared, so names collide."""
    pool = draw(st.lists(track_tags(), min_size=1, max_size=4))
    count = draw(st.integers(1, 8))
    files = []
    for i in range(count):
        # An origin's name is bytes; it reaches the catalog as `catalog_name` makes it.
        raw = draw(st.binary(max_size=12).filter(lambda b: b"/" not in b and b"\x00" not in b))
        stem = catalog_name(os.fsdecode(raw))
        fmt = draw(FORMATS)
        name = f"{i}-{stem}.{fmt}" if fmt else f"{i}-{stem}"
        files.append(File(name, fmt or "bin", draw(st.sampled_from(pool))))
    return files


def _store(catalog: Catalog, layout: Layout, file: File) -> int:
    scanned = ScannedFile("lib", file.relpath, FileStat(1000, 10**18), file.format, file.tags)
    file_id = catalog.upsert_file(scanned)
    layout.place(file_id, file.relpath, file.format, file.tags)
    return file_id


def _tree(catalog: Catalog) -> dict[str, str]:
    """origin relpath -> path in the tree, after checking every name on the way."""
    paths: dict[str, str] = {}
    stack = [(ROOT_NODE, "")]
    while stack:
        parent, prefix = stack.pop()
        children = catalog.children(parent, 0, 100_000)
        names = [child.name for child in children]
        assert len(set(names)) == len(names), f"duplicate names in {prefix!r}: {names}"
        for child in children:
            name = child.name
            assert name not in ("", ".", ".."), f"illegal name {name!r} in {prefix!r}"
            assert "/" not in name, f"illegal name {name!r}"
            assert "\x00" not in name, f"illegal name {name!r}"
            assert not name.startswith("."), f"hidden name {name!r}"
            size = len(name.encode("utf-8"))  # strict: a lone surrogate fails here
            assert size <= 255, f"name of {size} bytes: {name[:40]!r}..."
            path = f"{prefix}/{name}" if prefix else name
            if child.file_id is None:
                stack.append((child.id, path))
            else:
                track = catalog.track(child.file_id)
                assert track is not None
                paths[track.relpath] = path
    return paths


def _layout(template: str, arrivals: Sequence[File], leave: Sequence[File] = ()) -> dict[str, str]:
    """The tree after *arrivals* came in that order (then *leave* went and came back)."""
    with tempfile.TemporaryDirectory() as tmp, Catalog.open(Path(tmp) / "c.sqlite3") as catalog:
        layout = Layout(catalog, PathTemplate.parse(template))
        ids = {}
        for file in arrivals:
            with catalog.transaction():
                ids[file.relpath] = _store(catalog, layout, file)
        for file in leave:
            with catalog.transaction():
                layout.unplace(ids[file.relpath])
                catalog.delete_file(ids[file.relpath])
        for file in reversed(leave):
            with catalog.transaction():
                _store(catalog, layout, file)
        return _tree(catalog)


@given(
    template=st.sampled_from(TEMPLATES),
    files=libraries(),
    order=st.randoms(use_true_random=False),
    data=st.data(),
)
def test_any_tags_give_valid_unique_names_whatever_the_order(
    template: str, files: list[File], order: Random, data: st.DataObject
) -> None:
    first = _layout(template, files)
    assert set(first) == {f.relpath for f in files}, "every file is in the tree"
    shuffled = list(files)
    order.shuffle(shuffled)
    leave = data.draw(st.lists(st.sampled_from(files), unique_by=lambda f: f.relpath))
    second = _layout(template, shuffled, leave)
    # Which of two same-named tracks gets "(2)" depends on who came first; the
    # names the folder holds, and each file's folder and base name, do not.
    assert sorted(first.values()) == sorted(second.values())
    rendered = PathTemplate.parse(template)
    for file in files:
        folder, _, name = first[file.relpath].rpartition("/")
        assert second[file.relpath].rpartition("/")[0] == folder
        base = rendered.render(file.tags, file.relpath, file.format)[-1]
        assert is_variant(name, base), f"{name!r} is not {base!r} or a variant of it"
        assert is_variant(second[file.relpath].rpartition("/")[2], base)
