"""The shared catalog's errors: each names the server (never a password) and the fix."""

from __future__ import annotations

from musicfs.core.errors import MusicFSError


class SharedCatalogError(MusicFSError):
    """The shared catalog cannot be used as asked (a bad URL, a schema from a
    newer MusicFS, a replica of another catalog); the message says what to do."""


class SharedCatalogUnavailable(SharedCatalogError):
    """The PostgreSQL server cannot be reached, refused us, or dropped the
    connection. Nothing was written by the call that raised it; the next call
    connects again."""


class ReplicaBehind(SharedCatalogError):
    """The changes a replica still needs were pruned from the feed: it must be
    copied again (`musicfs.core.shared.feed.Replica.sync` does so)."""
