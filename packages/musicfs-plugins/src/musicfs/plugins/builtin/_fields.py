"""Which tag fields the metadata overlay writes, and which of them a header must change.

A built-in format plugin gets the *effective* tags of a track (`TrackTags`: the
file's own tags with the user's overrides applied) and the file's original
header. It rewrites only the fields whose value differs from what that header
holds, so values it cannot represent exactly (a full date where only the year
is known, ``3/12`` in one frame) stay as the file has them unless they change.

"What the header holds" is what the catalog reads from it: this module asks
`musicfs.core.tags.reader` (the scanner's reader) rather than copying its rules, and
the writers use its tables of keys per field, so that a field the overlay
removes is gone from every key the catalog would read it from. Those names are
private to musicfs-core; musicfs-plugins pins musicfs-core to the same minor
series and ships from the same repository, which makes the coupling safe, and
the overlay tests read every synthesized header back through `read_tags`.

Stream properties (duration, bitrate...) and ``has_art`` are facts about the
audio and the pictures, not tags: the overlay never writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from musicfs.core.model import TrackTags
from musicfs.core.tags.reader import ID3_FRAMES, VORBIS_KEYS, fields_of

__all__ = [
    "FIELD_GROUPS",
    "ID3_FRAMES",
    "VORBIS_KEYS",
    "Value",
    "changed_groups",
    "current_values",
    "wanted_values",
]

Value = str | int | bool | None

#: The tag fields the overlay writes. A group is rewritten as a whole when any of
#: its fields differs: a track number and its total share one ID3 frame (TRCK
#: ``3/12``), and a Vorbis ``TRACKNUMBER=3/12`` holds both as well.
FIELD_GROUPS: tuple[tuple[str, ...], ...] = (
    ("title",),
    ("artist",),
    ("album",),
    ("albumartist",),
    ("genre",),
    ("year",),
    ("track", "tracktotal"),
    ("disc", "disctotal"),
    ("composer",),
    ("lyrics",),
    ("compilation",),
)

_FIELDS = tuple(name for group in FIELD_GROUPS for name in group)


def _normal(value: Any) -> Value:
    """The comparable form of a field value: the reader strips text and treats an
    empty string as no value, so an override of ``" "`` means "remove"."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool | int) or value is None:
        return value
    raise TypeError(f"unexpected tag value {value!r}")


def wanted_values(meta: TrackTags) -> dict[str, Value]:
    """The fields of *meta* the overlay writes, normalised."""
    return {name: _normal(getattr(meta, name)) for name in _FIELDS}


def current_values(tags: Any) -> dict[str, Value]:
    """The fields the catalog reads from *tags*: a mutagen ID3 object, or a
    mapping of lower-case Vorbis comment keys to their list of values."""
    fields = fields_of(tags)
    return {name: _normal(fields.get(name)) for name in _FIELDS}


def changed_groups(
    wanted: Mapping[str, Value], current: Mapping[str, Value]
) -> list[tuple[str, ...]]:
    """The groups of `FIELD_GROUPS` in which *wanted* and *current* differ."""
    return [
        group
        for group in FIELD_GROUPS
        if any(wanted.get(name) != current.get(name) for name in group)
    ]
