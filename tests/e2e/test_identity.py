"""Identity across moves through a real mount (issue 15.1).

A user sets an override on a track and plays it; the file is then moved on the
origin to another folder under a new name (the watcher sees it, no rescan asked
for). The mount shows the track with its override, ``musicfs tag show`` at its
new place shows the play count and where it came from, and the event stream
tells ``track.moved``.

On S3 the scan reads only each track's head, so no identity; a track that gets
an override gets its identity from the mount within `IDENTITY_ROUND` seconds
(the same a local scan reads), and keeps the override when its object is moved.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from musicfs.core.sync.remote import IDENTITY_ROUND
from musicfs.core.tags.identity import audio_identity_of
from tests.e2e.eventstream import about, listening
from tests.e2e.helpers import describe, mounted, run_musicfs, sha256_of, wait_until, write_config
from tests.e2e.library import Library, make_origin, render_path
from tests.e2e.test_federation import BUCKET, mount_with, s3_env, s3_origin
from tests.servers.s3 import S3Server

pytestmark = [pytest.mark.mount, pytest.mark.media]

JOGA = "Björk/Homogenic/01 Jóga.flac"
UNRAVEL = "Björk/Homogenic/02 Unravel.flac"
MOVED = "sorted/by hand/jóga (2024 tagged copy).flac"


def tag(*args: str | Path) -> dict[str, Any]:
    result = run_musicfs("tag", *args, "--json")
    assert result.returncode == 0, describe(result)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_a_moved_file_keeps_its_override_and_plays(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        before = mount.mountpoint / render_path(specs[JOGA])
        shown = tag("set", before, "genre=Art Pop", "title=Jóga (Live)")
        served = mount.mountpoint / shown["path"]
        served_bytes = sha256_of(served)  # a play
        wait_until(lambda: int(tag("show", served).get("plays") or 0) == 1, timeout=30,
                   what="the play to be counted")  # fmt: skip

        with listening(mount) as events:
            target = origin / MOVED
            target.parent.mkdir(parents=True)
            shutil.move(origin / JOGA, target)
            moved = events.wait_for(about("track.moved"), timeout=60)
        assert moved["path"] == MOVED
        assert moved["details"]["from_path"] == JOGA

        wait_until(served.exists, timeout=30, what=f"{served} to be back")
        after = tag("show", served)
        assert after["relpath"] == MOVED  # the same place in the tree, a new file behind it
        assert after["overrides"] == {"genre": "Art Pop", "title": "Jóga (Live)"}
        assert after["effective"]["title"] == "Jóga (Live)"
        assert int(after["plays"]) == 1
        assert after["moved_from"] == [f"music:{JOGA}"]
        text = run_musicfs("tag", "show", str(served))
        assert text.returncode == 0, describe(text)
        assert f"moved from music:{JOGA}" in text.stdout
        assert "played 1 time," in text.stdout, text.stdout
        assert sha256_of(served) == served_bytes  # the same header and audio as before

        # The neighbour, never touched, took nothing.
        unravel = tag("show", mount.mountpoint / render_path(specs[UNRAVEL]))
        assert unravel["overrides"] == {}
        assert int(unravel.get("plays") or 0) == 0


def test_a_remote_track_with_an_override_gets_its_identity_and_keeps_it_when_moved(
    library: Library, s3: S3Server, tmp_path: Path
) -> None:
    joga, unravel = library.find(JOGA), library.find(UNRAVEL)
    s3.put_many(BUCKET, {f"lib/{JOGA}": joga.path.read_bytes(),
                         f"lib/{UNRAVEL}": unravel.path.read_bytes()})  # fmt: skip
    config = write_config(tmp_path / "config.toml", [s3_origin(s3)])
    cache = tmp_path / "cache"

    def identities() -> dict[str, str | None]:
        with contextlib.closing(sqlite3.connect(f"file:{cache}/catalog.sqlite3?mode=ro",
                                                uri=True)) as db:  # fmt: skip
            rows = db.execute("SELECT reldir, name, audio_id FROM files").fetchall()
        return {f"{reldir}/{name}": audio_id for reldir, name, audio_id in rows}

    with mount_with(config, tmp_path / "mnt", cache, s3_env(s3)) as mount:
        # The scan read the heads only: no identity yet.
        assert identities() == {JOGA: None, UNRAVEL: None}
        shown = tag("set", mount.mountpoint / render_path(joga.spec), "genre=Art Pop")
        served = mount.mountpoint / shown["path"]
        wait_until(lambda: identities()[JOGA] is not None, timeout=IDENTITY_ROUND + 30,
                   what="the overridden track's identity")  # fmt: skip
        assert identities() == {JOGA: audio_identity_of(str(joga.path)), UNRAVEL: None}

        client = s3.default_client
        with listening(mount) as events:
            client.copy_object(Bucket=BUCKET, Key=f"lib/{MOVED}",
                               CopySource={"Bucket": BUCKET, "Key": f"lib/{JOGA}"})  # fmt: skip
            client.delete_object(Bucket=BUCKET, Key=f"lib/{JOGA}")
            rescan = run_musicfs("origin", "rescan", "cloud", "--mount", str(mount.mountpoint))
            assert rescan.returncode == 0, describe(rescan)
            moved = events.wait_for(about("track.moved"), timeout=60)
        assert (moved["path"], moved["details"]["from_path"]) == (MOVED, JOGA)
        wait_until(served.exists, timeout=30, what=f"{served} to be back")
        after = tag("show", served)
        assert after["relpath"] == MOVED
        assert after["overrides"] == {"genre": "Art Pop"}
        assert sha256_of(served) != joga.sha256  # the override is in the header served
