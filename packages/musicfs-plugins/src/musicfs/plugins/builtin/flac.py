"""FLAC: the metadata overlay for ``.flac`` files.

The header is ``fLaC`` and the metadata blocks up to the one flagged last
(`musicfs.core.tags.headers`), with an ID3v2 tag in front of it when a tagger left
one there. The synthesized header keeps every block byte for byte (STREAMINFO,
SEEKTABLE, PICTURE, CUESHEET, APPLICATION...) except two:

- VORBIS_COMMENT: the comments of the fields that change are rewritten, all
  other comments stay as they are (see `_vorbis`). A file without one gets one
  right after STREAMINFO.
- PADDING: grown or shrunk by what the comments gained or lost, so the header,
  and with it the file, keeps its size whenever the padding allows (as a tag
  editor would do in place). Without enough padding the header grows.

An ID3v2 tag in front of ``fLaC`` is dropped when anything changes: FLAC has
no place for it, mutagen and ffmpeg ignore it, and other readers (TagLib) would
show its stale values next to the new ones. Its bytes go to the padding.

Refused (`NotImplementedError`: `tag set` says why, nothing changes): a header
that is not FLAC, does not start with STREAMINFO, holds a reserved block type (127),
two VORBIS_COMMENT blocks (mutagen refuses those files too) or a comment block
that does not parse, and new comments beyond a block's 16 MiB limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, ClassVar

from musicfs.core.model import TrackTags
from musicfs.core.tags import headers
from musicfs.core.tags.reader import UnreadableFile, read_tags
from musicfs.plugins.api import AudioMeta, FormatPlugin, PluginError, RangedRead
from musicfs.plugins.builtin._vorbis import VorbisComment

STREAMINFO, PADDING, VORBIS_COMMENT = 0, 1, 4
_INVALID = 127
_MAX_BLOCK = (1 << 24) - 1
_VENDOR = b"MusicFS"  # for a comment block made from nothing


@dataclass(slots=True)
class _Block:
    kind: int
    data: bytes

    def to_bytes(self, last: bool) -> bytes:
        head = (0x80 if last else 0) | self.kind
        return bytes([head]) + len(self.data).to_bytes(3, "big") + self.data


def _bytes_reader(data: bytes) -> RangedRead:
    return lambda offset, size: data[offset : offset + size]


def _parse_blocks(header: bytes, start: int) -> list[_Block]:
    """The metadata blocks after ``fLaC`` at *start*, which must end exactly at
    the end of *header* (that is what `header_length` measured)."""
    if header[start : start + 4] != b"fLaC":
        raise NotImplementedError("no FLAC metadata in the header")
    blocks: list[_Block] = []
    position = start + 4
    while True:
        if position + 4 > len(header):
            raise NotImplementedError("FLAC metadata truncated")
        head = header[position]
        size = int.from_bytes(header[position + 1 : position + 4], "big")
        position += 4
        if position + size > len(header):
            raise NotImplementedError("FLAC metadata block runs past the header")
        blocks.append(_Block(head & 0x7F, header[position : position + size]))
        position += size
        if head & 0x80:
            break
    if position != len(header):
        raise NotImplementedError("bytes after the last FLAC metadata block")
    return blocks


class FlacFormat(FormatPlugin):
    """Reads FLAC tags and rewrites the VORBIS_COMMENT block for the overlay."""

    name: ClassVar[str] = "flac"
    version: ClassVar[str] = "1.0.0"
    extensions: ClassVar[tuple[str, ...]] = ("flac",)

    def parse(self, reader: BinaryIO) -> AudioMeta:
        try:
            return read_tags("track.flac", reader)
        except UnreadableFile as exc:
            raise PluginError(str(exc)) from None

    def header_length(self, read: RangedRead, size: int) -> int:
        length = headers.header_length(read, "flac")
        return length if length <= size else 0

    def synthesize_header(self, meta: TrackTags, original_header: bytes) -> bytes:
        flac_at = headers.id3v2_length(_bytes_reader(original_header))
        blocks = _parse_blocks(original_header, flac_at)
        if blocks[0].kind != STREAMINFO:
            raise NotImplementedError("FLAC metadata does not start with STREAMINFO")
        if any(block.kind == _INVALID for block in blocks):
            raise NotImplementedError("FLAC metadata holds the reserved block type 127")
        comment_blocks = [b for b in blocks if b.kind == VORBIS_COMMENT]
        if len(comment_blocks) > 1:
            raise NotImplementedError("FLAC header holds two VORBIS_COMMENT blocks")

        if comment_blocks:
            block = comment_blocks[0]
            try:
                comments, _ = VorbisComment.parse(block.data)
            except ValueError as exc:
                raise NotImplementedError(f"unreadable VORBIS_COMMENT: {exc}") from None
        else:
            block = _Block(VORBIS_COMMENT, b"")
            comments = VorbisComment(_VENDOR)
        if not comments.apply(meta):
            return original_header  # nothing differs: serve the file as it is

        # Bytes after the comments inside the block (none in a sane file) are
        # dropped with the old block: nothing defines them.
        block.data = comments.to_bytes()
        if len(block.data) > _MAX_BLOCK:
            raise NotImplementedError("the new comments exceed a FLAC block's size limit")
        if not comment_blocks:
            blocks.insert(1, block)
        self._fit_padding(blocks, len(original_header))
        return b"fLaC" + b"".join(
            block.to_bytes(last=i == len(blocks) - 1) for i, block in enumerate(blocks)
        )

    @staticmethod
    def _fit_padding(blocks: list[_Block], target: int) -> None:
        """Resize the (last) PADDING block so the header is *target* bytes long
        again, when it can absorb the difference; add one if there is none and
        the header shrank by at least a block header."""
        size = 4 + sum(4 + len(block.data) for block in blocks)
        excess = size - target  # > 0: grew, < 0: shrank
        if excess == 0:
            return
        paddings = [block for block in blocks if block.kind == PADDING]
        if paddings:
            padding = paddings[-1]
            new_size = len(padding.data) - excess
            if 0 <= new_size <= _MAX_BLOCK:
                padding.data = bytes(new_size)
            # else: not enough padding to absorb the growth; the header grows
        elif excess <= -4 and -excess - 4 <= _MAX_BLOCK:
            blocks.append(_Block(PADDING, bytes(-excess - 4)))
