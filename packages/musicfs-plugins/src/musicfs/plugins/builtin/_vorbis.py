"""Vorbis comments (the tags of FLAC, Ogg Vorbis and Opus), edited in place.

The comment list is kept as the raw ``KEY=value`` byte strings the file holds,
so every comment the overlay does not touch (pictures in
``METADATA_BLOCK_PICTURE``, ReplayGain, MusicBrainz ids, even values that are
not valid UTF-8) is written back byte for byte, in its place. Only the
comments of a field that changes are dropped, and the new ones take the place
of the first of them.

Layout (little-endian): vendor length, vendor, comment count, then per comment
its length and bytes. Ogg Vorbis adds a framing byte after the list; FLAC and
Opus do not (the callers deal with what follows the list).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from musicfs.core.model import TrackTags
from musicfs.plugins.builtin._fields import (
    VORBIS_KEYS,
    Value,
    changed_groups,
    current_values,
    wanted_values,
)

#: The key each field is written under (upper case, as most taggers write them).
_WRITE_KEY = {
    "title": "TITLE",
    "artist": "ARTIST",
    "album": "ALBUM",
    "albumartist": "ALBUMARTIST",
    "genre": "GENRE",
    "year": "DATE",
    "track": "TRACKNUMBER",
    "tracktotal": "TRACKTOTAL",
    "disc": "DISCNUMBER",
    "disctotal": "DISCTOTAL",
    "composer": "COMPOSER",
    "lyrics": "LYRICS",
    "compilation": "COMPILATION",
}

#: Keys read as a fallback for a field but meaning something else of their own:
#: kept when the field gets a new value (the new key takes precedence when read),
#: dropped only when the field is removed.
_KEEP_WHEN_SET = {"year": {"originaldate"}}


def _u32(data: bytes, offset: int) -> int:
    if offset + 4 > len(data):
        raise ValueError("Vorbis comment truncated")
    return int.from_bytes(data[offset : offset + 4], "little")


def _key_of(entry: bytes) -> str | None:
    """The lower-case key of a ``KEY=value`` comment (None without ``=``)."""
    key, sep, _ = entry.partition(b"=")
    return key.decode("ascii", "replace").lower() if sep else None


def _text(name: str, value: Value) -> str:
    if value is True:
        return "1"
    if name == "year" and isinstance(value, int):
        return f"{value:04d}"  # the reader takes a year from four digits
    return str(value)


@dataclass(slots=True)
class VorbisComment:
    """A comment list: the vendor string and the raw comments, in file order."""

    vendor: bytes
    entries: list[bytes] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> tuple[VorbisComment, int]:
        """The comment list at *offset* of *data*, and the offset just after it.
        Raises ValueError when a length points past the end of *data*."""
        length = _u32(data, offset)
        offset += 4
        if offset + length > len(data):
            raise ValueError("Vorbis comment vendor string truncated")
        vendor = data[offset : offset + length]
        offset += length
        count = _u32(data, offset)
        offset += 4
        if count > (len(data) - offset) // 4:
            raise ValueError("Vorbis comment count exceeds the data")
        entries = []
        for _ in range(count):
            length = _u32(data, offset)
            offset += 4
            if offset + length > len(data):
                raise ValueError("Vorbis comment truncated")
            entries.append(data[offset : offset + length])
            offset += length
        return cls(vendor, entries), offset

    def to_bytes(self) -> bytes:
        parts = [len(self.vendor).to_bytes(4, "little"), self.vendor]
        parts.append(len(self.entries).to_bytes(4, "little"))
        for entry in self.entries:
            parts += [len(entry).to_bytes(4, "little"), entry]
        return b"".join(parts)

    def as_mapping(self) -> dict[str, list[str]]:
        """Lower-case key → values, merging keys that differ only in case, as
        mutagen's VCommentDict (which the catalog reads through) does."""
        mapping: dict[str, list[str]] = {}
        for entry in self.entries:
            key = _key_of(entry)
            if key is not None:
                value = entry.partition(b"=")[2].decode("utf-8", "replace")
                mapping.setdefault(key, []).append(value)
        return mapping

    def apply(self, meta: TrackTags) -> bool:
        """Rewrite the comments of the fields whose value in *meta* differs from
        what the comments hold. True if anything changed."""
        wanted = wanted_values(meta)
        groups = changed_groups(wanted, current_values(self.as_mapping()))
        for group in groups:
            drop: set[str] = set()
            new: list[bytes] = []
            for name in group:
                value = wanted[name]
                drop.update(VORBIS_KEYS[name])
                if value is None or value is False:
                    continue  # removed: no comment at all (COMPILATION=0 is "not set")
                drop -= _KEEP_WHEN_SET.get(name, set())
                new.append(f"{_WRITE_KEY[name]}={_text(name, value)}".encode())
            self._replace(drop, new)
        return bool(groups)

    def _replace(self, drop: set[str], new: list[bytes]) -> None:
        """Drop the comments with a key in *drop*; put *new* where the first was."""
        kept: list[bytes] = []
        at = None
        for entry in self.entries:
            if _key_of(entry) in drop:
                if at is None:
                    at = len(kept)
            else:
                kept.append(entry)
        if at is None:
            at = len(kept)
        kept[at:at] = new
        self.entries = kept
