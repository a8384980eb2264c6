"""A track's audio identity: what stays the same when a file is moved or retagged.

A user's data about a track (its overrides, plays, pins) must follow the audio,
not the path (issue 15.1). The identity is a fingerprint of the audio payload:
the bytes of the file without its tags. It is

    ``<payload length in hex>-<xxh3-64 of three samples of the payload>``

with samples of `SAMPLE` bytes at the payload's start, middle and end. Reading
it costs three small ranged reads (one when the payload is short), never a full
read, so the scanner computes it for every file it parses.

Where the payload lies, by format:
- FLAC, MP3 (and anything else that may start with ID3v2): after the header of
  `musicfs.core.tags.headers` (ID3v2, FLAC metadata blocks);
- MP3 and the like: before an ID3v1 tag (``TAG``, the last 128 bytes) and an
  APEv2 tag (``APETAGEX`` footer) at the end;
- MP4/M4A: the content of the top-level ``mdat`` box (the tags live in ``moov``,
  before or after it);
- anything else (Ogg, WAV, AIFF, ...): the whole file, so the identity survives
  moves, renames and copies, but not a retag that rewrites the file.

Two different recordings share an identity only if their payloads have the same
length and the same bytes at all three samples: a new file never inherits
another's data by accident.

Boundaries: pure functions over a ranged read; the catalog decides what an
identity means (`musicfs.core.catalog.identity`).
"""

from __future__ import annotations

import logging
import os

import xxhash

from musicfs.core.tags.headers import RangedRead, header_length

log = logging.getLogger(__name__)

#: Bytes hashed at each of the three sample points.
SAMPLE = 4096

_ID3V1 = 128
_APE_FOOTER = 32
_MP4_FORMATS = frozenset({"m4a", "m4b", "mp4", "alac", "aac"})
_MAX_BOXES = 256  # a damaged MP4 must not send us round in circles
#: The bytes at the end read at once: the last sample, an ID3v1 tag and a small APEv2 tag.
TAIL = SAMPLE + _ID3V1 + 2048


def audio_identity(read: RangedRead, size: int, fmt: str) -> str | None:
    """The identity of a file of *size* bytes and format *fmt* (its extension),
    read through *read*; None if it has no audio payload to speak of."""
    read = _with_tail(read, size)
    start, end = payload_range(read, size, fmt)
    length = end - start
    if length <= 0:
        return None
    digest = xxhash.xxh3_64()
    for offset in _sample_offsets(start, length):
        digest.update(read(offset, min(SAMPLE, end - offset)))
    return f"{length:x}-{digest.hexdigest()}"


def audio_identity_of(path: str, fd: int | None = None) -> str | None:
    """The identity of the local file at *path* (read through *fd*, a descriptor
    of it open for reading, when given); None if it cannot be read."""
    try:
        if fd is not None:
            return _identity_of_fd(path, fd)
        with open(path, "rb") as file:
            return _identity_of_fd(path, file.fileno())
    except OSError as exc:
        log.debug("no audio identity for %s: %s", path, exc)
        return None


def _identity_of_fd(path: str, fd: int) -> str | None:
    fmt = os.path.splitext(path)[1].lstrip(".").lower()
    size = os.fstat(fd).st_size

    def read(offset: int, length: int) -> bytes:
        return os.pread(fd, length, offset)

    return audio_identity(read, size, fmt)


def _with_tail(read: RangedRead, size: int) -> RangedRead:
    """*read*, with the file's last bytes fetched once: the trailing tags and the
    last sample then cost one request of a remote origin, not three."""
    tail_start = max(0, size - TAIL)
    tail: bytes | None = None

    def cached(offset: int, length: int) -> bytes:
        nonlocal tail
        if offset < tail_start or offset >= size:
            return read(offset, length)
        if tail is None:
            tail = read(tail_start, size - tail_start)
        return tail[offset - tail_start : offset - tail_start + length]

    return cached


def payload_range(read: RangedRead, size: int, fmt: str) -> tuple[int, int]:
    """[start, end) of the audio payload of a file (see the module docstring)."""
    if fmt in _MP4_FORMATS:
        found = _mdat_range(read, size)
        if found is not None:
            return found
        return 0, size
    start = min(header_length(read, fmt), size)
    return start, max(start, _end_before_trailers(read, size))


def _sample_offsets(start: int, length: int) -> list[int]:
    if length <= SAMPLE:
        return [start]
    middle = start + (length - SAMPLE) // 2
    last = start + length - SAMPLE
    return sorted({start, middle, last})


def _end_before_trailers(read: RangedRead, size: int) -> int:
    """Where the payload ends: before the ID3v1 and APEv2 tags at the end, in
    whichever order taggers wrote them."""
    end = size
    for _ in range(3):  # an ID3v1 and an APEv2 tag, and one more of either
        if end >= _ID3V1 and read(end - _ID3V1, 3) == b"TAG":
            end -= _ID3V1
            continue
        footer = read(end - _APE_FOOTER, _APE_FOOTER) if end >= _APE_FOOTER else b""
        if len(footer) == _APE_FOOTER and footer[:8] == b"APETAGEX":
            tag_size = int.from_bytes(footer[12:16], "little")  # items + footer
            has_header = bool(int.from_bytes(footer[20:24], "little") & 0x80000000)
            total = tag_size + (_APE_FOOTER if has_header else 0)
            if 0 < total <= end:
                end -= total
                continue
        break
    return end


def _mdat_range(read: RangedRead, size: int) -> tuple[int, int] | None:
    """The content of the top-level ``mdat`` box, if the file has one."""
    position = 0
    for _ in range(_MAX_BOXES):
        if position + 8 > size:
            return None
        box = read(position, 16)
        if len(box) < 8:
            return None
        length = int.from_bytes(box[:4], "big")
        header = 8
        if length == 1 and len(box) >= 16:  # a 64-bit size follows the type
            length, header = int.from_bytes(box[8:16], "big"), 16
        elif length == 0:  # the box runs to the end of the file
            length = size - position
        if length < header:
            return None
        if box[4:8] == b"mdat":
            return position + header, min(size, position + length)
        position += length
    return None
