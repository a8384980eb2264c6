"""A mount's threads on a shared catalog (`SharedMount`) recover from the
server's errors: a thread the server's refusal made fail is restarted, and
once it works again it no longer counts as failing (``musicfs status`` is
DEGRADED only while something fails)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import trio
from psycopg import sql

from musicfs.core.catalog.layout import Layout
from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.content.overlay import OverlayEditor
from musicfs.core.extensions import Extensions
from musicfs.core.mount.shared import SharedMount
from musicfs.core.origins.federation import Federation
from musicfs.core.shared.errors import SharedCatalogError
from musicfs.core.shared.feed import apply_changes
from musicfs.core.shared.store import SharedCatalog
from musicfs.core.supervise import Supervisor
from tests.servers.replicas import Machine, scanned, wait_for


def _editor(catalog: Catalog) -> OverlayEditor:
    layout = Layout(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))
    return OverlayEditor(catalog, layout, Federation({}), Extensions())


def _read_only(admin: psycopg.Connection[tuple[object, ...]], on: bool) -> None:
    """Make the database refuse writes to new sessions (a standby after a
    failover, maintenance), or take them again."""
    name = admin.execute("SELECT current_database()").fetchone()
    assert name is not None
    setting = (
        "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
    )
    admin.execute(sql.SQL("ALTER DATABASE {} " + setting).format(sql.Identifier(str(name[0]))))


@pytest.mark.timeout(120)
def test_the_plays_thread_failing_on_a_refused_write_recovers_and_stops_counting_as_failing(
    machines: tuple[Machine, Machine], postgres_url: str, tmp_path: Path
) -> None:
    a, b = machines
    (track,) = a.shared.write_scan_batch([scanned("x/song.flac")])
    b.follow()
    (tmp_path / "mount").mkdir()
    mount = SharedMount(
        postgres_url,
        b.catalog.path,
        tmp_path / "mount",
        origin_ids=list,
        editor=_editor,
        notify=lambda changes: None,
        took_over=lambda origin_id: None,
    )
    supervisor = Supervisor(first=0.2, longest=0.5)

    def scenario(admin: psycopg.Connection[tuple[object, ...]]) -> None:
        mount.queue_plays([(track, 1000.0)])
        wait_for(lambda: "plays" in supervisor.failing, timeout=30, what="the refused plays")
        _read_only(admin, False)
        wait_for(
            lambda: admin.execute("SELECT count(*) FROM plays").fetchone() == (1,),
            timeout=30,
            what="the play on the server",
        )
        # Working again: not DEGRADED for a failure that is over.
        wait_for(lambda: not supervisor.failing, timeout=30, what="the plays loop to recover")

    async def run() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            _read_only(admin, True)
            try:
                async with trio.open_nursery() as nursery:
                    mount.start(supervisor, nursery)
                    try:
                        await trio.to_thread.run_sync(scenario, admin)
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                _read_only(admin, False)
                await trio.to_thread.run_sync(mount.stop)

    trio.run(run)


def test_a_server_that_takes_no_writes_can_still_be_followed(
    machines: tuple[Machine, Machine], postgres_url: str
) -> None:
    """A server that refuses writes for a while (read-only: a standby after a
    failover, maintenance) still feeds the replicas: following it writes
    nothing, so connecting must not try to (the schema is up to date)."""
    a, b = machines
    (track,) = a.shared.write_scan_batch([scanned("x/song.flac", title="Song")])
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        _read_only(admin, True)
        try:
            with SharedCatalog.open(postgres_url) as reader:  # a new, read-only session
                assert apply_changes(b.catalog, reader).tracks == {track}
                # A write it refuses: one line naming the server (`tag set` shows it).
                with pytest.raises(SharedCatalogError, match="read-only") as refused:
                    reader.set_overrides(track, {"genre": "Jazz"})
                assert str(reader.address) in str(refused.value)
                assert "\n" not in str(refused.value)
        finally:
            _read_only(admin, False)
    assert b.catalog.track(track) is not None
