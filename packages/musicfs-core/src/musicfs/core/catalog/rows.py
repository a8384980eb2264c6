"""The values the catalog hands out (`Node`, `Track`, `Overlay`, `KnownFile`), the
helpers that make them, and `Part`, the base of the catalog's concerns.

Every concern of `musicfs.core.catalog.store.Catalog` (tree, tracks, overrides,
plays, stats, settings, the search index) is a `Part`: a mixin running its queries on
the one connection the `Catalog` opened, inside that connection's transactions.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import NamedTuple

from musicfs.core.model import FileStat, ScannedFile, TrackTags, valid_text


class Part:
    """A concern of the catalog: its queries, on the catalog's connection.

    Only `musicfs.core.catalog` runs SQL on the catalog database; the rest of
    MusicFS calls the named methods of the parts (tests/catalog/test_no_sql.py).
    """

    _conn: sqlite3.Connection


class Node(NamedTuple):
    """One entry of the virtual tree. ``file_id`` is None for a directory.

    A named tuple rather than a dataclass: readdir builds one per entry, and
    a directory may have 100,000 of them.
    """

    id: int
    parent: int
    name: str
    file_id: int | None
    size: int
    mtime_ns: int

    @property
    def is_dir(self) -> bool:
        return self.file_id is None


@dataclass(frozen=True, slots=True)
class Track:
    """A catalogued audio file: where it lives and what its tags say."""

    id: int
    origin: str
    relpath: str
    size: int
    mtime_ns: int
    format: str
    tags: TrackTags
    error: str | None
    content_hash: str | None = None  # of the whole file, once verified or cached
    ctime_ns: int = 0  # 0: not known (the origin has none)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Track:
        return cls(
            id=row["id"],
            origin=row["origin"],
            relpath=join_relpath(row["reldir"], row["name"]),
            size=row["size"],
            mtime_ns=row["mtime_ns"],
            format=row["format"],
            tags=TrackTags.from_row(row),
            error=row["error"],
            content_hash=row["content_hash"],
            ctime_ns=row["ctime_ns"],
        )


class Overlay(NamedTuple):
    """A synthesized header to serve in place of the file's first *header_length*
    bytes; *header* None: the format cannot be overlaid, serve the file as is."""

    header_length: int
    header: bytes | None

    def size(self, file_size: int) -> int:
        """Bytes served for a file of *file_size* bytes."""
        if self.header is None:
            return file_size
        return file_size - self.header_length + len(self.header)


@dataclass(frozen=True, slots=True)
class KnownFile:
    """What the catalog remembers of a file, to tell whether it changed."""

    id: int
    size: int
    mtime_ns: int
    ctime_ns: int

    def changed(self, st: FileStat) -> bool:
        """Whether *st* describes another version than the one catalogued."""
        if self.size != st.size or self.mtime_ns != st.mtime_ns:
            return True
        return bool(self.ctime_ns and st.ctime_ns and self.ctime_ns != st.ctime_ns)


def replica_key(scanned: ScannedFile) -> str | None:
    """What makes two files one track on two origins: the same format, size,
    duration and identifying tags (FR-13). None for a file whose tags could not
    be read, or that has no title: such files are never merged."""
    tags = scanned.tags
    if scanned.error is not None or not tags.title:
        return None
    duration = f"{tags.duration:.1f}" if tags.duration is not None else ""
    fields = (scanned.format, str(scanned.stat.size), duration, tags.artist, tags.album,
              tags.title, tags.track, tags.disc)  # fmt: skip
    return valid_text("\x1f".join("" if f is None else str(f).casefold() for f in fields))


def split_relpath(relpath: str) -> tuple[str, str]:
    reldir, _, name = relpath.rpartition("/")
    return reldir, name


def join_relpath(reldir: str, name: str) -> str:
    return f"{reldir}/{name}" if reldir else name
