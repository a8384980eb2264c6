"""File names that are not UTF-8: listed as valid text, opened by their own bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from musicfs.core.model import catalog_name, origin_name, shown_name
from musicfs.core.origins import LocalOrigin

NAMES = [b"inv\xff\xfename.flac", b"f\xe9lder", b"cut\xe2\x82.mp3", b"\x80\x81\xfe\xff"]


@pytest.mark.parametrize("raw", NAMES)
def test_a_name_that_is_not_utf8_becomes_valid_text_and_maps_back(raw: bytes) -> None:
    name = catalog_name(os.fsdecode(raw))
    name.encode("utf-8")  # what SQLite, gRPC and JSON need: no lone surrogates
    assert os.fsencode(origin_name(name)) == raw
    assert "\ufffd" in shown_name(name)


@pytest.mark.parametrize("name", ["Jóga.flac", "光.opus", "plain.mp3", "Ünïcödé ✓.ogg"])
def test_valid_names_are_left_as_they_are(name: str) -> None:
    assert catalog_name(name) == origin_name(name) == shown_name(name) == name


def test_a_local_origin_lists_stats_and_opens_such_names(tmp_path: Path) -> None:
    folder = os.fsencode(tmp_path) + b"/f\xe9lder"
    os.mkdir(folder)
    with open(folder + b"/inv\xff\xfename.flac", "wb") as fh:
        fh.write(b"fLaC" + bytes(range(256)))
    origin = LocalOrigin("lib", tmp_path)
    (subdir,) = origin.list_dir("", ["flac"]).subdirs
    subdir.encode("utf-8")
    ((name, stat),) = origin.list_dir(subdir, ["flac"]).files
    relpath = f"{subdir}/{name}"
    relpath.encode("utf-8")
    assert origin.stat(relpath).size == stat.size == 260
    with origin.open(relpath) as file:
        assert file.read(0, 4) == b"fLaC"


def test_a_name_that_really_holds_private_use_characters_still_opens(tmp_path: Path) -> None:
    (tmp_path / "\uf7ff real.flac").write_bytes(b"fLaC")
    origin = LocalOrigin("lib", tmp_path)
    ((name, _),) = origin.list_dir("", ["flac"]).files
    with origin.open(name) as file:
        assert file.read(0, 4) == b"fLaC"
