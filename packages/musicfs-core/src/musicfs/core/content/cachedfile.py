"""A cached file version read back: header from the manifest, payload from
verified chunks (`CachedFile`).

Reads are quick enough for the FUSE thread: one ``pread`` per run of
neighbouring chunks, the kernel asked to read ahead where the chunks jump.
A damaged chunk raises `CorruptChunk` and is reported once (*on_damaged*), so
the content cache drops the copy.

Boundaries: reads through the chunk store (`ChunkStore`, `ChunkReader`); knows
nothing of manifests' storage, origins or FUSE.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable

from musicfs.core.content.cas import ChunkStore
from musicfs.core.content.chunks import ChunkReader, CorruptChunk, Place, follows

READ_AHEAD = 4 * 1024 * 1024  # payload the kernel reads ahead of a sequential reader


class CachedFile:
    """A cached file version, read back from its header and verified chunks.

    A request reads the chunks it needs straight from the store's pack files:
    chunks that lie back to back in one pack with one ``pread``, served as a
    view of it; where they do not, a ``pread`` a run, the last chunk of a
    request kept for the next. A sequential reader has the kernel fetch the
    next `READ_AHEAD` bytes while it is served (its own read-ahead where the
    chunks lie in order, ``WILLNEED`` where they jump). Reads are quick enough
    for the FUSE thread.
    """

    def __init__(
        self,
        store: ChunkStore,
        header: bytes,
        chunks: list[tuple[int, int, str]],
        places: dict[str, Place],
        on_damaged: Callable[[], object] | None = None,
    ) -> None:
        """*on_damaged* is called (once) when a read meets a damaged chunk."""
        self.store = store
        self._on_damaged = on_damaged
        self.header = header
        self.chunks = chunks  # (payload offset, length, hash), in order
        self._starts = [offset for offset, _, _ in chunks]
        self._places = [places[digest] for _, _, digest in chunks]
        self.size = len(header) + sum(length for _, length, _ in chunks)
        self._reader = ChunkReader(store)
        self._lock = threading.Lock()
        self._kept: tuple[int, memoryview] | None = None  # (chunk index, its bytes)
        self._next = 0  # where a sequential reader reads next (payload offset)
        self._ahead = 0  # payload offset up to which the kernel was asked to read ahead
        self._failed: str | None = None  # what the first damaged chunk said
        # An open file's chunks are never evicted under it: they come pinned
        # (`ContentCache.open`), and `close` unpins them.
        self._closed = False

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._reader.close()
                self._kept = None
                self.store.unpin(digest for _, _, digest in self.chunks)

    def read(self, offset: int, size: int) -> bytes | memoryview:
        """Bytes [offset, offset + size) of the file. Raises `CorruptChunk`.

        A view of what one ``pread`` returned where the request lies in one
        run of chunks (pyfuse3 replies from any buffer: no copy to join them).
        """
        end = min(offset + size, self.size)
        pieces: list[bytes | memoryview] = []
        if offset < len(self.header):
            pieces.append(self.header[offset:end])
            offset = len(self.header)
        position, stop = offset - len(self.header), end - len(self.header)
        if position < stop:
            first = bisect.bisect_right(self._starts, position) - 1
            last = bisect.bisect_right(self._starts, stop - 1) - 1
            with self._lock:
                if self._failed is not None:  # the same answer again, reported once
                    raise CorruptChunk(self._failed)
                if self._closed:
                    raise CorruptChunk("the cached file was closed")
                try:
                    segments = self._segments(first, last)
                except CorruptChunk as exc:
                    self._failed = str(exc)
                    damaged = True
                else:
                    damaged = False
                    if position in (0, self._next):
                        self._read_ahead(stop)
                    self._next = stop
            if damaged:  # outside the lock: the copy is dropped (a write)
                if self._on_damaged is not None:
                    self._on_damaged()
                raise CorruptChunk(self._failed)
            for start, data in segments:
                pieces.append(data[max(position, start) - start : stop - start])
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _segments(self, first: int, last: int) -> list[tuple[int, memoryview]]:
        """The verified bytes of chunks *first* to *last*, as (payload offset,
        bytes) pieces in order: one piece where they lie back to back in one
        pack (re-reading the chunk the last request ended in costs less than
        joining), else a piece a chunk, the last request's last chunk kept."""
        kept = self._kept
        if kept is not None and kept[0] == first == last:
            return [(self._starts[first], kept[1])]
        wanted = [(self.chunks[i][2], self._places[i]) for i in range(first, last + 1)]
        whole = self._reader.read_run(wanted)
        if whole is not None:
            self._kept = (last, whole[self._starts[last] - self._starts[first] :])
            return [(self._starts[first], whole)]
        datas: list[memoryview] = []
        if kept is not None and kept[0] == first:
            datas, wanted = [kept[1]], wanted[1:]
        datas += self._reader.read(wanted)
        self._kept = (last, datas[-1])
        return list(zip(self._starts[first : last + 1], datas, strict=True))

    def _read_ahead(self, stop: int) -> None:
        """Have the kernel read the next `READ_AHEAD` payload bytes after *stop*,
        asked for half a window at a time, where the chunks jump: a run that
        goes straight on from the chunk before it in the same pack is read by
        the kernel's own read-ahead of our sequential ``pread``s, which a
        ``WILLNEED`` over the same pages would stop (it fills them without the
        marks that start the next asynchronous read: a cold cached read fell
        to 0.67x the floor)."""
        if self._ahead >= stop + READ_AHEAD // 2:
            return
        places = self._places
        index = bisect.bisect_right(self._starts, max(stop, self._ahead)) - 1
        until = stop + READ_AHEAD
        while index < len(self.chunks) and self._starts[index] < until:
            run = places[index]
            jumps = index == 0 or not follows(places[index - 1], run)
            length = run.size
            index += 1
            while (index < len(self.chunks) and self._starts[index] < until
                   and follows(places[index - 1], places[index])):  # fmt: skip
                length += places[index].size
                index += 1
            if jumps:
                self._reader.advise(run, length)
        self._ahead = until
