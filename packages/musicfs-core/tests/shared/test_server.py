"""The shared catalog's server as a mount meets it, on a real PostgreSQL: a
write wakes whoever listens; one mount at a time holds an origin; a server that
is down gives a clear error at once (naming the server, never the password)
and is used again when it is back; passwords come from the credentials store."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from musicfs.core.secrets.credentials import Credentials
from musicfs.core.shared.connect import connect, parse_url
from musicfs.core.shared.errors import SharedCatalogError, SharedCatalogUnavailable
from musicfs.core.shared.feed import Listener
from musicfs.core.shared.locks import OriginLocks
from musicfs.core.shared.store import SharedCatalog
from tests.servers.postgres import PASSWORD_USER, PostgresServer
from tests.servers.replicas import Machine, scanned

SECRET = "s3cr3t-Pa55word-xyz"


def test_a_write_wakes_a_listening_machine(
    machines: tuple[Machine, Machine], postgres_url: str
) -> None:
    a, b = machines
    with Listener(parse_url(postgres_url)) as listener:
        assert listener.wait_for_notify(0) is True  # (re)connected: look for changes
        assert listener.wait_for_notify(0.2) is False  # nothing written
        woken: list[bool] = []
        waiter = threading.Thread(target=lambda: woken.append(listener.wait_for_notify(30)))
        waiter.start()
        (track,) = a.shared.write_scan_batch([scanned("x/new.flac", title="New")])
        waiter.join(timeout=60)
        assert woken == [True]  # woken by the write, long before its 30 s ran out
        assert b.follow().tracks == {track}


def test_one_machine_at_a_time_holds_an_origin(postgres_url: str, postgres: PostgresServer) -> None:
    address = parse_url(postgres_url)
    with OriginLocks(address) as first, OriginLocks(address) as second:
        assert first.try_lock_origin("nas")
        assert first.try_lock_origin("nas")  # held already
        assert not second.try_lock_origin("nas")
        assert second.try_lock_origin("s3-music")  # another origin is free
        first.close()  # the mount goes away
        assert second.try_lock_origin("nas")

        # A session that dies (the server ends it, as when a machine drops off
        # the network) frees its locks; its holder finds out. (The server
        # answers once the session has ended: the 10 s are an upper bound.)
        postgres.sql(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            f"WHERE application_name = 'musicfs' AND datname = '{postgres_url.rsplit('/', 1)[1]}'"
        )
        assert not second.alive()
        assert second.held == set()
        with OriginLocks(address) as third:
            assert third.try_lock_origin("nas")


@pytest.mark.timeout(120)  # a hang fails here, not at the suite's timeout
def test_a_stopped_server_fails_clearly_and_is_used_again_when_back(
    machines: tuple[Machine, Machine], postgres: PostgresServer, postgres_url: str
) -> None:
    a, b = machines
    (track,) = a.shared.write_scan_batch([scanned("x/song.flac", title="Song")])
    listener = Listener(parse_url(postgres_url))
    assert listener.wait_for_notify(0)
    postgres.stop("immediate")  # as if it crashed
    try:
        with pytest.raises(SharedCatalogUnavailable) as refused:
            a.shared.set_overrides(track, {"artist": "during the outage"})
        message = str(refused.value)
        assert f"127.0.0.1:{postgres.port}/" in message  # names the server...
        assert "PostgreSQL runs there" in message  # ...and the fix
        with pytest.raises(SharedCatalogUnavailable):
            b.follow()
        with pytest.raises(SharedCatalogUnavailable):
            listener.wait_for_notify(5)
        # Connecting again fails the same way, within the connect timeout.
        with pytest.raises(SharedCatalogUnavailable):
            SharedCatalog.open(postgres_url)
    finally:
        postgres.start()
    a.shared.set_overrides(track, {"artist": "after the outage"})  # reconnects
    assert listener.wait_for_notify(10)
    listener.close()
    for machine in (a, b):
        machine.follow()
        assert machine.catalog.overrides(track) == {"artist": "after the outage"}


def test_the_password_comes_from_the_credentials_store_and_never_shows(
    postgres: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    postgres.sql(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{SECRET}'")
    postgres.sql(f"ALTER DATABASE {database} OWNER TO {PASSWORD_USER}")
    url = postgres.url(database, user=PASSWORD_USER)
    try:
        with pytest.raises(SharedCatalogError, match="holds a password") as in_url:
            parse_url(url.replace(f"{PASSWORD_USER}@", f"{PASSWORD_USER}:{SECRET}@"))
        assert SECRET not in str(in_url.value)

        with pytest.raises(SharedCatalogUnavailable, match="MUSICFS_SECRET_CATALOG_PASSWORD"):
            SharedCatalog.open(url, Credentials(use_keyring=False))
        wrong = Credentials({"catalog": {"password": "not-it"}}, use_keyring=False)
        with pytest.raises(SharedCatalogUnavailable) as refused:
            SharedCatalog.open(url, wrong)
        assert "password authentication failed" in str(refused.value)
        assert "not-it" not in str(refused.value)

        right = Credentials(environ={"MUSICFS_SECRET_CATALOG_PASSWORD": SECRET}, use_keyring=False)
        with Machine(url, tmp_path / "catalog.sqlite3", credentials=right) as machine:
            (track,) = machine.shared.write_scan_batch([scanned("x/a.flac", title="A")])
            assert machine.follow().tracks == {track}
            postgres.stop()
            try:
                with pytest.raises(SharedCatalogUnavailable) as down:
                    machine.shared.add_plays([(track, 1.0)])
            finally:
                postgres.start()
            assert SECRET not in str(down.value)
            assert PASSWORD_USER in str(down.value)
    finally:
        postgres.sql(f"ALTER DATABASE {database} OWNER TO postgres")
        postgres.sql(f"DROP OWNED BY {PASSWORD_USER}", database)
        postgres.sql(f"DROP ROLE {PASSWORD_USER}")


def test_a_bad_url_is_refused_with_what_to_write() -> None:
    with pytest.raises(SharedCatalogError, match="postgresql://"):
        parse_url("mysql://host/db")
    with pytest.raises(SharedCatalogError, match="names no database"):
        parse_url("postgresql://user@host:5432")
    assert str(parse_url("postgresql://me@db.lan:6543/music")) == "me@db.lan:6543/music"


def test_a_mount_without_a_shared_catalog_does_not_load_the_driver() -> None:
    code = (
        "import sys, musicfs.core.mount.assembly, musicfs.core.mount.service, "
        "musicfs.core.catalog.store\n"
        "print(sorted(m for m in sys.modules if m.startswith('psycopg')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_connection_dropped_between_calls_is_replaced_without_an_error(
    machines: tuple[Machine, Machine], postgres: PostgresServer, postgres_url: str
) -> None:
    a, b = machines
    (track,) = a.shared.write_scan_batch([scanned("x/song.flac", title="Song")])
    # The server ends every session (as a restart or an idle timeout does).
    postgres.sql(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
        f"WHERE application_name = 'musicfs' AND datname = '{postgres_url.rsplit('/', 1)[1]}'"
    )
    assert a.shared.add_plays([(track, 7.0)]) == 1  # no error: a new connection
    for machine in (a, b):
        machine.follow()
        assert machine.catalog.play_stats(track) == (1, 7.0)  # counted once


def test_the_server_notices_a_vanished_machine_within_seconds(postgres_url: str) -> None:
    # Its origin locks must go to another mount soon: the server probes every
    # session of ours after 10 s of silence (by default: after two hours).
    with connect(parse_url(postgres_url + "?options=-c%20work_mem%3D8MB")) as conn:
        shown = [
            conn.execute(f"SHOW {name}".encode()).fetchone()
            for name in ("tcp_keepalives_idle", "tcp_keepalives_count", "work_mem")
        ]
    assert shown == [("10",), ("2",), ("8MB",)]  # the URL's own options kept
