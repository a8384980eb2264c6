"""The catalog's schema: its tables, and the numbered migrations that build them.

The schema version is SQLite's ``PRAGMA user_version``. `migrate` takes a catalog
of any older version (down to an empty file, version 0) one step at a time to
`SCHEMA_VERSION`, each step in its own transaction, so a catalog written by any
earlier MusicFS keeps its rows. A catalog from a newer MusicFS is refused, and
so is a damaged file, with what to do (`CatalogError`).

Migrations are never edited once released: a change is a new entry at the end.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from musicfs.core.errors import MusicFSError

log = logging.getLogger(__name__)

ROOT_NODE = 1
SCHEMA_VERSION = 16

_TAG_COLUMNS = """
    title TEXT, artist TEXT, album TEXT, albumartist TEXT, genre TEXT,
    year INTEGER, track INTEGER, tracktotal INTEGER, disc INTEGER, disctotal INTEGER,
    composer TEXT, lyrics TEXT, compilation INTEGER NOT NULL DEFAULT 0,
    duration REAL, bitrate INTEGER, samplerate INTEGER, channels INTEGER,
    has_art INTEGER NOT NULL DEFAULT 0
"""

# The columns of the full-text index (musicfs.core.catalog.search), as the triggers write them.
_FTS = "artist, albumartist, album, title, genre, composer, name"
_FTS_NEW = ", ".join(f"new.{c}" for c in _FTS.split(", "))
_FTS_OLD = ", ".join(f"old.{c}" for c in _FTS.split(", "))

# Marks folder {parent}'s listing changed (see musicfs.core.catalog.listings).
_MARK_CHANGED = (
    "INSERT INTO listings (parent) VALUES ({parent}) ON CONFLICT (parent) DO UPDATE SET"
    " ids = NULL, sizes = NULL, mtimes = NULL, offsets = NULL, names = NULL, checksum = NULL"
    " WHERE ids IS NOT NULL;"
)

# Each entry upgrades the schema from version (index) to version (index + 1).
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE origins (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        location TEXT NOT NULL
    );
    CREATE TABLE files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        origin TEXT NOT NULL,
        reldir TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        format TEXT NOT NULL,
        error TEXT,
        scanned_at REAL NOT NULL,
        {_TAG_COLUMNS},
        UNIQUE (origin, reldir, name)
    );
    CREATE TABLE nodes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        parent INTEGER NOT NULL,
        name TEXT NOT NULL,
        file_id INTEGER,
        UNIQUE (parent, name)
    );
    CREATE INDEX nodes_by_parent ON nodes (parent, id);
    CREATE UNIQUE INDEX nodes_by_file ON nodes (file_id) WHERE file_id IS NOT NULL;
    INSERT INTO nodes (id, parent, name, file_id) VALUES ({ROOT_NODE}, 0, '', NULL);
    """,
    # 2: a file node carries its file's size and mtime, so readdir and getattr
    # read one table (2-3x faster listings of huge directories).
    """
    ALTER TABLE nodes ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN mtime_ns INTEGER NOT NULL DEFAULT 0;
    UPDATE nodes SET
        size = (SELECT size FROM files WHERE files.id = nodes.file_id),
        mtime_ns = (SELECT mtime_ns FROM files WHERE files.id = nodes.file_id)
    WHERE file_id IS NOT NULL;
    """,
    # 3: replicas. Files with one replica key (the same track on two origins)
    # share one node; the node remembers the key it was placed under so the
    # track stays in the tree while any replica of it is left. content_hash is
    # filled when a file is read whole by a content verification (FR-10.5).
    """
    ALTER TABLE files ADD COLUMN replica_key TEXT;
    ALTER TABLE files ADD COLUMN content_hash TEXT;
    ALTER TABLE nodes ADD COLUMN replica_key TEXT;
    CREATE INDEX files_by_replica ON files (replica_key) WHERE replica_key IS NOT NULL;
    CREATE INDEX nodes_by_replica ON nodes (replica_key) WHERE replica_key IS NOT NULL;
    """,
    # 4: change times. Shares are polled, not watched; a tag edit that keeps the
    # size and restores the mtime still moves the ctime. 0 = not known (yet).
    """
    ALTER TABLE files ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: the metadata overlay (FR-5.3). overrides: tag values a user or a
    # metadata plugin set for a file (NULL value: the tag is removed). overlays:
    # the header synthesized from them for one version (size, mtime) of the
    # file; header NULL when its format cannot be overlaid (served unchanged).
    """
    CREATE TABLE overrides (
        file_id INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
        field TEXT NOT NULL,
        value TEXT,
        source TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (file_id, field)
    );
    CREATE TABLE overlays (
        file_id INTEGER PRIMARY KEY REFERENCES files (id) ON DELETE CASCADE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        header_length INTEGER NOT NULL,
        header BLOB
    );
    """,
    # 6: full-text search (FR-14). An FTS5 index over the files' own columns,
    # kept in step by triggers: in the same transaction as the rows, so it is
    # consistent after any crash. The tokenizer folds case and diacritics;
    # prefix indexes make partial words (as typed) quick. search_terms lists
    # the indexed words (for typo corrections).
    f"""
    CREATE VIRTUAL TABLE search USING fts5(
        {_FTS}, content = 'files', content_rowid = 'id',
        tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3 4'
    );
    CREATE VIRTUAL TABLE search_terms USING fts5vocab(search, 'row');
    CREATE TRIGGER files_search_insert AFTER INSERT ON files BEGIN
        INSERT INTO search (rowid, {_FTS}) VALUES (new.id, {_FTS_NEW});
    END;
    CREATE TRIGGER files_search_delete AFTER DELETE ON files BEGIN
        INSERT INTO search (search, rowid, {_FTS}) VALUES ('delete', old.id, {_FTS_OLD});
    END;
    CREATE TRIGGER files_search_update AFTER UPDATE OF {_FTS} ON files BEGIN
        INSERT INTO search (search, rowid, {_FTS}) VALUES ('delete', old.id, {_FTS_OLD});
        INSERT INTO search (rowid, {_FTS}) VALUES (new.id, {_FTS_NEW});
    END;
    INSERT INTO search (search) VALUES ('rebuild');
    """,
    # 7: the access log (smart collections: recently played, most played).
    # One row per open of a file, at most one per file and minute.
    """
    CREATE TABLE plays (
        file_id INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
        at REAL NOT NULL
    );
    CREATE INDEX plays_by_time ON plays (at);
    CREATE INDEX plays_by_file ON plays (file_id, at);
    """,
    # 8: prefetch (FR-19): how often each file was played right after another.
    """
    CREATE TABLE played_after (
        file_id INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
        next_id INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
        count INTEGER NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (file_id, next_id)
    ) WITHOUT ROWID;
    CREATE INDEX played_after_by_next ON played_after (next_id);
    """,
    # 9: search finds files by their overrides too (the metadata overlay): the
    # override values of each file, kept in step by triggers on overrides.
    """
    CREATE VIRTUAL TABLE search_overrides USING fts5(
        text, tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3 4'
    );
    CREATE VIRTUAL TABLE search_override_terms USING fts5vocab(search_overrides, 'row');
    CREATE TRIGGER overrides_search_insert AFTER INSERT ON overrides BEGIN
        DELETE FROM search_overrides WHERE rowid = new.file_id;
        INSERT INTO search_overrides (rowid, text) SELECT new.file_id, group_concat(value, ' ')
            FROM overrides WHERE file_id = new.file_id AND value IS NOT NULL;
    END;
    CREATE TRIGGER overrides_search_delete AFTER DELETE ON overrides BEGIN
        DELETE FROM search_overrides WHERE rowid = old.file_id;
        INSERT INTO search_overrides (rowid, text) SELECT old.file_id, group_concat(value, ' ')
            FROM overrides WHERE file_id = old.file_id AND value IS NOT NULL
            HAVING count(*) > 0;
    END;
    INSERT INTO search_overrides (rowid, text) SELECT file_id, group_concat(value, ' ')
        FROM overrides WHERE value IS NOT NULL GROUP BY file_id;
    """,
    # 10: a directory listing reads the index alone (it holds every column a
    # listing returns), not a table row per entry: 100,000 entries come back in
    # about half the time.
    """
    DROP INDEX nodes_by_parent;
    CREATE INDEX nodes_by_parent ON nodes (parent, id, name, file_id, size, mtime_ns);
    """,
    # 11: indexers (MPD, beets, media servers) notice changes by mtime. A node's
    # mtime is the one it is served with: it moves forward whenever its bytes
    # (a file) or its listing (a folder) change. version fingerprints what a file
    # node serves (file, size, mtime, ctime, overlay header), so a change is told
    # from a re-placement that changed nothing. Folders get their own mtime,
    # kept across mounts (until now they showed the mount's start time).
    """
    ALTER TABLE nodes ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    UPDATE nodes SET mtime_ns =
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) * 1000000
    WHERE file_id IS NULL;
    """,
    # 12: identity across moves (issue 15.1). audio_id fingerprints a file's
    # audio payload (musicfs.core.tags.identity). departed keeps the user data of
    # a file that left the catalog (one row per file, the rows of each user-data
    # table as JSON) until a file with the same audio turns up; moves remembers
    # where a file was before, so an old path (a playlist entry) still finds it.
    """
    ALTER TABLE files ADD COLUMN audio_id TEXT;
    CREATE INDEX files_by_audio_id ON files (audio_id) WHERE audio_id IS NOT NULL;
    CREATE TABLE departed (
        id INTEGER PRIMARY KEY,
        audio_id TEXT NOT NULL,
        origin TEXT NOT NULL,
        relpath TEXT NOT NULL,
        data TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX departed_by_audio_id ON departed (audio_id);
    CREATE TABLE moves (
        origin TEXT NOT NULL,
        relpath TEXT NOT NULL,
        file_id INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
        at REAL NOT NULL,
        PRIMARY KEY (origin, relpath)
    );
    CREATE INDEX moves_by_file ON moves (file_id, at);
    """,
    # 13: playlists (issue 15.3): found on origins (.m3u/.m3u8) or imported; each
    # entry keeps its original text and the file it matched (NULL: none, or the
    # file went away), so a playlist never loses an entry silently.
    # playlist_files: where an origin's playlist file is, and the version read.
    """
    CREATE TABLE playlists (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL
    );
    CREATE TABLE playlist_entries (
        playlist INTEGER NOT NULL REFERENCES playlists (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        file_id INTEGER REFERENCES files (id) ON DELETE SET NULL,
        text TEXT NOT NULL,
        PRIMARY KEY (playlist, position)
    );
    CREATE INDEX playlist_entries_by_file ON playlist_entries (file_id);
    CREATE TABLE playlist_files (
        playlist INTEGER PRIMARY KEY REFERENCES playlists (id) ON DELETE CASCADE,
        origin TEXT NOT NULL,
        reldir TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        UNIQUE (origin, reldir, name)
    );
    """,
    # 14: pins for offline (issue 15.2): what the user asked to keep (a folder of
    # the tree, a collection, a search, an import), and the tracks each request
    # pins now, keyed by file id (identity.py carries them with a file's other
    # user data).
    """
    CREATE TABLE pin_requests (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        at REAL NOT NULL,
        UNIQUE (kind, value)
    );
    CREATE TABLE pins (
        file_id INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
        request INTEGER NOT NULL REFERENCES pin_requests (id) ON DELETE CASCADE,
        PRIMARY KEY (file_id, request)
    ) WITHOUT ROWID;
    CREATE INDEX pins_by_request ON pins (request);
    """,
    # 15: ratings (0-100, iTunes' scale: 20 a star) and what each import added to
    # the access log, per file and source (so importing again adds only what is new).
    """
    CREATE TABLE ratings (
        file_id INTEGER PRIMARY KEY REFERENCES files (id) ON DELETE CASCADE,
        value INTEGER NOT NULL CHECK (value BETWEEN 0 AND 100),
        source TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE imported_plays (
        file_id INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
        source TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (file_id, source)
    );
    """,
    # 16: packed listings of big folders (musicfs.core.catalog.listings). A row
    # with NULL columns marks a folder changed since it was packed: the
    # triggers clear its columns in the same transaction as any change its
    # listing shows. Folders big now (PACKED_MIN as of schema 16) are marked,
    # to be packed by the next scan. checksum: CRC-32 of the five columns.
    f"""
    CREATE TABLE listings (
        parent INTEGER PRIMARY KEY,
        ids BLOB, sizes BLOB, mtimes BLOB, offsets BLOB, names BLOB, checksum INTEGER
    );
    CREATE TRIGGER nodes_listing_insert AFTER INSERT ON nodes BEGIN
        {_MARK_CHANGED.format(parent="new.parent")}
    END;
    CREATE TRIGGER nodes_listing_delete AFTER DELETE ON nodes BEGIN
        {_MARK_CHANGED.format(parent="old.parent")}
        DELETE FROM listings WHERE old.file_id IS NULL AND parent = old.id;
    END;
    CREATE TRIGGER nodes_listing_update AFTER UPDATE OF parent, name, file_id, size, mtime_ns
    ON nodes WHEN old.parent IS NOT new.parent OR old.name IS NOT new.name
        OR (old.file_id IS NULL) IS NOT (new.file_id IS NULL) OR old.size IS NOT new.size
        OR old.mtime_ns IS NOT new.mtime_ns
    BEGIN
        {_MARK_CHANGED.format(parent="old.parent")}
        {_MARK_CHANGED.format(parent="new.parent")}
    END;
    INSERT INTO listings (parent) SELECT parent FROM nodes GROUP BY parent HAVING count(*) >= 1000;
    """,
)


def damaged(problem: str, *, certain: bool = False) -> str:
    """What to tell of a catalog file SQLite cannot read: the *problem*, and the
    fix. *certain*: a check found damage (else it may be something else)."""
    fix = "move it away; the next mount rebuilds it from the origins."
    return (
        f"{problem}. {fix.capitalize()}" if certain else f"{problem}. If the file is damaged, {fix}"
    )


def first_problem(verdict: str) -> str:
    """The first line of a quick_check verdict that names a problem."""
    lines = [line for line in verdict.splitlines() if line and not line.startswith("***")]
    return lines[0] if lines else verdict


class CatalogError(MusicFSError):
    """The catalog database cannot be used; the message says what to do."""


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the catalog on *conn* (the file *path*) to `SCHEMA_VERSION`."""
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise CatalogError(
            f"catalog {path} was written by a newer MusicFS (schema {version}, "
            f"this one knows {SCHEMA_VERSION}); upgrade MusicFS or use another --cache-dir"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        log.info("migrating catalog %s to schema version %d", path, target)
        try:
            conn.executescript(
                "BEGIN IMMEDIATE;"
                + MIGRATIONS[target - 1]
                + f"; PRAGMA user_version = {target}; COMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def check_readable(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse (read-only) a catalog of another schema version: it cannot be migrated here."""
    version = schema_version(conn)
    if version != SCHEMA_VERSION:
        raise CatalogError(
            f"catalog {path} has schema version {version}, "
            f"this MusicFS reads version {SCHEMA_VERSION}; mount it once to upgrade it"
        )
