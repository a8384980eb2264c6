"""The format plugins MusicFS ships: the metadata overlay for FLAC, MP3, Ogg and MP4.

Each rewrites a file's header so that it holds the track's effective tags
(SPEC §3 "Metadata overlay"); the audio payload after the header is served
unchanged. Tags of formats without a plugin here cannot be overridden.
"""

from __future__ import annotations

from musicfs.plugins.api import FormatPlugin
from musicfs.plugins.builtin.flac import FlacFormat
from musicfs.plugins.builtin.mp3 import Mp3Format
from musicfs.plugins.builtin.mp4 import Mp4Format
from musicfs.plugins.builtin.ogg import OggFormat

#: The built-in format plugins, in the order the plugin manager registers them.
BUILTIN_FORMATS: list[type[FormatPlugin]] = [FlacFormat, Mp3Format, OggFormat, Mp4Format]

__all__ = ["BUILTIN_FORMATS", "FlacFormat", "Mp3Format", "Mp4Format", "OggFormat"]
