"""Search and smart collections through a real mount (FR-14, FR-15):
``/.search/<query>/``, ``musicfs search`` and the gRPC Search / SearchStream,
including a catalog that changes while mounted; ``/.collections/<name>/``
(configured and built in, fed by the access log).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.helpers import Mount, describe, mounted, run_musicfs, sha256_of, wait_until
from tests.e2e.library import Library, make_origin, render_path

pytestmark = [pytest.mark.mount, pytest.mark.media]

BJORK = ["Björk/Homogenic/01 Jóga.flac", "Björk/Homogenic/02 Unravel.flac",
         "Björk/Post/hyperballad.mp3"]  # fmt: skip
SIGUR = "Sigur Rós/svefn-g-englar.mp3"


def results(mount: Mount, query: str) -> dict[str, Path]:
    """name -> where the symlink points (resolved), of ``/.search/<query>/``."""
    folder = mount.mountpoint / ".search" / query
    return {p.name: p.resolve() for p in folder.iterdir()}


def test_search_folders_hold_symlinks_into_the_tree(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [*BJORK, SIGUR])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        assert ".search" not in os.listdir(mount.mountpoint)  # hidden, like a dot folder
        found = results(mount, "bjork")
        assert set(found) == {"Björk - Jóga.flac", "Björk - Unravel.flac",
                              "Björk - Hyperballad.mp3"}  # fmt: skip
        for relpath in BJORK:
            virtual = mount.mountpoint / render_path(specs[relpath])
            link = mount.mountpoint / ".search" / "bjork"
            name = next(n for n, target in found.items() if target == virtual.resolve())
            assert os.readlink(link / name) == "../../" + render_path(specs[relpath])
            assert sha256_of(link / name) == sha256_of(origin / relpath)  # players follow it
        assert set(results(mount, "sigur ros")) == {"Sigur Rós - Svefn-g-englar.mp3"}
        assert set(results(mount, "hyperbalad")) == {"Björk - Hyperballad.mp3"}  # a typo
        assert results(mount, "no such thing anywhere") == {}
        assert not (mount.mountpoint / ".search" / "bjork" / "Nobody - Nothing.flac").exists()


def test_search_follows_files_added_and_removed_while_mounted(
    library: Library, tmp_path: Path
) -> None:
    origin = tmp_path / "music"
    make_origin(library, origin, [BJORK[0]])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        assert set(results(mount, "unravel")) == set()
        shutil.copy(library.find(BJORK[1]).path, origin / "Björk" / "Homogenic" / "02.flac")
        wait_until(lambda: set(results(mount, "unravel")) == {"Björk - Unravel.flac"},
                   timeout=30, what="the new file in the search results")  # fmt: skip
        (origin / "Björk" / "Homogenic" / "02.flac").unlink()
        wait_until(lambda: results(mount, "unravel") == {}, timeout=30,
                   what="the removed file to leave the search results")  # fmt: skip


def test_search_command_and_rpcs(library: Library, tmp_path: Path) -> None:
    from musicfs.control.client import ControlClient

    origin = tmp_path / "music"
    specs = make_origin(library, origin, [*BJORK, SIGUR])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        found = run_musicfs("search", "beyonce", "--mount", mount.mountpoint)
        assert found.returncode == 1, describe(found)  # nothing found: exit 1
        result = run_musicfs("search", "jóga", "--mount", mount.mountpoint, "--json")
        assert result.returncode == 0, describe(result)
        hits = json.loads(result.stdout)["hits"]
        assert [h["path"] for h in hits] == [render_path(specs[BJORK[0]])]
        plain = run_musicfs("search", "bjork", "homogenic", "--mount", mount.mountpoint)
        assert set(plain.stdout.splitlines()) == {render_path(specs[r]) for r in BJORK[:2]}
        with ControlClient(mount.status()["socket"]) as client:
            ranked = client.search("björk", limit=2)["hits"]
            assert len(ranked) == 2
            assert all(h["artist"] == "Björk" for h in ranked)
            streamed = list(client.search_stream("bjork"))
            assert {h["title"] for h in streamed} == {"Jóga", "Unravel", "Hyperballad"}
        bad = run_musicfs("search", "x", "--limit", "0", "--mount", mount.mountpoint)
        assert bad.returncode == 2, describe(bad)
        assert "limit must be between 1 and 1000" in bad.stderr


def test_smart_collections_follow_the_catalog_and_what_is_played(
    library: Library, tmp_path: Path
) -> None:
    from tests.e2e.helpers import write_config

    origin = tmp_path / "music"
    specs = make_origin(library, origin, [*BJORK, SIGUR])
    config = write_config(tmp_path / "config.toml", [{"id": "music", "path": str(origin)}])
    config.write_text(config.read_text() + '[[collections]]\nname = "90s"\nyear_from = 1990\n'
                      'year_to = 1999\norder = "year"\n')  # fmt: skip
    with mounted([], tmp_path / "mnt", tmp_path / "cache", "--config", str(config)) as mount:
        top = mount.mountpoint / ".collections"
        assert sorted(os.listdir(top)) == ["90s", "most-played", "recently-added",
                                           "recently-played"]  # fmt: skip
        nineties = sorted(os.listdir(top / "90s"))
        assert nineties == ["Björk - Hyperballad.mp3", "Björk - Jóga.flac",
                            "Björk - Unravel.flac", "Sigur Rós - Svefn-g-englar.mp3"]  # fmt: skip
        assert len(os.listdir(top / "recently-added")) == 4
        assert os.listdir(top / "recently-played") == []
        sha256_of(mount.mountpoint / render_path(specs[SIGUR]))  # play one
        played = ["Sigur Rós - Svefn-g-englar.mp3"]
        wait_until(lambda: os.listdir(top / "recently-played") == played,
                   timeout=30, what="the played track in recently-played")  # fmt: skip
        linked = top / "recently-played" / played[0]
        assert sha256_of(linked) == sha256_of(origin / SIGUR)
        assert not (top / "no such collection").exists()


UNTAGGED = "untagged/no tags at all.flac"
TWINS = ["twins/echo.flac", "elsewhere/echo.flac"]  # one tree name: "07 - Echo (2).flac" too


def after_dash(name: str) -> str:
    """What follows ``Artist - `` in a link name or ``NN - `` in a tree name:
    the title, the collision counter and the extension."""
    return name.partition(" - ")[2]


def test_virtual_link_names_match_the_tree(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [UNTAGGED, *TWINS])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        echo = mount.mountpoint / render_path(specs[TWINS[0]])
        assert (echo.parent / "07 - Echo (2).flac").exists()  # the tree's collision
        # Play the tree's "(2)" last: the played collections list it first.
        sha256_of(echo)
        sha256_of(echo.parent / "07 - Echo (2).flac")
        top = mount.mountpoint / ".collections"
        wait_until(lambda: len(os.listdir(top / "most-played")) == 2, timeout=30,
                   what="both plays in most-played")  # fmt: skip
        folders = [mount.mountpoint / ".search" / q for q in ("no tags at all", "echo")]
        folders += [top / name for name in sorted(os.listdir(top))]
        seen = 0
        for folder in folders:
            names = os.listdir(folder)
            assert names, f"{folder} is empty"
            for name in names:
                link = folder / name
                target = link.resolve()
                assert target.is_file(), f"{link} -> {os.readlink(link)} does not resolve"
                assert target.parent.parent.parent == mount.mountpoint  # into the tree
                assert after_dash(name) == after_dash(target.name), (
                    f"{link} -> {os.readlink(link)}: another title, counter or extension"
                )
                seen += 1
        assert "Unknown Artist - no tags at all.flac" in os.listdir(folders[0])
        assert set(os.listdir(folders[1])) == {"Twin - Echo.flac", "Twin - Echo (2).flac"}
        assert seen == 1 + 2 + 3 + 2 + 2  # two searches, recently-added, -played, most-played
