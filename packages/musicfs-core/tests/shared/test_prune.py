"""The change feed is pruned by itself (`SharedMount._upkeep`): each mount says
which change its replica applied, and a mount that scans an origin forgets, now
and then, the changes every replica has applied and those older than the bound
(`FEED_KEEP`; a replica not heard from for that long no longer holds the feed
back, and is copied again at its next mount)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import trio

from musicfs.core.catalog.layout import Layout
from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.content.overlay import OverlayEditor
from musicfs.core.extensions import Extensions
from musicfs.core.mount.shared import SharedMount
from musicfs.core.origins.federation import Federation
from musicfs.core.shared.errors import ReplicaBehind
from musicfs.core.supervise import Supervisor
from tests.servers.replicas import Machine, scanned, wait_for


def _editor(catalog: Catalog) -> OverlayEditor:
    layout = Layout(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))
    return OverlayEditor(catalog, layout, Federation({}), Extensions())


def _seqs(admin: psycopg.Connection[tuple[object, ...]]) -> list[int]:
    return [int(str(r[0])) for r in admin.execute("SELECT seq FROM changes ORDER BY seq")]


@pytest.mark.timeout(120)
def test_the_feed_is_pruned_of_what_every_replica_applied_by_a_mount_that_scans(
    machines: tuple[Machine, Machine], postgres_url: str, tmp_path: Path
) -> None:
    a, b = machines
    for n in range(3):
        a.shared.write_scan_batch([scanned(f"x/{n}.flac", title=f"Song {n}")])
    b.follow()
    first = a.shared.last_seq()
    (tmp_path / "cache").mkdir()
    mount = SharedMount(
        postgres_url,
        b.catalog.path,
        tmp_path / "cache",
        origin_ids=lambda: ["nas"],
        editor=_editor,
        notify=lambda changes: None,
        took_over=lambda origin_id: None,
    )
    mount.report_every = 0.0
    mount.prune_every = 0.5  # instead of minutes
    mount._next_prune = 0.0

    def scenario(admin: psycopg.Connection[tuple[object, ...]]) -> None:
        # A laptop last heard of three weeks ago, far behind: it holds nothing back.
        admin.execute(
            "INSERT INTO replicas (id, applied_seq, seen_at) "
            "VALUES ('laptop', 0, now() - interval '21 days')"
        )
        # A machine that applied the first three changes and was heard of just now.
        admin.execute("INSERT INTO replicas (id, applied_seq) VALUES ('desktop', %s)", (first,))
        a.shared.write_scan_batch([scanned("x/3.flac", title="Song 3")])
        later = a.shared.last_seq()
        # The mount (B) applies everything; the desktop is at `first`: only
        # what both applied goes.
        wait_for(lambda: _seqs(admin) == [later], timeout=30,
                 what="the changes both replicas applied to be pruned")  # fmt: skip
        laptop = admin.execute("SELECT count(*) FROM replicas WHERE id = 'laptop'").fetchone()
        assert laptop == (0,)  # forgotten: behind the feed, it copies again
        # The desktop catches up: the rest goes too, and the replica that
        # had not applied it would now be copied again, not given a gap.
        admin.execute("UPDATE replicas SET applied_seq = %s WHERE id = 'desktop'", (later,))
        wait_for(lambda: _seqs(admin) == [], timeout=30, what="the rest to be pruned")
        with pytest.raises(ReplicaBehind):
            a.shared.changes_after(first)

    async def run() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            try:
                async with trio.open_nursery() as nursery:
                    mount.start(Supervisor(first=0.2, longest=0.5), nursery)
                    try:
                        await trio.to_thread.run_sync(scenario, admin)
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                await trio.to_thread.run_sync(mount.stop)

    trio.run(run)
