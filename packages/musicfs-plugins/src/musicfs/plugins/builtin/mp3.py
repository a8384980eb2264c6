"""MP3: the metadata overlay for ``.mp3`` files, through their ID3v2 tag.

The header is the ID3v2 tag at the start of the file (footer included); the
payload, everything after it, is the MPEG audio. A file without an ID3v2 tag
has an empty header: given one, `Mp3Format.synthesize_header` makes a new
ID3v2.4 tag to put in front of the whole file.

The synthesized tag is the original one, loaded by mutagen, with the frames of
the changed fields replaced: TIT2 TPE1 TALB TPE2 TCON TDRC TRCK (``n/total``)
TPOS TCOM USLT TCMP, the frames `musicfs.core.tags.reader` reads. APIC, COMM, TXXX,
private and unknown frames stay. The tag keeps its version (2.3 stays 2.3 as
mutagen writes it, with TYER/TDAT for the date; 2.2, which mutagen cannot
write, becomes 2.4) and, when its padding allows, its size.

Limits:

- An ID3v1 tag (or an APEv2 tag, Lyrics3) at the *end* of the file is part of
  the payload and stays as it is. Players prefer ID3v2, so they show the new
  values; but a field the overlay *removes* can still show through from the
  ID3v1 tag in readers that fill missing ID3v2 frames from it (mutagen does).
- A text with a NUL character is refused: ID3 splits it into several values.
  So is a genre ID3 would read as a genre code (``17``, ``(17)``, ``CR``).
- ID3 has no frame for a total without a number: a track total (disc total)
  without a track (disc) number is refused (`NotImplementedError`), since the
  served file could not carry it.
- Frames mutagen cannot parse (damaged ones) are dropped when the tag is
  rewritten; a tag mutagen cannot read at all is refused
  (`NotImplementedError`: `tag set` says why, nothing changes). So is a second
  ID3v2 tag right after the first: it belongs to the payload, and readers that
  merge stacked tags (ffmpeg) would show its stale values.
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO, ClassVar

import mutagen.id3

from musicfs.core.model import TrackTags
from musicfs.core.tags import headers
from musicfs.core.tags.reader import UnreadableFile, read_tags
from musicfs.plugins.api import AudioMeta, FormatPlugin, PluginError, RangedRead
from musicfs.plugins.builtin._fields import (
    ID3_FRAMES,
    Value,
    changed_groups,
    current_values,
    wanted_values,
)

# mutagen's ID3 classes have no type hints: use them through Any rather than
# silencing each call.
_id3: Any = mutagen.id3

_UTF8 = 3  # ID3 text encoding; mutagen turns it into UTF-16 when writing 2.3
#: Frames read as a fallback for a field but meaning something else of their own
#: (the original release date): kept when the field gets a new value.
_KEEP_WHEN_SET = {"year": {"TDOR", "TORY"}}
#: Room after the tag when saving into memory: mutagen looks for an ID3v1 tag
#: in the last 131 bytes of what it saves to, and must not find one in ours.
_TAIL = bytes(256)


def _keep_size(info: Any) -> int:
    """mutagen padding policy: keep the tag's size when the frames fit in it
    (the file keeps its size, and the offsets players cached stay right);
    otherwise no padding, which only serves editing a file in place."""
    padding: int = info.padding
    return max(padding, 0)


def _number(number: Value, total: Value) -> str | None:
    if number is None:
        if total is not None:  # "/12" does not parse as a track number
            raise NotImplementedError("ID3 cannot hold a total without its number (TRCK and "
                                      "TPOS are \"number/total\"); set the number too")  # fmt: skip
        return None
    return f"{number}/{total}" if total is not None else f"{number}"


class Mp3Format(FormatPlugin):
    """Reads MP3 tags and rewrites the ID3v2 tag for the overlay."""

    name: ClassVar[str] = "mp3"
    version: ClassVar[str] = "1.0.0"
    extensions: ClassVar[tuple[str, ...]] = ("mp3",)

    def parse(self, reader: BinaryIO) -> AudioMeta:
        try:
            return read_tags("track.mp3", reader)
        except UnreadableFile as exc:
            raise PluginError(str(exc)) from None

    def header_length(self, read: RangedRead, size: int) -> int:
        length = headers.header_length(read, "mp3")
        if length > size:
            return 0
        # Tags stacked right after the first belong to the header too, so that
        # synthesize_header sees (and refuses) them rather than leaving stale
        # tags in the payload.
        while length and (more := headers.id3v2_length(read, length)):
            if length + more > size:
                return 0
            length += more
        return length

    def synthesize_header(self, meta: TrackTags, original_header: bytes) -> bytes:
        if original_header:
            tags, v2_version = self._load(original_header)
        else:
            tags, v2_version = _id3.ID3(), 4
        try:
            return self._rewrite(tags, v2_version, meta, original_header)
        except NotImplementedError:
            raise
        except Exception as exc:  # mutagen on a frame it read but cannot write back
            raise NotImplementedError(f"cannot rewrite this ID3v2 tag: {exc}") from exc

    def _rewrite(self, tags: Any, v2_version: int, meta: TrackTags, original: bytes) -> bytes:
        wanted = wanted_values(meta)
        groups = changed_groups(wanted, current_values(tags))
        if not groups:
            return original  # nothing differs: serve the file as it is
        for group in groups:
            self._write(tags, group, wanted)
        if v2_version == 3:
            tcon = tags.get("TCON")
            genres = list(tcon.text) if tcon is not None else None
            tags.update_to_v23()  # TDRC -> TYER/TDAT..., as mutagen requires for 2.3
            if genres is not None:  # it unescapes "((": readers would see a genre code
                tags["TCON"].text = genres
        buffer = io.BytesIO(original + _TAIL)
        # v23_sep=None: multiple values stay NUL-separated, as mutagen read them,
        # rather than joined into one "a/b" value the catalog would read whole.
        tags.save(buffer, v1=1, v2_version=v2_version, v23_sep=None, padding=_keep_size)
        data = buffer.getvalue()
        # The new tag is at the start; what mutagen did not count as the old tag
        # (a footer) lies between it and our tail, and goes with the old header.
        length = headers.id3v2_length(_bytes_reader(data))
        if not length or not data.endswith(_TAIL) or length > len(data) - len(_TAIL):
            raise NotImplementedError("mutagen wrote an unexpected ID3v2 tag")
        return data[:length]

    @staticmethod
    def _load(header: bytes) -> tuple[Any, int]:
        """The tag in *header* (never filled from an ID3v1 tag: there is none in
        the header, only bytes that might look like one) and the version to
        write it back as."""
        try:
            tags = _id3.ID3(io.BytesIO(header), load_v1=False)
        except Exception as exc:  # mutagen raises many things on damaged tags
            raise NotImplementedError(f"unreadable ID3v2 tag: {exc}") from None
        if header[:3] == b"ID3" and len(header) > headers.id3v2_length(_bytes_reader(header)):
            raise NotImplementedError("header holds more than one ID3v2 tag")
        return tags, 3 if tags.version[1] == 3 else 4

    @staticmethod
    def _write(tags: Any, group: tuple[str, ...], wanted: dict[str, Value]) -> None:
        """Replace the frames of one field group with *wanted*'s values."""
        name = group[0]
        value = wanted[name]
        if isinstance(value, str) and "\x00" in value:
            raise NotImplementedError(f"ID3 cannot hold a {name} with a NUL character "
                                      "(NUL separates the values of a frame)")  # fmt: skip
        if name in ("track", "disc"):
            text = _number(value, wanted[group[1]])
            tags.delall("TRCK" if name == "track" else "TPOS")
            if text is not None:
                frame = _id3.TRCK if name == "track" else _id3.TPOS
                tags.add(frame(encoding=_UTF8, text=[text]))
        elif name == "lyrics":
            old = tags.getall("USLT")
            lang = old[0].lang if old else "XXX"  # XXX: "unknown language"
            tags.delall("USLT")
            if value is not None:
                tags.add(_id3.USLT(encoding=_UTF8, lang=lang, desc="", text=str(value)))
        elif name == "compilation":
            tags.delall("TCMP")
            if value:
                tags.add(_id3.TCMP(encoding=_UTF8, text=["1"]))
            else:  # the reader also takes TXXX:compilation (ffmpeg writes it)
                for frame in tags.getall("TXXX"):
                    if frame.desc.lower() == "compilation":
                        tags.delall(frame.HashKey)
        else:
            frame_ids = ID3_FRAMES[name]
            for frame_id in frame_ids:
                if value is None or frame_id not in _KEEP_WHEN_SET.get(name, ()):
                    tags.delall(frame_id)
            if value is not None:
                text = f"{value:04d}" if name == "year" else str(value)
                if name == "genre":
                    text = _genre_text(text)
                tags.add(_id3.Frames[frame_ids[0]](encoding=_UTF8, text=[text]))


def _genre_text(genre: str) -> str:
    """The TCON text that readers (mutagen, hence the catalog) take back as *genre*.

    TCON text is parsed: ``"17"`` or ``"(17)"`` is genre code 17 ("Rock"),
    ``CR``/``RX`` are "Cover"/"Remix", and ``((`` is an escaped ``(``."""
    text = "(" + genre if genre.startswith("(") else genre
    if _id3.TCON(encoding=_UTF8, text=[text]).genres != [genre]:
        raise NotImplementedError(f"ID3 reads the genre {genre!r} as a genre code or a list "
                                  "of genres, not as this text")  # fmt: skip
    return text


def _bytes_reader(data: bytes) -> RangedRead:
    return lambda offset, size: data[offset : offset + size]
