"""readdir of a directory with 100,000 entries through a real mount (FR-2).

The catalog is made directly (no audio files): a template that puts every track
in the root gives one huge directory. The kernel reads it in many readdir calls,
each resuming at the offset (node id) the previous one returned; every entry
must come back exactly once, and the mount must come up at once with it.

Each test runs twice: on the catalog's rows, and on the same catalog with its
listings packed as a scan's end packs them (catalog/listings.py), which a
first listing then reads in one row.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from musicfs.core.catalog.layout import TEMPLATE_SETTING, Layout
from musicfs.core.catalog.store import ROOT_NODE, Catalog
from musicfs.core.catalog.templates import PathTemplate
from musicfs.core.model import FileStat, ScannedFile, TrackTags
from musicfs.core.mount.service import LAYOUT_SETTING
from tests.e2e.helpers import mounted

pytestmark = pytest.mark.mount

ENTRIES = 100_000
TEMPLATE = "$title.$format"


@pytest.fixture(scope="module")
def big_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir whose catalog has ENTRIES tracks in the root (not packed)."""
    cache = tmp_path_factory.mktemp("big") / "cache"
    with Catalog.open(cache / "catalog.sqlite3") as catalog:
        catalog.register_origin("music", "local", "/nowhere")  # set where it is mounted
        layout = Layout(catalog, PathTemplate.parse(TEMPLATE))
        with catalog.transaction():
            for i in range(ENTRIES):
                tags = TrackTags(title=f"track {i:06d}")
                relpath = f"{i}.flac"
                scanned = ScannedFile("music", relpath, FileStat(i, 10**18), "flac", tags)
                file_id = catalog.upsert_file(scanned)
                layout.place(file_id, relpath, "flac", tags, stat=scanned.stat)
            catalog.set_setting(TEMPLATE_SETTING, TEMPLATE)
            catalog.set_setting(LAYOUT_SETTING, "False")
    return cache


@pytest.fixture(scope="module", params=["rows", "packed"])
def big_mount(
    request: pytest.FixtureRequest, big_catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    root = tmp_path_factory.mktemp(f"big-{request.param}")
    origin, mnt, cache = root / "music", root / "mnt", root / "cache"
    origin.mkdir()
    mnt.mkdir()
    shutil.copytree(big_catalog, cache)
    with Catalog.open(cache / "catalog.sqlite3") as catalog:
        if request.param == "packed":
            assert catalog.pack_listings() == 1
        assert (catalog.packed_listing(ROOT_NODE) is not None) == (request.param == "packed")
        catalog.register_origin("music", "local", str(origin))
    # No rescan: the origin holds none of these files, a scan would remove them.
    no_scan = {"MUSICFS_SCAN_ON_START": "false"}
    with mounted([origin], mnt, cache, "--template", TEMPLATE, wait_scan=False, env=no_scan):
        yield mnt


def test_every_entry_is_listed_exactly_once(big_mount: Path) -> None:
    names = os.listdir(big_mount)
    assert len(names) == ENTRIES
    assert set(names) == {f"track {i:06d}.flac" for i in range(ENTRIES)}


def test_listing_with_scandir_sees_sizes_of_far_entries(big_mount: Path) -> None:
    sizes = {e.name: e.stat().st_size for e in os.scandir(big_mount) if e.name.endswith("9.flac")}
    assert len(sizes) == ENTRIES // 10
    assert sizes["track 099999.flac"] == 99_999


def test_ls_agrees(big_mount: Path) -> None:
    out = subprocess.run(["ls", "-f", str(big_mount)], capture_output=True, check=True, text=True)
    assert len([n for n in out.stdout.splitlines() if n.endswith(".flac")]) == ENTRIES
