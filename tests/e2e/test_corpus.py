"""A messy real-world collection mounts, scans and serves exact bytes (SPEC §3, NFR-7.4).

Mounts the corpus of odd and deliberately broken files from mutagen's test
suite (``/work/shared/corpus/realworld``; skipped when absent) and proves: the
mount comes up and the scan finishes; unreadable files are counted in
``status``; every file with an audio extension that mutagen can read is in the
tree (and so is every unreadable one, under the documented fallback names);
and every file in the mount reads back exactly the origin's bytes — the mapping
from virtual path to origin file taken from the catalog in the cache dir.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import mutagen
import pytest
from PIL import Image

from musicfs.core import AUDIO_EXTENSIONS, Catalog
from musicfs.core.art.rendering import ART_NAMES
from tests.e2e.helpers import Mount, mounted, walk_files

pytestmark = [pytest.mark.mount]

#: Formats SPEC §3 names; the scanner's extension list must cover them.
SPEC_EXTENSIONS = {"flac", "mp3", "ogg", "opus", "m4a", "wav", "aif", "aiff", "wv", "ape",
                   "wma", "dsf"}  # fmt: skip


def audio_files(corpus: Path) -> list[Path]:
    """Corpus files the scanner looks at: audio extension, not hidden."""
    return sorted(
        p
        for p in corpus.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(corpus).parts)
        and p.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS
    )


# The container each extension names: MusicFS opens a file with it first, which
# also reads files that mutagen.File's format probe does not recognise.
CONTAINERS = {".mp4": "mutagen.mp4.MP4", ".m4a": "mutagen.mp4.MP4", ".m4b": "mutagen.mp4.MP4"}


def mutagen_reads(path: Path) -> bool:
    """True if mutagen reads the file: by probing, or as the container its extension names."""
    try:
        if mutagen.File(path) is not None:
            return True
    except Exception:
        pass
    name = CONTAINERS.get(path.suffix.lower())
    if name is None:
        return False
    module, _, cls = name.rpartition(".")
    try:
        getattr(importlib.import_module(module), cls)(path)
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def corpus_mount(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    base = tmp_path_factory.mktemp("corpus")
    with mounted([corpus], base / "mnt", base / "cache") as mount:
        yield mount


@pytest.fixture(scope="module")
def virtual_paths(corpus_mount: Mount) -> dict[str, str]:
    """Origin relpath → virtual path, from the catalog (read-only, next to the live daemon)."""
    with Catalog.open(corpus_mount.cache_dir / "catalog.sqlite3", readonly=True) as catalog:
        mapping: dict[str, str] = {}
        for track in catalog.tracks():
            node = catalog.node_of_file(track.id)
            assert node is not None, f"{track.relpath} is catalogued but not in the tree"
            mapping[track.relpath] = catalog.path_of(node.id)
    return mapping


def is_cover_file(virtual: str) -> bool:
    """True for the cover images MusicFS adds to folders of tracks with art (FR-16)."""
    return virtual.rpartition("/")[2] in ART_NAMES


def test_spec_formats_are_scanned() -> None:
    assert set(AUDIO_EXTENSIONS) >= SPEC_EXTENSIONS


def test_scan_finishes_and_counts_unreadable_files(corpus: Path, corpus_mount: Mount) -> None:
    data = corpus_mount.status()
    assert data["state"] == "READY"
    assert data["scanning"] is False
    unreadable_by_mutagen = [p for p in audio_files(corpus) if not mutagen_reads(p)]
    assert unreadable_by_mutagen, "the corpus is expected to hold broken files"
    assert data["unreadable_files"] > 0
    assert data["unreadable_files"] >= len(unreadable_by_mutagen)
    assert data["tracks"] == len(audio_files(corpus))


def test_every_readable_audio_file_is_in_the_tree(
    corpus: Path, corpus_mount: Mount, virtual_paths: dict[str, str]
) -> None:
    in_mount = walk_files(corpus_mount.mountpoint)
    missing = []
    for path in audio_files(corpus):
        if not mutagen_reads(path):
            continue
        relpath = path.relative_to(corpus).as_posix()
        virtual = virtual_paths.get(relpath)
        if virtual is None or virtual not in in_mount:
            missing.append(relpath)
    assert not missing, f"readable by mutagen but not in the tree: {missing}"


def test_unreadable_files_are_shown_under_fallback_names(
    corpus: Path, corpus_mount: Mount, virtual_paths: dict[str, str]
) -> None:
    in_mount = walk_files(corpus_mount.mountpoint)
    for path in audio_files(corpus):
        if mutagen_reads(path):
            continue
        relpath = path.relative_to(corpus).as_posix()
        assert relpath in virtual_paths, f"{relpath} (unreadable) is not in the tree"
        virtual = virtual_paths[relpath]
        assert virtual in in_mount
        ext = path.suffix.lower().lstrip(".")
        stem = re.escape(path.name[: -len(ext) - 1])
        pattern = (
            rf"Unknown Artist/Unknown Album \(0000\) \[{re.escape(ext.upper())}\]/"
            rf"00 - {stem}( \(\d+\))?\.{re.escape(ext)}"
        )
        assert re.fullmatch(pattern, virtual), f"{relpath} shown as {virtual!r}"


def test_every_file_in_the_mount_reads_back_the_origin_bytes(
    corpus: Path, corpus_mount: Mount, virtual_paths: dict[str, str]
) -> None:
    in_mount = {p for p in walk_files(corpus_mount.mountpoint) if not is_cover_file(p)}
    assert in_mount == set(virtual_paths.values()), "the tree and the catalog disagree"
    wrong = []
    for relpath, virtual in virtual_paths.items():
        served = corpus_mount.mountpoint / virtual
        origin = corpus / relpath
        if served.read_bytes() != origin.read_bytes():
            wrong.append(virtual)
        elif os.stat(served).st_size != os.stat(origin).st_size:
            wrong.append(f"{virtual} (size)")
    assert not wrong, f"bytes through the mount differ from the origin: {wrong}"


def test_embedded_art_becomes_cover_files_that_are_real_images(
    corpus_mount: Mount, virtual_paths: dict[str, str]
) -> None:
    # A lookup of cover.jpg waits for the folder's art to be extracted, so this
    # asks every folder of tracks, broken files included, whether it has art.
    folders = sorted({v.rpartition("/")[0] for v in virtual_paths.values()})
    with_art = [f for f in folders if (corpus_mount.mountpoint / f / ART_NAMES[0]).exists()]
    assert with_art, "the corpus has files with embedded pictures"
    for folder in with_art:
        listed = set(os.listdir(corpus_mount.mountpoint / folder))
        assert set(ART_NAMES) <= listed, f"{folder} lists {sorted(listed)}"
        for name in ART_NAMES:
            with Image.open(corpus_mount.mountpoint / folder / name) as image:
                assert image.format == "JPEG", f"{folder}/{name} is {image.format}"
                image.load()  # raises on a truncated or corrupt image
    stray = {p for p in walk_files(corpus_mount.mountpoint) if is_cover_file(p)}
    assert {p.rpartition("/")[0] for p in stray} <= set(with_art)


def test_non_audio_files_are_not_shown(corpus: Path, virtual_paths: dict[str, str]) -> None:
    others = [
        p.relative_to(corpus).as_posix()
        for p in corpus.iterdir()
        if p.is_file() and p.suffix.lower().lstrip(".") not in AUDIO_EXTENSIONS
    ]
    assert others, "the corpus has non-audio files (.jpg, .id3, .apev2, ...)"
    assert not set(others) & set(virtual_paths)
