"""Prefetch through a real mount (issue 7 point 4, FR-19): playing track 1 of an
album on a remote origin (S3 on moto_server) copies tracks 2..ahead+1 into the
cache, and no further; with the server gone, those play from the cache.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.eventstream import about, listening
from tests.e2e.helpers import (
    errno_of,
    mounted,
    require_tools,
    sha256_of,
    wait_until,
    walk_files,
    write_config,
)
from tests.e2e.library import Library, make_origin, render_path
from tests.e2e.test_federation import BUCKET, mount_with, s3_env, s3_origin
from tests.servers.s3 import S3Server

pytestmark = [pytest.mark.mount, pytest.mark.media]

AHEAD = 2
TRACKS = 5


def encode_album(folder: Path) -> dict[str, bytes]:
    """*TRACKS* FLAC files of one album (a few hundred KB of noise each), by relpath."""
    require_tools("ffmpeg")
    folder.mkdir(parents=True)
    album: dict[str, bytes] = {}
    for n in range(1, TRACKS + 1):
        out = folder / f"{n:02d}.flac"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"anoisesrc=d=2:c=white:seed={n}",
             "-metadata", f"title=Part {n}", "-metadata", "artist=Prefetcher",
             "-metadata", "album=Ahead", "-metadata", f"track={n}", str(out)],
            check=True,
        )  # fmt: skip
        album[f"Ahead/{out.name}"] = out.read_bytes()
    return album


def test_the_next_tracks_of_an_album_are_cached_ahead_and_play_offline(
    s3: S3Server, tmp_path: Path
) -> None:
    album = encode_album(tmp_path / "src")
    s3.put_many(BUCKET, {f"lib/{relpath}": data for relpath, data in album.items()})
    config = write_config(tmp_path / "config.toml", [s3_origin(s3)], {"prefetch": {"ahead": AHEAD}})
    with mount_with(config, tmp_path / "mnt", tmp_path / "cache", s3_env(s3)) as mount:
        shown = sorted(walk_files(mount.mountpoint))  # "01 - Part 1.flac", ...
        assert len(shown) == TRACKS, shown
        paths = [mount.mountpoint / name for name in shown]
        sources = sorted(album)  # origin relpaths, in track order
        assert mount.status()["cached_files"] == 0
        with listening(mount, "--type", "file.opened") as events:
            # Play track 1: read it whole, as a player does.
            assert paths[0].read_bytes() == album[sources[0]]
            events.wait_for(about("file.opened", sources[0], source="origin"))
            # Track 1 is kept by the cache fill, tracks 2..AHEAD+1 come by prefetch.
            wait_until(
                lambda: mount.status()["cached_files"] >= 1 + AHEAD,
                timeout=60,
                what=f"tracks 2..{AHEAD + 1} to be prefetched",
            )
            s3.stop()
            for index in range(1, AHEAD + 1):  # tracks 2..AHEAD+1 play without the server
                data = paths[index].read_bytes()
                assert (
                    hashlib.sha256(data).digest() == hashlib.sha256(album[sources[index]]).digest()
                )
                events.wait_for(about("file.opened", sources[index], source="cache"))
            # No further than AHEAD tracks ahead: the next one needs the server.
            assert errno_of(paths[AHEAD + 1].read_bytes) == errno.EIO
        assert mount.status()["cached_files"] == 1 + AHEAD


def test_listing_a_prefetch_folder_copies_it_into_the_cache(
    library: Library, tmp_path: Path
) -> None:
    """Manual hints (FR-19): ``ls MOUNT/.prefetch/Artist/Album`` queues the album."""
    album = ["Björk/Homogenic/01 Jóga.flac", "Björk/Homogenic/02 Unravel.flac"]
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [*album, "Sigur Rós/svefn-g-englar.mp3"])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        folder = Path(render_path(specs[album[0]])).parent
        assert set(os.listdir(mount.mountpoint / ".prefetch")) == set(
            os.listdir(mount.mountpoint)
        )  # a mirror of the tree
        assert mount.status()["cached_files"] == 0
        mirrored = mount.mountpoint / ".prefetch" / folder
        names = sorted(os.listdir(mirrored))
        assert names == sorted(Path(render_path(specs[r])).name for r in album)
        wait_until(lambda: mount.status()["cached_files"] >= 2, timeout=30,
                   what="the hinted album in the cache")  # fmt: skip
        assert mount.status()["cached_files"] == 2  # that album only
        for relpath in album:
            link = mount.mountpoint / ".prefetch" / render_path(specs[relpath])
            assert os.readlink(link).startswith("../../../")
            assert sha256_of(link) == sha256_of(origin / relpath)
