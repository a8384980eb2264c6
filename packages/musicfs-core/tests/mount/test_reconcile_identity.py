"""An origin dropped from the config at mount time (`MusicFS.prepare`): the user
data of its tracks goes to their copies on another origin, and the tree keeps
serving those copies consistently (issue 15.1)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from mutagen.flac import FLAC

from musicfs.core.catalog.layout import TEMPLATE_SETTING, Layout
from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.config.origins import OriginConfig
from musicfs.core.config.settings import Config
from musicfs.core.mount.service import LAYOUT_SETTING, MusicFS
from musicfs.core.origins import LocalOrigin
from musicfs.core.sync.scanner import Scanner

Encode = Callable[..., Path]  # the encode fixture of conftest.py


def test_a_dropped_origins_copy_elsewhere_gets_its_plays_and_is_served_at_its_size(
    tmp_path: Path, encode: Encode
) -> None:
    old, new, cache, mnt = (tmp_path / n for n in ("old", "new", "cache", "mnt"))
    for folder in (old, new, cache, mnt):
        folder.mkdir()
    encode(old / "one.flac", 2.0, title="One", artist="Ann")
    shutil.copy(old / "one.flac", new / "one.flac")
    copy = FLAC(new / "one.flac")  # retagged on the new disk: a node of its own
    copy["title"] = "One (copy)"
    copy.save()
    template = PathTemplate.parse(DEFAULT_TEMPLATE)
    with Catalog.open(cache / "catalog.sqlite3") as catalog:
        Scanner(catalog, template).scan(LocalOrigin("old", old))
        old_id = catalog.file_id_at("old", "one.flac")
        assert old_id is not None
        with catalog.transaction():
            catalog.set_overrides(old_id, {"genre": "Jazz"}, source="user")
            catalog.record_plays([(old_id, 1000.0), (old_id, 2000.0)])
        Scanner(catalog, template).scan(LocalOrigin("new", new))  # a copy of the overrides
        track = catalog.track(catalog.file_id_at("new", "one.flac") or 0)
        assert track is not None
        new_id = track.id
        with catalog.transaction():
            catalog.set_overrides(old_id, {"album": "Fixed"}, source="user")  # later, old only
            # The copy's overlay, as the mount makes it: served with a new header.
            catalog.set_overlay(new_id, track.size, track.mtime_ns, 100, b"h" * 300)
            Layout(catalog, template).place_track(track)

    config = Config(cache_dir=str(cache), origins=(OriginConfig("new", "local", str(new)),))
    with Catalog.open(cache / "catalog.sqlite3") as catalog, catalog.transaction():
        # The layout the mount last built the tree with: this one (no rebuild).
        catalog.set_setting(TEMPLATE_SETTING, config.template)
        catalog.set_setting(LAYOUT_SETTING, str(config.scan.skip_unreadable))
    fs = MusicFS(config, mnt)
    fs.prepare()  # "old" is no longer configured
    fs.close()

    with Catalog.open(cache / "catalog.sqlite3", readonly=True) as catalog:
        assert catalog.play_stats(new_id) == (2, 2000.0)
        assert catalog.overrides(new_id) == {"genre": "Jazz", "album": "Fixed"}
        node = catalog.node_of_file(new_id)
        assert node is not None
        overlay = catalog.overlay(new_id, track.size, track.mtime_ns)
        served = track.size if overlay is None else overlay.size(track.size)
        assert node.size == served  # what stat says is what reads give
