"""Example format plugin: "MusicFS tagged raw" (``.mtr``), a container mutagen
does not know, with tags MusicFS can read and rewrite (the metadata overlay).

Layout of a ``.mtr`` file::

    b"MTR1"                   magic
    4 bytes, big endian       N: length of the tag block
    N bytes                   UTF-8 lines "key=value\\n" (keys: title, artist,
                              album, albumartist, genre, year, track, disc...)
    the rest                  the audio payload, untouched (any codec)

`parse` reads the tag block; `header_length` is 8 + N; `synthesize_header`
writes a new tag block, so ``musicfs tag set`` works on these files too.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from musicfs.core.model import OVERRIDABLE_FIELDS, TrackTags
from musicfs.plugins.api import AudioMeta, FormatPlugin, PluginError, RangedRead

MAGIC = b"MTR1"
_MAX_TAGS = 1024 * 1024


def encode(tags: dict[str, str], payload: bytes) -> bytes:
    """An .mtr file (for tests and tools)."""
    block = "".join(f"{k}={v}\n" for k, v in tags.items()).encode()
    return MAGIC + struct.pack(">I", len(block)) + block + payload


def _tag_lines(block: bytes) -> dict[str, str]:
    try:
        text = block.decode()
    except UnicodeDecodeError as exc:
        raise PluginError(f"the tag block is not UTF-8: {exc}") from None
    pairs = (line.partition("=") for line in text.splitlines() if line)
    return {key.strip().lower(): value for key, sep, value in pairs if sep}


def _meta(values: dict[str, str]) -> AudioMeta:
    kwargs: dict[str, object] = {}
    for key, value in values.items():
        if key not in OVERRIDABLE_FIELDS:
            continue
        if key == "compilation":
            kwargs[key] = value in ("1", "true")
        elif key in ("year", "track", "tracktotal", "disc", "disctotal"):
            number = value.partition("/")[0].strip()
            kwargs[key] = int(number) if number.isdigit() else None
        else:
            kwargs[key] = value
    return TrackTags(**kwargs)  # type: ignore[arg-type]


class MtrFormat(FormatPlugin):
    name = "mtr-format"
    version = "1.0.0"
    api_version = "1.0"
    extensions = ("mtr",)

    def parse(self, reader: BinaryIO) -> AudioMeta:
        head = reader.read(8)
        if len(head) < 8 or head[:4] != MAGIC:
            raise PluginError("not an .mtr file (no MTR1 magic)")
        (length,) = struct.unpack(">I", head[4:])
        if length > _MAX_TAGS:
            raise PluginError(f"tag block of {length} bytes: damaged file")
        block = reader.read(length)
        if len(block) != length:
            raise PluginError("the file ends inside its tag block")
        return _meta(_tag_lines(block))

    def header_length(self, read: RangedRead, size: int) -> int:
        head = read(0, 8)
        if len(head) < 8 or head[:4] != MAGIC:
            return 0
        (length,) = struct.unpack(">I", head[4:])
        return 8 + length if 8 + length <= size else 0

    def synthesize_header(self, meta: AudioMeta, original_header: bytes) -> bytes:
        if original_header[:4] != MAGIC:
            raise NotImplementedError("not an .mtr file: served unchanged")
        values = _tag_lines(original_header[8:])
        own = _meta(values)
        for key in OVERRIDABLE_FIELDS:
            value = getattr(meta, key)
            if value == getattr(own, key):
                continue  # unchanged: keep the line as it was written
            if key == "compilation":
                if value or "compilation" in values:
                    values[key] = "1" if value else "0"
            elif value is None:
                values.pop(key, None)
            else:
                values[key] = str(value)
        block = "".join(f"{k}={v}\n" for k, v in values.items()).encode()
        return MAGIC + struct.pack(">I", len(block)) + block
