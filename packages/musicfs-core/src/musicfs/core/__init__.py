"""MusicFS core: the catalog, scanner, path templates and the read-only FUSE filesystem.

Use it as a library without mounting anything::

    from pathlib import Path
    from musicfs.core import Catalog

    # The catalog of a mount: the cache dir `musicfs status --json` names.
    with Catalog.open(Path(cache_dir) / "catalog.sqlite3", readonly=True) as catalog:
        for track in catalog.tracks(artist="Björk"):
            print(track.relpath, track.tags.title)

Names are imported on first use, so reading a catalog does not load the FUSE
binding (pyfuse3, trio) and reading the config does not load mutagen.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from musicfs.core.catalog.layout import Layout
    from musicfs.core.catalog.store import Catalog, CatalogError, Node, Track
    from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate, TemplateError
    from musicfs.core.config.settings import Config, ConfigError, OriginConfig, load_config
    from musicfs.core.errors import MusicFSError
    from musicfs.core.model import AUDIO_EXTENSIONS, TrackTags
    from musicfs.core.mount.assembly import MountState, StartupError
    from musicfs.core.mount.service import MusicFS
    from musicfs.core.origins import LocalOrigin, OriginUnavailable
    from musicfs.core.sync.scanner import Scanner, ScanReport
    from musicfs.core.tags.reader import UnreadableFile, read_tags

# Where each public name lives. Imported on first use, so that `import
# musicfs.core.config.settings` (the CLI) does not pay for mutagen, trio or pyfuse3.
_HOMES = {
    "AUDIO_EXTENSIONS": "model",
    "DEFAULT_TEMPLATE": "catalog.templates",
    "Catalog": "catalog.store",
    "CatalogError": "catalog.store",
    "Config": "config.settings",
    "ConfigError": "config.settings",
    "Layout": "catalog.layout",
    "LocalOrigin": "origins",
    "MountState": "mount.assembly",
    "MusicFS": "mount.service",
    "MusicFSError": "errors",
    "Node": "catalog.store",
    "OriginConfig": "config.settings",
    "OriginUnavailable": "origins",
    "PathTemplate": "catalog.templates",
    "ScanReport": "sync.scanner",
    "Scanner": "sync.scanner",
    "StartupError": "mount.assembly",
    "TemplateError": "catalog.templates",
    "Track": "catalog.store",
    "TrackTags": "model",
    "UnreadableFile": "tags.reader",
    "load_config": "config.settings",
    "read_tags": "tags.reader",
}

__all__ = [
    "AUDIO_EXTENSIONS",
    "DEFAULT_TEMPLATE",
    "Catalog",
    "CatalogError",
    "Config",
    "ConfigError",
    "Layout",
    "LocalOrigin",
    "MountState",
    "MusicFS",
    "MusicFSError",
    "Node",
    "OriginConfig",
    "OriginUnavailable",
    "PathTemplate",
    "ScanReport",
    "Scanner",
    "StartupError",
    "TemplateError",
    "Track",
    "TrackTags",
    "UnreadableFile",
    "load_config",
    "read_tags",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'musicfs.core' has no attribute {name!r}")
    return getattr(importlib.import_module(f"musicfs.core.{home}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
