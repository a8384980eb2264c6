"""The catalog: one SQLite database that is the source of truth for the tree.

It holds three things (DESIGN §1-2):

* ``files`` — every audio file seen on an origin, keyed by (origin, directory,
  name), with its size, mtime and tags (or the error that stopped us reading them);
* ``nodes`` — the virtual tree: one row per directory or file, keyed by
  (parent, name). A node's id is its inode number, so lookup, getattr and readdir
  are each one indexed query and nothing about the library lives in memory;
* ``settings`` — small key/value facts, such as the template the tree was built with.

Schema changes go through numbered migrations (``PRAGMA user_version``).
The database runs in WAL mode: the filesystem reads from its own connection
while the scanner writes from another, each in its own thread.

Placing tracks into the tree (templates, unique names) is `musicfs.core.catalog.layout`'s
job; this module only stores and fetches rows.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from musicfs.core.errors import MusicFSError
from musicfs.core.model import (
    TAG_FIELDS,
    FileStat,
    ScannedFile,
    TrackTags,
    apply_overrides,
    valid_text,
)

log = logging.getLogger(__name__)

ROOT_NODE = 1
SCHEMA_VERSION = 11

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

# A page of a directory listing; answered from the index nodes_by_parent alone.
LISTING_QUERY = (
    "SELECT id, name, file_id, size, mtime_ns FROM nodes "
    "WHERE parent = ? AND id > ? ORDER BY id LIMIT ?"
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


class Node(NamedTuple):
    """One entry of the virtual tree. ``file_id`` is None for a directory.

    A named tuple rather than a dataclass: readdir builds one per entry, and
    a directory may have 100,000 of them.
    """

    id: int
    parent: int
    name: str
    file_id: int | None
    size: int
    mtime_ns: int

    @property
    def is_dir(self) -> bool:
        return self.file_id is None


@dataclass(frozen=True, slots=True)
class Track:
    """A catalogued audio file: where it lives and what its tags say."""

    id: int
    origin: str
    relpath: str
    size: int
    mtime_ns: int
    format: str
    tags: TrackTags
    error: str | None
    content_hash: str | None = None  # of the whole file, once verified or cached
    ctime_ns: int = 0  # 0: not known (the origin has none)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Track:
        return cls(
            id=row["id"],
            origin=row["origin"],
            relpath=join_relpath(row["reldir"], row["name"]),
            size=row["size"],
            mtime_ns=row["mtime_ns"],
            format=row["format"],
            tags=TrackTags.from_row(row),
            error=row["error"],
            content_hash=row["content_hash"],
            ctime_ns=row["ctime_ns"],
        )


class Overlay(NamedTuple):
    """A synthesized header to serve in place of the file's first *header_length*
    bytes; *header* None: the format cannot be overlaid, serve the file as is."""

    header_length: int
    header: bytes | None

    def size(self, file_size: int) -> int:
        """Bytes served for a file of *file_size* bytes."""
        if self.header is None:
            return file_size
        return file_size - self.header_length + len(self.header)


@dataclass(frozen=True, slots=True)
class KnownFile:
    """What the catalog remembers of a file, to tell whether it changed."""

    id: int
    size: int
    mtime_ns: int
    ctime_ns: int

    def changed(self, st: FileStat) -> bool:
        """Whether *st* describes another version than the one catalogued."""
        if self.size != st.size or self.mtime_ns != st.mtime_ns:
            return True
        return bool(self.ctime_ns and st.ctime_ns and self.ctime_ns != st.ctime_ns)


def replica_key(scanned: ScannedFile) -> str | None:
    """What makes two files one track on two origins: the same format, size,
    duration and identifying tags (FR-13). None for a file whose tags could not
    be read, or that has no title: such files are never merged."""
    tags = scanned.tags
    if scanned.error is not None or not tags.title:
        return None
    duration = f"{tags.duration:.1f}" if tags.duration is not None else ""
    fields = (scanned.format, str(scanned.stat.size), duration, tags.artist, tags.album,
              tags.title, tags.track, tags.disc)  # fmt: skip
    return valid_text("\x1f".join("" if f is None else str(f).casefold() for f in fields))


def split_relpath(relpath: str) -> tuple[str, str]:
    reldir, _, name = relpath.rpartition("/")
    return reldir, name


def join_relpath(reldir: str, name: str) -> str:
    return f"{reldir}/{name}" if reldir else name


_NODE_SELECT = "SELECT n.id, n.parent, n.name, n.file_id, n.size, n.mtime_ns FROM nodes n "


class Catalog:
    """A connection to the catalog database. Use one per thread.

    Open with `Catalog.open`; close with `close` or a ``with`` block.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self.transactions = 0  # write transactions begun on this connection

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False, cache_mib: int = 0) -> Catalog:
        """Open (creating and migrating if needed) the catalog at *path*.

        *cache_mib*: SQLite page cache for this connection (0: SQLite's 2 MiB).
        Bulk writers (scans, tree rebuilds) of a big catalog want 32 MiB or more.
        """
        path = Path(path)
        try:
            if readonly:
                conn = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, isolation_level=None,
                    check_same_thread=False,
                )  # fmt: skip
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA foreign_keys = ON")  # overrides and overlays go with their file
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA temp_store = MEMORY")
            if cache_mib:
                conn.execute(f"PRAGMA cache_size = {-1024 * int(cache_mib)}")
            catalog = cls(conn, path)
            if not readonly:
                catalog._migrate()
            elif catalog.schema_version != SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {path} has schema version {catalog.schema_version}, "
                    f"this MusicFS reads version {SCHEMA_VERSION}; mount it once to upgrade it"
                )
            return catalog
        except sqlite3.DatabaseError as exc:
            raise CatalogError(damaged(f"cannot open catalog {path}: {exc}")) from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise CatalogError(
                f"catalog {self.path} was written by a newer MusicFS (schema {version}, "
                f"this one knows {SCHEMA_VERSION}); upgrade MusicFS or use another --cache-dir"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            log.info("migrating catalog %s to schema version %d", self.path, target)
            try:
                self._conn.executescript(
                    "BEGIN IMMEDIATE;"
                    + MIGRATIONS[target - 1]
                    + f"; PRAGMA user_version = {target}; COMMIT;"
                )
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: everything inside commits together or not at all."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self.transactions += 1
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a transaction, a part that is undone alone when it raises (what
        came before it in the transaction stays)."""
        self._conn.execute("SAVEPOINT part")
        try:
            yield
        except BaseException:
            with suppress(sqlite3.Error):  # else the enclosing transaction rolls back
                self._conn.execute("ROLLBACK TO part")
                self._conn.execute("RELEASE part")
            raise
        self._conn.execute("RELEASE part")

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def quick_check(
        self, budget: float | None = None, stop: Callable[[], bool] | None = None
    ) -> str | None:
        """SQLite's quick check of every page: ``"ok"``, or the problems found.

        It reads the whole file (some 450 MiB a second from the page cache), so
        it can be bounded: None when it did not finish within *budget* seconds,
        or because *stop* said so.
        """
        deadline = None if budget is None else time.monotonic() + budget
        done = threading.Event()

        def watch() -> None:  # the progress handler is not called inside a page walk
            while not done.wait(0.02):
                if (deadline is not None and time.monotonic() > deadline) or (stop and stop()):
                    self._conn.interrupt()  # again until it ends: the first may come early

        watcher = threading.Thread(target=watch, name="musicfs-catalog-check", daemon=True)
        if deadline is not None or stop is not None:
            watcher.start()
        try:
            rows = self._conn.execute("PRAGMA quick_check(10)").fetchall()
        except sqlite3.OperationalError as exc:
            if "interrupt" in str(exc):
                return None
            raise
        except sqlite3.DatabaseError as exc:  # a page too broken to be read at all
            return str(exc)
        finally:
            done.set()
        return "\n".join(str(r[0]) for r in rows)

    def integrity_check(self) -> str:
        """SQLite's own verdict on the database file: ``"ok"`` when healthy."""
        return "\n".join(r[0] for r in self._conn.execute("PRAGMA integrity_check"))

    # -- settings and origins ------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def register_origin(self, origin_id: str, kind: str, location: str) -> None:
        self._conn.execute(
            "INSERT INTO origins (id, kind, location) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, location = excluded.location",
            (origin_id, kind, location),
        )

    def origins(self) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self._conn.execute("SELECT id, kind, location FROM origins")]

    def forget_origin(self, origin_id: str) -> list[int]:
        """Drop an origin's files (not its tree nodes); return the file ids dropped."""
        ids = [
            r[0] for r in self._conn.execute("SELECT id FROM files WHERE origin = ?", (origin_id,))
        ]
        self._conn.execute("DELETE FROM files WHERE origin = ?", (origin_id,))
        self._conn.execute("DELETE FROM origins WHERE id = ?", (origin_id,))
        return ids

    # -- the virtual tree (read side) -----------------------------------------

    def node(self, node_id: int) -> Node | None:
        row = self._conn.execute(_NODE_SELECT + "WHERE n.id = ?", (node_id,)).fetchone()
        return _node(row)

    def lookup(self, parent: int, name: str) -> Node | None:
        row = self._conn.execute(
            _NODE_SELECT + "WHERE n.parent = ? AND n.name = ?", (parent, name)
        ).fetchone()
        return _node(row)

    def children(self, parent: int, after: int = 0, limit: int = 1000) -> list[Node]:
        """Entries of directory *parent* with id > *after*, in id order.

        Ids only grow (AUTOINCREMENT), so paging by id never skips or repeats an
        entry even while the scanner adds and removes others.
        """
        cursor = self._conn.cursor()
        cursor.row_factory = None  # plain tuples: the fastest way to build many Nodes
        rows = cursor.execute(
            _NODE_SELECT + "WHERE n.parent = ? AND n.id > ? ORDER BY n.id LIMIT ?",
            (parent, after, limit),
        )
        return list(map(Node._make, rows))

    def child_rows(
        self, parent: int, after: int, limit: int
    ) -> list[tuple[int, str, int | None, int, int]]:
        """Like `children`, as plain (id, name, file_id, size, mtime_ns) tuples: the
        cheapest form, for listing huge directories."""
        cursor = self._conn.cursor()
        cursor.row_factory = None
        return cursor.execute(LISTING_QUERY, (parent, after, limit)).fetchall()

    def node_of_file(self, file_id: int) -> Node | None:
        row = self._conn.execute(_NODE_SELECT + "WHERE n.file_id = ?", (file_id,)).fetchone()
        return _node(row)

    def has_children(self, node_id: int) -> bool:
        row = self._conn.execute("SELECT 1 FROM nodes WHERE parent = ? LIMIT 1", (node_id,))
        return row.fetchone() is not None

    def path_of(self, node_id: int) -> str:
        """The virtual path of a node, e.g. ``Artist/Album (2001) [FLAC]/01 - A.flac``."""
        parts: list[str] = []
        while node_id != ROOT_NODE:
            row = self._conn.execute(
                "SELECT parent, name FROM nodes WHERE id = ?", (node_id,)
            ).fetchone()
            if row is None:
                raise KeyError(node_id)
            parts.append(row[1])
            node_id = row[0]
        return "/".join(reversed(parts))

    def resolve(self, path: str) -> Node | None:
        """The node at virtual *path* (``/``-separated, relative to the root)."""
        node = self.node(ROOT_NODE)
        for part in (p for p in path.split("/") if p):
            if node is None or not node.is_dir:
                return None
            node = self.lookup(node.id, part)
        return node

    def counts(self) -> tuple[int, int, int]:
        """(tracks in the tree, directories, files that could not be read)."""
        tracks = self._conn.execute("SELECT count(*) FROM nodes WHERE file_id IS NOT NULL")
        dirs = self._conn.execute("SELECT count(*) FROM nodes WHERE file_id IS NULL")
        errors = self._conn.execute("SELECT count(*) FROM files WHERE error IS NOT NULL")
        return tracks.fetchone()[0], dirs.fetchone()[0], errors.fetchone()[0]

    def total_size(self) -> int:
        return int(self._conn.execute("SELECT coalesce(sum(size), 0) FROM files").fetchone()[0])

    # -- tree writes (used by layout) ----------------------------------------

    def insert_node(
        self,
        parent: int,
        name: str,
        file_id: int | None,
        size: int = 0,
        mtime_ns: int = 0,
        *,
        replica_key: str | None = None,
        version: int = 0,
    ) -> int:
        """A new node; a folder (*file_id* None) gets the current time as mtime."""
        if file_id is None:
            mtime_ns = time.time_ns()
        cur = self._conn.execute(
            "INSERT INTO nodes (parent, name, file_id, size, mtime_ns, replica_key, version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (parent, name, file_id, size, mtime_ns, replica_key, version),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def update_node_file(
        self,
        node_id: int,
        file_id: int,
        size: int,
        mtime_ns: int,
        replica_key: str | None,
        *,
        version: int = 0,
    ) -> None:
        """Point a node at a (possibly other) file, served with this size and mtime."""
        self._conn.execute(
            "UPDATE nodes SET file_id = ?, size = ?, mtime_ns = ?, replica_key = ?, version = ? "
            "WHERE id = ?",
            (file_id, size, mtime_ns, replica_key, version, node_id),
        )

    def move_node(self, node_id: int, parent: int, name: str) -> None:
        """Give a node another place in the tree; it keeps its id (its inode number)."""
        self._conn.execute(
            "UPDATE nodes SET parent = ?, name = ? WHERE id = ?", (parent, name, node_id)
        )

    def node_version(self, node_id: int) -> int:
        """The fingerprint of what a file node serves (see `layout.content_version`)."""
        row = self._conn.execute("SELECT version FROM nodes WHERE id = ?", (node_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def touch_dir(self, node_id: int, now_ns: int) -> None:
        """Move a folder's mtime forward (its listing changed): to *now_ns*, and at
        least into the next whole second, since clients compare seconds. A folder
        changed many times a second (a scan's batches) would run ahead of the
        clock that way: at most 2 s ahead, later changes add a nanosecond."""
        self._conn.execute(
            "UPDATE nodes SET mtime_ns = CASE"
            " WHEN (mtime_ns / 1000000000 + 1) * 1000000000 <= ? + 2000000000"
            " THEN max(?, (mtime_ns / 1000000000 + 1) * 1000000000)"
            " ELSE mtime_ns + 1 END "
            "WHERE id = ? AND file_id IS NULL",
            (now_ns, now_ns, node_id),
        )

    # -- replicas: one track on several origins ---------------------------------

    def replica_key_of(self, file_id: int) -> tuple[str, str | None]:
        """(origin, replica key) of a file."""
        row = self._conn.execute("SELECT origin, replica_key FROM files WHERE id = ?", (file_id,))
        found = row.fetchone()
        if found is None:
            raise KeyError(f"no file with id {file_id} in the catalog")
        return found[0], found[1]

    def node_of_replica(self, replica_key: str, origin: str) -> Node | None:
        """A node that shows a file with this replica key from another origin than
        *origin* (copies within one origin are separate tracks: FR-2)."""
        row = self._conn.execute(
            _NODE_SELECT + "JOIN files f ON f.id = n.file_id "
            "WHERE n.replica_key = ? AND f.origin != ? LIMIT 1",
            (replica_key, origin),
        )
        return _node(row.fetchone())

    def replicas(self, replica_key: str, besides: int = 0) -> list[Track]:
        """Every file with this replica key except *besides*, in id order."""
        rows = self._conn.execute(
            "SELECT * FROM files WHERE replica_key = ? AND id != ? ORDER BY id",
            (replica_key, besides),
        )
        return [Track.from_row(row) for row in rows]

    def set_content_hash(self, file_id: int, size: int, mtime_ns: int, digest: str) -> bool:
        """Record the hash of a file's whole content, if the row is still that version."""
        cur = self._conn.execute(
            "UPDATE files SET content_hash = ? WHERE id = ? AND size = ? AND mtime_ns = ?",
            (digest, file_id, size, mtime_ns),
        )
        return cur.rowcount > 0

    # -- the metadata overlay: overrides and synthesized headers ----------------

    def overrides(self, file_id: int) -> dict[str, str | None]:
        rows = self._conn.execute(
            "SELECT field, value FROM overrides WHERE file_id = ? ORDER BY field", (file_id,)
        )
        return {row[0]: row[1] for row in rows}

    def set_overrides(
        self, file_id: int, fields: Mapping[str, str | None], source: str = "user"
    ) -> None:
        """Override tags of a file (values as `model.override_value` returns them)."""
        self._conn.executemany(
            "INSERT OR REPLACE INTO overrides (file_id, field, value, source) VALUES (?, ?, ?, ?)",
            [(file_id, name, value, source) for name, value in fields.items()],
        )
        self.drop_overlay(file_id)

    def clear_overrides(self, file_id: int, fields: Sequence[str] = ()) -> None:
        """Forget the overrides of *fields* (all when empty): the file's own tags show."""
        if fields:
            self._conn.executemany(
                "DELETE FROM overrides WHERE file_id = ? AND field = ?",
                [(file_id, name) for name in fields],
            )
        else:
            self._conn.execute("DELETE FROM overrides WHERE file_id = ?", (file_id,))
        self.drop_overlay(file_id)

    def effective_tags(self, file_id: int, tags: TrackTags) -> TrackTags:
        """*tags* (a file's own) with its overrides applied."""
        return apply_overrides(tags, self.overrides(file_id))

    def overlay(self, file_id: int, size: int, mtime_ns: int) -> Overlay | None:
        """The overlay made for this version of the file, if there is one."""
        row = self._conn.execute(
            "SELECT header_length, header FROM overlays WHERE file_id = ? AND size = ? "
            "AND mtime_ns = ?",
            (file_id, size, mtime_ns),
        ).fetchone()
        if row is None:
            return None
        return Overlay(row[0], None if row[1] is None else bytes(row[1]))

    def set_overlay(
        self, file_id: int, size: int, mtime_ns: int, header_length: int, header: bytes | None
    ) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO overlays VALUES (?, ?, ?, ?, ?)",
            (file_id, size, mtime_ns, header_length, header),
        )

    def drop_overlay(self, file_id: int) -> None:
        self._conn.execute("DELETE FROM overlays WHERE file_id = ?", (file_id,))

    def overridden_files(self, formats: Sequence[str]) -> list[int]:
        """Files of these formats that have overrides (their overlay is made by
        the formats' header writers)."""
        marks = ", ".join("?" * len(formats))
        rows = self._conn.execute(
            "SELECT DISTINCT o.file_id FROM overrides o JOIN files f ON f.id = o.file_id "
            f"WHERE f.format IN ({marks}) ORDER BY o.file_id",
            tuple(formats),
        )
        return [row[0] for row in rows]

    def overlays_due(self) -> list[int]:
        """Files with overrides whose current version has no overlay made yet."""
        rows = self._conn.execute(
            "SELECT DISTINCT o.file_id FROM overrides o JOIN files f ON f.id = o.file_id "
            "LEFT JOIN overlays v ON v.file_id = f.id AND v.size = f.size "
            "AND v.mtime_ns = f.mtime_ns WHERE v.file_id IS NULL AND f.error IS NULL"
        )
        return [row[0] for row in rows]

    def mark_changed(self, file_id: int) -> None:
        """Make the next scan parse this file again, whatever its size and mtime
        say (its content was found changed), and forget its content hash."""
        self._conn.execute(
            "UPDATE files SET size = -1, content_hash = NULL WHERE id = ?", (file_id,)
        )

    def node_at(self, path: str) -> Node | None:
        """The node at *path* (relative to the mountpoint, ``/``-separated)."""
        node = self.node(ROOT_NODE)
        for name in filter(None, path.strip("/").split("/")):
            if node is None:
                return None
            node = self.lookup(node.id, name)
        return node

    def file_ids_under(self, node_id: int) -> list[int]:
        """The files of the tree at or below node *node_id*, in tree order."""
        rows = self._conn.execute(
            "WITH RECURSIVE below(id, file_id) AS ("
            " SELECT id, file_id FROM nodes WHERE id = ?"
            " UNION ALL SELECT n.id, n.file_id FROM nodes n JOIN below b ON n.parent = b.id"
            " WHERE b.file_id IS NULL)"
            " SELECT file_id FROM below WHERE file_id IS NOT NULL",
            (node_id,),
        )
        return [row[0] for row in rows]

    def tracks_per_origin(self) -> dict[str, int]:
        rows = self._conn.execute("SELECT origin, count(*) FROM files GROUP BY origin")
        return {row[0]: row[1] for row in rows}

    def record_plays(self, plays: Sequence[tuple[int, float]]) -> None:
        """Add (file id, time) rows to the access log."""
        self._conn.executemany("INSERT INTO plays (file_id, at) VALUES (?, ?)", plays)

    def album_successors(self, file_id: int, limit: int) -> list[Track]:
        """Up to *limit* tracks after *file_id* on its album: the readable files of
        its origin folder with its album tag (any, when it has none), in (disc,
        track, name) order."""
        order = "coalesce(f.disc, 1), coalesce(f.track, 0), f.name"
        rows = self._conn.execute(
            "SELECT f.* FROM files a JOIN files f ON f.origin = a.origin AND f.reldir = a.reldir"
            " WHERE a.id = ? AND f.id != a.id AND f.error IS NULL"
            " AND (a.album IS NULL OR f.album IS a.album)"
            f" AND ({order}) > (coalesce(a.disc, 1), coalesce(a.track, 0), a.name)"
            f" ORDER BY {order} LIMIT ?",
            (file_id, limit),
        )
        return [Track.from_row(row) for row in rows]

    def record_played_after(self, pairs: Sequence[tuple[int, int, float]]) -> None:
        """Count (file id, id of the file played right after it, time) triples."""
        self._conn.executemany(
            "INSERT INTO played_after (file_id, next_id, count, at) VALUES (?, ?, 1, ?) "
            "ON CONFLICT (file_id, next_id) DO UPDATE SET count = count + 1, at = excluded.at",
            pairs,
        )

    def played_after(self, file_id: int, limit: int = 8) -> tuple[list[tuple[int, int]], int]:
        """The files played right after *file_id* most often, as (file id, count),
        and how many plays followed it in all."""
        rows = self._conn.execute(
            "SELECT next_id, count FROM played_after WHERE file_id = ? "
            "ORDER BY count DESC, at DESC LIMIT ?",
            (file_id, limit),
        ).fetchall()
        total = self._conn.execute(
            "SELECT coalesce(sum(count), 0) FROM played_after WHERE file_id = ?", (file_id,)
        ).fetchone()[0]
        return [(row[0], row[1]) for row in rows], int(total)

    def mark_formats_changed(self, formats: Sequence[str]) -> None:
        """`mark_changed` for every file of these formats (their reader changed)."""
        marks = ", ".join("?" * len(formats))
        self._conn.execute(f"UPDATE files SET size = -1 WHERE format IN ({marks})", tuple(formats))

    def file_ids(self, origin: str | None = None) -> list[int]:
        """Ids of every catalogued file of *origin* (of all origins when None)."""
        if origin is None:
            rows = self._conn.execute("SELECT id FROM files ORDER BY id")
        else:
            rows = self._conn.execute(
                "SELECT id FROM files WHERE origin = ? ORDER BY id", (origin,)
            )
        return [row[0] for row in rows]

    def content_hash(self, file_id: int) -> str | None:
        row = self._conn.execute("SELECT content_hash FROM files WHERE id = ?", (file_id,))
        found = row.fetchone()
        return None if found is None else found[0]

    def names_from(self, parent: int, start: str, limit: int = 1000) -> list[Node]:
        """Entries of *parent* whose names sort at or after *start*, in name order."""
        cursor = self._conn.cursor()
        cursor.row_factory = None
        rows = cursor.execute(
            _NODE_SELECT + "WHERE n.parent = ? AND n.name >= ? ORDER BY n.name LIMIT ?",
            (parent, start, limit),
        )
        return list(map(Node._make, rows))

    def rename_node(self, node_id: int, name: str) -> None:
        self._conn.execute("UPDATE nodes SET name = ? WHERE id = ?", (name, node_id))

    def delete_node(self, node_id: int) -> None:
        self._conn.execute("DELETE FROM nodes WHERE id = ?", (node_id,))

    def clear_tree(self) -> None:
        self._conn.execute("DELETE FROM nodes WHERE id != ?", (ROOT_NODE,))

    # -- files ---------------------------------------------------------------

    def track(self, file_id: int) -> Track | None:
        row = self._conn.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        return None if row is None else Track.from_row(row)

    def tracks(self, **equals: Any) -> Iterator[Track]:
        """Tracks whose columns equal the given values, e.g. ``tracks(artist="Björk")``.

        With no arguments: every catalogued file, in id order.
        """
        allowed = set(TAG_FIELDS) | {"origin", "format", "error"}
        unknown = set(equals) - allowed
        if unknown:
            raise ValueError(f"cannot filter tracks by {sorted(unknown)}; use {sorted(allowed)}")
        where = " AND ".join(f"{k} IS ?" for k in equals) or "1"
        sql = f"SELECT * FROM files WHERE {where} ORDER BY id"
        for row in self._conn.execute(sql, tuple(equals.values())):
            yield Track.from_row(row)

    def known_files(self, origin: str, reldir: str) -> dict[str, KnownFile]:
        """The files the catalog has for one directory of an origin, by name."""
        rows = self._conn.execute(
            "SELECT id, name, size, mtime_ns, ctime_ns FROM files WHERE origin = ? AND reldir = ?",
            (origin, reldir),
        )
        return {
            r["name"]: KnownFile(r["id"], r["size"], r["mtime_ns"], r["ctime_ns"]) for r in rows
        }

    def set_ctimes(self, ctimes: Sequence[tuple[int, int]]) -> None:
        """Record the change time of unchanged files as (file id, ctime_ns) pairs
        (rows catalogued before change times were kept)."""
        self._conn.executemany(
            "UPDATE files SET ctime_ns = ? WHERE id = ?", [(c, i) for i, c in ctimes]
        )

    def known_dirs(self, origin: str) -> Iterator[str]:
        rows = self._conn.execute("SELECT DISTINCT reldir FROM files WHERE origin = ?", (origin,))
        for row in rows:
            yield row[0]

    def files_under(self, origin: str, reldir: str) -> list[int]:
        """Ids of *origin*'s files in folder *reldir* or any folder below it."""
        params: tuple[str, ...]
        if not reldir:
            sql, params = "SELECT id FROM files WHERE origin = ?", (origin,)
        else:
            # '0' follows '/' in byte order: [reldir/, reldir0) is everything below.
            sql = (
                "SELECT id FROM files WHERE origin = ? AND "
                "(reldir = ? OR (reldir >= ? AND reldir < ?))"
            )
            params = (origin, reldir, reldir + "/", reldir + "0")
        return [r[0] for r in self._conn.execute(sql, params)]

    def upsert_file(self, scanned: ScannedFile) -> int:
        """Insert or update the row of a scanned file; return its id."""
        reldir, name = split_relpath(scanned.relpath)
        cols: tuple[str, ...] = ("origin", "reldir", "name", "size", "mtime_ns", "ctime_ns")
        cols += ("format", "error")
        cols += ("scanned_at", "replica_key", "content_hash", *TAG_FIELDS)
        values: Sequence[Any] = (
            scanned.origin,
            reldir,
            name,
            scanned.stat.size,
            scanned.stat.mtime_ns,
            scanned.stat.ctime_ns,
            scanned.format,
            scanned.error,
            time.time(),
            replica_key(scanned),
            None,  # a new version: its content has not been hashed yet
            *scanned.tags.as_row(),
        )
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[3:])
        row = self._conn.execute(
            f"INSERT INTO files ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT (origin, reldir, name) DO UPDATE SET {updates} RETURNING id",
            values,
        ).fetchone()
        return int(row[0])

    def delete_file(self, file_id: int) -> None:
        self._conn.execute("DELETE FROM files WHERE id = ?", (file_id,))

    def files_in_dirs_not_in(self, origin: str, keep_dirs_table: str) -> list[int]:
        """Ids of *origin*'s files whose directory is not listed in a temp table."""
        rows = self._conn.execute(
            f"SELECT id FROM files WHERE origin = ? AND reldir NOT IN "
            f"(SELECT reldir FROM {keep_dirs_table})",
            (origin,),
        )
        return [r[0] for r in rows]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run raw SQL on this connection (for temp tables and tests)."""
        return self._conn.execute(sql, params)


def _node(row: sqlite3.Row | None) -> Node | None:
    return None if row is None else _node_required(row)


def _node_required(row: sqlite3.Row) -> Node:
    return Node._make(row)
