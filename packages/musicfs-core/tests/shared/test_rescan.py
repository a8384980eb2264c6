"""A rescan asked on a mount of a shared catalog (`SharedMount.ask_rescan`,
``musicfs origin rescan``): the mount scans the origin if it holds its lock or
no mount does (it takes the lock); else the mount holding it is asked to, and
finds the request when it next looks (`OriginLocks.rescans_asked`)."""

from __future__ import annotations

from pathlib import Path

from musicfs.core.mount.shared import SharedMount
from tests.servers.replicas import Machine, wait_for


def _mount(url: str, machine: Machine, cache: Path) -> SharedMount:
    cache.mkdir(parents=True, exist_ok=True)
    return SharedMount(
        url,
        machine.catalog.path,
        cache,
        origin_ids=list,
        editor=lambda catalog: None,  # type: ignore[arg-type, return-value]  # never followed
        notify=lambda changes: None,
        took_over=lambda origin_id: None,
    )


def test_a_rescan_is_done_here_if_no_mount_scans_the_origin_else_asked_of_the_one_that_does(
    machines: tuple[Machine, Machine], postgres_url: str, tmp_path: Path
) -> None:
    a, b = machines
    first = _mount(postgres_url, a, tmp_path / "a")
    second = _mount(postgres_url, b, tmp_path / "b")
    try:
        # Nobody scans "nas": the mount asked takes its lock and scans it itself.
        assert first.ask_rescan("nas") == ""
        assert first.locks.held == {"nas"}
        assert first.ask_rescan("nas") == ""  # and again: it holds it

        # The other mount cannot take it: it asks the holder, and says so.
        said = second.ask_rescan("nas")
        assert "origin nas is scanned by another mount" in said
        assert "asked it to rescan" in said
        assert second.locks.held == set()
        assert wait_for(first.locks.rescans_asked, timeout=10, what="the request") == {"nas"}
        assert first.locks.rescans_asked() == set()  # asked once, found once
    finally:
        first.stop()
        second.stop()
