"""Pictures embedded in a track's tags, read through ranged reads.

`embedded_pictures` gives (picture type, bytes) of every picture in a file's
tags: FLAC PICTURE and ID3 APIC (with their types; `FRONT` is the front
cover), MP4 ``covr``, Ogg/FLAC ``METADATA_BLOCK_PICTURE`` (and the old
``COVERART``), APE and ASF pictures. mutagen reads them through a
`TrackReader`, so only a track's tags are fetched, never its audio; an origin
error is kept apart from mutagen's parse errors.

mutagen's picture code is imported on first use. Boundaries: reads one open
file; knows nothing of albums, rendering or the image cache.
"""

from __future__ import annotations

import base64
import contextlib
import struct
from typing import IO, Any

from musicfs.core.origins.base import OriginFile, RangeReader

FRONT = 3  # picture type "Cover (front)" in FLAC, ID3 and ASF


class TrackReader(RangeReader):
    """A `RangeReader` that remembers an origin error, which mutagen would
    otherwise turn into a parse error."""

    def __init__(self, file: OriginFile) -> None:
        super().__init__(file)
        self.error: OSError | None = None

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return super().readinto(buffer)
        except OSError as exc:
            self.error = exc
            raise


def embedded_pictures(fmt: str, fileobj: IO[bytes]) -> list[tuple[int, bytes]]:
    """(picture type, bytes) of the pictures in a file's tags."""
    from mutagen.id3 import ID3, ID3NoHeaderError  # here: not mount time

    from musicfs.core.tags.reader import open_audio

    id3: Any = ID3  # mutagen is mostly untyped
    if fmt in ("mp3", "mp2"):  # the ID3 tag alone: no MPEG frames are read
        try:
            return _id3_pictures(id3(fileobj))
        except ID3NoHeaderError:
            fileobj.seek(0)
    audio = open_audio(f"file.{fmt}", fileobj)
    return [] if audio is None else _pictures(audio)


def _pictures(audio: Any) -> list[tuple[int, bytes]]:
    from mutagen.apev2 import APEv2
    from mutagen.asf import ASFTags
    from mutagen.flac import Picture
    from mutagen.id3 import ID3
    from mutagen.mp4 import MP4Tags

    # mutagen's classes as Any (isinstance does not narrow to them): parts of
    # them are typed, most are not.
    _ID3: Any = ID3
    _Picture: Any = Picture
    _MP4Tags: Any = MP4Tags
    _ASFTags: Any = ASFTags
    _APEv2: Any = APEv2
    out = [(int(p.type), bytes(p.data)) for p in getattr(audio, "pictures", None) or []]
    tags: Any = audio.tags
    if tags is None:
        return out
    if isinstance(tags, _ID3):
        out += _id3_pictures(tags)
    elif isinstance(tags, _MP4Tags):  # no picture types: the first is the cover
        out += [(FRONT, bytes(cover)) for cover in tags.get("covr", [])]
    elif isinstance(tags, _ASFTags):
        for attribute in tags.get("WM/Picture", []):
            picture = _asf_picture(bytes(attribute.value))
            if picture is not None:
                out.append(picture)
    elif isinstance(tags, _APEv2):
        for key in tags.keys():  # noqa: SIM118 - APEv2 is a case-insensitive dict
            item = tags[key]
            if key.lower().startswith("cover art") and getattr(item, "kind", 0) == 1:
                data = bytes(item.value).partition(b"\0")[2]
                out.append((FRONT if "front" in key.lower() else 0, data))
    elif hasattr(tags, "keys") and hasattr(tags, "get"):  # Vorbis comments (Ogg, FLAC)
        for key in tags.keys():  # noqa: SIM118 - VComment is list-like
            lowered = key.lower()
            if lowered not in ("metadata_block_picture", "coverart"):
                continue
            for value in tags.get(key, []):
                with contextlib.suppress(Exception):  # bad base64 or block: skip it
                    raw = base64.b64decode(value)
                    if lowered == "coverart":  # the old way: the image itself
                        out.append((0, raw))
                    else:
                        block = _Picture(raw)
                        out.append((int(block.type), bytes(block.data)))
    return out


def _id3_pictures(tags: Any) -> list[tuple[int, bytes]]:
    return [(int(frame.type), bytes(frame.data)) for frame in tags.getall("APIC")]


def _asf_picture(value: bytes) -> tuple[int, bytes] | None:
    """WM/Picture: type byte, data length (LE u32), MIME and description
    (UTF-16LE, NUL-terminated), then the data."""
    if len(value) < 5:
        return None
    kind, length = value[0], struct.unpack_from("<I", value, 1)[0]
    position = 5
    for _ in range(2):  # MIME type, description
        while position + 1 < len(value) and value[position : position + 2] != b"\0\0":
            position += 2
        position += 2
    data = value[position : position + length]
    return (kind, data) if data else None
