"""``musicfs verify`` through a real daemon (FR-10.5): a change that size and
mtime do not show is found by hashing, and the tree follows at once.

The origin is a mounted share (``nfs://``), polled only hourly here, so nothing
but the verification can notice the edit: the title of a FLAC file rewritten in
place, inside its padding (same size), with its mtime put back.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from mutagen.flac import FLAC

from tests.e2e.helpers import describe, mounted, run_musicfs, wait_until, write_config
from tests.e2e.library import Library, make_origin, render_path
from tests.e2e.test_offline import JOGA, UNRAVEL

pytestmark = [pytest.mark.mount, pytest.mark.media]


def retitle_unseen(path: Path, title: str) -> None:
    before = path.stat()
    audio = FLAC(path)
    audio["TITLE"] = title
    audio.save()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_verify_finds_an_unseen_edit_and_the_tree_follows(library: Library, tmp_path: Path) -> None:
    share = tmp_path / "share"
    specs = make_origin(library, share, [JOGA, UNRAVEL])
    config = write_config(
        tmp_path / "config.toml",
        [{"id": "nas", "path": f"nfs://{share}"}],
        {"scan": {"poll_interval": 3600}},
    )
    with mounted([], tmp_path / "mnt", tmp_path / "cache", "--config", str(config)) as mount:
        first = run_musicfs("verify", mount.mountpoint, "--json")
        assert first.returncode == 0, describe(first)
        baseline = json.loads(first.stdout)
        assert (baseline["files"], baseline["checked"], baseline["recorded"]) == (2, 2, 2)
        assert baseline["changed"] == []
        assert baseline["bytes"] == sum((share / r).stat().st_size for r in (JOGA, UNRAVEL))

        retitle_unseen(share / JOGA, "Jóga (Live)")
        found = run_musicfs("verify", mount.mountpoint, "--origin", "nas")
        assert found.returncode == 0, describe(found)
        assert f"changed (being rescanned): nas/{JOGA}" in found.stdout
        renamed = replace(specs[JOGA], tags={**specs[JOGA].tags, "title": "Jóga (Live)"})
        wait_until((mount.mountpoint / render_path(renamed)).exists, timeout=30,
                   what="the new title in the tree")  # fmt: skip
        assert not (mount.mountpoint / render_path(specs[JOGA])).exists()

        unknown = run_musicfs("verify", mount.mountpoint, "--origin", "nowhere")
        assert unknown.returncode == 2, describe(unknown)
        assert "nowhere" in unknown.stderr
        assert "nas" in unknown.stderr
