"""What the FUSE skin answers lookup and getattr with: the namespace's attributes.

The skin fills one answer object for every lookup and getattr of a catalog
node, setting only the fields that differ from the answer before (pyfuse3
copies it before the next request). Whatever the order of requests, each
answer must be exactly what the namespace says of that entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyfuse3

from musicfs.core.catalog.layout import Layout
from musicfs.core.catalog.store import ROOT_NODE, Catalog
from musicfs.core.catalog.templates import PathTemplate
from musicfs.core.content.library import Library
from musicfs.core.fuse.fs import MusicFSOperations
from musicfs.core.model import FileStat, ScannedFile, TrackTags
from musicfs.core.namespace.entries import Attributes
from musicfs.core.namespace.inodes import SEARCH_DIR

CTX: Any = None  # no handler here reads the request context


def run(coroutine: Any) -> Any:
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the request waited")


def fields(attr: pyfuse3.EntryAttributes) -> Attributes:
    assert attr.st_atime_ns == attr.st_mtime_ns == attr.st_ctime_ns
    return Attributes(attr.st_ino, attr.st_mode, attr.st_nlink, attr.st_size, attr.st_blocks,
                      attr.st_mtime_ns, attr.entry_timeout, attr.attr_timeout)  # fmt: skip


def test_every_answer_is_the_namespace_s_whatever_came_before(tmp_path: Path) -> None:
    catalog = Catalog.open(tmp_path / "catalog.sqlite3")
    layout = Layout(catalog, PathTemplate.parse("$albumartist/$album/$title.$format"))
    # Tracks of different sizes and mtimes (one mtime shared), in two albums.
    for i, (size, mtime) in enumerate([(1000, 5 * 10**18), (7, 5 * 10**18), (0, 6 * 10**18)]):
        tags = TrackTags(title=f"t{i}", albumartist="A", album=f"B{i % 2}")
        scanned = ScannedFile("lib", f"f{i}.flac", FileStat(size, mtime), "flac", tags)
        file_id = catalog.upsert_file(scanned)
        layout.place(file_id, f"f{i}.flac", "flac", tags)
    ops = MusicFSOperations(Library(catalog, {}), entry_timeout=30.0, attr_timeout=20.0)
    namespace = ops.namespace
    try:
        paths = ["A", "A/B0", "A/B0/t0.flac", "A/B0/t2.flac", "A/B1", "A/B1/t1.flac"]
        inodes: dict[str, int] = {}
        for path in paths:  # lookups in the order of a walk
            parent, _, name = path.rpartition("/")
            answer = run(ops.lookup(inodes.get(parent, ROOT_NODE), name.encode(), CTX))
            inodes[path] = answer.st_ino
            assert fields(answer) == namespace.stat(answer.st_ino), path
        # getattr and lookup interleaved, kinds and mtimes alternating, a virtual
        # folder (answered with an object of its own) in between.
        for path in [*paths[::-1], ".search", *paths]:
            if path == ".search":
                answer = run(ops.lookup(ROOT_NODE, b".search", CTX))
                assert answer.st_ino == SEARCH_DIR
                assert fields(answer) == namespace.attributes(namespace.resolve(SEARCH_DIR))
                continue
            answer = run(ops.getattr(inodes[path], CTX))
            assert fields(answer) == namespace.stat(inodes[path]), path
            parent, _, name = path.rpartition("/")
            answer = run(ops.lookup(inodes.get(parent, ROOT_NODE), name.encode(), CTX))
            assert fields(answer) == namespace.stat(inodes[path]), path
        assert ops.op_counts["lookup"] == 19
        assert ops.op_counts["getattr"] == 12
        assert ops.latency.snapshot()["lookup"].count == 19
    finally:
        catalog.close()
