"""What the content cache says of a cached copy: the vocabulary of its manifests.

A cached file version (`Version`, named by `CopyId`) is a manifest row of the
content cache: its header, its chunk list ("offset:length:hash,..." in payload
order) and a digest of all of it (`row_digest`), checked before the row is
trusted. `CacheCheck` is what a check of the cache found.

Boundaries: plain values and pure functions; the rows themselves are kept by
`musicfs.core.content.cache.ContentCache`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import xxhash


@dataclass(frozen=True, slots=True)
class Version:
    """One version of one origin file: what a manifest describes."""

    origin: str
    relpath: str
    size: int
    mtime_ns: int
    format: str


class CopyId(NamedTuple):
    """Which cached copy: the file (origin, path) and the version it was of."""

    origin: str
    relpath: str
    size: int
    mtime_ns: int


@dataclass
class CacheCheck:
    """What `ContentCache.check` got through and found."""

    chunks: int = 0  # chunks to check
    checked: int = 0
    bytes: int = 0  # of the chunks checked
    damaged_chunks: list[str] = field(default_factory=list)  # hashes, dropped
    damaged: list[CopyId] = field(default_factory=list)  # copies that needed one, dropped
    incomplete: int = 0  # other copies dropped: chunks of theirs were evicted or lost
    stopped: bool = False


def row_digest(copy: CopyId, header: bytes, listing: str) -> str:
    """The xxh3-128 of everything a manifest row says, as chunks are hashed."""
    digest = xxhash.xxh3_128()
    for part in (copy.origin, copy.relpath, str(copy.size), str(copy.mtime_ns), listing):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    digest.update(header)
    return digest.hexdigest()


def parse_listing(listing: str) -> list[tuple[int, int, str]]:
    """A manifest's chunk list ("offset:length:hash,...") as tuples."""
    chunks = []
    for item in filter(None, listing.split(",")):
        offset, length, digest = item.split(":")
        chunks.append((int(offset), int(length), digest))
    return chunks


def digests_of(listing: str) -> list[str]:
    """The chunk hashes of a manifest's chunk list, in order."""
    return [item.rpartition(":")[2] for item in filter(None, listing.split(","))]
