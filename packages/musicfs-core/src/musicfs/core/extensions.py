"""What plugins add to the core, as the core sees it (the core never imports plugins).

The daemon builds an `Extensions` from its plugin manager (`musicfs.plugins`)
and hands it to `MusicFS`. The core asks it, at the moment it needs to:

- `origin_maker`: who builds an origin of a type the core does not know
  (``[[origins]] type = "<origin_type>"``);
- `tag_parser`: who reads the tags of files with an extension mutagen does not
  handle (`musicfs.core.model.AUDIO_EXTENSIONS` are always read with mutagen);
- `header_writer`: who rewrites the header of a format for the metadata overlay.

Lookups happen per call, never cached by the core, so a plugin reloaded while
mounted takes effect at the next scan, open or tag edit (hot reload). The
protocols below are what the core calls; `musicfs.plugins.api` defines the
classes plugin authors subclass, which satisfy them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, Protocol

from musicfs.core.model import TrackTags
from musicfs.core.origins.base import Origin

#: read(offset, size) -> bytes
RangedRead = Callable[[int, int], bytes]


class OriginMaker(Protocol):
    """Builds origins of one type (an `OriginPlugin`)."""

    @property
    def name(self) -> str: ...

    def create(self, origin_id: str, config: Mapping[str, Any]) -> Origin: ...


class TagParser(Protocol):
    """Reads the tags of one format (a `FormatPlugin`)."""

    @property
    def name(self) -> str: ...

    def parse(self, reader: BinaryIO) -> TrackTags: ...


class HeaderWriter(Protocol):
    """Rewrites the header of one format for the overlay (a `FormatPlugin`)."""

    @property
    def name(self) -> str: ...

    def header_length(self, read: RangedRead, size: int) -> int: ...

    def synthesize_header(self, meta: TrackTags, original_header: bytes) -> bytes: ...

    def synthesize_for_file(
        self, meta: TrackTags, read: RangedRead, size: int, header_length: int
    ) -> bytes: ...


class Extensions:
    """No plugins: the built-in origins and mutagen, no overlay. Subclassed by
    the plugin manager's view."""

    def origin_maker(self, origin_type: str) -> OriginMaker | None:
        return None

    def tag_parser(self, extension: str) -> TagParser | None:
        return None

    def header_writer(self, fmt: str) -> HeaderWriter | None:
        return None

    def extra_extensions(self) -> frozenset[str]:
        """Extensions plugins read, to be listed by scans besides the configured ones."""
        return frozenset()
