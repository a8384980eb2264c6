"""Path templates: turn a track's tags into the path it has in the mounted tree.

A template such as ``$albumartist/$album ($year) [$format_upper]/$track - $title.$format``
is split on ``/`` into components; each component is filled in from the tags,
with fallbacks for missing values, then sanitised into a legal file name.
Making names unique (``Title (2).flac``) is the catalog's job, because only it
knows which names are taken.

This module is pure: no I/O, no catalog, no FUSE.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from musicfs.core.errors import MusicFSError
from musicfs.core.model import TrackTags, shown_name, valid_text

DEFAULT_TEMPLATE = "$albumartist/$album ($year) [$format_upper]/$track - $title.$format"

#: Every variable a template may use (SPEC FR-2).
VARIABLES: frozenset[str] = frozenset(
    {
        "artist",
        "albumartist",
        "album",
        "title",
        "track",
        "disc",
        "year",
        "genre",
        "format",
        "format_upper",
        "composer",
    }
)

UNKNOWN_ARTIST = "Unknown Artist"
UNKNOWN_ALBUM = "Unknown Album"
VARIOUS_ARTISTS = "Various Artists"

# Linux file names are at most 255 bytes.
_NAME_MAX = 255
_ILLEGAL = re.compile(r"[/\x00]")
_CONTROL = re.compile(r"[\x01-\x1f\x7f]")


class TemplateError(MusicFSError, ValueError):
    """A template that cannot produce paths, with the reason in the message."""


@dataclass(frozen=True)
class PathTemplate:
    """A validated path template. Build one with `PathTemplate.parse`."""

    text: str
    components: tuple[string.Template, ...]

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        """Check *text* and compile it; raise `TemplateError` naming the problem."""
        parts = [p for p in text.strip().strip("/").split("/")]
        if not text.strip() or any(not p.strip() for p in parts):
            raise TemplateError(f"template {text!r} has an empty path component")
        compiled = []
        for part in parts:
            tpl = string.Template(part)
            if not tpl.is_valid():
                raise TemplateError(
                    f"template component {part!r} has a stray '$' (write '$$' for a literal '$')"
                )
            unknown = set(tpl.get_identifiers()) - VARIABLES
            if unknown:
                names = ", ".join(sorted("$" + u for u in unknown))
                known = ", ".join(sorted("$" + v for v in VARIABLES))
                raise TemplateError(f"template uses unknown variable(s) {names}; known: {known}")
            compiled.append(tpl)
        if not compiled[-1].get_identifiers():
            raise TemplateError(
                f"the last component of template {text!r} has no variable, "
                "so every track would get the same file name"
            )
        return cls(text=text, components=tuple(compiled))

    def render(self, tags: TrackTags, relpath: str, fmt: str) -> list[str]:
        """The path components (directories, then file name) for one track."""
        values = template_values(tags, relpath, fmt)
        return [sanitize(tpl.substitute(values)) for tpl in self.components]


def template_values(tags: TrackTags, relpath: str, fmt: str) -> dict[str, str]:
    """The value of every template variable for a track, fallbacks applied."""
    stem = shown_name(relpath.rsplit("/", 1)[-1])
    if "." in stem:
        stem = stem.rsplit(".", 1)[0]
    artist = _clean(tags.artist) or _clean(tags.albumartist) or UNKNOWN_ARTIST
    albumartist = (
        _clean(tags.albumartist)
        or (VARIOUS_ARTISTS if tags.compilation else None)
        or _clean(tags.artist)
        or UNKNOWN_ARTIST
    )
    width = max(2, len(str(tags.tracktotal))) if tags.tracktotal else 2
    return {
        "artist": artist,
        "albumartist": albumartist,
        "album": _clean(tags.album) or UNKNOWN_ALBUM,
        "title": _clean(tags.title) or stem or "Untitled",
        "track": str(tags.track or 0).zfill(width),
        "disc": str(tags.disc or 1),
        "year": str(tags.year).zfill(4) if tags.year else "0000",
        "genre": _clean(tags.genre) or "Unknown Genre",
        "format": fmt,
        "format_upper": fmt.upper(),
        "composer": _clean(tags.composer) or "Unknown Composer",
    }


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def sanitize(name: str) -> str:
    """Make *name* a legal, visible, single path component of at most 255 bytes.

    ``/`` and NUL become ``_``, a lone surrogate U+FFFD, control characters are
    dropped, a leading dot becomes ``_`` (so nothing is hidden and ``.``/``..``
    cannot occur), and an over-long name is shortened while keeping its extension.
    """
    name = _CONTROL.sub("", _ILLEGAL.sub("_", valid_text(name))).strip()
    if not name:
        return "_"
    if name.startswith("."):
        name = "_" + name[1:]
    return truncate_name(name)


def truncate_name(name: str, limit: int = _NAME_MAX) -> str:
    """Shorten *name* to *limit* UTF-8 bytes, keeping a short extension intact."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    budget = limit - len(suffix.encode())
    cut = stem.encode()[:budget].decode(errors="ignore").rstrip()
    return cut + suffix


def split_suffix(name: str) -> tuple[str, str]:
    """(stem, suffix) of a file name, as its ``(n)`` variants keep them:
    ``("Title", ".flac")``; a long or missing extension is part of the stem."""
    head, dot, ext = name.rpartition(".")
    if dot and head and len(ext) <= 16:
        return head, "." + ext
    return name, ""


def with_counter(name: str, n: int, is_file: bool) -> str:
    """The *n*-th distinct variant of *name*: ``Title (2).flac`` for a file."""
    stem, suffix = split_suffix(name) if is_file else (name, "")
    mark = f" ({n})"
    budget = _NAME_MAX - len(mark.encode()) - len(suffix.encode())
    stem = stem.encode()[:budget].decode(errors="ignore")
    return stem + mark + suffix
