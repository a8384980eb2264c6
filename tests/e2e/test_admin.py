"""Operating a mount from the command line (issue 6): ``musicfs cache
stats|clear|prefetch``, ``musicfs origin list|health|rescan``, ``musicfs config
show|set`` and ``musicfs completion``, each through a real daemon and mount.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    Mount,
    describe,
    mounted,
    run_musicfs,
    sha256_of,
    wait_until,
    walk_files,
)
from tests.e2e.library import Library, make_origin, render_path
from tests.e2e.test_offline import JOGA, UNRAVEL

pytestmark = [pytest.mark.mount, pytest.mark.media]


def cli(*args: str | Path) -> Any:
    """``musicfs ARGS --json``, parsed; fails the test unless it exits 0."""
    result = run_musicfs(*args, "--json")
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)


def tiers(mount: Mount) -> dict[str, dict[str, Any]]:
    return {t["tier"]: t for t in cli("cache", "stats", mount.mountpoint)["tiers"]}


def test_cache_stats_clear_and_prefetch(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        joga = mount.mountpoint / render_path(specs[JOGA])
        sha256_of(joga)
        wait_until(lambda: mount.status()["cached_files"] >= 1, timeout=30, what="caching")
        stats = cli("cache", "stats", mount.mountpoint)
        assert stats["mode"] == "full"
        assert stats["cached_files"] == 1
        by_tier = {t["tier"]: t for t in stats["tiers"]}
        assert set(by_tier) == {"l1", "l2", "l3"}
        assert by_tier["l2"]["entries"] == 1
        assert by_tier["l3"]["bytes"] > 0
        assert by_tier["l1"]["hits"] + by_tier["l1"]["misses"] > 0

        cleared = cli("cache", "clear", mount.mountpoint, "--scope", "chunks")
        assert cleared["files_dropped"] == 1
        assert cleared["bytes_freed"] == by_tier["l3"]["bytes"]
        assert tiers(mount)["l3"]["entries"] == 0
        metadata = cli("cache", "clear", mount.mountpoint, "--scope", "metadata")
        assert metadata["entries_dropped"] > 0
        needs_origin = run_musicfs("cache", "clear", mount.mountpoint, "--scope", "origin")
        assert needs_origin.returncode == 2, describe(needs_origin)
        assert "--origin" in needs_origin.stderr

        album = joga.parent
        fetched = cli("cache", "prefetch", album)
        assert (fetched["files"], fetched["done"], fetched["failed"]) == (2, 2, [])
        assert fetched["bytes"] == sum((origin / r).stat().st_size for r in (JOGA, UNRAVEL))
        origin.rename(tmp_path / "unplugged")  # what was prefetched plays offline
        try:
            for relpath in (JOGA, UNRAVEL):
                assert sha256_of(album / Path(render_path(specs[relpath])).name) == sha256_of(
                    tmp_path / "unplugged" / relpath
                )
        finally:
            (tmp_path / "unplugged").rename(origin)
        outside = run_musicfs("cache", "prefetch", tmp_path)
        assert outside.returncode == 2, describe(outside)
        assert "not inside a mounted MusicFS" in outside.stderr


def test_origin_list_health_and_rescan(library: Library, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    make_origin(library, first, [JOGA])
    make_origin(library, second, [UNRAVEL])
    with mounted([first, second], tmp_path / "mnt", tmp_path / "cache") as mount:
        mp = ("--mount", str(mount.mountpoint))
        listed = cli("origin", "list", *mp)
        assert [(o["id"], o["type"], o["tracks"], o["online"]) for o in listed] == [
            ("first", "local", 1, True), ("second", "local", 1, True),
        ]  # fmt: skip
        health = cli("origin", "health", "first", *mp)
        assert health["online"] is True
        assert health["failures"] == 0
        assert "1 files" in health["last_scan"]
        unknown = run_musicfs("origin", "health", "third", *mp)
        assert unknown.returncode == 2, describe(unknown)
        assert "its origins are: first, second" in unknown.stderr

        rescanned = cli("origin", "rescan", "second", *mp)
        assert [(r["origin"], r["seen"], r["complete"]) for r in rescanned] == [("second", 1, True)]
        second.rename(tmp_path / "away")
        try:
            failed = run_musicfs("origin", "rescan", "second", *mp)
            assert failed.returncode == 1, describe(failed)
            assert "INCOMPLETE" in failed.stdout
            down = cli("origin", "health", "second", *mp)
            assert down["online"] is False
            assert down["last_error"]
        finally:
            (tmp_path / "away").rename(second)
        everything = cli("origin", "rescan", *mp)
        assert sorted(r["origin"] for r in everything) == ["first", "second"]
        assert all(r["complete"] for r in everything)


def test_settings_change_while_mounted(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        mp = ("--mount", str(mount.mountpoint))
        shown = cli("config", "show", *mp)
        assert shown["values"]["log_level"] == "info"
        assert set(shown["settable"]) == {"log_level", "cache.limit", "template"}
        assert cli("config", "set", "log_level", "debug", *mp)["values"]["log_level"] == "debug"

        for relpath in (JOGA, UNRAVEL):
            sha256_of(mount.mountpoint / render_path(specs[relpath]))
        wait_until(lambda: mount.status()["cached_files"] >= 2, timeout=30, what="caching")
        limited = cli("config", "set", "cache.limit", "64KiB", *mp)
        assert limited["values"]["cache.limit"] == str(64 * 1024)
        assert tiers(mount)["l3"]["bytes"] <= 64 * 1024 + 256 * 1024  # one chunk over at most

        before = walk_files(mount.mountpoint)
        cli("config", "set", "template", "$artist/$title.$format", *mp)
        after = walk_files(mount.mountpoint)
        assert after == {"Björk/Jóga.flac", "Björk/Unravel.flac"}, after
        assert not before & after
        assert sha256_of(mount.mountpoint / "Björk" / "Jóga.flac") == sha256_of(origin / JOGA)

        bad = run_musicfs("config", "set", "template", "$nonsense/$title", *mp)
        assert bad.returncode == 2, describe(bad)
        assert "nonsense" in bad.stderr
        fixed = run_musicfs("config", "set", "origins", "x", *mp)
        assert fixed.returncode == 2, describe(fixed)
        assert "cannot be changed while mounted" in fixed.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_shell_completion_scripts_are_valid_and_complete(shell: str) -> None:
    script = run_musicfs("completion", shell)
    assert script.returncode == 0, describe(script)
    for command in ("mount", "cache", "origin", "plugin", "tag", "events", "config"):
        assert command in script.stdout
    assert "prefetch" in script.stdout
    checked = subprocess.run(["bash", "-n"], input=script.stdout, text=True, check=False,
                             capture_output=True)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
