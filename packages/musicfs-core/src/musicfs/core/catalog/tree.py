"""The virtual tree: the ``nodes`` table, one row per folder or file (DESIGN §2).

A node's id is its inode number; lookup, getattr and readdir are each one
indexed query, and nothing about the library lives in memory. Which node a
track gets, and its name, is `musicfs.core.catalog.layout`'s decision; these
are the queries it and the filesystem run.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from musicfs.core.catalog.rows import Node, Part
from musicfs.core.catalog.schema import ROOT_NODE

# A page of a directory listing; answered from the index nodes_by_parent alone.
#: A page of a listing as (id, name as UTF-8 bytes, size or -1 for a folder,
#: mtime_ns): the fewest columns, none converted twice (each costs more per row
#: than SQLite's own step).
LISTING_QUERY = (
    "SELECT id, CAST(name AS BLOB), CASE WHEN file_id IS NULL THEN -1 ELSE size END, "
    "mtime_ns FROM nodes WHERE parent = ? AND id > ? ORDER BY id LIMIT ?"
)

_NODE_SELECT = "SELECT n.id, n.parent, n.name, n.file_id, n.size, n.mtime_ns FROM nodes n "


class Tree(Part):
    """Reading and writing the tree."""

    # -- reading -------------------------------------------------------------

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

    def child_rows(self, parent: int, after: int, limit: int) -> list[tuple[int, bytes, int, int]]:
        """Like `children`, as plain (id, name as UTF-8 bytes, size or -1 for a
        folder, mtime_ns) tuples: the cheapest form, for listing huge directories."""
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

    def node_at(self, path: str) -> Node | None:
        """The node at *path* (relative to the mountpoint, ``/``-separated)."""
        node = self.node(ROOT_NODE)
        for name in filter(None, path.strip("/").split("/")):
            if node is None:
                return None
            node = self.lookup(node.id, name)
        return node

    def names_from(self, parent: int, start: str, limit: int = 1000) -> list[Node]:
        """Entries of *parent* whose names sort at or after *start*, in name order."""
        cursor = self._conn.cursor()
        cursor.row_factory = None
        rows = cursor.execute(
            _NODE_SELECT + "WHERE n.parent = ? AND n.name >= ? ORDER BY n.name LIMIT ?",
            (parent, start, limit),
        )
        return list(map(Node._make, rows))

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

    def folders_with_art(self, folders: Sequence[int]) -> list[int]:
        """Those of *folders* that hold a track with a picture in its tags."""
        found: list[int] = []
        for start in range(0, len(folders), 500):
            part = folders[start : start + 500]
            rows = self._conn.execute(
                "SELECT DISTINCT n.parent FROM nodes n JOIN files f ON f.id = n.file_id"
                f" WHERE f.has_art AND n.parent IN ({','.join('?' * len(part))})",
                part,
            )
            found += [row[0] for row in rows]
        return found

    # -- replicas: one node for the same track on several origins ----------------

    def node_of_replica(self, replica_key: str, origin: str) -> Node | None:
        """A node that shows a file with this replica key from another origin than
        *origin* (copies within one origin are separate tracks: FR-2)."""
        row = self._conn.execute(
            _NODE_SELECT + "JOIN files f ON f.id = n.file_id "
            "WHERE n.replica_key = ? AND f.origin != ? LIMIT 1",
            (replica_key, origin),
        )
        return _node(row.fetchone())

    def node_replica_key(self, node_id: int) -> str | None:
        """The replica key a file node was placed under (None: not shared)."""
        row = self._conn.execute("SELECT replica_key FROM nodes WHERE id = ?", (node_id,))
        found = row.fetchone()
        return None if found is None else found[0]

    # -- writing (layout's job) ----------------------------------------------

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

    def rename_node(self, node_id: int, name: str) -> None:
        self._conn.execute("UPDATE nodes SET name = ? WHERE id = ?", (name, node_id))

    def delete_node(self, node_id: int) -> None:
        self._conn.execute("DELETE FROM nodes WHERE id = ?", (node_id,))

    def clear_tree(self) -> None:
        self._conn.execute("DELETE FROM nodes WHERE id != ?", (ROOT_NODE,))

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


def _node(row: sqlite3.Row | None) -> Node | None:
    return None if row is None else Node._make(row)
