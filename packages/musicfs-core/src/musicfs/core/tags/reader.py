"""Read a file's tags and stream properties with mutagen.

`read_tags` is the only entry point. It never raises for a bad file: damaged,
truncated or non-audio input comes back as `UnreadableFile`, so a scan of a
messy collection always finishes (NFR-7.4). It must stay importable without
trio or pyfuse3, because the scanner runs it in worker processes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import IO, Any

import mutagen
from mutagen.aiff import AIFF
from mutagen.apev2 import APEv2
from mutagen.asf import ASF, ASFTags
from mutagen.flac import FLAC
from mutagen.id3 import ID3
from mutagen.monkeysaudio import MonkeysAudio
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, MP4Tags
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE
from mutagen.wavpack import WavPack

from musicfs.core.errors import MusicFSError
from musicfs.core.model import MAX_TAG_NUMBER, TrackTags, tag_number

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"\s*(\d+)\s*(?:/\s*(\d+))?")
_YEAR = re.compile(r"(\d{4})")


_BY_EXTENSION: dict[str, Any] = {
    "flac": FLAC,
    "mp3": MP3,
    "ogg": OggVorbis,
    "oga": OggVorbis,
    "opus": OggOpus,
    "m4a": MP4,
    "m4b": MP4,
    "mp4": MP4,
    "alac": MP4,
    "wav": WAVE,
    "aif": AIFF,
    "aiff": AIFF,
    "wv": WavPack,
    "ape": MonkeysAudio,
    "wma": ASF,
    "asf": ASF,
}


class UnreadableFile(MusicFSError):
    """mutagen could not make sense of a file; the message says why."""


def read_tags(path: str, fileobj: IO[bytes] | None = None, *, id3v1: bool = True) -> TrackTags:
    """Tags and stream info of the audio file at *path*, or of *fileobj* (a seekable
    file, e.g. ranged reads of a remote file) when given; *path* then only names it.
    Without *id3v1*, an MP3 that has an ID3v2 tag is not looked at for an ID3v1
    tag at its end (whose fields would only fill those ID3v2 lacks): a remote
    scan then reads the head alone.

    Raises `UnreadableFile` (never anything else) when the file is not audio
    mutagen understands, or is damaged beyond reading.
    """
    try:
        if fileobj is None:
            with open(path, "rb") as local:
                audio = open_audio(path, _Bounded(local, path), id3v1=id3v1)
        else:
            audio = open_audio(path, _Bounded(fileobj, path), id3v1=id3v1)
    except mutagen.MutagenError as exc:
        raise UnreadableFile(f"mutagen: {exc}") from None
    except Exception as exc:  # mutagen has bugs on hostile input; a scan must go on
        raise UnreadableFile(f"mutagen failed ({type(exc).__name__}: {exc})") from None
    if audio is None:
        raise UnreadableFile("not a recognised audio format")
    try:
        fields = fields_of(audio.tags) if audio.tags is not None else {}
        fields.update(_stream_info(audio))
        if not fields.get("has_art"):
            fields["has_art"] = bool(getattr(audio, "pictures", None))
        return TrackTags(**fields)
    except Exception as exc:
        raise UnreadableFile(f"unusable tags ({type(exc).__name__}: {exc})") from None


#: Reads and seeks mutagen may make in one file: far more than any real file's
#: tags take (hundreds), reached in about a second by a parser that loops.
_MAX_CALLS = 1_000_000


class _Bounded:
    """A file for mutagen that fails after `_MAX_CALLS` reads and seeks.

    Some of mutagen's parsers loop forever on crafted input (a Musepack SV8
    packet whose size field is 0 seeks back onto itself); one such file would
    stall a scan, and so the mount's catalog, for good. Found by ``nox -s fuzz``.
    """

    def __init__(self, fileobj: IO[bytes], name: str) -> None:
        self._file = fileobj
        self.name = name  # mutagen's format probe looks at the extension
        self._left = _MAX_CALLS

    def _spend(self) -> None:
        self._left -= 1
        if self._left < 0:
            raise UnreadableFile(f"mutagen went round in circles ({_MAX_CALLS} reads and seeks)")

    def read(self, size: int = -1) -> bytes:
        self._spend()
        return self._file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        self._spend()
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def __getattr__(self, name: str) -> Any:  # readable(), seekable()... as the file has them
        return getattr(self._file, name)


def open_audio(
    path: str, fileobj: IO[bytes] | _Bounded | None = None, *, id3v1: bool = True
) -> Any:
    """The mutagen object of the file at *path* (or of *fileobj*, *path* naming it);
    None if mutagen does not know the format. Raises mutagen's errors. Without
    *id3v1*, an MP3's ID3v1 tag is not read (see `read_tags`).

    Opens with the class the extension names (a third faster than letting
    mutagen probe every format); falls back to probing if that class refuses."""
    ext = path.rpartition(".")[2].lower()
    kind = _BY_EXTENSION.get(ext)
    target = path if fileobj is None else fileobj
    if kind is not None:
        try:
            return kind(target) if id3v1 or kind is not MP3 else kind(target, load_v1=False)
        except mutagen.MutagenError:
            pass  # e.g. an .ogg that holds Opus, or a misnamed file
        if fileobj is not None:
            fileobj.seek(0)
    return mutagen.File(target)


def _stream_info(audio: Any) -> dict[str, Any]:
    info = getattr(audio, "info", None)
    out: dict[str, Any] = {}
    for attr, key, kind in (
        ("length", "duration", float),
        ("bitrate", "bitrate", int),
        ("sample_rate", "samplerate", int),
        ("channels", "channels", int),
    ):
        value = getattr(info, attr, None)
        if isinstance(value, int | float) and value >= 0:
            out[key] = kind(value)
    return out


def _number_pair(value: str | None) -> tuple[int | None, int | None]:
    """``"3/12"`` → (3, 12); ``"3"`` → (3, None); junk → (None, None)."""
    if not value:
        return None, None
    m = _NUMBER.match(value)
    if not m:
        return None, None
    total = tag_number(m.group(2)) if m.group(2) else None
    return tag_number(m.group(1)), total


def _year(value: str | None) -> int | None:
    m = _YEAR.search(value or "")
    return int(m.group(1)) if m else None


def _mp4_number(value: object) -> int | None:
    """One half of an MP4 ``trkn``/``disk`` pair (0: not set)."""
    return value if isinstance(value, int) and 0 < value <= MAX_TAG_NUMBER else None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes"}


def _common(get: Callable[[str], str | None], has_art: bool) -> dict[str, Any]:
    """Build the field dict from a per-format getter of lower-case logical keys."""
    track, tracktotal = _number_pair(get("track"))
    disc, disctotal = _number_pair(get("disc"))
    tracktotal = tracktotal or _number_pair(get("tracktotal"))[0]
    disctotal = disctotal or _number_pair(get("disctotal"))[0]
    return {
        "title": get("title"),
        "artist": get("artist"),
        "album": get("album"),
        "albumartist": get("albumartist"),
        "genre": get("genre"),
        "year": _year(get("year")),
        "track": track,
        "tracktotal": tracktotal,
        "disc": disc,
        "disctotal": disctotal,
        "composer": get("composer"),
        "lyrics": get("lyrics"),
        "compilation": _truthy(get("compilation")),
        "has_art": has_art,
    }


def _first_text(values: Iterable[Any]) -> str | None:
    for value in values:
        text = str(value).strip()
        if text:
            return text
    return None


# Logical key → keys per tag format, most specific first. VORBIS_KEYS and
# ID3_FRAMES are public: the overlay's header writers change the same keys.
VORBIS_KEYS = {
    "title": ("title",),
    "artist": ("artist",),
    "album": ("album",),
    "albumartist": ("albumartist", "album artist", "album_artist"),
    "genre": ("genre",),
    "year": ("date", "year", "originaldate"),
    "track": ("tracknumber",),
    "tracktotal": ("tracktotal", "totaltracks"),
    "disc": ("discnumber",),
    "disctotal": ("disctotal", "totaldiscs"),
    "composer": ("composer",),
    "lyrics": ("lyrics", "unsyncedlyrics"),
    "compilation": ("compilation",),
}
_APE = {**VORBIS_KEYS, "year": ("year", "date"), "track": ("track",), "disc": ("disc",)}
ID3_FRAMES = {
    "title": ("TIT2",),
    "artist": ("TPE1",),
    "album": ("TALB",),
    "albumartist": ("TPE2",),
    "genre": ("TCON",),
    "year": ("TDRC", "TYER", "TORY", "TDOR"),
    "track": ("TRCK",),
    "disc": ("TPOS",),
    "composer": ("TCOM",),
    "compilation": ("TCMP",),
}
_MP4 = {
    "title": ("\xa9nam",),
    "artist": ("\xa9ART",),
    "album": ("\xa9alb",),
    "albumartist": ("aART",),
    "genre": ("\xa9gen", "gnre"),
    "year": ("\xa9day",),
    "composer": ("\xa9wrt",),
    "lyrics": ("\xa9lyr",),
}
_ASF = {
    "title": ("Title",),
    "artist": ("Author", "WM/AlbumArtist"),
    "album": ("WM/AlbumTitle",),
    "albumartist": ("WM/AlbumArtist",),
    "genre": ("WM/Genre",),
    "year": ("WM/Year",),
    "track": ("WM/TrackNumber", "WM/Track"),
    "disc": ("WM/PartOfSet",),
    "composer": ("WM/Composer",),
    "lyrics": ("WM/Lyrics",),
}


def fields_of(tags: Any) -> dict[str, Any]:
    """The logical fields (title, artist...) of mutagen *tags* of any format."""
    if isinstance(tags, ID3):
        return _id3_fields(tags)
    if isinstance(tags, MP4Tags):
        return _mp4_fields(tags)
    if isinstance(tags, ASFTags):
        return _mapped(lambda k: tags.get(k, []), _ASF, "WM/Picture" in tags)
    if isinstance(tags, APEv2):
        lowered = {k.lower(): v for k, v in tags.items()}
        has_art = any(k.startswith("cover art") for k in lowered)
        return _mapped(lambda k: _ape_values(lowered.get(k)), _APE, has_art)
    if hasattr(tags, "keys") and hasattr(tags, "get"):  # Vorbis comments (FLAC, Ogg)
        lowered_keys = {k.lower(): k for k in tags.keys()}  # noqa: SIM118 - VComment is list-like
        has_art = "metadata_block_picture" in lowered_keys or "coverart" in lowered_keys

        def get(key: str) -> list[Any]:
            real = lowered_keys.get(key)
            return list(tags.get(real, [])) if real else []

        return _mapped(get, VORBIS_KEYS, has_art)
    return {}


def _ape_values(value: Any) -> list[str]:
    if value is None or getattr(value, "kind", 0) != 0:  # 0 = text item
        return []
    return [str(v) for v in value]


def _mapped(
    values_of: Callable[[str], Iterable[Any]], table: dict[str, tuple[str, ...]], has_art: bool
) -> dict[str, Any]:
    def get(key: str) -> str | None:
        for name in table.get(key, ()):
            text = _first_text(values_of(name))
            if text:
                return text
        return None

    return _common(get, has_art)


def _id3_fields(tags: ID3) -> dict[str, Any]:
    def values_of(frame_id: str) -> list[Any]:
        frame = tags.get(frame_id)
        return list(getattr(frame, "text", [])) if frame is not None else []

    fields = _mapped(values_of, ID3_FRAMES, bool(tags.getall("APIC") or tags.getall("PIC")))
    lyrics = tags.getall("USLT")
    if lyrics and not fields["lyrics"]:
        fields["lyrics"] = str(lyrics[0].text).strip() or None
    if not fields["compilation"]:  # ffmpeg and some taggers write TXXX:compilation
        fields["compilation"] = any(
            frame.desc.lower() == "compilation" and _truthy(_first_text(frame.text))
            for frame in tags.getall("TXXX")
        )
    return fields


def _mp4_fields(tags: MP4Tags) -> dict[str, Any]:
    fields = _mapped(lambda k: tags.get(k, []), _MP4, bool(tags.get("covr")))
    for key, num, total in (("trkn", "track", "tracktotal"), ("disk", "disc", "disctotal")):
        pairs = tags.get(key) or []
        if pairs and isinstance(pairs[0], tuple):
            fields[num] = _mp4_number(pairs[0][0])
            fields[total] = _mp4_number(pairs[0][1])
    fields["compilation"] = bool(tags.get("cpil"))
    return fields
