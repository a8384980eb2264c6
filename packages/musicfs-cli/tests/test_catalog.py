"""``musicfs catalog migrate`` and ``musicfs catalog status`` (issue 16, point 7):
usage errors without a server, then the commands against a real PostgreSQL
(tests/servers/postgres.py) on a real SQLite catalog. The same on a catalog a
real mount scanned: tests/e2e/test_shared_catalog_ops.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from musicfs.cli.common import EXIT_FAILED, EXIT_USAGE

_REPO_ROOT = str(Path(__file__).resolve().parents[3])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.servers.postgres import PostgresServer, postgres, postgres_url  # noqa: E402, F401


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "musicfs.cli", *args, "--config", os.devnull],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
        check=False,
    )  # fmt: skip


def fails_cleanly(result: subprocess.CompletedProcess[str], code: int, *expected: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("musicfs: error: "), result.stderr
    for text in expected:
        assert text in result.stderr


def cache_dir(path: Path, tracks: int = 3) -> Path:
    """A cache dir whose catalog has *tracks* tracks, an override and two plays."""
    from musicfs.core.catalog.store import Catalog
    from musicfs.core.model import FileStat, ScannedFile, TrackTags

    path.mkdir(parents=True)
    with Catalog.open(path / "catalog.sqlite3") as catalog, catalog.transaction():
        ids = [
            catalog.upsert_file(
                ScannedFile(
                    "music",
                    f"A/{n}.flac",
                    FileStat(100, 1, 1),
                    "flac",
                    TrackTags(title=f"t{n}"),
                    audio_id=f"a{n}",
                )
            )
            for n in range(tracks)
        ]
        catalog.set_overrides(ids[0], {"title": "Fixed"}, "user")
        catalog.record_plays([(ids[0], 1.0), (ids[0], 2.0)])
    return path


# -- usage errors: one line, the fix, nothing touched ---------------------------------------


def test_migrate_needs_a_target() -> None:
    result = run("catalog", "migrate", "--cache-dir", "/nonexistent")
    assert result.returncode == EXIT_USAGE
    assert "--to" in result.stderr


def test_a_password_on_the_command_line_is_refused_and_not_echoed(tmp_path: Path) -> None:
    cache = cache_dir(tmp_path / "cache")
    result = run("catalog", "migrate", "--to", "postgresql://me:s3cret@db/music",
                 "--cache-dir", str(cache))  # fmt: skip
    fails_cleanly(result, EXIT_USAGE, "holds a password", "MUSICFS_SECRET_CATALOG_PASSWORD")
    assert "s3cret" not in result.stderr + result.stdout


def test_a_url_that_is_not_postgresql_is_refused(tmp_path: Path) -> None:
    result = run("catalog", "migrate", "--to", "mysql://me@db/music", "--cache-dir", str(tmp_path))
    fails_cleanly(result, EXIT_USAGE, "postgresql://user@host:port/database")
    nodb = run("catalog", "migrate", "--to", "postgresql://me@db", "--cache-dir", str(tmp_path))
    fails_cleanly(nodb, EXIT_USAGE, "names no database")


def test_the_commands_need_to_know_which_catalog(tmp_path: Path) -> None:
    for action in (["status"], ["migrate", "--to", "postgresql://me@db/music"]):
        result = run("catalog", *action)
        fails_cleanly(result, EXIT_USAGE, "--mount MOUNTPOINT", "--cache-dir DIR")
        both = run("catalog", *action, "--mount", str(tmp_path), "--cache-dir", str(tmp_path))
        fails_cleanly(both, EXIT_USAGE, "not both")
        empty = run("catalog", *action, "--cache-dir", str(tmp_path / "none"))
        fails_cleanly(empty, EXIT_USAGE, f"no MusicFS catalog in {tmp_path / 'none'}")


def test_migrate_refuses_a_mounted_cache_dir(tmp_path: Path) -> None:
    from musicfs.core.config.paths import CacheDirLock

    cache = cache_dir(tmp_path / "cache")
    lock = CacheDirLock(cache)
    lock.acquire()  # as a running daemon holds it
    try:
        before = (cache / "catalog.sqlite3").read_bytes()
        result = run("catalog", "migrate", "--to", "postgresql://me@127.0.0.1:1/music",
                     "--cache-dir", str(cache))  # fmt: skip
        fails_cleanly(result, EXIT_USAGE, "in use by a running MusicFS mount", "musicfs unmount")
        assert (cache / "catalog.sqlite3").read_bytes() == before
    finally:
        lock.release()


def test_status_of_a_catalog_that_is_not_shared(tmp_path: Path) -> None:
    cache = cache_dir(tmp_path / "cache", tracks=4)
    result = run("catalog", "status", "--cache-dir", str(cache), "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["shared"] is False
    assert status["replica_tracks"] == 4
    text = run("catalog", "status", "--cache-dir", str(cache))
    assert "shared:      no" in text.stdout


# -- against a real PostgreSQL --------------------------------------------------------------


def test_migrate_then_status(postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    cache = cache_dir(tmp_path / "cache", tracks=5)
    shared = {"MUSICFS_CATALOG_SHARED": postgres_url}
    before = json.loads(run("catalog", "status", "--cache-dir", str(cache), "--json",
                            env=shared).stdout)  # fmt: skip
    assert before["reachable"] is True
    assert before["replica_of"] is None
    assert before["server_tracks"] == 0
    dry = run("catalog", "migrate", "--to", postgres_url, "--cache-dir", str(cache), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was written" in dry.stdout
    assert "5 tracks" in dry.stdout
    done = run("catalog", "migrate", "--to", postgres_url, "--cache-dir", str(cache))
    assert done.returncode == 0, done.stderr
    assert "5 tracks (with their audio identity), 1 overrides, 2 plays" in done.stdout
    assert "Origins, by id: music (5 tracks)" in done.stdout
    assert f'shared = "{postgres_url}"' in done.stdout
    after = json.loads(run("catalog", "status", "--cache-dir", str(cache), "--json",
                           env=shared).stdout)  # fmt: skip
    assert after["replica_of"] == after["server_catalog_id"]
    assert (after["replica_tracks"], after["server_tracks"]) == (5, 5)
    assert (after["lag_changes"], after["lag_seconds"]) == (0, 0)
    text = run("catalog", "status", "--cache-dir", str(cache), env=shared).stdout
    assert "lag:         0 changes" in text
    again = run("catalog", "migrate", "--to", postgres_url, "--cache-dir", str(cache))
    assert "already a replica" in again.stdout
    other = cache_dir(tmp_path / "other", tracks=2)
    refused = run("catalog", "migrate", "--to", postgres_url, "--cache-dir", str(other))
    fails_cleanly(refused, EXIT_FAILED, "is not empty", "createdb")


def test_migrate_and_status_with_the_server_down(
    postgres: PostgresServer,  # noqa: F811
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    cache = cache_dir(tmp_path / "cache")
    before = (cache / "catalog.sqlite3").read_bytes()
    postgres.stop()
    try:
        result = run("catalog", "migrate", "--to", postgres_url, "--cache-dir", str(cache))
        server = f"postgres@{postgres.host}:{postgres.port}/"
        fails_cleanly(result, EXIT_FAILED, server, "is unavailable", "check that PostgreSQL runs")
        assert (cache / "catalog.sqlite3").read_bytes() == before
        status = run("catalog", "status", "--cache-dir", str(cache),
                     env={"MUSICFS_CATALOG_SHARED": postgres_url})  # fmt: skip
        assert status.returncode == EXIT_FAILED
        assert "UNREACHABLE" in status.stdout
        assert "Traceback" not in status.stderr
    finally:
        postgres.start()


@pytest.fixture(autouse=True)
def _no_user_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The user's own credentials file is never read by these tests.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_migrate_takes_the_password_from_the_credentials_store(
    postgres: PostgresServer,  # noqa: F811
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    from tests.servers.postgres import PASSWORD_USER

    secret = "cli-Pa55word-migrate"
    database = postgres_url.rsplit("/", 1)[1]
    postgres.sql(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{secret}'")
    postgres.sql(f"ALTER DATABASE {database} OWNER TO {PASSWORD_USER}")
    url = postgres.url(database, user=PASSWORD_USER)
    cache = cache_dir(tmp_path / "cache")
    try:
        wrong = run("catalog", "migrate", "--to", url, "--cache-dir", str(cache),
                    env={"MUSICFS_SECRET_CATALOG_PASSWORD": "not-it"})  # fmt: skip
        fails_cleanly(wrong, EXIT_FAILED, "password authentication failed",
                      "MUSICFS_SECRET_CATALOG_PASSWORD")  # fmt: skip
        assert "not-it" not in wrong.stderr
        right = run("catalog", "migrate", "--to", url, "--cache-dir", str(cache),
                    env={"MUSICFS_SECRET_CATALOG_PASSWORD": secret})  # fmt: skip
        assert right.returncode == 0, right.stderr
        assert secret not in right.stdout + right.stderr
        assert f'shared = "{url}"' in right.stdout
    finally:
        postgres.sql(f"ALTER DATABASE {database} OWNER TO postgres")
        postgres.sql(f"DROP OWNED BY {PASSWORD_USER}", database)
        postgres.sql(f"DROP ROLE {PASSWORD_USER}")
