"""Pins for offline (issue 15.2): ``musicfs cache pin`` keeps tracks in the cache.

A pinned folder is copied into the cache at once (``--wait``), is never evicted
however much else is read through a small cache, and plays byte for byte with
its origin gone, while an unpinned track never read answers EIO. Pins have
their own limit (``[cache] pin_limit``): a pin that would go over it pins
nothing and says why. ``cache pins`` shows what is pinned and how much of it is
in the cache; after ``cache unpin`` the tracks are evicted like any other. A
pinned search pins the tracks a rescan adds to it, and a pinned file that
changes on its origin is copied again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import sqlite3
import wave
from pathlib import Path
from typing import Any

import pytest
from mutagen.id3 import TALB, TIT2, TPE1, TRCK
from mutagen.wave import WAVE

from tests.e2e.helpers import (
    describe,
    errno_of,
    forget_pages,
    mounted,
    run_musicfs,
    sha256_of,
    wait_until,
)

pytestmark = [pytest.mark.mount]

KEEP = "Keeper/Pinned (0000) [WAV]"  # the tree folder of the album that is pinned
LOOSE = "Loose/Others (0000) [WAV]"


def write_track(path: Path, seed: int, *, artist: str, album: str, title: str, track: int) -> None:
    """Two seconds of stereo noise as a tagged WAV (345 KiB: no dedup between files),
    written beside *path* under a hidden name and renamed into place, so a watch
    never sees it half made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    with wave.open(str(part), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(random.Random(seed).randbytes(44100 * 2 * 4))
    audio: Any = WAVE(str(part))
    audio.add_tags()
    audio.tags.add(TPE1(encoding=3, text=[artist]))
    audio.tags.add(TALB(encoding=3, text=[album]))
    audio.tags.add(TIT2(encoding=3, text=[title]))
    audio.tags.add(TRCK(encoding=3, text=[str(track)]))
    audio.save()
    part.replace(path)


def tree_name(track: int, title: str) -> str:
    return f"{track:02d} - {title}.wav"


def cached(cache: Path, relpath: str) -> bool:
    """Whether the cache holds a copy of origin file *relpath*."""
    database = cache / "content" / "manifests.sqlite3"
    with contextlib.closing(sqlite3.connect(database)) as db:
        row = db.execute("SELECT 1 FROM manifests WHERE relpath = ?", (relpath,))
        return row.fetchone() is not None


def wait_cached(cache: Path, relpath: str) -> None:
    wait_until(lambda: cached(cache, relpath), timeout=30, what=f"{relpath} to be cached")


def cli_json(*args: str | os.PathLike[str]) -> Any:
    result = run_musicfs(*args, "--json")
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)


def test_a_pinned_folder_plays_offline_and_is_never_evicted(tmp_path: Path) -> None:
    """The pinned album's origin goes away first, so nothing can copy it again:
    what plays afterwards is what eviction left."""
    away, other = tmp_path / "away", tmp_path / "other"
    cache, mnt = tmp_path / "cache", tmp_path / "mnt"
    for n in (1, 2):
        write_track(away / "keep" / f"{n}.wav", n, artist="Keeper", album="Pinned",
                    title=f"kept {n}", track=n)  # fmt: skip
    write_track(away / "unpinned.wav", 9, artist="Keeper", album="Not Pinned", title="no",
                track=1)  # fmt: skip
    loose = {n: f"loose/{n}.wav" for n in range(1, 8)}
    for n, rel in loose.items():
        write_track(other / rel, 100 + n, artist="Loose", album="Others", title=f"loose {n}",
                    track=n)  # fmt: skip
    originals = {f"keep/{n}": sha256_of(away / "keep" / f"{n}.wav") for n in (1, 2)}
    # Room for the pinned album (690 KiB) and one more track; pins up to 1 MiB.
    env = {"MUSICFS_CACHE_LIMIT": "1100KiB", "MUSICFS_CACHE_PIN_LIMIT": "1MiB"}
    with mounted([away, other], mnt, cache, env=env):
        pinned = cli_json("cache", "pin", mnt / KEEP, "--wait")
        assert (pinned["tracks"], pinned["done"], pinned["failed"]) == (2, 2, [])
        assert pinned["pin_limit"] == 1024 * 1024
        assert cached(cache, "keep/1.wav")
        assert cached(cache, "keep/2.wav")
        size = sum((away / "keep" / f"{n}.wav").stat().st_size for n in (1, 2))
        (pin,) = cli_json("cache", "pins", mnt)["pins"]
        assert (pin["kind"], pin["value"], pin["tracks"], pin["bytes"]) == ("path", KEEP, 2, size)
        assert (pin["present_tracks"], pin["present_bytes"]) == (2, size)
        table = run_musicfs("cache", "pins", mnt)
        assert table.returncode == 0, describe(table)
        assert KEEP in table.stdout

        # Over the pin limit: nothing is pinned, and the error says why.
        refused = run_musicfs("cache", "pin", mnt / LOOSE)
        assert refused.returncode == 2, describe(refused)
        for words in ("pin_limit 1.0 MiB", "pinned already", "more requested", "cannot pin 7"):
            assert words in refused.stderr, describe(refused)
        assert "Traceback" not in refused.stderr
        assert [p["value"] for p in cli_json("cache", "pins", mnt)["pins"]] == [KEEP]
        smaller = run_musicfs("config", "set", "cache.limit", "512KiB", "--mount", mnt)
        assert smaller.returncode == 2, describe(smaller)
        assert "below [cache] pin_limit" in smaller.stderr

        kept = {n: mnt / KEEP / tree_name(n, f"kept {n}") for n in (1, 2)}
        unpinned = mnt / "Keeper" / "Not Pinned (0000) [WAV]" / tree_name(1, "no")
        away.rename(tmp_path / "unplugged")
        try:
            # Six other tracks read through a cache with room for one of them at a time.
            read_through(mnt, cache, loose)
            assert not cached(cache, loose[1]), "the cache never filled: nothing shows eviction"
            for n, path in kept.items():
                forget_pages(path)
                assert sha256_of(path) == originals[f"keep/{n}"], f"{path.name}: wrong bytes"
                forget_pages(path)  # read from the cache again below
            assert errno_of(lambda: sha256_of(unpinned)) == errno.EIO
            assert cli_json("cache", "pins", mnt)["present_tracks"] == 2

            # Unpinned, the album is evicted like any other copy.
            dropped = cli_json("cache", "unpin", mnt / KEEP)
            assert (dropped["requests"], dropped["tracks_unpinned"]) == (1, 2)
            assert cli_json("cache", "pins", mnt)["pins"] == []
            read_through(mnt, cache, loose)
            assert not cached(cache, "keep/1.wav")
            assert not cached(cache, "keep/2.wav")
            assert errno_of(lambda: sha256_of(kept[1])) == errno.EIO
        finally:
            (tmp_path / "unplugged").rename(away)


def read_through(mnt: Path, cache: Path, loose: dict[int, str]) -> None:
    """Read tracks 1-6 of the loose album through the mount, each until it is cached."""
    for n in range(1, 7):
        path = mnt / LOOSE / tree_name(n, f"loose {n}")
        sha256_of(path)
        wait_cached(cache, loose[n])
        forget_pages(path)


def test_a_pinned_search_follows_rescans_and_origin_changes(tmp_path: Path) -> None:
    origin, cache, mnt = tmp_path / "music", tmp_path / "cache", tmp_path / "mnt"
    for n in (1, 2):
        write_track(
            origin / "keep" / f"{n}.wav",
            n,
            artist="Keeper",
            album="Pinned",
            title=f"kept {n}",
            track=n,
        )
    write_track(origin / "other.wav", 50, artist="Someone", album="Else", title="other", track=1)
    with mounted([origin], mnt, cache):
        pinned = cli_json("cache", "pin", "--search", "keeper", "--mount", mnt)
        assert pinned["tracks"] == 2

        def present() -> tuple[int, int]:
            listed = cli_json("cache", "pins", mnt)
            return listed["tracks"], listed["present_tracks"]

        # Without --wait the daemon copies them in the background.
        wait_until(lambda: present() == (2, 2), timeout=30, what="the pinned tracks copied")
        # A track the search now finds, added on the origin: pinned and copied too.
        write_track(
            origin / "keep" / "3.wav", 3, artist="Keeper", album="Pinned", title="kept 3", track=3
        )
        wait_until(lambda: present() == (3, 3), timeout=60, what="the new track pinned")
        # A pinned file that changes on its origin is copied again.
        write_track(
            origin / "keep" / "1.wav", 99, artist="Keeper", album="Pinned", title="kept 1", track=1
        )
        changed = sha256_of(origin / "keep" / "1.wav")
        path = mnt / KEEP / tree_name(1, "kept 1")
        wait_until(lambda: sha256_of(path) == changed, timeout=60, what="the change seen")
        wait_until(lambda: present() == (3, 3), timeout=60, what="the changed track copied")
        assert not cached(cache, "other.wav")
        forget_pages(path)
        origin.rename(tmp_path / "unplugged")
        try:
            assert sha256_of(path) == changed
            new = mnt / KEEP / tree_name(3, "kept 3")
            assert sha256_of(new) == sha256_of(tmp_path / "unplugged" / "keep" / "3.wav")
        finally:
            (tmp_path / "unplugged").rename(origin)
        unknown = run_musicfs("cache", "pin", "--collection", "no such", "--mount", mnt)
        assert unknown.returncode == 2, describe(unknown)
        assert "no collection 'no such'; the collections are:" in unknown.stderr
        everything = ("--collection", "recently-added", "--wait", "--mount", mnt)
        collection = cli_json("cache", "pin", *everything)
        assert (collection["tracks"], collection["done"], collection["pinned_tracks"]) == (4, 4, 4)
        assert cached(cache, "other.wav")
        listed = cli_json("cache", "pins", mnt)
        assert [(p["kind"], p["tracks"]) for p in listed["pins"]] == [
            ("search", 3), ("collection", 4)
        ]  # fmt: skip
        assert (listed["tracks"], listed["present_tracks"]) == (4, 4)
        dropped = cli_json("cache", "unpin", "--all", "--mount", mnt)
        assert (dropped["requests"], dropped["tracks_unpinned"], dropped["pinned_tracks"]) == (
            2,
            4,
            0,
        )


def test_pin_limit_above_the_cache_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "music").mkdir()
    env = {"MUSICFS_CACHE_LIMIT": "1MiB", "MUSICFS_CACHE_PIN_LIMIT": "2MiB"}
    result = run_musicfs("mount", tmp_path / "mnt", "--origin", tmp_path / "music", env=env)
    assert result.returncode == 2, describe(result)
    assert "[cache] pin_limit" in result.stderr
    assert "lower pin_limit" in result.stderr
    assert "Traceback" not in result.stderr


def test_export_carries_pins_to_another_mount(tmp_path: Path) -> None:
    """``musicfs export`` writes which tracks are pinned; ``import musicfs`` on
    another mount of the same music (other folders) pins them there."""
    origin_a, origin_b = tmp_path / "a", tmp_path / "b"
    for n in (1, 2):
        write_track(origin_a / "keep" / f"{n}.wav", n, artist="Keeper", album="Pinned",
                    title=f"kept {n}", track=n)  # fmt: skip
    write_track(origin_a / "other.wav", 50, artist="Someone", album="Else", title="other",
                track=1)  # fmt: skip
    saved = tmp_path / "export.json"
    with mounted([origin_a], tmp_path / "mnt_a", tmp_path / "cache_a") as mount_a:
        cli_json("cache", "pin", mount_a.mountpoint / KEEP)
        made = run_musicfs("export", "--mount", mount_a.mountpoint, "-o", saved)
        assert made.returncode == 0, describe(made)
    tracks = json.loads(saved.read_text())["tracks"]
    assert sorted((t["title"], t["pinned"]) for t in tracks) == [
        ("kept 1", True), ("kept 2", True)
    ]  # fmt: skip
    (origin_b / "moved").mkdir(parents=True)
    for n in (1, 2):  # the same files, in another folder: found by their tags
        (origin_a / "keep" / f"{n}.wav").rename(origin_b / "moved" / f"{n}.wav")
    (origin_a / "other.wav").rename(origin_b / "other.wav")
    with mounted([origin_b], tmp_path / "mnt_b", tmp_path / "cache_b") as mount_b:
        dry = run_musicfs("import", "musicfs", saved, "--dry-run", "--mount", mount_b.mountpoint)
        assert dry.returncode == 0, describe(dry)
        assert f"would pin {KEEP}/{tree_name(1, 'kept 1')}" in dry.stdout
        assert cli_json("cache", "pins", mount_b.mountpoint)["pins"] == []
        done = run_musicfs("import", "musicfs", saved, "--mount", mount_b.mountpoint)
        assert done.returncode == 0, describe(done)
        (pin,) = cli_json("cache", "pins", mount_b.mountpoint)["pins"]
        assert (pin["kind"], pin["value"], pin["tracks"]) == ("import", "export.json", 2)
        wait_until(
            lambda: cli_json("cache", "pins", mount_b.mountpoint)["present_tracks"] == 2,
            timeout=30,
            what="the imported pins copied into the cache",
        )
