"""The catalog: one SQLite database that is the source of truth for the tree.

It holds (DESIGN §1-2):

* ``files`` — every audio file seen on an origin, keyed by (origin, directory,
  name), with its size, mtime and tags (or the error that stopped us reading them);
* ``nodes`` — the virtual tree: one row per directory or file, keyed by
  (parent, name). A node's id is its inode number, so lookup, getattr and readdir
  are each one indexed query and nothing about the library lives in memory;
* ``settings`` — small key/value facts, such as the template the tree was built with;
* the metadata overlay, the access log, playlists, and the full-text index.

`Catalog` is the one object callers hold: it opens one connection (migrating
the schema), owns its transactions, and gathers the concerns, one module each:

==============  =====================================================
`schema`        tables, numbered migrations, `CatalogError`
`tree`          nodes: lookups, listings, paths; writes for the layout
`listings`      big folders' listings packed in one row each (kept by triggers)
`tracks`        files: scanned rows, replicas, content hashes
`overrides`     the metadata overlay: overrides and synthesized headers
`plays`         the access log, what follows what, collection rules; imported counts
`ratings`       ratings (0-100) of files
`identity`      audio identities: user data that follows moves
`playlists`     playlists: entries as file ids; playlist files of origins
`pins`          pins for offline: what was asked, the tracks it pins
`replica`       rows written by a shared catalog's change feed
`migration`     the catalog read out for a shared one (``catalog migrate``)
`stats`         counts and sizes
`settings`      settings and origins
`index`         the full-text index's queries (`search` ranks them)
==============  =====================================================

No SQL runs on the catalog outside this package: the rest of MusicFS calls
these named methods (packages/musicfs-core/tests/catalog/test_no_sql.py keeps
it so). The database
runs in WAL mode: the filesystem reads from its own connection while the scanner
writes from another, each in its own thread.

Placing tracks into the tree (templates, unique names) is `musicfs.core.catalog.layout`'s
job; the catalog only stores and fetches rows.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from musicfs.core.catalog import schema
from musicfs.core.catalog.identity import Identity
from musicfs.core.catalog.index import SearchIndex
from musicfs.core.catalog.listings import PACKED_MIN, Listing, Listings
from musicfs.core.catalog.migration import MigrationRows
from musicfs.core.catalog.overrides import Overrides
from musicfs.core.catalog.pins import PinRequest, Pins
from musicfs.core.catalog.playlists import Playlists
from musicfs.core.catalog.plays import Plays
from musicfs.core.catalog.ratings import Ratings
from musicfs.core.catalog.replica import ReplicaRows
from musicfs.core.catalog.rows import (
    KnownFile,
    Node,
    Overlay,
    Track,
    join_relpath,
    replica_key,
    split_relpath,
)
from musicfs.core.catalog.schema import (
    MIGRATIONS,
    ROOT_NODE,
    SCHEMA_VERSION,
    CatalogError,
    damaged,
    first_problem,
)
from musicfs.core.catalog.settings import Settings
from musicfs.core.catalog.stats import Stats
from musicfs.core.catalog.tracks import Tracks
from musicfs.core.catalog.tree import LISTING_QUERY, Tree

__all__ = [
    "LISTING_QUERY",
    "MIGRATIONS",
    "PACKED_MIN",
    "ROOT_NODE",
    "SCHEMA_VERSION",
    "Catalog",
    "CatalogError",
    "KnownFile",
    "Listing",
    "Node",
    "Overlay",
    "PinRequest",
    "Track",
    "damaged",
    "first_problem",
    "join_relpath",
    "replica_key",
    "split_relpath",
]


class Catalog(
    Tree,
    Listings,
    Tracks,
    Overrides,
    Plays,
    Ratings,
    Pins,
    Identity,
    Playlists,
    Stats,
    Settings,
    SearchIndex,
    ReplicaRows,
    MigrationRows,
):
    """A connection to the catalog database. Use one per thread.

    Open with `Catalog.open`; close with `close` or a ``with`` block. Writes go
    inside `transaction`; the concerns' methods (the base classes) join it.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self.transactions = 0  # write transactions begun on this connection
        self._damaged_listings = set()

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
            if readonly:
                schema.check_readable(conn, path)
            else:
                schema.migrate(conn, path)
            return cls(conn, path)
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
        return schema.schema_version(self._conn)

    # -- transactions --------------------------------------------------------

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

    @contextmanager
    def page_cache(self, mib: int) -> Iterator[None]:
        """A bigger page cache for this connection while a bulk write (a tree
        rebuild) runs; the one before afterwards."""
        before = int(self._conn.execute("PRAGMA cache_size").fetchone()[0])
        self._conn.execute(f"PRAGMA cache_size = {-1024 * int(mib)}")
        try:
            yield
        finally:
            self._conn.execute(f"PRAGMA cache_size = {before}")

    # -- the database file ---------------------------------------------------

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
