"""Where a file's header ends and its audio payload begins (DESIGN §5).

A track's bytes are ``header + payload``. The header holds the tags: it is
small, cached apart (tier L2), and it is what a tag edit or the metadata overlay
replaces, while the payload (chunked into the CAS, tier L3) stays the same.

`header_length` reads only the first bytes of a file through a ranged reader:
- FLAC: ``fLaC`` and its metadata blocks, up to the one flagged last;
- MP3 (and any file starting with one): the ID3v2 tag, footer included;
- anything else: no header (0), so the whole file is payload.
"""

from __future__ import annotations

from collections.abc import Callable

#: read(offset, size) -> bytes, as an origin's ranged read
RangedRead = Callable[[int, int], bytes]

_ID3_HEADER = 10
_MAX_FLAC_BLOCKS = 1024  # a damaged file must not send us round in circles


def _syncsafe(data: bytes) -> int:
    b0, b1, b2, b3 = data
    return (b0 & 0x7F) << 21 | (b1 & 0x7F) << 14 | (b2 & 0x7F) << 7 | (b3 & 0x7F)


def id3v2_length(read: RangedRead, offset: int = 0) -> int:
    """Bytes taken by an ID3v2 tag at *offset* (0 if there is none)."""
    head = read(offset, _ID3_HEADER)
    if len(head) < _ID3_HEADER or head[:3] != b"ID3" or head[3] == 0xFF or head[4] == 0xFF:
        return 0
    if any(b & 0x80 for b in head[6:10]):
        return 0  # not a syncsafe size: not a real tag
    footer = _ID3_HEADER if head[5] & 0x10 else 0
    return _ID3_HEADER + _syncsafe(head[6:10]) + footer


def flac_length(read: RangedRead, offset: int = 0) -> int:
    """Bytes of ``fLaC`` plus all metadata blocks at *offset* (0 if not FLAC)."""
    if read(offset, 4) != b"fLaC":
        return 0
    position = offset + 4
    for _ in range(_MAX_FLAC_BLOCKS):
        block = read(position, 4)
        if len(block) < 4:
            return 0  # truncated inside the metadata: treat all as payload
        last = block[0] & 0x80
        size = int.from_bytes(block[1:4], "big")
        position += 4 + size
        if last:
            return position - offset
    return 0


def header_length(read: RangedRead, fmt: str) -> int:
    """Length of the header of a file of format *fmt* (its extension).

    ID3v2 tags in front of a FLAC file are allowed (some taggers write them).
    Never more than the file holds: a damaged size field yields 0.
    """
    id3 = id3v2_length(read)
    if fmt == "flac":
        flac = flac_length(read, id3)
        length = id3 + flac if flac else 0
    else:
        length = id3
    if length and len(read(length - 1, 1)) != 1:
        return 0  # claims more bytes than there are
    return length
