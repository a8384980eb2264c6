"""``musicfs export`` and ``musicfs import musicfs`` through real mounts (issue 15.5).

On mount A a track gets an override and another is played (reading it through
the mount is a play); the export carries both to mount B, whose origin holds
copies of the same files in other folders, so they are found by their tags.
A dry run changes nothing; tracks that match nothing are listed; a file that is
not an export is a one-line error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import describe, mounted, run_musicfs, sha256_of, wait_until
from tests.e2e.library import Library, make_origin, render_path

pytestmark = [pytest.mark.mount, pytest.mark.media]

JOGA, UNRAVEL = "Björk/Homogenic/01 Jóga.flac", "Björk/Homogenic/02 Unravel.flac"


def export(mountpoint: Path) -> dict[str, Any]:
    result = run_musicfs("export", "--mount", str(mountpoint))
    assert result.returncode == 0, describe(result)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def by_title(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {track["title"]: track for track in document["tracks"]}


def tag_show(path: Path) -> dict[str, Any]:
    result = run_musicfs("tag", "show", str(path), "--json")
    assert result.returncode == 0, describe(result)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_export_then_import_on_another_mount(library: Library, tmp_path: Path) -> None:
    origin_a = tmp_path / "a" / "music"
    specs = make_origin(library, origin_a, [JOGA, UNRAVEL])
    saved = tmp_path / "export.json"
    with mounted([origin_a], tmp_path / "mnt_a", tmp_path / "cache_a") as mount_a:
        joga = mount_a.mountpoint / render_path(specs[JOGA])
        tag_show(joga)
        result = run_musicfs("tag", "set", str(joga), "genre=Trip-Hop", "--json")
        assert result.returncode == 0, describe(result)
        sha256_of(mount_a.mountpoint / render_path(specs[UNRAVEL]))  # one play
        wait_until(lambda: by_title(export(mount_a.mountpoint)).get("Unravel", {}).get("plays")
                   == 1, timeout=30, what="the play of Unravel in the export")  # fmt: skip
        result = run_musicfs("export", "--mount", str(mount_a.mountpoint), "-o", str(saved))
        assert result.returncode == 0, describe(result)
        csv_result = run_musicfs("export", "--format", "csv", "--mount", str(mount_a.mountpoint))
        assert csv_result.returncode == 0, describe(csv_result)
    document = json.loads(saved.read_text())
    # With the mount down, the cache dir's catalog gives the same export.
    offline = run_musicfs("export", "--cache-dir", str(tmp_path / "cache_a"))
    assert offline.returncode == 0, describe(offline)
    assert json.loads(offline.stdout) == document
    assert document["musicfs_export"] == 1
    tracks = by_title(document)
    assert tracks["Jóga"]["overrides"] == {"genre": "Trip-Hop"}
    assert tracks["Jóga"]["origin"]
    assert tracks["Jóga"]["relpath"] == JOGA
    assert tracks["Jóga"]["audio_id"]  # finds it again wherever it moves
    assert (tracks["Jóga"]["artist"], tracks["Jóga"]["album"], tracks["Jóga"]["track"]) == (
        "Björk", "Homogenic", 1)  # fmt: skip
    assert tracks["Unravel"]["plays"] == 1
    assert tracks["Unravel"]["last_played"] > 0
    assert csv_result.stdout.splitlines()[0].startswith("origin,relpath,artist,album,title")
    csv_file = tmp_path / "export.csv"
    csv_file.write_text(csv_result.stdout)
    # One track the other machine does not have: listed, never dropped silently.
    document["tracks"].append(
        {**tracks["Jóga"], "relpath": "gone.flac", "title": "Gone", "audio_id": "1-feed"}
    )
    saved.write_text(json.dumps(document))

    # Mount B: the same audio in other folders, so relpaths differ.
    origin_b = tmp_path / "b" / "music"
    for relpath, moved in ((JOGA, "x/joga.flac"), (UNRAVEL, "y/z/unravel.flac")):
        (origin_b / moved).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin_a / relpath, origin_b / moved)
    with mounted([origin_b], tmp_path / "mnt_b", tmp_path / "cache_b") as mount_b:
        joga_b = mount_b.mountpoint / render_path(specs[JOGA])
        dry = run_musicfs("import", "musicfs", str(saved), "--dry-run",
                          "--mount", str(mount_b.mountpoint))  # fmt: skip
        assert dry.returncode == 0, describe(dry)
        assert "would set" in dry.stdout, dry.stdout
        assert "genre=Trip-Hop" in dry.stdout, dry.stdout
        assert "would add 1 plays" in dry.stdout, dry.stdout
        assert "no match:" in dry.stdout, dry.stdout
        assert "gone.flac" in dry.stdout, dry.stdout
        assert tag_show(joga_b)["overrides"] == {}
        assert export(mount_b.mountpoint)["tracks"] == []

        bad = tmp_path / "notes.txt"
        bad.write_text("hello, this is not an export\n")
        for wrong in (bad, tmp_path / "missing.json"):
            result = run_musicfs("import", "musicfs", str(wrong),
                                 "--mount", str(mount_b.mountpoint))  # fmt: skip
            assert result.returncode != 0
            assert "Traceback" not in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert str(wrong) in result.stderr, result.stderr

        result = run_musicfs("import", "musicfs", str(saved), "--mount", str(mount_b.mountpoint))
        assert result.returncode == 0, describe(result)
        assert "2 tracks matched, 1 not" in result.stdout, result.stdout
        shown = tag_show(joga_b)
        assert shown["overrides"] == {"genre": "Trip-Hop"}
        assert shown["effective"]["genre"] == "Trip-Hop"
        after = by_title(export(mount_b.mountpoint))
        assert after["Unravel"]["plays"] == 1
        assert after["Unravel"]["relpath"] == "y/z/unravel.flac"
        # Play counts add up: the CSV export imported again makes it 2.
        result = run_musicfs("import", "musicfs", str(csv_file), "--mount",
                             str(mount_b.mountpoint))  # fmt: skip
        assert result.returncode == 0, describe(result)
        assert by_title(export(mount_b.mountpoint))["Unravel"]["plays"] == 2
