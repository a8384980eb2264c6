"""The plugin API: the classes a plugin subclasses and the values it exchanges.

A plugin is a class deriving from one of `OriginPlugin`, `MetadataPlugin` or
`FormatPlugin` (all `Plugin`s). It names itself (`name`, `version`) and the
plugin API it was written against (`api_version`, see
`musicfs.plugins.version`); the host calls `init` with the plugin's table from
the config file once it is loaded, and `shutdown` before it is unloaded or
reloaded.

- `OriginPlugin.create` returns a `musicfs.core.origins.Origin`: a place to
  read audio files from, configured as ``[[origins]] type = "<origin_type>"``.
- `MetadataPlugin.lookup` proposes tags for a track (``musicfs tag lookup``);
  what the user applies becomes catalog overrides.
- `FormatPlugin` reads the tags of a format mutagen does not know (`parse`),
  and serves corrected tags without touching the origin (the metadata overlay):
  `header_length` says where a file's header ends, `synthesize_header` writes a
  new header holding the effective tags; the payload after it is served as is
  (`synthesize_for_file` when the tags are not all in the header).

Everything here is plain Python: no import of the host's internals beyond
`musicfs.core`'s value types, so a plugin keeps working across MusicFS
releases that keep `API_VERSION`'s major.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar

from musicfs.core.errors import MusicFSError
from musicfs.core.model import TrackTags
from musicfs.core.origins.base import Origin
from musicfs.plugins.version import API_VERSION

#: The tags of one file, as a format plugin reads them (the catalog's tag fields).
AudioMeta = TrackTags

#: read(offset, size) -> bytes: ranged reads of a file, as origins offer them.
RangedRead = Callable[[int, int], bytes]


class PluginError(MusicFSError):
    """A plugin failed: raised by plugins, and by the hosts about plugins."""


class Plugin(abc.ABC):
    """What every plugin is: a name, a version, the API it targets, a lifecycle."""

    #: Unique among loaded plugins; used in the config (``[plugins.<name>]``) and CLI.
    name: ClassVar[str]
    #: The plugin's own version (free-form, shown by ``musicfs plugin list``).
    version: ClassVar[str] = "0.0.0"
    #: The plugin API this plugin was written for (``MAJOR.MINOR``).
    api_version: ClassVar[str] = API_VERSION

    def init(self, config: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Called once after loading, with the ``[plugins.<name>]`` config table."""

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Called before the plugin is unloaded or reloaded: release what it holds."""


class OriginPlugin(Plugin):
    """Provides a kind of origin (``[[origins]] type = "<origin_type>"``)."""

    #: The ``type`` an ``[[origins]]`` table names to use this plugin.
    origin_type: ClassVar[str]

    @abc.abstractmethod
    def create(self, origin_id: str, config: Mapping[str, Any]) -> Origin:
        """An origin for one ``[[origins]]`` table (*config*: its ``options`` table)."""


@dataclass(frozen=True, slots=True)
class MetadataQuery:
    """What is known of a track when a metadata plugin is asked about it."""

    origin: str
    relpath: str
    format: str
    tags: AudioMeta  # the file's own tags (without overrides)


@dataclass(frozen=True, slots=True)
class ExternalMetadata:
    """Tags a metadata plugin proposes, by catalog field name (``title``, ``year``...)."""

    fields: Mapping[str, str]
    source: str = ""  # where they come from (a database, a URL), shown to the user
    confidence: float = 1.0  # 0..1


class MetadataPlugin(Plugin):
    """Proposes tags for tracks from somewhere else (a database, a web service)."""

    @abc.abstractmethod
    def lookup(self, query: MetadataQuery) -> ExternalMetadata | None:
        """Tags for the track *query* describes, or None if this plugin knows none."""


class FormatPlugin(Plugin):
    """Reads, and optionally rewrites the header of, one or more audio formats."""

    #: File extensions handled, lower case without the dot (``("xyz",)``).
    extensions: ClassVar[tuple[str, ...]]

    def can_handle(self, extension: str) -> bool:
        return extension.lower().lstrip(".") in self.extensions

    @abc.abstractmethod
    def parse(self, reader: BinaryIO) -> AudioMeta:
        """The tags of the file *reader* holds (seekable, read-only). Raise
        `PluginError` (or ValueError) for a file that is not of this format."""

    def header_length(self, read: RangedRead, size: int) -> int:
        """Bytes before the audio payload of a file of *size* bytes. 0: the file
        has no header (e.g. an MP3 without ID3v2); `synthesize_header` is then
        given ``b""`` and may write one to put in front, or refuse."""
        return 0

    def synthesize_header(self, meta: AudioMeta, original_header: bytes) -> bytes:
        """A header holding *meta* (the effective tags: the file's own with the
        user's overrides applied) to serve in place of *original_header*.

        Write only what differs from the tags *original_header* holds, and keep
        everything else (pictures, other fields, padding). A field of *meta*
        that is None where the original has a value is to be removed. Raise
        `NotImplementedError` if this format cannot be overlaid; the file is
        then served unchanged.
        """
        raise NotImplementedError(f"{self.name} cannot rewrite headers")

    def synthesize_for_file(
        self, meta: AudioMeta, read: RangedRead, size: int, header_length: int
    ) -> bytes:
        """The header to serve in place of the first *header_length* bytes (as
        `header_length` measured them) of the file *read* reads (*size* bytes).

        By default `synthesize_header` of those bytes. A format whose tags are
        not all in front of the audio (MP4 with its ``moov`` atom at the end)
        overrides this to read what else it needs; same rules otherwise.
        """
        return self.synthesize_header(meta, read(0, header_length) if header_length else b"")


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """What a WASM plugin may use (SPEC §8). Enforced by the WASM host."""

    max_memory_mb: int = 64
    max_cpu_time_ms: int = 1000  # per call into the plugin
    allow_network: bool = False
    allow_filesystem: bool = False


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One loaded plugin, as ``musicfs plugin list`` shows it."""

    name: str
    version: str
    api_version: str
    kinds: tuple[str, ...]  # "origin", "metadata", "format"
    host: str  # "builtin", "native" or "wasm"
    source: str  # module path, file or entry point it came from
    details: Mapping[str, str] = field(default_factory=dict)  # extensions, origin type...
