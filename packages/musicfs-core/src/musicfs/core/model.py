"""The values MusicFS passes around: what a track's tags say, and what a file is.

Plain frozen dataclasses with no behaviour beyond small conversions, so that every
other module (catalog, scanner, templates, filesystem) can share them without
importing each other.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

#: Extensions the scanner looks at by default (SPEC §3 formats and their kin).
AUDIO_EXTENSIONS: tuple[str, ...] = (
    "flac", "mp3", "mp2", "ogg", "oga", "opus", "spx", "m4a", "m4b", "mp4", "aac",
    "alac", "wav", "aif", "aiff", "aifc", "wv", "ape", "wma", "asf", "dsf", "dff",
    "mpc", "tak", "ofr", "ofs", "tta", "ac3", "mid", "midi",
)  # fmt: skip

#: The SSH clients an SFTP origin can speak through (``ssh_client``): OpenSSH's
#: ``ssh`` where it can do what the origin asks (``auto``), else paramiko; or one.
SSH_CLIENTS: tuple[str, ...] = ("auto", "openssh", "paramiko")

#: The tag fields the catalog stores for every track (SPEC §3), in column order.
TAG_FIELDS: tuple[str, ...] = (
    "title",
    "artist",
    "album",
    "albumartist",
    "genre",
    "year",
    "track",
    "tracktotal",
    "disc",
    "disctotal",
    "composer",
    "lyrics",
    "compilation",
    "duration",
    "bitrate",
    "samplerate",
    "channels",
    "has_art",
)


@dataclass(frozen=True, slots=True)
class TrackTags:
    """Metadata read from one audio file. Every field may be missing (None)."""

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    albumartist: str | None = None
    genre: str | None = None
    year: int | None = None
    track: int | None = None
    tracktotal: int | None = None
    disc: int | None = None
    disctotal: int | None = None
    composer: str | None = None
    lyrics: str | None = None
    compilation: bool = False
    duration: float | None = None
    bitrate: int | None = None
    samplerate: int | None = None
    channels: int | None = None
    has_art: bool = False

    def as_row(self) -> tuple[Any, ...]:
        """The values in `TAG_FIELDS` order, as the catalog stores them.

        A tag number past `MAX_TAG_NUMBER` either way, or any number past 64
        bits (a damaged header's bitrate), is stored as missing (SQLite holds
        at most 64 bits), a lone surrogate in a text as U+FFFD (SQLite
        takes valid UTF-8 only): one such tag must not stop a scan."""
        return tuple(_storable(name, getattr(self, name)) for name in TAG_FIELDS)

    @classmethod
    def from_row(cls, row: Any) -> TrackTags:
        """Build from a mapping (e.g. an sqlite3.Row) holding `TAG_FIELDS` keys."""
        values = {name: row[name] for name in TAG_FIELDS}
        values["compilation"] = bool(values["compilation"])
        values["has_art"] = bool(values["has_art"])
        return cls(**values)

    def replace(self, **changes: Any) -> TrackTags:
        return dataclasses.replace(self, **changes)

    def __reduce__(self) -> tuple[Any, ...]:
        # The scanner's workers send one per file: positional arguments unpickle
        # several times faster than a frozen dataclass's field-by-field setstate.
        return (TrackTags, tuple(getattr(self, name) for name in _TRACK_TAG_FIELDS))


_TRACK_TAG_FIELDS = tuple(f.name for f in dataclasses.fields(TrackTags))


#: Tag fields a user (or a metadata plugin) may override; the others describe
#: the audio itself (duration, bitrate...) and are never overridden.
OVERRIDABLE_FIELDS: tuple[str, ...] = (
    "title", "artist", "album", "albumartist", "genre", "year", "track", "tracktotal",
    "disc", "disctotal", "composer", "lyrics", "compilation",
)  # fmt: skip
_INT_FIELDS = frozenset({"year", "track", "tracktotal", "disc", "disctotal"})
#: The largest year, track or disc number kept. Tags hold text, and a file with
#: 40 nines as its track number exists; SQLite stores at most 64-bit integers.
MAX_TAG_NUMBER = 2**31 - 1


def tag_number(digits: str) -> int | None:
    """A number read from a tag's text, or None past `MAX_TAG_NUMBER` (junk)."""
    # Checked on the text: int() of a few thousand digits is refused by Python itself.
    if len(digits.lstrip("0")) > len(str(MAX_TAG_NUMBER)):
        return None
    number = int(digits)
    return number if number <= MAX_TAG_NUMBER else None


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """*text* with each lone surrogate (not encodable as UTF-8) as U+FFFD."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _storable(name: str, value: Any) -> Any:
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        # Stream info too: a damaged AIFF header claims a bitrate of 10**150.
        limit = MAX_TAG_NUMBER if name in _INT_FIELDS else 2**63 - 1
        return value if -limit <= value <= limit else None
    return value


def override_value(field: str, value: str | None) -> str | None:
    """Check one override (``year=1997``); return it normalised, or raise
    ValueError saying what is wrong. None (or "") removes the tag."""
    if field not in OVERRIDABLE_FIELDS:
        raise ValueError(
            f"{field!r} cannot be set; the fields are: {', '.join(OVERRIDABLE_FIELDS)}"
        )
    if value is None or value == "":
        return None
    if field in _INT_FIELDS:
        if not value.strip().isdecimal():  # isdigit() takes "²", which int() refuses
            raise ValueError(f"{field} must be a whole number, got {value!r}")
        number = tag_number(value.strip())
        if number is None:
            raise ValueError(f"{field} must be at most {MAX_TAG_NUMBER}, got {value.strip()}")
        return str(number)
    if field == "compilation":
        if value.lower() not in {"0", "1", "true", "false", "yes", "no"}:
            raise ValueError(f"compilation must be 1 or 0, got {value!r}")
        return "1" if value.lower() in {"1", "true", "yes"} else "0"
    # As tag readers give text back: trimmed, and blank is no tag at all.
    return value.strip() or None


def apply_overrides(tags: TrackTags, overrides: dict[str, str | None]) -> TrackTags:
    """*tags* with *overrides* (as `override_value` returns them) applied."""
    if not overrides:
        return tags
    changes: dict[str, Any] = {}
    for name, value in overrides.items():
        if name == "compilation":
            changes[name] = value == "1"
        elif name in _INT_FIELDS:
            changes[name] = None if value is None else int(value)
        elif name in OVERRIDABLE_FIELDS:
            changes[name] = value
    return tags.replace(**changes)


@dataclass(frozen=True, slots=True)
class FileStat:
    """What the scanner needs to know about an origin file to decide if it changed.

    *ctime_ns* is 0 when the origin has no change time (S3, SFTP). Where there is
    one it catches what size and mtime miss: a tag editor that keeps the file's
    size (padding) and puts its mtime back.
    """

    size: int
    mtime_ns: int
    ctime_ns: int = 0


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """The outcome of reading one file: its tags, or why they could not be read."""

    origin: str
    relpath: str
    stat: FileStat
    format: str
    tags: TrackTags
    error: str | None = None
    #: The fingerprint of its audio payload (`musicfs.core.tags.identity`), if read.
    audio_id: str | None = None


def format_of(relpath: str) -> str:
    """The format name of a file: its extension in lower case (``flac``, ``mp3``)."""
    _, dot, ext = relpath.rpartition(".")
    if not dot or "/" in ext or not ext:
        return "bin"
    return ext.lower()


# -- file names that are not UTF-8 ------------------------------------------------------
#
# A local file name is bytes; Python gives the bytes that are not UTF-8 as lone
# surrogates (U+DC80..U+DCFF, "surrogateescape"), which SQLite, gRPC and JSON
# refuse. Origins hand such names on with each of those bytes as a code point
# of the private use area instead (U+F780..U+F7FF: byte 0x80 + n -> U+F780 + n),
# valid text that maps back to the exact bytes (`origin_name`); the tree shows
# them as U+FFFD (`shown_name`), as file managers do.
_ESCAPED = range(0xDC80, 0xDD00)
_PRIVATE = range(0xF780, 0xF800)
_TO_PRIVATE = {code: code - 0xDC80 + 0xF780 for code in _ESCAPED}
_TO_ESCAPED = {code: code - 0xF780 + 0xDC80 for code in _PRIVATE}
_TO_SHOWN = dict.fromkeys(_PRIVATE, "\ufffd")


def catalog_name(name: str) -> str:
    """An origin's file name (bytes not UTF-8 as surrogates) as valid text."""
    return name.translate(_TO_PRIVATE) if not name.isascii() else name


def origin_name(name: str) -> str:
    """`catalog_name` undone: the name as the OS gave it (for ``os`` calls)."""
    return name.translate(_TO_ESCAPED) if not name.isascii() else name


def has_escaped_bytes(name: str) -> bool:
    """Whether `catalog_name` changed *name* (or it holds such code points)."""
    return not name.isascii() and any(ord(c) in _PRIVATE for c in name)


def shown_name(name: str) -> str:
    """*name* as the tree shows it: each byte that was not UTF-8 as U+FFFD."""
    return name.translate(_TO_SHOWN) if not name.isascii() else name
