"""Identity across moves (issue 15.1), through the scanner and a real folder: a
track's overrides and plays follow its audio when the file is moved, renamed,
retagged or copied to another origin; a new file never inherits another's."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mutagen.flac import FLAC

from musicfs.core.catalog.search import Searcher
from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.origins import LocalOrigin
from musicfs.core.sync.changes import ScanRequest
from musicfs.core.sync.scanner import Scanner

Encode = Callable[..., Path]  # the encode fixture of conftest.py


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog.open(tmp_path / "catalog.sqlite3")


def scan(catalog: Catalog, origin: LocalOrigin) -> Scanner:
    scanner = Scanner(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))
    scanner.scan(origin)
    return scanner


def one_track(tmp_path: Path, encode: Encode, **tags: str) -> tuple[Path, LocalOrigin]:
    """An origin folder holding one.flac (2 s, titled "One")."""
    lib = tmp_path / "lib"
    lib.mkdir()
    encode(lib / "one.flac", 2.0, title="One", **tags)
    return lib, LocalOrigin("lib", lib)


def use(catalog: Catalog, origin: str, relpath: str, *, plays: int = 0, **overrides: str) -> int:
    """What a user does to a track: overrides and plays."""
    file_id = catalog.file_id_at(origin, relpath)
    assert file_id is not None, f"{origin}:{relpath} is not catalogued"
    with catalog.transaction():
        if overrides:
            catalog.set_overrides(file_id, overrides, source="user")
        catalog.record_plays([(file_id, 1000.0 + n) for n in range(plays)])
    return file_id


def user_data(catalog: Catalog, origin: str, relpath: str) -> tuple[dict[str, str | None], int]:
    file_id = catalog.file_id_at(origin, relpath)
    assert file_id is not None
    return catalog.overrides(file_id), catalog.play_stats(file_id)[0]


def test_a_moved_renamed_track_keeps_its_overrides_and_plays(
    tmp_path: Path, catalog: Catalog, encode: Encode
) -> None:
    lib = tmp_path / "lib"
    (lib / "a").mkdir(parents=True)
    encode(lib / "a" / "one.flac", 2.0, title="One", artist="Ann", album="Al")
    encode(lib / "a" / "two.flac", 2.5, title="Two", artist="Ann", album="Al")
    origin = LocalOrigin("lib", lib)
    scan(catalog, origin)
    old_id = use(catalog, "lib", "a/one.flac", plays=3, title="Uno")

    (lib / "b" / "deeper").mkdir(parents=True)
    shutil.move(lib / "a" / "one.flac", lib / "b" / "deeper" / "renamed.flac")
    scanner = Scanner(catalog, PathTemplate.parse(DEFAULT_TEMPLATE))
    report = scanner.scan(origin)

    assert user_data(catalog, "lib", "b/deeper/renamed.flac") == ({"title": "Uno"}, 3)
    [moved] = report.moved
    assert (moved.from_relpath, moved.relpath) == ("a/one.flac", "b/deeper/renamed.flac")
    new_id = catalog.file_id_at("lib", "b/deeper/renamed.flac")
    assert new_id is not None
    assert new_id != old_id
    assert catalog.moves_of(new_id)[0][:2] == ("lib", "a/one.flac")
    assert catalog.file_id_at("lib", "a/one.flac") == new_id  # the old path finds it
    # The tree shows it with the override it carried.
    node = catalog.node_of_file(new_id)
    assert node is not None
    assert catalog.path_of(node.id).endswith("Uno.flac")
    assert user_data(catalog, "lib", "a/two.flac") == ({}, 0)  # its neighbour took nothing


def test_moved_and_retagged_at_once(tmp_path: Path, catalog: Catalog, encode: Encode) -> None:
    lib, origin = one_track(tmp_path, encode, artist="Ann")
    scan(catalog, origin)
    use(catalog, "lib", "one.flac", plays=2, genre="Jazz")
    target = lib / "sub" / "one (remastered tags).flac"
    target.parent.mkdir()
    shutil.move(lib / "one.flac", target)
    audio = FLAC(target)
    audio["title"] = "One, retitled by a tagger " * 20
    audio.save()
    scan(catalog, origin)
    assert user_data(catalog, "lib", "sub/one (remastered tags).flac") == ({"genre": "Jazz"}, 2)


def test_a_watched_move_seen_new_path_first_carries_the_data(
    tmp_path: Path, catalog: Catalog, encode: Encode
) -> None:
    """A partial rescan may see the new path before the old one is gone."""
    lib = tmp_path / "lib"
    (lib / "a").mkdir(parents=True)
    (lib / "b").mkdir()
    encode(lib / "a" / "one.flac", 2.0, title="One")
    origin = LocalOrigin("lib", lib)
    scanner = scan(catalog, origin)
    use(catalog, "lib", "a/one.flac", plays=1, album="Kept")
    shutil.copy(lib / "a" / "one.flac", lib / "b" / "one.flac")
    scanner.rescan(origin, ScanRequest(dirs={"b"}))  # the copy arrives: nothing to adopt
    assert user_data(catalog, "lib", "b/one.flac") == ({}, 0)  # same origin: no copy of data
    (lib / "a" / "one.flac").unlink()
    report = scanner.rescan(origin, ScanRequest(dirs={"a"}))
    assert user_data(catalog, "lib", "b/one.flac") == ({"album": "Kept"}, 1)
    assert [m.relpath for m in report.moved] == ["b/one.flac"]


def test_a_track_whose_move_was_seen_new_path_first_is_found_by_its_overrides(
    tmp_path: Path, catalog: Catalog, encode: Encode
) -> None:
    """Searching for an override's value (musicfs search, .search, pin --search)
    still finds the track after its data was carried to the new path."""
    lib = tmp_path / "lib"
    (lib / "a").mkdir(parents=True)
    (lib / "b").mkdir()
    encode(lib / "a" / "one.flac", 2.0, title="One")
    origin = LocalOrigin("lib", lib)
    scanner = scan(catalog, origin)
    use(catalog, "lib", "a/one.flac", title="Zanzibar")
    shutil.copy(lib / "a" / "one.flac", lib / "b" / "one.flac")
    scanner.rescan(origin, ScanRequest(dirs={"b"}))
    (lib / "a" / "one.flac").unlink()
    scanner.rescan(origin, ScanRequest(dirs={"a"}))

    hits = Searcher(catalog).search("Zanzibar")
    assert [h.track.relpath for h in hits] == ["b/one.flac"]


def test_a_new_file_never_inherits_anothers_data(
    tmp_path: Path, catalog: Catalog, encode: Encode
) -> None:
    lib, origin = one_track(tmp_path, encode)
    scan(catalog, origin)
    use(catalog, "lib", "one.flac", plays=4, title="Mine")
    (lib / "one.flac").unlink()
    encode(lib / "other.flac", 2.5, title="One")  # same tags, different audio
    report = scan(catalog, origin).report
    assert user_data(catalog, "lib", "other.flac") == ({}, 0)
    assert report is not None
    assert report.moved == []
    assert catalog.departed_count() == 1  # kept for when "one" comes back
    encode(lib / "back.flac", 2.0, title="One")  # the same audio, encoded again
    scan(catalog, origin)
    assert user_data(catalog, "lib", "back.flac") == ({"title": "Mine"}, 4)
    assert catalog.departed_count() == 0


def test_a_copy_on_another_origin_shows_the_same_overrides(
    tmp_path: Path, catalog: Catalog, encode: Encode
) -> None:
    disk, nas = tmp_path / "disk", tmp_path / "nas"
    disk.mkdir()
    nas.mkdir()
    encode(disk / "one.flac", 2.0, title="One")
    scan(catalog, LocalOrigin("disk", disk))
    use(catalog, "disk", "one.flac", plays=2, title="Corrected")
    shutil.copy(disk / "one.flac", nas / "copied.flac")
    scan(catalog, LocalOrigin("nas", nas))
    assert user_data(catalog, "nas", "copied.flac") == ({"title": "Corrected"}, 0)
    assert user_data(catalog, "disk", "one.flac") == ({"title": "Corrected"}, 2)


def test_a_collection_copied_to_a_new_origin_keeps_its_plays_when_the_old_one_goes(
    tmp_path: Path, catalog: Catalog, encode: Encode
) -> None:
    """Add the new disk first (its copy shows the overrides at once), then drop
    the old origin from the config: the plays come along too."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    encode(old / "one.flac", 2.0, title="One")
    scan(catalog, LocalOrigin("old", old))
    use(catalog, "old", "one.flac", plays=5, artist="Fixed")
    shutil.copytree(old, new)
    scan(catalog, LocalOrigin("new", new))
    with catalog.transaction():  # as the mount does for an origin gone from the config
        catalog.depart_origin("old")
        catalog.forget_origin("old")
    assert user_data(catalog, "new", "one.flac") == ({"artist": "Fixed"}, 5)


def test_a_track_copied_to_another_origin_keeps_its_plays_when_the_original_is_deleted(
    tmp_path: Path, catalog: Catalog, encode: Encode
) -> None:
    disk, nas = tmp_path / "disk", tmp_path / "nas"
    disk.mkdir()
    nas.mkdir()
    encode(disk / "one.flac", 2.0, title="One")
    on_disk = LocalOrigin("disk", disk)
    scan(catalog, on_disk)
    use(catalog, "disk", "one.flac", plays=2, title="Corrected")
    shutil.copy(disk / "one.flac", nas / "copied.flac")
    scan(catalog, LocalOrigin("nas", nas))
    (disk / "one.flac").unlink()
    scan(catalog, on_disk)
    assert user_data(catalog, "nas", "copied.flac") == ({"title": "Corrected"}, 2)
    assert catalog.departed_count() == 0


def test_a_track_that_could_not_be_read_once_keeps_its_data_when_moved(
    tmp_path: Path, catalog: Catalog, encode: Encode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that fails once (a network hiccup while a changed file is parsed)
    must not cost the file its identity: moved later, its data still follows."""
    from musicfs.core.tags import reader

    lib, origin = one_track(tmp_path, encode)
    scan(catalog, origin)
    use(catalog, "lib", "one.flac", plays=2, title="Mine")
    real = reader.read_tags

    def failing(path: str, fileobj: object = None) -> object:
        raise reader.UnreadableFile("cannot read: [Errno 5] Input/output error")

    monkeypatch.setattr(reader, "read_tags", failing)
    audio = FLAC(lib / "one.flac")  # changed on the origin: parsed again, and that fails
    audio["comment"] = "touched"
    audio.save()
    scan(catalog, origin)
    monkeypatch.setattr(reader, "read_tags", real)
    (lib / "sub").mkdir()
    shutil.move(lib / "one.flac", lib / "sub" / "one.flac")
    scan(catalog, origin)
    assert user_data(catalog, "lib", "sub/one.flac") == ({"title": "Mine"}, 2)


def test_an_origin_removed_from_the_config_leaves_its_data_for_its_audio(
    tmp_path: Path, catalog: Catalog, encode: Encode
) -> None:
    """Moving a collection to a new disk: add the new origin, drop the old one."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    encode(old / "one.flac", 2.0, title="One")
    scan(catalog, LocalOrigin("old", old))
    use(catalog, "old", "one.flac", plays=5, artist="Fixed")
    with catalog.transaction():
        catalog.depart_origin("old")
        catalog.forget_origin("old")
    shutil.copytree(old, new)
    scan(catalog, LocalOrigin("new", new))
    assert user_data(catalog, "new", "one.flac") == ({"artist": "Fixed"}, 5)


def test_files_catalogued_before_identities_get_one_before_they_move(
    tmp_path: Path, catalog: Catalog, encode: Encode, catalog_sql: Callable[..., object]
) -> None:
    lib, origin = one_track(tmp_path, encode)
    scan(catalog, origin)
    use(catalog, "lib", "one.flac", plays=1, title="Old catalog")
    catalog_sql(catalog, "UPDATE files SET audio_id = NULL")  # as a catalog of schema 11
    scan(catalog, origin)  # an unchanged file: not parsed again, but fingerprinted
    shutil.move(lib / "one.flac", lib / "two.flac")
    scan(catalog, origin)
    assert user_data(catalog, "lib", "two.flac") == ({"title": "Old catalog"}, 1)


def test_departed_data_is_forgotten_after_a_year(
    tmp_path: Path, catalog: Catalog, encode: Encode
) -> None:
    lib, origin = one_track(tmp_path, encode)
    scan(catalog, origin)
    use(catalog, "lib", "one.flac", plays=1)
    (lib / "one.flac").unlink()
    scan(catalog, origin)
    with catalog.transaction():
        assert catalog.prune_departed(now=time.time() + 300 * 86400) == 0
        assert catalog.prune_departed(now=time.time() + 400 * 86400) == 1


def test_a_full_scan_forgets_departed_data_older_than_a_year(
    tmp_path: Path, catalog: Catalog, encode: Encode, catalog_sql: Callable[..., object]
) -> None:
    lib, origin = one_track(tmp_path, encode)
    scan(catalog, origin)
    use(catalog, "lib", "one.flac", plays=1)
    (lib / "one.flac").unlink()
    scan(catalog, origin)
    assert catalog.departed_count() == 1
    scan(catalog, origin)
    assert catalog.departed_count() == 1  # recent: kept for its audio's return
    catalog_sql(catalog, "UPDATE departed SET at = at - 400 * 86400")
    scan(catalog, origin)
    assert catalog.departed_count() == 0
