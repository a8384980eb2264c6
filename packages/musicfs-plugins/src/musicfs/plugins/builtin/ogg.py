"""Ogg Vorbis and Ogg Opus: the metadata overlay for ``.ogg``, ``.oga``, ``.opus``.

An Ogg stream is a sequence of pages, each with a sequence number and a CRC.
The tags live in the second header packet (Vorbis: ``\\x03vorbis`` comment
header, followed by the setup header; Opus: ``OpusTags``), which starts on the
second page and may span several; the audio starts on a fresh page after the
last header packet. The header (`OggFormat.header_length`) is therefore the
pages up to and including the one on which the last header packet ends.

The payload pages must stay byte-identical, and their sequence numbers must
still follow the header's. So the synthesized header keeps the first page (the
identification header) as it is and lays the new comment packet (and, for
Vorbis, the unchanged setup packet) out over *exactly as many pages* as the
original header used, with the original serial and sequence numbers; only
these pages' CRCs are computed anew. To make that fit, the comment packet is
padded (zero bytes after the comments, which Vorbis readers ignore after the
framing bit and RFC 7845 defines for Opus) up to its original size, or beyond
when the pages need more bytes; a larger comment packet eats its padding first.

Refused (`NotImplementedError`: `tag set` says why, nothing changes), and
given a header length of 0 by `header_length` where it can tell up front:

- streams that are not Vorbis or Opus (Ogg FLAC, Speex, Theora video...),
  or whose header pages interleave another logical stream (multiplexed files);
- damaged framing: a first page holding more than the identification header,
  audio on the page where the headers end, continuation flags that disagree
  with the packets, a Vorbis comment header without its framing bit;
- new comments too large for the original header's page count (each page holds
  at most 255 segments of 255 bytes, about 64 KB), or an Opus comment header
  ending in binary data marked to be preserved when padding would be needed.
  More header pages would shift the sequence number, and so the CRC, of every
  audio page after them: the payload would no longer be the origin's bytes,
  which is what the overlay serves (and caches) unchanged.

Only the first link of a chained stream is overlaid; later links (in the
payload) keep their own tags.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, ClassVar

from musicfs.core.errors import Signal
from musicfs.core.model import TrackTags
from musicfs.core.tags.reader import UnreadableFile, read_tags
from musicfs.plugins.api import AudioMeta, FormatPlugin, PluginError, RangedRead
from musicfs.plugins.builtin._vorbis import VorbisComment

_CONTINUED, _BOS, _EOS = 0x01, 0x02, 0x04
_PAGE_HEADER = 27
_MAX_SEGMENTS = 255
_NO_GRANULE = (1 << 64) - 1  # -1: no packet ends on this page
_MAX_PAGES = 1024  # at most ~64 MiB of headers; a damaged file must not loop us

#: Codec by the start of the identification packet: (comment packet prefix,
#: number of header packets).
_CODECS = {
    b"\x01vorbis": (b"\x03vorbis", 3),
    b"OpusHead": (b"OpusTags", 2),
}

# Ogg's CRC-32 (polynomial 0x04C11DB7, not reflected, no initial or final XOR)
# is zlib's reflected CRC-32 on bit-reversed bytes, bit-reversed; zlib's C code
# makes it thousands of times faster than a Python loop over a large picture.
_BITSWAP = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(data: bytes) -> int:
    crc = ~zlib.crc32(data.translate(_BITSWAP), 0xFFFFFFFF) & 0xFFFFFFFF
    return int.from_bytes(crc.to_bytes(4, "big").translate(_BITSWAP), "little")


class _NotOverlayable(Signal):
    """This stream's header cannot be rewritten; the message says why."""


@dataclass(slots=True)
class _Page:
    flags: int
    granule: int
    serial: int
    sequence: int
    lacing: bytes
    body: bytes

    @property
    def size(self) -> int:
        return _PAGE_HEADER + len(self.lacing) + len(self.body)

    @property
    def packet_ends(self) -> list[int]:
        """Indexes of the segments that end a packet (lacing value below 255)."""
        return [i for i, value in enumerate(self.lacing) if value < _MAX_SEGMENTS]

    def to_bytes(self) -> bytes:
        head = (
            b"OggS\x00"
            + bytes([self.flags])
            + self.granule.to_bytes(8, "little")
            + self.serial.to_bytes(4, "little")
            + self.sequence.to_bytes(4, "little")
        )
        page = head + bytes(4) + bytes([len(self.lacing)]) + self.lacing + self.body
        crc = _ogg_crc(page).to_bytes(4, "little")
        return page[:22] + crc + page[26:]


def _read_page(read: RangedRead, offset: int, size: int, with_body: bool) -> _Page:
    # One read for the page header and the longest lacing table: on a remote
    # origin every read is a request.
    head = read(offset, min(_PAGE_HEADER + _MAX_SEGMENTS, size - offset)) if offset < size else b""
    if len(head) < _PAGE_HEADER or head[:4] != b"OggS" or head[4] != 0:
        raise _NotOverlayable(f"no Ogg page at byte {offset}")
    lacing = head[_PAGE_HEADER : _PAGE_HEADER + head[26]]
    body_size = sum(lacing)
    end = offset + _PAGE_HEADER + len(lacing) + body_size
    if len(lacing) != head[26] or end > size:
        raise _NotOverlayable(f"Ogg page at byte {offset} is truncated")
    body = read(end - body_size, body_size) if with_body else bytes(body_size)
    if len(body) != body_size:
        raise _NotOverlayable(f"Ogg page at byte {offset} is truncated")
    return _Page(
        flags=head[5],
        granule=int.from_bytes(head[6:14], "little"),
        serial=int.from_bytes(head[14:18], "little"),
        sequence=int.from_bytes(head[18:22], "little"),
        lacing=lacing,
        body=body,
    )


def _header_pages(read: RangedRead, size: int, with_body: bool) -> tuple[bytes, list[_Page]]:
    """The comment packet prefix of the stream's codec and its header pages:
    the identification page, then the pages up to the end of the last header
    packet. Raises `_NotOverlayable` for anything this module does not handle."""
    first = _read_page(read, 0, size, with_body=True)
    if not first.flags & _BOS or first.packet_ends != [len(first.lacing) - 1]:
        raise _NotOverlayable("the first Ogg page does not hold just the identification header")
    codec = next((c for magic, c in _CODECS.items() if first.body.startswith(magic)), None)
    if codec is None:
        raise _NotOverlayable("not an Ogg Vorbis or Opus stream")
    prefix, count = codec
    pages = [first]
    offset, missing = first.size, count - 1
    while missing:
        if len(pages) > _MAX_PAGES:
            raise _NotOverlayable("Ogg headers span too many pages")
        page = _read_page(read, offset, size, with_body)
        if page.serial != first.serial or page.flags & _BOS:
            raise _NotOverlayable("another logical stream among the Ogg header pages")
        if not page.lacing:
            raise _NotOverlayable(f"empty Ogg page {page.sequence} among the headers")
        continues = pages[-1].lacing[-1] == _MAX_SEGMENTS  # the last packet goes on
        if bool(page.flags & _CONTINUED) != continues:
            raise _NotOverlayable(f"Ogg page {page.sequence} has a wrong continuation flag")
        ends = page.packet_ends
        if len(ends) >= missing and ends[missing - 1] != len(page.lacing) - 1:
            raise _NotOverlayable("audio data shares a page with the Ogg headers")
        missing -= min(missing, len(ends))
        pages.append(page)
        offset += page.size
    return prefix, pages


def _packets(pages: list[_Page]) -> list[bytes]:
    """The packets the pages hold (all complete: the header ends on a packet)."""
    packets: list[bytes] = []
    current = bytearray()
    for page in pages:
        at = 0
        for value in page.lacing:
            current += page.body[at : at + value]
            at += value
            if value < _MAX_SEGMENTS:
                packets.append(bytes(current))
                current.clear()
    return packets


def _lacing(packet: bytes) -> bytes:
    return bytes([_MAX_SEGMENTS] * (len(packet) // _MAX_SEGMENTS) + [len(packet) % _MAX_SEGMENTS])


def _paginate(packets: list[bytes], template: list[_Page]) -> Iterator[_Page]:
    """*packets* laid out over exactly ``len(template)`` pages, which take the
    serial and sequence numbers of *template*'s; the caller made sure it fits."""
    lacing = b"".join(_lacing(packet) for packet in packets)
    data = b"".join(packets)
    segment = at = 0
    continued = False
    for index, original in enumerate(template):
        pages_after = len(template) - index - 1
        count = min(_MAX_SEGMENTS, len(lacing) - segment - pages_after)
        page_lacing = lacing[segment : segment + count]
        body = data[at : at + sum(page_lacing)]
        segment += count
        at += len(body)
        ends_packet = any(value < _MAX_SEGMENTS for value in page_lacing)
        flags = _CONTINUED if continued else 0
        if not pages_after:
            flags |= original.flags & _EOS  # a stream with no audio ends here
        yield _Page(
            flags=flags,
            granule=0 if ends_packet else _NO_GRANULE,  # header packets have granule 0
            serial=original.serial,
            sequence=original.sequence,
            lacing=page_lacing,
            body=body,
        )
        continued = page_lacing[-1] == _MAX_SEGMENTS


def _bytes_reader(data: bytes) -> RangedRead:
    return lambda offset, size: data[offset : offset + size]


class OggFormat(FormatPlugin):
    """Reads Ogg Vorbis / Opus tags and rewrites the comment header for the overlay."""

    name: ClassVar[str] = "ogg"
    version: ClassVar[str] = "1.0.0"
    extensions: ClassVar[tuple[str, ...]] = ("ogg", "oga", "opus")

    def parse(self, reader: BinaryIO) -> AudioMeta:
        try:
            # An .ogg holding Opus is found by mutagen's probing after OggVorbis refuses it.
            return read_tags("track.ogg", reader)
        except UnreadableFile as exc:
            raise PluginError(str(exc)) from None

    def header_length(self, read: RangedRead, size: int) -> int:
        try:
            _, pages = _header_pages(read, size, with_body=False)
        except _NotOverlayable:
            return 0  # no separable header: the whole file is payload
        return sum(page.size for page in pages)

    def synthesize_header(self, meta: TrackTags, original_header: bytes) -> bytes:
        try:
            prefix, pages = _header_pages(
                _bytes_reader(original_header), len(original_header), with_body=True
            )
        except _NotOverlayable as exc:
            raise NotImplementedError(str(exc)) from None
        if sum(page.size for page in pages) != len(original_header):
            raise NotImplementedError("bytes after the Ogg header pages")
        comment, *rest = _packets(pages[1:])
        if not comment.startswith(prefix):
            raise NotImplementedError("the second Ogg packet is not a comment header")
        try:
            comments, end = VorbisComment.parse(comment, len(prefix))
        except ValueError as exc:
            raise NotImplementedError(f"unreadable comment header: {exc}") from None
        if not comments.apply(meta):
            return original_header  # nothing differs: serve the file as it is

        tail = comment[end:]
        if prefix == b"\x03vorbis":
            if not tail or not tail[0] & 1:
                raise NotImplementedError("Vorbis comment header without its framing bit")
            # After the framing bit: padding (mutagen writes some), free to resize.
            kept, resizable = tail[:1], True
        elif tail and tail[0] & 1:
            kept, resizable = tail, False  # RFC 7845: binary data to be preserved
        else:
            kept, resizable = b"", True  # zero padding (opusenc writes 512 bytes)
        body = prefix + comments.to_bytes() + kept
        padding = max(0, len(comment) - len(body)) if resizable else 0

        page_count = len(pages) - 1
        segments = sum(len(_lacing(packet)) for packet in (body + bytes(padding), *rest))
        if segments < page_count:
            if not resizable:
                raise NotImplementedError("comment header too small for its pages")
            padding += _MAX_SEGMENTS * (page_count - segments)  # one segment each
        elif segments > _MAX_SEGMENTS * page_count:
            raise NotImplementedError(
                f"the new comments do not fit in the {page_count} Ogg page(s) of the file's "
                f"comment header (at most {_MAX_SEGMENTS * _MAX_SEGMENTS:,} bytes each), and "
                "more pages would renumber every audio page: shorten them, or tag the origin file"
            )
        new_pages = _paginate([body + bytes(padding), *rest], pages[1:])
        first = original_header[: pages[0].size]
        return first + b"".join(page.to_bytes() for page in new_pages)
