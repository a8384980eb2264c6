"""A mount on a shared catalog that stops between applying a round of the feed
and re-placing its tracks (a crash, or its follow thread failing and being
restarted) does that work when it starts again: the replica's sequence number
has moved on, but the tree must still show the changed tracks where their new
tags put them."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicfs.core.catalog.store import Catalog
from musicfs.core.content.overlay import OverlayEditor
from musicfs.core.shared.feed import Applied
from tests.servers.replicas import Machine, running, scanned, shared_mount, wait_for


class _Crash(Exception):
    """The mount dying right after the replica committed a round of the feed."""


def _path_of(catalog_path: Path, track: int) -> str:
    with Catalog.open(catalog_path, readonly=True) as catalog:
        node = catalog.node_of_file(track)
        return "" if node is None else catalog.path_of(node.id)


@pytest.mark.timeout(120)
def test_a_round_applied_before_a_crash_is_placed_in_the_tree_after_it(
    machines: tuple[Machine, Machine], postgres_url: str, tmp_path: Path
) -> None:
    a, b = machines
    b.follow()
    mount = shared_mount(postgres_url, b.catalog.path, tmp_path / "cache", [])
    handle = mount._applied

    def crash_once(editor: OverlayEditor, applied: Applied) -> None:
        mount._applied = handle  # type: ignore[method-assign]  # the restarted mount's
        raise _Crash

    def scenario() -> None:
        (track,) = a.shared.write_scan_batch([scanned("x/song.flac", title="Old Name")])
        wait_for(lambda: "Old Name" in _path_of(b.catalog.path, track), timeout=30,
                 what="the track in B's tree")  # fmt: skip
        mount._applied = crash_once  # type: ignore[method-assign]
        a.shared.write_scan_batch([scanned("x/song.flac", title="New Name")])
        # Applied (the replica's sequence moved on), the tree work lost with the
        # crash; the follow thread starts again and must do it.
        wait_for(lambda: "New Name" in _path_of(b.catalog.path, track), timeout=30,
                 what="the renamed track in B's tree after the restart")  # fmt: skip
        assert mount._applied == handle

    running(mount, scenario)
