"""The metadata overlay (FR-5.3): corrected tags served without touching the origin.

A file's *effective* tags are its own with the catalog's overrides applied
(``musicfs tag set``, or a metadata plugin). The tree places the file by them,
and the bytes served are ``synthesized header + the file's payload``: the
header is written by the format's `HeaderWriter` (a format plugin; FLAC and MP3
are built in) from the file's own header, once per version of the file, and
stored in the catalog (`Catalog.set_overlay`), so stat knows the served size
before anything is opened. A format without a writer, or a file its writer
refuses, is served unchanged (its path still follows the effective tags).

`refresh` (re)makes the overlays of some files and re-places them; the daemon
calls it after a tag edit and after scans (a file that changed needs a new
header). This module reads origins and writes the catalog: call it from a
worker thread, with that thread's own catalog connection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from musicfs.core.catalog import Catalog, Node, Track
from musicfs.core.extensions import Extensions
from musicfs.core.federation import Federation
from musicfs.core.layout import Layout, TreeChange
from musicfs.core.model import TrackTags, override_value

log = logging.getLogger(__name__)

_MAX_HEADER = 16 * 1024 * 1024  # a header bigger than this is a damaged file


class TagError(ValueError):
    """A tag request cannot be done; the message says why and what to do."""


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
    return TagView(
        path=catalog.path_of(node.id),
        origin=track.origin,
        relpath=track.relpath,
        format=track.format,
        own=track.tags,
        overrides=catalog.overrides(file_id),
        effective=catalog.effective_tags(file_id, track.tags),
        overlaid=overlay is not None and overlay.header is not None,
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

    def set_tags(
        self,
        path: str,
        assignments: Mapping[str, str | None],
        clear: Sequence[str] = (),
        source: str = "user",
    ) -> tuple[TagView, list[TreeChange]]:
        """Override tags of the file at *path*; *clear* drops overrides (all with "*")."""
        catalog = self.catalog
        fields = parse_assignments(assignments)
        node = resolve(catalog, path)
        assert node.file_id is not None
        with catalog.transaction():
            if clear:
                catalog.clear_overrides(node.file_id, () if "*" in clear else list(clear))
            if fields:
                catalog.set_overrides(node.file_id, fields, source)
        self.layout.with_overrides = True
        changes = self.refresh([node.file_id])
        return view(catalog, node.file_id), changes

    def refresh(self, file_ids: Iterable[int]) -> list[TreeChange]:
        """Make the overlay of each file for its current version, and re-place it."""
        changes: list[TreeChange] = []
        for file_id in file_ids:
            track = self.catalog.track(file_id)
            if track is None:
                continue
            header_length, header = self._synthesize(track)
            with self.catalog.transaction():
                self.catalog.set_overlay(file_id, track.size, track.mtime_ns, header_length, header)
                changes += self.layout.place_track(track)
        return changes

    def _synthesize(self, track: Track) -> tuple[int, bytes | None]:
        """(original header length, synthesized header) — (0, None) to serve as is."""
        catalog, federation = self.catalog, self.federation
        overrides = catalog.overrides(track.id)
        writer = self.extensions.header_writer(track.format)
        if not overrides or writer is None or track.origin not in federation.origins:
            return 0, None
        effective = catalog.effective_tags(track.id, track.tags)
        where = f"{track.origin}/{track.relpath}"
        try:
            with federation.open(track.origin, track.relpath) as file:
                if (file.size, file.mtime_ns) != (track.size, track.mtime_ns):
                    return 0, None  # changed since its scan: the next scan brings it back
                length = writer.header_length(file.read, file.size)
                if not 0 <= length <= min(file.size, _MAX_HEADER):
                    log.info("%s: no header %s can rewrite; served unchanged", where, writer.name)
                    return 0, None
                original = file.read(0, length) if length else b""
        except OSError as exc:
            log.warning("%s: cannot read its header for the overlay (%s); served unchanged",
                        where, exc)  # fmt: skip
            return 0, None
        try:
            header = writer.synthesize_header(effective, original)
        except NotImplementedError as exc:
            log.info("%s: %s cannot overlay it (%s); served unchanged", where, writer.name, exc)
            return 0, None
        except Exception as exc:  # plugin code: a failure must not take the daemon down
            log.warning("%s: %s failed to write a header (%s); served unchanged",
                        where, writer.name, exc)  # fmt: skip
            return 0, None
        if not isinstance(header, bytes | bytearray) or not header:
            log.warning("%s: %s returned no header; served unchanged", where, writer.name)
            return 0, None
        return length, bytes(header)
