"""The metadata overlay (FR-5.3): corrected tags served without touching the origin.

A file's *effective* tags are its own with the catalog's overrides applied
(``musicfs tag set``, or a metadata plugin). The tree places the file by them,
and the bytes served are ``synthesized header + the file's payload``: the
header is written by the format's `HeaderWriter` (a format plugin; FLAC and MP3
are built in) from the file's own header, once per version of the file, and
stored in the catalog (`Catalog.set_overlay`), so stat knows the served size
before anything is opened.

The tree never shows a tag the served file does not carry: when a file's
effective tags cannot be served (a format without a writer, a file its writer
refuses, an origin that cannot be read), `OverlayEditor.set_tags` changes
nothing and raises `TagRefused` saying why; an overlay that cannot be made
again after a scan (the file changed) leaves the file served unchanged and
placed by its own tags (`Layout`) until it can.

`refresh` (re)makes the overlays of some files and re-places them; the daemon
calls it after a tag edit and after scans (a file that changed needs a new
header). This module reads origins and writes the catalog: call it from a
worker thread, with that thread's own catalog connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from musicfs.core.catalog.layout import Layout, TreeChange
from musicfs.core.catalog.store import Catalog, Node, Track
from musicfs.core.errors import MusicFSError, Signal
from musicfs.core.extensions import Extensions
from musicfs.core.model import TrackTags, apply_overrides, override_value
from musicfs.core.origins.federation import Federation

log = logging.getLogger(__name__)

_MAX_HEADER = 16 * 1024 * 1024  # a header bigger than this is a damaged file


class TagError(MusicFSError, ValueError):
    """A tag request cannot be done; the message says why and what to do."""


class TagRefused(TagError):
    """The tags asked for cannot be served in the file's bytes; nothing changed."""


class _Unservable(Signal):
    """A file's effective tags cannot be written into its header; the message says why."""


@dataclass(frozen=True, slots=True)
class TagView:
    """What ``musicfs tag show`` prints for one file."""

    path: str  # where the file is in the tree now
    origin: str
    relpath: str
    format: str
    own: TrackTags  # the file's own tags
    overrides: Mapping[str, str | None]
    effective: TrackTags
    overlaid: bool  # the served header holds the effective tags
    audio_id: str | None = None  # the audio's identity (musicfs.core.tags.identity)
    plays: int = 0
    last_played: float | None = None
    #: Where the file was before ("origin:relpath"), latest first: its data followed it.
    moved_from: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)  # who set each override
    rating: int | None = None  # 0-100 (20 a star), from an import


def resolve(catalog: Catalog, path: str) -> Node:
    """The node at *path* (relative to the mountpoint, ``/``-separated)."""
    node = catalog.node_at(path)
    if node is None:
        raise TagError(f"{path}: no such file in the mount")
    if node.file_id is None:
        raise TagError(f"{path}: is a folder; name a file")
    return node


def parse_assignments(assignments: Mapping[str, str | None]) -> dict[str, str | None]:
    """Validate ``FIELD=VALUE`` pairs; raise `TagError` naming the bad one."""
    try:
        return {name: override_value(name, value) for name, value in assignments.items()}
    except ValueError as exc:
        raise TagError(str(exc)) from None


def view(catalog: Catalog, file_id: int) -> TagView:
    track = catalog.track(file_id)
    node = catalog.node_of_file(file_id)
    if track is None or node is None:
        raise TagError(f"file {file_id} is no longer in the tree (removed by a rescan?)")
    overlay = catalog.overlay(file_id, track.size, track.mtime_ns)
    plays, last_played = catalog.play_stats(file_id)
    return TagView(
        path=catalog.path_of(node.id),
        origin=track.origin,
        relpath=track.relpath,
        format=track.format,
        own=track.tags,
        overrides=catalog.overrides(file_id),
        effective=catalog.effective_tags(file_id, track.tags),
        overlaid=overlay is not None and overlay.header is not None,
        audio_id=catalog.audio_id(file_id),
        plays=plays,
        last_played=last_played,
        moved_from=tuple(f"{o}:{r}" for o, r, _ in catalog.moves_of(file_id)),
        sources=catalog.override_sources(file_id),
        rating=catalog.rating(file_id),
    )


class OverlayEditor:
    """Sets overrides and keeps overlays in step, over one catalog connection."""

    def __init__(
        self, catalog: Catalog, layout: Layout, federation: Federation, extensions: Extensions
    ) -> None:
        self.catalog = catalog
        self.layout = layout
        self.federation = federation
        self.extensions = extensions
        #: With a shared catalog: stores (file id, fields set, fields cleared (all
        #: when None), source) there; the override comes back through the feed,
        #: which makes the overlay and places the file (`refresh`).
        self.publish: Callable[[int, dict[str, str | None], list[str] | None, str], None] | None
        self.publish = None

    def set_tags(
        self,
        path: str,
        assignments: Mapping[str, str | None],
        clear: Sequence[str] = (),
        source: str = "user",
    ) -> tuple[TagView, list[TreeChange]]:
        """Override tags of the file at *path*; *clear* drops overrides (all with "*").

        The new header is made before anything is stored: if it cannot be,
        `TagRefused` says why and the overrides, the tree and the served bytes
        stay as they were. A request that only clears always goes through (what
        overrides remain and cannot be served leave the file as it is)."""
        catalog = self.catalog
        fields = parse_assignments(assignments)
        node = resolve(catalog, path)
        assert node.file_id is not None
        track = catalog.track(node.file_id)
        if track is None:
            raise TagError(f"{path}: no longer in the catalog (removed by a rescan?)")
        overrides = {} if "*" in clear else catalog.overrides(track.id)
        for name in clear:
            overrides.pop(name, None)
        overrides.update(fields)
        try:
            header_length, header = self._synthesize(track, overrides)
        except _Unservable as exc:
            if not fields:  # only clearing: always allowed, whatever is left shows unserved
                log.info("%s: the overrides left cannot be served (%s)", path, exc)
                header_length, header = 0, None
            else:
                raise TagRefused(
                    f"{path}: cannot serve these tags: {exc}; nothing was changed"
                ) from None
        if self.publish is not None:
            self.publish(track.id, fields, None if "*" in clear else list(clear), source)
            return view(catalog, track.id), []
        self.layout.with_overrides = True
        with catalog.transaction():
            if clear:
                catalog.clear_overrides(track.id, () if "*" in clear else list(clear))
            if fields:
                catalog.set_overrides(track.id, fields, source)
            catalog.set_overlay(track.id, track.size, track.mtime_ns, header_length, header)
            changes = self.layout.place_track(track)
        return view(catalog, track.id), changes

    def refresh(self, file_ids: Iterable[int]) -> list[TreeChange]:
        """Make the overlay of each file for its current version, and re-place it
        (by its own tags if the overlay cannot be made)."""
        changes: list[TreeChange] = []
        for file_id in file_ids:
            track = self.catalog.track(file_id)
            if track is None:
                continue
            try:
                header_length, header = self._synthesize(track, self.catalog.overrides(file_id))
            except _Unservable as exc:
                log.warning("%s/%s: its overridden tags cannot be served (%s); shown and served "
                            "with its own tags", track.origin, track.relpath, exc)  # fmt: skip
                header_length, header = 0, None
            with self.catalog.transaction():
                self.catalog.set_overlay(file_id, track.size, track.mtime_ns, header_length, header)
                changes += self.layout.place_track(track)
        return changes

    def _synthesize(
        self, track: Track, overrides: dict[str, str | None]
    ) -> tuple[int, bytes | None]:
        """(original header length, synthesized header) serving *track* with
        *overrides*; (0, None) when its own bytes already do. Raises `_Unservable`."""
        federation = self.federation
        effective = apply_overrides(track.tags, overrides)
        if effective == track.tags:
            return 0, None  # nothing to change in the file's bytes
        writer = self.extensions.header_writer(track.format)
        if writer is None:
            raise _Unservable(f"MusicFS cannot write tags into .{track.format} files "
                              "(no format plugin does); tag the origin file itself")  # fmt: skip
        if track.origin not in federation.origins:
            raise _Unservable(f"its origin {track.origin!r} is not configured")
        try:
            with federation.open(track.origin, track.relpath) as file:
                if (file.size, file.mtime_ns) != (track.size, track.mtime_ns):
                    raise _Unservable("it changed on its origin since the last scan; try again "
                                      "when the rescan has seen it")  # fmt: skip
                length = writer.header_length(file.read, file.size)
                if not 0 <= length <= min(file.size, _MAX_HEADER):
                    raise _Unservable(f"{writer.name} finds no header it can rewrite")
                header = writer.synthesize_for_file(effective, file.read, file.size, length)
        except _Unservable:
            raise
        except NotImplementedError as exc:
            raise _Unservable(f"{writer.name}: {exc}") from None
        except OSError as exc:
            raise _Unservable(f"cannot read it from its origin ({exc})") from None
        except Exception as exc:  # plugin code: a failure must not take the daemon down
            log.warning("%s/%s: %s failed to write a header: %r", track.origin, track.relpath,
                        writer.name, exc)  # fmt: skip
            raise _Unservable(f"{writer.name} failed ({type(exc).__name__}: {exc})") from None
        if not isinstance(header, bytes | bytearray) or not header:
            raise _Unservable(f"{writer.name} returned no header")
        return length, bytes(header)
