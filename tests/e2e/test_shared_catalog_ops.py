"""``musicfs catalog migrate`` and ``musicfs catalog status`` on a catalog a real
mount scanned (issue 16, point 7), against a real PostgreSQL (tests/servers/postgres.py).

A local origin of real encoded audio is mounted; a track gets an override and
another is played through the mount; the mount goes down. Migrating while it
runs is refused; a dry run and a migration with the server down write nothing;
the migration puts the tracks (with their audio identity), the override and
the play in PostgreSQL under the catalog's own ids, and a second machine's
replica copied from it shows the same ids, override and play count. ``catalog
status`` tells the state before and after.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from musicfs.core.catalog.store import Catalog
from musicfs.core.shared.feed import bootstrap
from musicfs.core.shared.store import SharedCatalog
from tests.e2e.helpers import describe, mounted, run_musicfs, sha256_of, wait_until
from tests.e2e.library import Library, make_origin, render_path
from tests.servers.postgres import PostgresServer, postgres, postgres_url  # noqa: F401

pytestmark = [pytest.mark.mount, pytest.mark.media]

JOGA, UNRAVEL = "Björk/Homogenic/01 Jóga.flac", "Björk/Homogenic/02 Unravel.flac"


def catalog_status(cache: Path, url: str) -> dict[str, Any]:
    result = run_musicfs("catalog", "status", "--cache-dir", str(cache), "--json",
                         env={"MUSICFS_CATALOG_SHARED": url})  # fmt: skip
    assert result.returncode == 0, describe(result)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def plays_of(mountpoint: Path) -> dict[str, int]:
    result = run_musicfs("export", "--mount", str(mountpoint))
    assert result.returncode == 0, describe(result)
    return {t["title"]: t["plays"] for t in json.loads(result.stdout)["tracks"]}


def test_migrate_a_scanned_catalog_and_copy_it_to_another_machine(
    library: Library,
    postgres: PostgresServer,  # noqa: F811
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    cache = tmp_path / "cache"
    migrate = ("catalog", "migrate", "--to", postgres_url, "--cache-dir", str(cache))
    with mounted([origin], tmp_path / "mnt", cache) as mount:
        joga = mount.mountpoint / render_path(specs[JOGA])
        result = run_musicfs("tag", "set", str(joga), "genre=Trip-Hop", "--json")
        assert result.returncode == 0, describe(result)
        sha256_of(mount.mountpoint / render_path(specs[UNRAVEL]))  # one play
        wait_until(lambda: plays_of(mount.mountpoint).get("Unravel") == 1, timeout=30,
                   what="the play of Unravel in the catalog")  # fmt: skip
        # Beside the running mount, named by its mountpoint, with the shared
        # catalog set in the environment: read-only, the server asked directly.
        live = run_musicfs("catalog", "status", "--mount", str(mount.mountpoint), "--json",
                           env={"MUSICFS_CATALOG_SHARED": postgres_url})  # fmt: skip
        assert live.returncode == 0, describe(live)
        assert json.loads(live.stdout)["replica_tracks"] == 2
        assert json.loads(live.stdout)["catalog"] == str(cache / "catalog.sqlite3")
        busy = run_musicfs(*migrate)
        assert busy.returncode == 2, describe(busy)
        assert "musicfs unmount" in busy.stderr
        beside = run_musicfs(*migrate, "--dry-run")  # reads only: allowed, and said
        assert beside.returncode == 0, describe(beside)
        assert "read-only beside the running mount" in beside.stdout

    before = catalog_status(cache, postgres_url)
    assert before["reachable"] is True
    assert before["replica_of"] is None
    assert (before["replica_tracks"], before["server_tracks"]) == (2, 0)

    postgres.stop()
    try:
        down = run_musicfs(*migrate)
        assert down.returncode == 1, describe(down)
        assert f"{postgres.host}:{postgres.port}" in down.stderr
        assert "Traceback" not in down.stderr
    finally:
        postgres.start()
    dry = run_musicfs(*migrate, "--dry-run")
    assert dry.returncode == 0, describe(dry)
    assert "2 tracks" in dry.stdout
    assert catalog_status(cache, postgres_url) == before  # nothing changed on either side

    done = run_musicfs(*migrate)
    assert done.returncode == 0, describe(done)
    assert "1 overrides, 1 plays" in done.stdout
    assert f'shared = "{postgres_url}"' in done.stdout

    with Catalog.open(cache / "catalog.sqlite3", readonly=True) as local:
        ids = {t.relpath: t.id for t in local.tracks()}
        audio = {t.relpath: local.audio_id(t.id) for t in local.tracks()}
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT reldir || '/' || name, id, audio_id FROM tracks").fetchall()
        assert {r[0]: r[1] for r in rows} == ids
        assert {r[0]: r[2] for r in rows} == audio
        assert all(audio.values())
        assert conn.execute("SELECT file_id, field, value FROM overrides").fetchall() == [
            (ids[JOGA], "genre", "Trip-Hop")
        ]
        assert conn.execute("SELECT file_id FROM plays").fetchall() == [(ids[UNRAVEL],)]

    # A second machine's replica, copied from the shared catalog.
    with (
        SharedCatalog.open(postgres_url) as shared,
        Catalog.open(tmp_path / "b" / "catalog.sqlite3") as other,
    ):
        bootstrap(other, shared)
        assert {t.relpath: t.id for t in other.tracks()} == ids
        assert other.overrides(ids[JOGA]) == {"genre": "Trip-Hop"}
        assert other.play_stats(ids[UNRAVEL])[0] == 1

    after = catalog_status(cache, postgres_url)
    assert after["replica_of"] == after["server_catalog_id"]
    assert (after["replica_tracks"], after["server_tracks"]) == (2, 2)
    assert (after["lag_changes"], after["lag_seconds"]) == (0, 0)
