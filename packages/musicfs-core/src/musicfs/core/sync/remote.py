"""Reading a remote file's tags with as few requests as possible.

Job: what a scan (`musicfs.core.sync.scanner`) and the identity backfill do
with one file of an origin read over the network (S3, SFTP, SMB): read its
head, and its tail and middle sample where the identity is wanted, in one
`read_ranges`; parse the tags from those bytes (`read_remote`); or, for a
scan, return just the bytes of a head to be parsed by the scanning thread
(`read_head`, `parse_head`), for many files at once where the origin reads
them so (`scan_heads`). What it cost is counted (`Traffic`). Scheduling
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
    end = _tags_end(relpath, size, head)
    if end is not None and end <= min(len(head), _HEAD_KEPT):
        return Head(size, head[:end])
    return None


def _tags_end(relpath: str, size: int, head: bytes) -> int | None:
    """Where the bytes that parsing the tags of remote file *relpath* reads end
    (its tags and what mutagen reads after them), if its *head* shows it."""
    from musicfs.core.tags.headers import header_length

    fmt = format_of(relpath)
    after = _AFTER_TAGS.get(fmt)
    if after is None:
        return None
    length = header_length(lambda offset, size: head[offset : offset + size], fmt)
    return min(size, length + after) if length else None


def _tags_past(relpath: str, size: int, head: bytes) -> int | None:
    """Where the bytes that parsing the tags of remote file *relpath* reads end,
    as far as its *head* shows when they end past it: an ID3v2 tag's length is
    in its header; FLAC's metadata blocks are followed up to the first whose
    header lies past the head (a cover's block gives its own length), with a
    head's size more for the blocks after it (padding, mostly). None if the
    head does not show it."""
    from musicfs.core.tags.headers import id3v2_length

    fmt = format_of(relpath)
    after = _AFTER_TAGS.get(fmt)
    if after is None:
        return None
    position = id3v2_length(lambda offset, length: head[offset : offset + length])
    if fmt == "flac":
        if head[position : position + 4] != b"fLaC":
            return None
        position += 4
        for _ in range(_FLAC_BLOCKS_FOLLOWED):
            block = head[position : position + 4]
            if len(block) < 4:
                return min(size, position + _REMOTE_HEAD)
            position += 4 + int.from_bytes(block[1:4], "big")
            if block[0] & 0x80:  # the last block
                break
        else:
            return None
    return min(size, position + after) if position else None


# Metadata blocks `_tags_past` follows at most (a real FLAC has a handful).
_FLAC_BLOCKS_FOLLOWED = 64


def reads_heads_alone(relpath: str) -> bool:
    """Whether a file's tags are read from its first bytes alone, as `scan_heads`
    reads them: a format whose head shows where its tags end (FLAC; MP3, whose
    tags are ID3v2 at its head but in old files: those are read again), not
    one whose tags may lie at its end (Ogg, MP4, WavPack...)."""
    return format_of(relpath) in _AFTER_TAGS


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
    read_heads: Callable[[Sequence[tuple[str, FileStat, int]]], list[bytes | OSError]],
    files: Sequence[tuple[str, FileStat]],
) -> list[tuple[Parsed | Head | None, Traffic]]:
    """`scan_head` of several files (`reads_heads_alone`) of an origin that reads
    their heads at once (`Origin.read_heads`, through *read_heads*): per file,
    a `Head` for the scan thread to parse; or its tags parsed here; or, where
    the head shows tags longer than itself (a cover: `_tags_past`), all of
    them read in a second batch (from the start again, at most `_LONG_TAGS`
    bytes) and parsed here; or None where mutagen read past what
    was read (the caller reads the file again: `scan_remote`). Never raises:
    a file that cannot be read, or every file of an origin that fails, gets
    its error (as `scan_head` gives it)."""
    try:
        first = read_heads(
            [(relpath, stat, min(stat.size, _REMOTE_HEAD)) for relpath, stat in files]
        )
    except OSError as exc:
        return [(Parsed(TrackTags(), f"cannot read: {exc}"), Traffic(1)) for _ in files]
    out: list[tuple[Parsed | Head | None, Traffic]] = []
    longer: dict[int, int] = {}  # index in files -> the bytes its tags need
    for i, ((relpath, stat), head) in enumerate(zip(files, first, strict=True)):
        if isinstance(head, OSError):
            out.append((Parsed(TrackTags(), f"cannot read: {head}"), Traffic(1)))
            continue
        traffic = _head_traffic(head)
        kept = _kept_head(relpath, stat.size, head)
        if kept is not None:
            out.append((kept, traffic))
            continue
        end = _tags_past(relpath, stat.size, head)
        if end is not None and len(head) < end <= _LONG_TAGS:
            out.append((None, traffic))
            longer[i] = end  # tags longer than the head (a cover): read them whole
        else:
            out.append((parse_head(relpath, Head(stat.size, head)), traffic))
    if longer:
        try:
            again = read_heads([(*files[i], end) for i, end in longer.items()])
        except OSError as exc:
            again = [exc] * len(longer)
        for i, tags in zip(longer, again, strict=True):
            relpath, stat = files[i]
            if isinstance(tags, OSError):
                out[i] = (Parsed(TrackTags(), f"cannot read: {tags}"), out[i][1])
                continue
            out[i][1].add(_head_traffic(tags))
            out[i][1].files -= 1
            out[i] = (parse_head(relpath, Head(stat.size, tags)), out[i][1])
    return out


def _head_traffic(head: bytes) -> Traffic:
    """What reading one *head* with `Origin.read_heads` cost: the open, and its
    reads sent at once (a read per `_REMOTE_HEAD` bytes; a server answering less
    costs more, not counted here); the close is not waited for."""
    reads = -(-len(head) // _REMOTE_HEAD)
    return Traffic(1, 1 + reads, 1 + min(1, reads), len(head))


# Tags longer than a head that `scan_heads` reads in a second batch (a cover of
# up to ~2 MiB): 32 files in flight hold at most 64 MiB meanwhile. Longer ones
# are read again through an open file (`scan_remote`).
_LONG_TAGS = 2 * 1024 * 1024


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
