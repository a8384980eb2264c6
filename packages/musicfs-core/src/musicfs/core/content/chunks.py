"""What a chunk of the chunk store (L3) is, and how its bytes are read back.

A chunk is a FastCDC piece of a file's payload (min 16 KiB, average 64 KiB,
max 256 KiB), named by the xxh3-128 of its bytes (`chunk_hash`, `cut`); a
`Place` says where its bytes lie (a pack file and an offset, or an older
store's chunk file). `ChunkReader` reads chunks back for one reader and has
every chunk checked against its name: a damaged one raises `CorruptChunk`.

Boundaries: this module decides nothing about storing, eviction or the index;
the store (`musicfs.core.content.cas.ChunkStore`) does, behind the small
`ChunkSource` interface the reader uses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import xxhash
from pyfastcdc import FastCDC

from musicfs.core.errors import MusicFSError

CHUNK_MIN = 16 * 1024
CHUNK_AVG = 64 * 1024
CHUNK_MAX = 256 * 1024

_CDC = FastCDC(avg_size=CHUNK_AVG, min_size=CHUNK_MIN, max_size=CHUNK_MAX)


def chunk_hash(data: bytes | memoryview) -> str:
    """The name of a chunk: xxh3-128 of its bytes, in hex."""
    return xxhash.xxh3_128_hexdigest(data)


def cut(data: bytes | memoryview) -> list[tuple[int, int]]:
    """FastCDC boundaries of *data* as (offset, length) pairs, in order."""
    if not data:
        return []
    return [(c.offset, c.length) for c in _CDC.cut_buf(data)]


class CorruptChunk(MusicFSError):
    """A chunk's bytes no longer match its hash (or are gone). It has been dropped."""


class Place(NamedTuple):
    """Where a chunk's bytes are: *size* bytes at *offset* of pack *pack*
    (pack None: a chunk file of an older store, named by its hash). A tuple:
    opening a cached file makes one a chunk, and a frozen dataclass costs
    five times as much to make."""

    pack: int | None
    offset: int
    size: int


class ChunkSource(Protocol):
    """What `ChunkReader` needs of the store."""

    def path_of(self, pack: int | None, digest: str = "") -> str:
        """The file holding a chunk: pack *pack*, or (None) the old chunk file *digest*."""
        ...

    def checked(self, digest: str, data: bytes | memoryview, place: Place | None = None) -> None:
        """Count a read of *digest*; raise `CorruptChunk` if *data* is not it."""
        ...


class ChunkReader:
    """Reads chunks back for one reader (an open file), verifying each.

    Holds its own descriptor for each pack it reads, so the kernel sees one
    sequential reader per file and reads ahead for it; neighbouring chunks of
    one pack are fetched with one ``pread``. Close it (or use ``with``).
    """

    def __init__(self, store: ChunkSource) -> None:
        self.store = store
        self._fds: dict[int, int] = {}

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def read(self, wanted: Sequence[tuple[str, Place]]) -> list[memoryview]:
        """The verified bytes of each (digest, place) in *wanted*, in order.

        Raises `CorruptChunk` for the first one that is damaged or gone (it has
        been dropped from the store).
        """
        out: list[memoryview] = []
        i = 0
        while i < len(wanted):
            j = _run_end(wanted, i)
            data = self._verified_run(wanted[i:j])
            at = 0
            for _, chunk in wanted[i:j]:
                out.append(data[at : at + chunk.size])
                at += chunk.size
            i = j
        return out

    def read_run(self, wanted: Sequence[tuple[str, Place]]) -> memoryview | None:
        """The verified bytes of *wanted* as one buffer, read with one ``pread``,
        if they lie back to back in one pack; else None (nothing was read).
        Raises `CorruptChunk` as `read` does."""
        if not wanted or _run_end(wanted, 0) != len(wanted):
            return None
        return self._verified_run(wanted)

    def _verified_run(self, run: Sequence[tuple[str, Place]]) -> memoryview:
        """The bytes of *run* (one chunk, or chunks back to back in one pack),
        each chunk checked against its digest."""
        first, last = run[0][1], run[-1][1]
        span = Place(first.pack, first.offset, last.offset + last.size - first.offset)
        data = memoryview(self.raw(run[0][0], span))
        at = 0
        for digest, chunk in run:
            self.store.checked(digest, data[at : at + chunk.size], chunk)
            at += chunk.size
        return data

    def raw(self, digest: str, place: Place) -> bytes:
        """The stored bytes at *place*, unverified (b"" if its file is gone)."""
        try:
            if place.pack is None:
                with open(self.store.path_of(None, digest), "rb", buffering=0) as fh:
                    return fh.read()
            fd = self._fds.get(place.pack)
            if fd is None:
                fd = self._fds[place.pack] = os.open(self.store.path_of(place.pack), os.O_RDONLY)
            return os.pread(fd, place.size, place.offset)
        except FileNotFoundError:
            return b""

    def advise(self, place: Place, size: int) -> None:
        """Ask the kernel to start reading *size* bytes from *place* into memory."""
        fd = self._fds.get(place.pack) if place.pack is not None else None
        if fd is not None:
            os.posix_fadvise(fd, place.offset, size, os.POSIX_FADV_WILLNEED)


def follows(before: Place, place: Place) -> bool:
    """Whether *place* starts where *before* ends, in the same pack."""
    return (
        place.pack is not None
        and place.pack == before.pack
        and place.offset == before.offset + before.size
    )


def _run_end(wanted: Sequence[tuple[str, Place]], i: int) -> int:
    """The index after the run that starts at *wanted[i]*: the chunks that
    follow it back to back in its pack."""
    j = i + 1
    while j < len(wanted) and follows(wanted[j - 1][1], wanted[j][1]):
        j += 1
    return j
