"""``/.playlists``: stored playlists and smart collections rendered as M3U8 with
the tracks' current paths in the tree (no mount: tests/e2e/test_playlists.py)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from musicfs.core.catalog.layout import Layout
from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.config.collections import Collection
from musicfs.core.content.library import Library
from musicfs.core.fuse.fs import MusicFSOperations
from musicfs.core.model import FileStat, ScannedFile, TrackTags
from musicfs.core.namespace.inodes import PLAYLISTS_DIR
from musicfs.core.namespace.playlists import (
    CONTENT_TTL,
    PlaylistFiles,
    PlaylistLine,
    Rendered,
    render_m3u8,
)

ONE = TrackTags(artist="Ann", album="Al", title="One", track=1, year=2020, duration=61.6)
TWO = TrackTags(artist="Bob", album="Be", title="Two", track=2, year=2021, duration=None)


def test_render_lists_tracks_with_extinf_and_unmatched_entries_as_comments() -> None:
    lines = [
        PlaylistLine("../Ann/Al/01 - One.flac", 62, "Ann", "One", "a/1.flac"),
        PlaylistLine(None, text="C:\\gone\\x.mp3"),
        PlaylistLine("../Bob/Be/02 - Two.flac", -1, "Bob", "Two\nsplit", "b/2.flac"),
    ]
    assert render_m3u8(lines).decode() == (
        "#EXTM3U\n"
        "#EXTINF:62,Ann - One\n../Ann/Al/01 - One.flac\n"
        "# not found: C:\\gone\\x.mp3\n"
        "#EXTINF:-1,Bob - Two split\n../Bob/Be/02 - Two.flac\n"
    )
    assert render_m3u8([]) == b"#EXTM3U\n"


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog.open(tmp_path / "catalog.sqlite3")


def add(catalog: Catalog, layout: Layout, relpath: str, tags: TrackTags) -> int:
    with catalog.transaction():
        file_id = catalog.upsert_file(ScannedFile("lib", relpath, FileStat(10, 1), "flac", tags))
        layout.place(file_id, relpath, "flac", tags)
    return file_id


def test_playlists_and_collections_are_files_with_the_trees_current_paths(
    catalog: Catalog,
) -> None:
    layout = Layout(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))
    one, two = add(catalog, layout, "a/1.flac", ONE), add(catalog, layout, "b/2.flac", TWO)
    with catalog.transaction():
        catalog.replace_playlist("mix", "test", [(two, "b/2.flac"), (None, "gone.flac"),
                                                 (one, "a/1.flac")])  # fmt: skip
        catalog.replace_playlist("all", "test", [(one, "a/1.flac")])  # a collection's name too
    files = PlaylistFiles(catalog.path, {"all": Collection("all", order="artist")})
    made = {f.name: f.content.decode() for f in files.listing(catalog)}
    assert made == {
        "all.m3u8": "#EXTM3U\n#EXTINF:62,Ann - One\n../Ann/Al (2020) [FLAC]/01 - One.flac\n",
        "all (collection).m3u8": "#EXTM3U\n#EXTINF:62,Ann - One\n../Ann/Al (2020) [FLAC]/01 - "
        "One.flac\n#EXTINF:-1,Bob - Two\n../Bob/Be (2021) [FLAC]/02 - Two.flac\n",
        "mix.m3u8": "#EXTM3U\n#EXTINF:-1,Bob - Two\n../Bob/Be (2021) [FLAC]/02 - Two.flac\n"
        "# not found: gone.flac\n#EXTINF:62,Ann - One\n../Ann/Al (2020) [FLAC]/01 - One.flac\n",
    }
    before = files.get(catalog, "mix.m3u8")
    assert before is not None

    # An override moves a track: once the tree changed, the playlist says where it is now.
    with catalog.transaction():
        catalog.set_overrides(one, {"artist": "Ann Other", "title": "Uno"})
        layout.place(one, "a/1.flac", "flac", catalog.effective_tags(one, ONE))
    files.forget()
    after = files.get(catalog, "mix.m3u8")
    assert after is not None
    assert after.inode == before.inode
    assert after.content.decode().endswith(
        "#EXTINF:62,Ann Other - Uno\n../Ann Other/Al (2020) [FLAC]/01 - Uno.flac\n"
    )
    assert after.mtime_ns > before.mtime_ns  # players and indexers see it changed

    handle = files.open(catalog, after.inode)
    assert handle is not None
    assert files.read(handle, 0, 1 << 20) == after.content
    assert files.read(handle, 8, 4) == after.content[8:12]
    files.release(handle)
    assert files.get(catalog, "nothing.m3u8") is None


def test_stat_of_a_playlist_never_makes_it_on_the_fuse_thread(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A playlist is made from the catalog, a few queries per entry (thousands for
    a big one): stat must not make it on the thread that answers every FUSE
    request, or the whole mount stops while it does."""
    layout = Layout(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))
    one = add(catalog, layout, "a/1.flac", ONE)
    with catalog.transaction():
        catalog.replace_playlist("mix", "test", [(one, "a/1.flac")])
    library = Library(catalog, {})
    ops = MusicFSOperations(library)
    files = ops.namespace.playlists
    now = [0.0]
    monkeypatch.setattr(files, "_clock", lambda: now[0])
    made_on: list[threading.Thread] = []
    make = files._make

    def spy(*args: Any) -> Rendered:
        made_on.append(threading.current_thread())
        return make(*args)

    monkeypatch.setattr(files, "_make", spy)

    async def lookup_then_stat() -> tuple[Any, Any]:
        found = await ops.lookup(PLAYLISTS_DIR, b"mix.m3u8", None)  # type: ignore[arg-type]
        now[0] += CONTENT_TTL + 1  # what the lookup made is too old to reuse now
        return found, await ops.getattr(found.st_ino, None)  # type: ignore[arg-type]

    try:
        found, stat = trio.run(lookup_then_stat)
    finally:
        library.close_all()
    assert stat.st_size == found.st_size > len(b"#EXTM3U\n")
    assert len(made_on) == 2  # made again for the stat...
    assert threading.main_thread() not in made_on  # ...but in a worker thread
