"""The shared catalog's PostgreSQL schema: its tables, and the numbered
migrations that build them (like `musicfs.core.catalog.schema` for SQLite).

The version is the one row of ``schema_version``. `migrate` takes a database
of any older version (down to an empty one, version 0) to `SCHEMA_VERSION` in
one transaction, holding an advisory lock so that two machines mounting at once
do not migrate twice. A database of a newer MusicFS is refused.

What the tables hold:

* ``meta``: ``catalog_id``, a random id made with the database; a replica
  remembers it, so it never applies the sequence numbers of another catalog;
* ``tracks``: one row per file on an origin, as SQLite's ``files`` (its id is
  the replica's ``files.id``, so user data names one track by one id on every
  machine); booleans are booleans, numbers past 32 bits are bigint;
* ``overrides``, ``plays``, ``ratings``, ``pins`` (with ``pin_requests``, what
  the user asked to pin), ``imported_plays`` (the running total an import from
  another program last brought): the user data, keyed by ``file_id`` like SQLite's;
  ``departed``: the user data of removed tracks, waiting for their audio to
  come back; ``moves``: where tracks that took over such data were before;
* ``collections``: smart collections defined in the catalog (name -> rule, the
  keys of a ``[[collections]]`` table), shown by every mount; ``playlists``:
  the playlists imports brought (name -> source, entries: [track id or null,
  the entry's text]); those read from origin files stay with each machine;
* ``changes``: the change feed. ``seq`` grows with every write; a write takes
  the feed lock (`FEED_LOCK`) just before recording its changes and keeps it to
  its commit, so sequence numbers are handed out in commit order and a replica
  that has seen ``seq`` N has seen every change before it;
* ``play_batches``: the ids of the batches of plays a machine sent, so that a
  batch sent again (the machine crashed before forgetting it) counts once;
* ``replicas``: the last change each replica applied, and when it said so, so
  that the feed can be pruned of what every replica has applied.

Migrations are never edited once released: a change is a new entry at the end.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from musicfs.core.shared.errors import SharedCatalogError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3

#: Advisory lock keys (pg_advisory_xact_lock(hashtext(...))).
MIGRATE_LOCK = "musicfs.schema"
FEED_LOCK = "musicfs.changes"
#: The channel every write notifies, with its last sequence number as payload.
CHANNEL = "musicfs_changes"

#: Columns of ``tracks`` besides ``id``, in the order the store writes them.
TRACK_COLUMNS: tuple[str, ...] = (
    "origin", "reldir", "name", "size", "mtime_ns", "ctime_ns", "format", "error",
    "scanned_at", "audio_id",
    "title", "artist", "album", "albumartist", "genre", "year", "track", "tracktotal",
    "disc", "disctotal", "composer", "lyrics", "compilation", "duration", "bitrate",
    "samplerate", "channels", "has_art",
)  # fmt: skip

# Each entry upgrades the schema from version (index) to version (index + 1).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
    INSERT INTO meta (key, value) VALUES ('catalog_id', gen_random_uuid()::text);
    CREATE TABLE tracks (
        id bigserial PRIMARY KEY,
        origin text NOT NULL,
        reldir text NOT NULL,
        name text NOT NULL,
        size bigint NOT NULL,
        mtime_ns bigint NOT NULL,
        ctime_ns bigint NOT NULL DEFAULT 0,
        format text NOT NULL,
        error text,
        scanned_at double precision NOT NULL,
        audio_id text,
        title text, artist text, album text, albumartist text, genre text,
        year integer, track integer, tracktotal integer, disc integer, disctotal integer,
        composer text, lyrics text, compilation boolean NOT NULL DEFAULT false,
        duration double precision, bitrate bigint, samplerate bigint, channels bigint,
        has_art boolean NOT NULL DEFAULT false,
        UNIQUE (origin, reldir, name)
    );
    CREATE INDEX tracks_by_audio_id ON tracks (audio_id) WHERE audio_id IS NOT NULL;
    CREATE TABLE overrides (
        file_id bigint NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
        field text NOT NULL,
        value text,
        source text NOT NULL DEFAULT '',
        PRIMARY KEY (file_id, field)
    );
    CREATE TABLE plays (
        file_id bigint NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
        at double precision NOT NULL
    );
    CREATE INDEX plays_by_file ON plays (file_id, at);
    CREATE TABLE departed (
        id bigserial PRIMARY KEY,
        audio_id text NOT NULL,
        origin text NOT NULL,
        relpath text NOT NULL,
        data jsonb NOT NULL,
        at double precision NOT NULL
    );
    CREATE INDEX departed_by_audio_id ON departed (audio_id);
    CREATE TABLE changes (
        seq bigserial PRIMARY KEY,
        kind text NOT NULL,
        track_id bigint,
        payload jsonb NOT NULL DEFAULT '{}',
        at timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 2: the rest of the user data (ratings, pins, collections defined in the
    # catalog, the play counts imports last brought) and where moved tracks
    # were (``moves``: what named a track by its old path still finds it on
    # every machine).
    """
    CREATE TABLE ratings (
        file_id bigint PRIMARY KEY REFERENCES tracks (id) ON DELETE CASCADE,
        value integer NOT NULL CHECK (value BETWEEN 0 AND 100),
        source text NOT NULL DEFAULT ''
    );
    CREATE TABLE pin_requests (
        id bigserial PRIMARY KEY,
        kind text NOT NULL,
        value text NOT NULL,
        at double precision NOT NULL,
        UNIQUE (kind, value)
    );
    CREATE TABLE pins (
        file_id bigint NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
        request bigint NOT NULL REFERENCES pin_requests (id) ON DELETE CASCADE,
        PRIMARY KEY (file_id, request)
    );
    CREATE INDEX pins_by_request ON pins (request);
    CREATE TABLE collections (
        name text PRIMARY KEY,
        rule jsonb NOT NULL,
        at double precision NOT NULL
    );
    CREATE TABLE moves (
        origin text NOT NULL,
        relpath text NOT NULL,
        file_id bigint NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
        at double precision NOT NULL,
        PRIMARY KEY (origin, relpath)
    );
    CREATE INDEX moves_by_file ON moves (file_id, at);
    CREATE TABLE playlists (
        name text PRIMARY KEY,
        source text NOT NULL,
        entries jsonb NOT NULL,
        at double precision NOT NULL
    );
    CREATE TABLE imported_plays (
        file_id bigint NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
        source text NOT NULL,
        count integer NOT NULL,
        PRIMARY KEY (file_id, source)
    );
    """,
    # 3: plays sent once (a batch id per send) and the replicas' positions (feed pruning).
    """
    CREATE TABLE play_batches (
        id text PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE replicas (
        id text PRIMARY KEY,
        applied_seq bigint NOT NULL,
        seen_at timestamptz NOT NULL DEFAULT now()
    );
    """,
)


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The schema version of the database (0: no MusicFS tables yet)."""
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: psycopg.Connection[Any], server: str) -> int:
    """Bring the database on *conn* (at *server*, for messages) to
    `SCHEMA_VERSION`; return the version it had."""
    with conn.transaction():
        # Up to date (every connection but the first after an upgrade): nothing
        # to write, so a server taking no writes (a read-only standby) or a role
        # without CREATE rights can still be followed.
        if schema_version(conn) == SCHEMA_VERSION:
            return SCHEMA_VERSION
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (MIGRATE_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        version = schema_version(conn)
        if version > SCHEMA_VERSION:
            raise SharedCatalogError(
                f"shared catalog {server} was written by a newer MusicFS (schema {version}, "
                f"this one knows {SCHEMA_VERSION}); upgrade MusicFS on this machine"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            log.info("migrating shared catalog %s to schema version %d", server, target)
            conn.execute(MIGRATIONS[target - 1].encode())
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (target,))
    return version
