"""Backup and restore of a catalog and content cache (FR-25.4)."""

from __future__ import annotations

import random
import tarfile
from pathlib import Path

import pytest

from musicfs.core.catalog.store import Catalog
from musicfs.core.config.paths import CacheDirLock, CacheDirLocked
from musicfs.core.content.backup import BackupError, backup_cache, restore_cache
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.manifests import Version
from musicfs.core.origins import LocalFile


def make_cache(cache_dir: Path, audio: Path) -> Version:
    with Catalog.open(cache_dir / "catalog.sqlite3") as catalog:
        catalog.set_setting("template", "$title.$format")
    audio.write_bytes(random.Random(1).randbytes(300_000))
    st = audio.stat()
    version = Version("lib", audio.name, st.st_size, st.st_mtime_ns, "wav")
    content = ContentCache(cache_dir / "content")
    try:
        with LocalFile.at(audio) as file:
            assert content.fill(version, file)
    finally:
        content.close()
    return version


def test_round_trip(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    version = make_cache(cache, tmp_path / "a.wav")
    counts = backup_cache(cache, tmp_path / "backup.tar")
    assert counts["databases"] == 3
    assert counts["chunks"] >= 2
    # the cache is lost (or damaged) ...
    for path in (cache / "content" / "chunks" / "packs").rglob("*"):
        if path.is_file():
            path.write_bytes(b"damage")
    (cache / "catalog.sqlite3").write_bytes(b"not a database any more")
    # ... and comes back from the backup
    restore_cache(tmp_path / "backup.tar", cache)
    with Catalog.open(cache / "catalog.sqlite3") as catalog:
        assert catalog.get_setting("template") == "$title.$format"
    content = ContentCache(cache / "content")
    cached = content.open(version)
    assert cached is not None
    assert cached.read(0, 400_000) == (tmp_path / "a.wav").read_bytes()
    assert content.verify() == ([], 0)
    content.close()


def test_a_chunk_evicted_while_the_backup_was_taken_is_dropped_at_restore(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    version = make_cache(cache, tmp_path / "a.wav")
    content = ContentCache(cache / "content")
    opened = content.open(version)
    assert opened is not None
    place = content.store.place(opened.chunks[1][2])
    assert place is not None
    opened.close()
    content.close()
    # The index snapshot still lists the chunk; its bytes were a punched hole.
    with open(content.store.path_of(place.pack), "r+b") as fh:
        fh.seek(place.offset)
        fh.write(bytes(place.size))
    backup_cache(cache, tmp_path / "backup.tar")
    counts = restore_cache(tmp_path / "backup.tar", tmp_path / "restored")
    assert counts["cached_files_dropped"] == 1
    restored = ContentCache(tmp_path / "restored" / "content")
    assert restored.open(version) is None  # copied again from the origin when next read
    restored.close()


def test_restore_refuses_a_cache_in_use(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    make_cache(cache, tmp_path / "a.wav")
    backup_cache(cache, tmp_path / "backup.tar")
    lock = CacheDirLock(cache)
    lock.acquire()
    try:
        with pytest.raises(CacheDirLocked):
            restore_cache(tmp_path / "backup.tar", cache)
    finally:
        lock.release()


def test_a_bad_backup_leaves_the_cache_alone(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    make_cache(cache, tmp_path / "a.wav")
    before = sorted(p.name for p in cache.rglob("*") if p.name != "lock")
    junk = tmp_path / "junk.tar"
    with tarfile.open(junk, "w") as tar:
        tar.add(tmp_path / "a.wav", arcname="something.wav")
    with pytest.raises(BackupError, match="not a MusicFS backup"):
        restore_cache(junk, cache)
    (tmp_path / "garbage.tar").write_bytes(b"\x00" * 100)
    with pytest.raises(BackupError):
        restore_cache(tmp_path / "garbage.tar", cache)
    assert sorted(p.name for p in cache.rglob("*") if p.name != "lock") == before
