"""Media servers learn of changes (issue 15.4), through a real mount.

``musicfs events --type tree.changed`` shows each folder whose listing changed.

A real MPD (apt) indexes the mountpoint with ``auto_update "no"``: after its
first ``update`` nobody runs another, and still a file added to the origin
(watched by the daemon) and a track moved by an override show in MPD's
database: the daemon told MPD (``[[notify]] type = "mpd"``) to update the
folders that changed. Jellyfin, Plex and Navidrome are played by a local
receiver (`tests.servers.mediaserver`) that records every request, so each
request's documented shape is checked (method, path, query, headers, token,
body), and that only the changed folders are named, that a burst of changes
becomes one round, that a failing server is retried, and that a hanging one
does not hold up reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.eventstream import listening
from tests.e2e.helpers import describe, mounted, run_musicfs, sha256_of, toml_value, wait_until
from tests.e2e.library import Library, TrackSpec, make_origin, render_path
from tests.servers import free_port
from tests.servers.mediaserver import MediaReceiver, Request, media_receiver
from tests.servers.mpd import mpd_server

pytestmark = [pytest.mark.mount, pytest.mark.media]

JOGA = "Björk/Homogenic/01 Jóga.flac"
UNRAVEL = "Björk/Homogenic/02 Unravel.flac"
SVEFN = "Sigur Rós/svefn-g-englar.mp3"
OVERTURE = "Two Sides/CD1/01.flac"
THEME = "Two Sides/CD1/02.flac"
TOKEN = "jf-token-5d1c-musicfs-e2e"
PLEX_TOKEN = "plex-token-9e2b-musicfs-e2e"
NAVIDROME_PASSWORD = "nd-pass-4a7f-musicfs-e2e"
MPD_PASSWORD = "mpd-pass-31c8-musicfs-e2e"


def notify_config(path: Path, entries: Sequence[Mapping[str, object]]) -> Path:
    """A config file holding only ``[[notify]]`` tables (origins come from --origin)."""
    lines: list[str] = []
    for entry in entries:
        lines += ["[[notify]]", *(f"{k} = {toml_value(v)}" for k, v in entry.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def folder_of(spec: TrackSpec) -> str:
    return render_path(spec).rpartition("/")[0]


def set_tags(path: Path, *assignments: str) -> dict[str, Any]:
    result = run_musicfs("tag", "set", path, *assignments, "--json")
    assert result.returncode == 0, describe(result)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# -- the event ------------------------------------------------------------------------------


def at(path: str) -> Callable[[dict[str, Any]], bool]:
    """Matches the events about *path*."""
    return lambda event: event["path"] == path


def test_musicfs_events_shows_each_changed_folder(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, SVEFN])
    with (
        mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount,
        listening(mount, "--type", "tree.changed") as events,
    ):
        specs |= make_origin(library, origin, [UNRAVEL])  # into an album that is there
        album = folder_of(specs[UNRAVEL])
        event = events.wait_for(at(album))
        assert event["type"] == "tree.changed"
        joga = render_path(specs[JOGA])
        set_tags(mount.mountpoint / joga, "albumartist=Guest")  # a new artist folder
        guest = render_path(dataclasses.replace(
            specs[JOGA], tags={**specs[JOGA].tags, "albumartist": "Guest"}))  # fmt: skip
        for folder in ("", album, guest.rpartition("/")[0]):  # the root: a new artist
            events.wait_for(at(folder))
        # Only folders whose listing changed: never Sigur Rós's.
        assert all(not e["path"].startswith("Sigur") for e in events.seen)


# -- MPD ----------------------------------------------------------------------------------


def test_mpd_lists_new_and_moved_tracks_without_an_update_by_hand(
    library: Library, tmp_path: Path
) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, SVEFN])
    mountpoint = tmp_path / "mnt"
    port = free_port()
    config = notify_config(
        tmp_path / "musicfs.toml",
        [{"type": "mpd", "host": "127.0.0.1", "port": port, "debounce": 0.5, "backoff": 0.5}],
    )
    secret = {"MUSICFS_SECRET_MPD_PASSWORD": MPD_PASSWORD}  # without it MPD refuses `update`
    with (
        mounted([origin], mountpoint, tmp_path / "cache", "--config", str(config),
                env=secret) as mount,
        mpd_server(mountpoint, tmp_path / "mpd", port, password=MPD_PASSWORD) as mpd,
    ):  # fmt: skip
        mpd.update_and_wait()  # MPD builds its database once; nobody runs update again
        joga, svefn = render_path(specs[JOGA]), render_path(specs[SVEFN])
        assert mpd.files() == sorted([joga, svefn])

        # A file added to the origin: the daemon's watch rescans, MPD is told.
        specs |= make_origin(library, origin, [UNRAVEL])
        unravel = render_path(specs[UNRAVEL])
        wait_until(lambda: unravel in mpd.files(), timeout=60,
                   what=f"MPD to list {unravel}; its log: {mpd.log()[-2000:]}")  # fmt: skip

        # An override that moves a track to another album folder.
        set_tags(mount.mountpoint / joga, "album=Vespertine")
        vespertine = {**specs[JOGA].tags, "album": "Vespertine"}
        moved = render_path(dataclasses.replace(specs[JOGA], tags=vespertine))
        assert (mount.mountpoint / moved).is_file()
        wait_until(lambda: moved in mpd.files() and joga not in mpd.files(), timeout=60,
                   what=f"MPD to list {moved} instead of {joga}")  # fmt: skip
        assert sorted(mpd.files()) == sorted([moved, svefn, unravel])
    assert MPD_PASSWORD not in (tmp_path / "cache" / "musicfs.log").read_text(errors="replace")


def test_mpd_over_its_socket_with_the_mount_inside_its_music_directory(
    library: Library, tmp_path: Path
) -> None:
    """``root``: MPD's music_directory holds the mount as a subfolder (and other
    music); ``socket``: MPD is reached over its Unix socket."""
    origin, music = tmp_path / "music", tmp_path / "library"
    specs = make_origin(library, origin, [JOGA])
    make_origin(library, music / "local", [SVEFN])  # music MusicFS does not serve
    mountpoint, unix_socket = music / "musicfs", tmp_path / "mpd.socket"
    config = notify_config(
        tmp_path / "musicfs.toml",
        [{"type": "mpd", "socket": str(unix_socket), "root": "musicfs", "debounce": 0.5}],
    )
    with (
        mounted([origin], mountpoint, tmp_path / "cache", "--config", str(config)),
        mpd_server(music, tmp_path / "mpd", unix_socket=unix_socket) as mpd,
    ):
        mpd.update_and_wait()
        local = f"local/{SVEFN}"
        assert mpd.files() == sorted([f"musicfs/{render_path(specs[JOGA])}", local])
        specs |= make_origin(library, origin, [UNRAVEL])
        unravel = f"musicfs/{render_path(specs[UNRAVEL])}"
        wait_until(lambda: unravel in mpd.files(), timeout=60,
                   what=f"MPD to list {unravel}; its log: {mpd.log()[-2000:]}")  # fmt: skip
        assert local in mpd.files()


# -- Jellyfin, Plex, Navidrome --------------------------------------------------------------


def http_entries(receiver: MediaReceiver, **common: object) -> list[dict[str, object]]:
    return [
        {"type": "jellyfin", "url": receiver.url("/jf"), "path_prefix": "/media/music", **common},
        {"type": "plex", "url": receiver.url("/plex"), "section": 3,
         "path_prefix": "/data/music", **common},
        {"type": "navidrome", "id": "nd", "url": receiver.url("/nd"), "user": "alice", **common},
    ]  # fmt: skip


SECRETS = {
    "MUSICFS_SECRET_JELLYFIN_TOKEN": TOKEN,
    "MUSICFS_SECRET_PLEX_TOKEN": PLEX_TOKEN,
    "MUSICFS_SECRET_ND_PASSWORD": NAVIDROME_PASSWORD,
}


def jellyfin_paths(request: Request) -> list[str]:
    return [u["Path"] for u in request.json()["Updates"]]


def check_jellyfin(request: Request) -> None:
    assert request.method == "POST"
    assert request.path == "/jf/Library/Media/Updated"
    assert request.headers["X-Emby-Token"] == TOKEN
    assert request.headers["Content-Type"] == "application/json"
    updates = request.json()["Updates"]
    assert updates
    assert all(set(u) == {"Path", "UpdateType"} for u in updates)
    assert all(u["UpdateType"] == "Modified" for u in updates)


def check_plex(request: Request) -> None:
    assert request.method == "GET"
    assert request.path == "/plex/library/sections/3/refresh"
    assert request.query["X-Plex-Token"] == PLEX_TOKEN


def check_navidrome(request: Request) -> None:
    assert request.method == "GET"
    assert request.path == "/nd/rest/startScan"
    query = request.query
    assert (query["u"], query["v"], query["c"], query["f"]) == (
        "alice",
        "1.16.1",
        "musicfs",
        "json",
    )
    assert query["s"]
    assert query["t"] == hashlib.md5((NAVIDROME_PASSWORD + query["s"]).encode()).hexdigest()
    assert "p" not in query  # never the password itself


def test_http_servers_are_told_only_the_changed_folders(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, SVEFN, OVERTURE])
    with media_receiver() as receiver:
        config = notify_config(tmp_path / "musicfs.toml", http_entries(receiver, debounce=3))
        with mounted([origin], tmp_path / "mnt", tmp_path / "cache", "--config", str(config),
                     env=SECRETS) as mount:  # fmt: skip
            # The first scan changed everything: each server hears of the root.
            first = receiver.wait_for("/jf")[0]
            check_jellyfin(first)
            assert jellyfin_paths(first) == ["/media/music"]
            whole = receiver.wait_for("/plex")[0]
            check_plex(whole)
            assert "path" not in whole.query  # the whole section
            check_navidrome(receiver.wait_for("/nd")[0])
            seen = len(receiver.requests)

            # A burst: files land in two albums at once (the watch may see them in
            # one rescan or two); the round that follows names both album folders
            # and nothing else.
            specs |= make_origin(library, origin, [UNRAVEL, THEME])
            homogenic, two_sides = folder_of(specs[UNRAVEL]), folder_of(specs[THEME])
            jf = receiver.wait_for("/jf", lambda r: r.n >= seen)[0]
            check_jellyfin(jf)
            assert sorted(jellyfin_paths(jf)) == sorted(
                f"/media/music/{f}" for f in (homogenic, two_sides)
            )
            plex = receiver.wait_for("/plex", lambda r: r.n >= seen,
                                     count=2)  # fmt: skip
            for request in plex:
                check_plex(request)
            assert sorted(r.query["path"] for r in plex) == [
                f"/data/music/{f}" for f in sorted((homogenic, two_sides))
            ]
            check_navidrome(receiver.wait_for("/nd", lambda r: r.n >= seen)[0])
            assert mount.mountpoint.joinpath(render_path(specs[THEME])).is_file()


def test_an_override_names_the_old_and_new_folders(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL, SVEFN])
    with media_receiver() as receiver:
        entries = http_entries(receiver, debounce=0.5)[:1]
        config = notify_config(tmp_path / "musicfs.toml", entries)
        with mounted([origin], tmp_path / "mnt", tmp_path / "cache", "--config", str(config),
                     env=SECRETS) as mount:  # fmt: skip
            receiver.wait_for("/jf")
            seen = len(receiver.requests)
            joga = render_path(specs[JOGA])
            set_tags(mount.mountpoint / joga, "genre=Jazz")  # same path, new header
            jf = receiver.wait_for("/jf", lambda r: r.n >= seen)[0]
            check_jellyfin(jf)
            assert jellyfin_paths(jf) == [f"/media/music/{folder_of(specs[JOGA])}"]
            seen = len(receiver.requests)
            set_tags(mount.mountpoint / joga, "albumartist=Guest")  # moves to a new artist
            jf = receiver.wait_for("/jf", lambda r: r.n >= seen)[0]
            # Björk's album keeps Unravel (changed); the new artist's folder is new,
            # so its parent, the root, changed: the whole library is named.
            assert sorted(jellyfin_paths(jf)) == ["/media/music"]


def test_a_failing_server_is_retried_and_a_hanging_one_does_not_hold_up_reads(
    library: Library, tmp_path: Path
) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, SVEFN])
    with media_receiver() as receiver:
        receiver.on("/jf", lambda n: 500 if n <= 2 else 204)  # fails twice, then takes it
        receiver.on("/plex", lambda _n: 200, hold=True)  # hangs until released
        entries = http_entries(receiver, debounce=0.5, backoff=0.2, timeout=60)[:2]
        config = notify_config(tmp_path / "musicfs.toml", entries)
        cache = tmp_path / "cache"
        with mounted([origin], tmp_path / "mnt", cache, "--config", str(config),
                     env=SECRETS) as mount:  # fmt: skip
            attempts = receiver.wait_for("/jf", count=3)
            assert [r.body for r in attempts] == [attempts[0].body] * 3  # the same round again
            wait_until(lambda: attempts[2].status == 204, timeout=30, what="the third answer")
            receiver.wait_for("/plex")  # held: the server does not answer
            for spec in (specs[JOGA], specs[SVEFN]):  # reads go on meanwhile
                path = mount.mountpoint / render_path(spec)
                assert sha256_of(path) == sha256_of(origin / spec.relpath)
            assert receiver.under("/plex")[0].status is None  # still held
            receiver.release()
            wait_until(lambda: receiver.under("/plex")[0].status == 200, timeout=30,
                       what="the held request to be answered")  # fmt: skip
        log = (cache / "musicfs.log").read_text(errors="replace")
        counts = re.search(r"notify jellyfin: rounds=(\d+) folders=\d+ failed=(\d+) retried=(\d+)",
                           log)  # fmt: skip
        assert counts is not None, log[-3000:]
        assert (int(counts[1]), int(counts[2]), int(counts[3])) == (1, 0, 2)
        for secret in (TOKEN, PLEX_TOKEN):
            assert secret not in log
