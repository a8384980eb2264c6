"""The mounted tree is exactly what the path template says (SPEC FR-2).

Proves, through a real mount of a library made by real encoders: every track
sits at the path the default template gives it (album artist, album, year,
format, zero-padded track, title), with the documented fallbacks for missing
tags; unicode names survive unchanged; '/' and leading dots in tags are made
safe; two tracks that map to one path both appear under distinct names; a
custom ``--template`` lays the tree out by that template instead.
"""

from __future__ import annotations

import os
import shutil
import unicodedata
from pathlib import Path

import pytest

from tests.e2e.helpers import Mount, mounted, sha256_of, walk_dirs, walk_files
from tests.e2e.library import DEFAULT_TEMPLATE, Library, retag_flac, with_counter

pytestmark = [pytest.mark.mount, pytest.mark.media]


def parents_of(paths: set[str]) -> set[str]:
    """Every directory that the given file paths imply."""
    dirs: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return dirs


def test_tree_matches_default_template_exactly(library: Library, library_mount: Mount) -> None:
    expected = library.expected_files()
    actual = walk_files(library_mount.mountpoint)
    assert actual == expected, (
        f"missing: {sorted(expected - actual)}\nunexpected: {sorted(actual - expected)}"
    )
    # ...and no directory beyond those the files need (no empty leftovers)
    assert walk_dirs(library_mount.mountpoint) == parents_of(expected)


@pytest.mark.parametrize(
    "path",
    [
        "Björk/Homogenic (1997) [FLAC]/01 - Jóga.flac",
        "Björk/Post (1995) [MP3]/04 - Hyperballad.mp3",  # second origin, same artist folder
        "Sigur Rós/Ágætis byrjun (1999) [MP3]/02 - Svefn-g-englar.mp3",
        "Мумий Тролль/Морская (1997) [OGG]/03 - Владивосток 2000.ogg",
        "宇多田ヒカル/ディープ・リバー (2002) [OPUS]/04 - 光.opus",
        "Arnalds Collective/Living Room Songs (2011) [M4A]/05 - Near Light.m4a",
        "Unknown Artist/Unknown Album (0000) [FLAC]/00 - no tags at all.flac",
        "Various Artists/Summer Hits (2020) [MP3]/01 - First Song.mp3",
        "Various Artists/Summer Hits (2020) [MP3]/02 - Zweites Lied.mp3",
        "AC_DC/_..And Justice (1988) [OGG]/09 - Either_Or.ogg",
        "The Doubles/Two Sides (2010) [FLAC]/01 - Overture.flac",
        "The Doubles/Two Sides (2010) [FLAC]/01 - Reprise.flac",
    ],
)
def test_documented_examples(library_mount: Mount, path: str) -> None:
    """Spelled-out paths, independent of the oracle in library.py."""
    target = library_mount.mountpoint / path
    assert target.is_file(), f"{path} is not in the tree: {sorted(library_mount.files())}"


def test_two_discs_with_overlapping_track_numbers_all_appear(library_mount: Mount) -> None:
    album = library_mount.mountpoint / "The Doubles" / "Two Sides (2010) [FLAC]"
    assert sorted(os.listdir(album)) == [
        "01 - Overture.flac",
        "01 - Reprise.flac",
        "02 - Finale.flac",
        "02 - Theme.flac",
    ]


def test_colliding_tracks_get_distinct_names_and_neither_is_hidden(
    library: Library, library_mount: Mount
) -> None:
    album = library_mount.mountpoint / "Mirror" / "Reflections (2001) [FLAC]"
    base = "07 - Echo.flac"
    assert sorted(os.listdir(album)) == sorted([base, with_counter(base, 2)])
    served = {(album / name).read_bytes() for name in os.listdir(album)}
    twins = {t.path.read_bytes() for t in library.tracks if t.spec.tags.get("title") == "Echo"}
    assert len(twins) == 2
    assert served == twins, "each colliding origin file must be served under exactly one name"


def test_unicode_names_are_preserved_byte_for_byte(library_mount: Mount) -> None:
    """Names come back as the same code points (no normalisation, no mojibake)."""
    names = set(os.listdir(library_mount.mountpoint))
    for artist in ("Björk", "Sigur Rós", "Мумий Тролль", "宇多田ヒカル"):
        assert artist in names
        nfd = unicodedata.normalize("NFD", artist)
        if nfd != artist:
            assert nfd not in names
    raw = set(os.listdir(os.fsencode(library_mount.mountpoint)))
    assert "Мумий Тролль".encode() in raw
    assert "宇多田ヒカル".encode() in raw


def test_nothing_is_hidden(library_mount: Mount) -> None:
    """Sanitising never produces dot-files: every entry is visible to `ls`."""
    for path in library_mount.files() | walk_dirs(library_mount.mountpoint):
        assert not any(part.startswith(".") for part in path.split("/")), path


CUSTOM_TEMPLATE = "$genre/$artist - $title.$format"


def test_custom_template_flag(library: Library, tmp_path: Path) -> None:
    with mounted(
        library.origins, tmp_path / "mnt", tmp_path / "cache", "--template", CUSTOM_TEMPLATE
    ) as mount:
        actual = mount.files()
        expected = library.expected_files(CUSTOM_TEMPLATE)
        assert actual == expected, (
            f"missing: {sorted(expected - actual)}\nunexpected: {sorted(actual - expected)}"
        )
        # spelled out: a few of them
        assert "Electronic/Björk - Jóga.flac" in actual
        assert "Metal/AC_DC - Either_Or.ogg" in actual
        assert "Ambient/Ólafur Arnalds - Near Light.m4a" in actual  # $artist, not album artist
        assert "Unknown Genre/Unknown Artist - no tags at all.flac" in actual


def test_template_change_on_the_same_cache_dir_relayouts_the_tree(
    library: Library, tmp_path: Path
) -> None:
    """Remounting a stored catalog with another template shows the new layout, not the old."""
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted(library.origins, mnt, cache, "--template", CUSTOM_TEMPLATE) as mount:
        assert mount.files() == library.expected_files(CUSTOM_TEMPLATE)
    with mounted(library.origins, mnt, cache, "--template", DEFAULT_TEMPLATE) as mount:
        assert mount.files() == library.expected_files()


def test_overlong_tag_values_give_legal_names(library: Library, tmp_path: Path) -> None:
    """Tags far beyond NAME_MAX (255 bytes) still give names the kernel accepts."""
    origin = tmp_path / "music"
    origin.mkdir()
    source = library.find("Björk/Homogenic/01 Jóga.flac")
    long_file = origin / "long.flac"
    shutil.copy2(source.path, long_file)
    retag_flac(long_file, artist="Я" * 200, album="Ж" * 200, title="Щ" * 200)
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        (path,) = mount.files()
        artist, album, name = path.split("/")
        for part in (artist, album, name):
            assert len(part.encode()) <= 255, part
        assert artist.startswith("Я" * 100)
        assert album.startswith("Ж" * 100)
        assert name.startswith("01 - " + "Щ" * 100)
        assert name.endswith(".flac")
        assert sha256_of(mount.mountpoint / path) == sha256_of(long_file)
