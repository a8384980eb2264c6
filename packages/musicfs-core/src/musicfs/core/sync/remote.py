"""Reading a remote file's tags with as few requests as possible.

Job: what a scan (`musicfs.core.sync.scanner`) and the identity backfill do
with one file of an origin read over the network (S3, SFTP, SMB): read its
head, and its tail and middle sample where the identity is wanted, in one
`read_ranges`; parse the tags from those bytes (`read_remote`); or, for a
scan, return just the bytes of a head to be parsed by the scanning thread
(`read_head`, `parse_head`). What it cost is counted (`Traffic`). Scheduling
files onto threads and writing the catalog are the scanner's.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from musicfs.core.catalog.store import Catalog
from musicfs.core.extensions import TagParser
from musicfs.core.model import FileStat, TrackTags, format_of
from musicfs.core.origins.base import Origin, OriginFile, SeekableReader
from musicfs.core.origins.federation import Federation
from musicfs.core.sync.parsing import Parsed

log = logging.getLogger(__name__)

# A remote file's tags are read with one request of its head, where FLAC
# metadata, ID3v2, Ogg headers and an MP4 moov that comes first live (on S3 one
# ranged GET, no HeadObject: the listing gave the size). A second request only
# where that was not enough: tags at the tail (an MP3 without ID3v2: ID3v1,
# APEv2), longer than the head (a large cover), an MP4 moov at the end. Its
# audio identity (two more ranges: the middle and end samples) is not read by
# the scan: only files with user data need one, and `backfill_identities`
# reads theirs (at each scan's start, and every `IDENTITY_ROUND` seconds while
# mounted). A local scan reads it for every file: it costs nothing there.
_REMOTE_HEAD = 64 * 1024
# The longest header (tags before the audio) the guess of the middle sample
# allows for: tags without pictures take a few KiB; a longer header costs one
# more read of that sample, a wider guess would cost bytes on every file.
_REMOTE_HEADER_GUESS = 16 * 1024
_REMOTE_MISS = 64 * 1024  # the least a read past the prefetched ranges asks for


@dataclass
class Traffic:
    """What reading remote files cost: files, requests to the origin (opens that
    are one, and each ranged read), round trips (requests asked for at once
    count once), bytes read."""

    files: int = 0
    requests: int = 0
    round_trips: int = 0
    bytes: int = 0

    def add(self, other: Traffic) -> None:
        self.files += other.files
        self.requests += other.requests
        self.round_trips += other.round_trips
        self.bytes += other.bytes


class Prefetched:
    """One remote file through the ranges read of it so far: a read inside them
    costs nothing, one outside asks the origin for at least `_REMOTE_MISS`
    bytes (kept). Counts requests and bytes (`traffic`)."""

    def __init__(self, opened: OriginFile) -> None:
        self.opened = opened
        self.size = opened.size
        self._parts: list[tuple[int, bytes]] = []
        self.traffic = Traffic(1, opened.open_requests, opened.open_requests)

    def prefetch(self, ranges: Sequence[tuple[int, int]]) -> None:
        if not ranges:
            return
        for (offset, _), data in zip(ranges, self.opened.read_ranges(ranges), strict=True):
            self._keep(offset, data)
        self.traffic.requests += len(ranges)
        self.traffic.round_trips += 1 if self.opened.ranges_at_once else len(ranges)

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        for start, data in self._parts:
            if start <= offset and end <= start + len(data):
                return data[offset - start : end - start]
        data = self.opened.read(offset, max(length, _REMOTE_MISS))
        self.traffic.requests += 1
        self.traffic.round_trips += 1
        self._keep(offset, data)
        return data[:length]

    def _keep(self, offset: int, data: bytes) -> None:
        self.traffic.bytes += len(data)
        self._parts.append((offset, data))


class PrefetchedReader(SeekableReader):
    """A `Prefetched` file as a seekable binary file, for mutagen and plugins."""

    def __init__(self, file: Prefetched) -> None:
        super().__init__(file.size)
        self._file = file

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._file.read(self._position, len(buffer))
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def _remote_ranges(size: int) -> list[tuple[int, int]]:
    """What to read of a remote file of *size* bytes first: its head, its tail
    and where the identity's middle sample will be. That sample sits halfway
    through the audio payload, whose start (the header's length) and end
    (before trailing tags) are not known yet: the range covers every place it
    can be in for a header of up to `_REMOTE_HEADER_GUESS` bytes and trailing
    tags that fit the tail. Overlapping ranges are merged."""
    from musicfs.core.tags.identity import SAMPLE, TAIL

    head = (0, min(size, _REMOTE_HEAD))
    tail_start = max(0, size - TAIL)
    middle_from = max(0, (size - TAIL - SAMPLE) // 2)
    middle_to = min(size, (_REMOTE_HEADER_GUESS + size - SAMPLE) // 2 + SAMPLE)
    wanted = sorted([head, (middle_from, middle_to - middle_from), (tail_start, size - tail_start)])
    merged: list[tuple[int, int]] = []
    for offset, length in wanted:
        if length <= 0:
            continue
        if merged and offset <= merged[-1][0] + merged[-1][1]:
            start, previous = merged[-1]
            merged[-1] = (start, max(previous, offset + length - start))
        else:
            merged.append((offset, length))
    return merged


def read_remote(
    opened: OriginFile, relpath: str, parser: TagParser | None = None, *, identity: bool = True
) -> tuple[Parsed, Traffic]:
    """Read the tags and identity of an open remote file with one `read_ranges`
    (see `_remote_ranges`), and more only where tags lie beyond; never raises.
    Without *identity*, only the head is read first (one request), and the
    audio identity is left out (None). Returns what it cost too."""
    file = Prefetched(opened)
    try:
        if identity:
            file.prefetch(_remote_ranges(opened.size))
        else:
            file.prefetch([(0, min(opened.size, _REMOTE_HEAD))])
    except OSError as exc:
        return Parsed(TrackTags(), f"cannot read: {exc}"), file.traffic
    return _parse_prefetched(file, relpath, parser, identity=identity), file.traffic


def _parse_prefetched(
    file: Prefetched, relpath: str, parser: TagParser | None, *, identity: bool
) -> Parsed:
    """`read_remote`'s parsing, of a file whose first ranges are read."""
    from musicfs.core.tags.identity import audio_identity
    from musicfs.core.tags.reader import UnreadableFile, read_tags

    try:
        reader = PrefetchedReader(file)
        if parser is None:
            # Without the identity, the head is all a file with ID3v2 needs
            # (its ID3v1 copy at the end is not fetched: `read_tags`).
            id3v1 = identity or file.read(0, 3) != b"ID3"
            tags = read_tags(relpath, reader, id3v1=id3v1)  # type: ignore[arg-type]
        else:
            try:
                tags = parser.parse(reader)  # type: ignore[arg-type]
            except OSError:
                raise
            except Exception as exc:  # plugin code: whatever it raises, the file is unreadable
                return Parsed(TrackTags(), f"plugin {parser.name}: {exc}")
        if not identity:
            return Parsed(tags)
        audio_id = audio_identity(file.read, file.size, format_of(relpath))
        return Parsed(tags, None, audio_id)
    except UnreadableFile as exc:
        return Parsed(TrackTags(), str(exc))
    except OSError as exc:
        return Parsed(TrackTags(), f"cannot read: {exc}")


class Head(NamedTuple):
    """The first bytes of a remote file of *size* bytes, through the end of its
    tags and the first audio frames mutagen reads for the stream info."""

    size: int
    data: bytes


class _HeadReader(SeekableReader):
    """A `Head` as the seekable file mutagen reads; a read past the head's
    bytes sets `missed` and fails (mutagen wanted more: read the file again)."""

    def __init__(self, head: Head) -> None:
        super().__init__(head.size)
        self._head = head
        self.missed = False

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._head.data
        end = min(self._position + len(buffer), self._head.size)
        if self._position >= end:
            return 0
        if end > len(data):
            self.missed = True
            raise OSError(f"a read past the {len(data)} bytes of the head")
        buffer[: end - self._position] = data[self._position : end]
        read = end - self._position
        self._position = end
        return read


def parse_head(relpath: str, head: Head) -> Parsed | None:
    """The tags of remote file *relpath* from its *head* (no audio identity),
    as `read_remote` reads them without one; None if
    mutagen looked past the head (the caller reads the file again)."""
    from musicfs.core.tags.reader import UnreadableFile, read_tags

    reader = _HeadReader(head)
    try:
        # An ID3v2 tag holds all an MP3's tags (its ID3v1 copy is not read).
        tags = read_tags(relpath, reader, id3v1=head.data[:3] != b"ID3")  # type: ignore[arg-type]
    except UnreadableFile as exc:
        return None if reader.missed else Parsed(TrackTags(), str(exc))
    return None if reader.missed else Parsed(tags)


def read_head(opened: OriginFile, relpath: str) -> tuple[Parsed | Head, Traffic]:
    """What a scan's reading thread does with an open remote file (no plugin,
    no identity): read its head (one request) and, where the head shows where
    the tags end (FLAC metadata blocks, an MP3's ID3v2 tag: `header_length`)
    and holds them and what mutagen reads after them, return those bytes as a
    `Head` for the scan thread to parse (`parse_head`). Any other file is
    parsed here, as `read_remote` does, through the open file (a second
    request where its tags lie past the head). Never raises.

    Why: parsing in the 32 reading threads costs about twice the CPU of
    parsing in one (they contend for the GIL), and a scan on a LAN is
    CPU-bound. A `Head` holds only the bytes parsing reads, at most
    `_HEAD_KEPT`, while it waits for the scan thread."""
    file = Prefetched(opened)
    try:
        file.prefetch([(0, min(opened.size, _REMOTE_HEAD))])
        head = file.read(0, min(opened.size, _REMOTE_HEAD))  # more only if it came short
    except OSError as exc:
        return Parsed(TrackTags(), f"cannot read: {exc}"), file.traffic
    kept = _kept_head(relpath, opened.size, head)
    if kept is not None:
        return kept, file.traffic
    return _parse_prefetched(file, relpath, None, identity=False), file.traffic


def _kept_head(relpath: str, size: int, head: bytes) -> Head | None:
    """The bytes of *head* (the first bytes of remote file *relpath* of *size*
    bytes) that parsing its tags reads, if the head shows where its tags end
    and holds them (see `read_head`); else None."""
    from musicfs.core.tags.headers import header_length

    fmt = format_of(relpath)
    after = _AFTER_TAGS.get(fmt)
    if after is None:
        return None
    length = header_length(lambda offset, size: head[offset : offset + size], fmt)
    end = min(size, length + after)
    if length and end <= min(len(head), _HEAD_KEPT):
        return Head(size, head[:end])
    return None


# Formats whose head shows where their tags end (`read_head`), with the bytes
# past that end mutagen reads: none for FLAC (its metadata blocks are all it
# reads), the first MPEG frames and a Xing header for an MP3 (at most ~3 KiB in
# the corpus). A read past them sends the file back to be read again.
_AFTER_TAGS = {"flac": 1024, "mp3": 8 * 1024}
# The most a `Head` keeps: 544 heads (17 batches of 32) wait at most, so a
# scan holds at most 17 MiB of them (typically 5-10 KiB each: ~5 MiB). A file
# with longer tags (a cover) is parsed in its reading thread.
_HEAD_KEPT = 32 * 1024


def over_network(origin: Origin) -> bool:
    """Whether *origin*'s files are read over the network, not through a path."""
    return origin.local_path("") is None


def parse_remote(
    open_file: Callable[[str], OriginFile], relpath: str, parser: TagParser | None = None
) -> Parsed:
    """Read the tags and identity of a file through ranged reads (only the parts
    of the file mutagen, or the plugin *parser*, looks at are fetched, and the
    identity's samples); never raises."""
    try:
        with open_file(relpath) as opened:
            return read_remote(opened, relpath, parser)[0]
    except OSError as exc:
        return Parsed(TrackTags(), f"cannot read: {exc}")


def scan_remote(
    open_listed: Callable[[str, FileStat], OriginFile],
    relpath: str,
    stat: FileStat,
    parser: TagParser | None = None,
    identity: bool = True,
) -> tuple[Parsed, Traffic]:
    """`read_remote` of a file opened as its listing described it (*stat*); never raises."""
    try:
        with open_listed(relpath, stat) as opened:
            return read_remote(opened, relpath, parser, identity=identity)
    except OSError as exc:
        return Parsed(TrackTags(), f"cannot read: {exc}"), Traffic(1)


def scan_head(
    open_listed: Callable[[str, FileStat], OriginFile], relpath: str, stat: FileStat
) -> tuple[Parsed | Head, Traffic]:
    """`read_head` of a file opened as its listing described it; never raises."""
    try:
        with open_listed(relpath, stat) as opened:
            return read_head(opened, relpath)
    except OSError as exc:
        return Parsed(TrackTags(), f"cannot read: {exc}"), Traffic(1)


def scan_heads(
    read_heads: Callable[[Sequence[tuple[str, FileStat]], int], list[bytes | OSError]],
    files: Sequence[tuple[str, FileStat]],
) -> list[tuple[Parsed | Head | None, Traffic]]:
    """`scan_head` of several files of an origin that reads their heads at once
    (`Origin.read_heads`, through *read_heads*): per file, a `Head` for the scan
    thread to parse, its tags parsed here from the head (a format whose head
    does not show where its tags end: Ogg, MP4), or None where mutagen read past
    the head (the caller reads that file again: `scan_remote`). Never raises:
    an origin that fails gives every file its error."""
    try:
        heads = read_heads(files, _REMOTE_HEAD)
    except OSError as exc:
        heads = [exc] * len(files)
    out: list[tuple[Parsed | Head | None, Traffic]] = []
    for (relpath, stat), head in zip(files, heads, strict=True):
        if isinstance(head, OSError):
            out.append((Parsed(TrackTags(), f"cannot read: {head}"), Traffic(1, 1, 1)))
            continue
        # The open and one read (a server that answers less than asked costs
        # more reads, not counted); the close is not waited for.
        traffic = Traffic(1, 2, 2, len(head))
        kept = _kept_head(relpath, stat.size, head)
        out.append(
            (kept if kept is not None else parse_head(relpath, Head(stat.size, head)), traffic)
        )
    return out


#: Seconds between looks, while mounted, for remote files that got user data
#: (a play, an override, a rating) and have no identity yet (`backfill_identities`).
IDENTITY_ROUND = 30.0


def identity_of(origin: Origin, relpath: str, federation: Federation | None = None) -> str | None:
    """The audio identity of *origin*'s file at *relpath*: read from the disk
    if it is local, else with one `read_ranges` of its head and the samples
    (through *federation*: its limits and retries). None if it has no audio
    payload. Raises OSError if the file cannot be read."""
    from musicfs.core.tags.identity import audio_identity, audio_identity_of

    local = origin.local_path(relpath)
    if local is not None:
        return audio_identity_of(local)
    opened: OriginFile
    if federation is not None and origin.id in federation.origins:
        opened = federation.open(origin.id, relpath)
    else:
        opened = origin.open(relpath)
    with opened:
        file = Prefetched(opened)
        file.prefetch(_remote_ranges(opened.size))
        return audio_identity(file.read, opened.size, format_of(relpath))


def backfill_identities(
    catalog: Catalog,
    origin: Origin,
    federation: Federation | None = None,
    skip: set[int] | None = None,
) -> int:
    """Give an identity to *origin*'s files that have user data and none yet
    (`Catalog.without_identity`), so that their data follows them when they are
    moved; `_BACKFILL_THREADS` files at once (an import of plays may give
    thousands of remote files user data at once). Returns how many got one. A
    file that cannot be read now is tried again next time; one with no audio
    payload is added to *skip* (left alone next time when given)."""
    rows = [row for row in catalog.without_identity(origin.id) if not skip or row[0] not in skip]
    if not rows:
        return 0

    def identify(row: tuple[int, str]) -> str | None:
        try:
            audio_id = identity_of(origin, row[1], federation)
        except OSError as exc:
            log.debug("no identity for %s/%s yet: %s", origin.id, row[1], exc)
            return None
        if audio_id is None and skip is not None:
            skip.add(row[0])
        return audio_id

    done = 0
    with concurrent.futures.ThreadPoolExecutor(
        min(_BACKFILL_THREADS, len(rows)), thread_name_prefix="musicfs-identity"
    ) as pool:
        for start in range(0, len(rows), _BACKFILL_BATCH):
            chunk = rows[start : start + _BACKFILL_BATCH]
            found = list(pool.map(identify, chunk))
            with catalog.transaction():
                for (file_id, _), audio_id in zip(chunk, found, strict=True):
                    if audio_id is not None:
                        catalog.set_audio_id(file_id, audio_id)
                        done += 1
    if done:
        log.info("%s: %d files with user data got their audio identity", origin.id, done)
    return done


# Identities read at once by `backfill_identities` (the federation's
# max_requests still bounds the requests in flight).
_BACKFILL_THREADS = 8
# Identities written per catalog transaction.
_BACKFILL_BATCH = 256
