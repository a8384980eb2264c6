"""Playlists kept in the catalog (issue 15.3): a name, where it came from
(``source``: ``origin:<origin>:<relpath>`` for a ``.m3u``/``.m3u8`` file found
on an origin, ``itunes`` for an import...), and its entries in order, each the
file it matched (None: none) and the entry's original text. An entry whose
file is removed keeps its text (ON DELETE SET NULL) and is matched again after
the next scan, so nothing is dropped silently.

Playlists found on origins also have a ``playlist_files`` row: where the file
is and the version (size, mtime) that was read, so a scan reads a playlist
file again only when it changed, and drops its playlist when it is gone.
Entries are file ids, never paths: the namespace renders each playlist with
the tracks' paths in the tree as they are now (`musicfs.core.namespace.playlists`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from musicfs.core.catalog.rows import Part, join_relpath, split_relpath

#: The source of a playlist read from a file of an origin starts so.
ORIGIN_SOURCE = "origin:"


def playlist_stem(filename: str) -> str:
    """The name a playlist file gives its playlist: the file name without its
    extension (``Road Trip.m3u8`` -> ``Road Trip``)."""
    stem, dot, _ = filename.rpartition(".")
    return stem if dot and stem else filename


class Playlists(Part):
    """The ``playlists``, ``playlist_entries`` and ``playlist_files`` tables."""

    # -- the API every source of playlists uses (imports too) ------------------------

    def replace_playlist(
        self, name: str, source: str, entries: Sequence[tuple[int | None, str]]
    ) -> None:
        """Store the playlist *name* (from *source*) as *entries* (file id or
        None, original text), in place of any playlist of that name. (A
        playlist of an origin's file that had this name is read again by the
        next scan of its folder, under a name of its own.)"""
        self._conn.execute(
            "DELETE FROM playlist_files WHERE playlist IN "
            "(SELECT id FROM playlists WHERE name = ?)",
            (name,),
        )
        playlist = self._conn.execute(
            "INSERT INTO playlists (name, source) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET source = excluded.source RETURNING id",
            (name, source),
        ).fetchone()[0]
        self._set_entries(int(playlist), entries)

    def playlist_names(self) -> list[str]:
        """The names of every stored playlist, sorted."""
        return [r[0] for r in self._conn.execute("SELECT name FROM playlists ORDER BY name")]

    def playlist(self, name: str) -> list[tuple[int | None, str]]:
        """The entries of playlist *name*, in order (empty when there is none)."""
        rows = self._conn.execute(
            "SELECT e.file_id, e.text FROM playlist_entries e JOIN playlists p "
            "ON p.id = e.playlist WHERE p.name = ? ORDER BY e.position",
            (name,),
        )
        return [(row[0], row[1]) for row in rows]

    def drop_playlists(self, source_prefix: str) -> None:
        """Forget the playlists whose source starts with *source_prefix*."""
        self._conn.execute(
            "DELETE FROM playlists WHERE substr(source, 1, ?) = ?",
            (len(source_prefix), source_prefix),
        )

    def _set_entries(self, playlist: int, entries: Sequence[tuple[int | None, str]]) -> None:
        self._conn.execute("DELETE FROM playlist_entries WHERE playlist = ?", (playlist,))
        self._conn.executemany(
            "INSERT INTO playlist_entries (playlist, position, file_id, text) VALUES (?, ?, ?, ?)",
            [(playlist, n, file_id, text) for n, (file_id, text) in enumerate(entries)],
        )

    # -- playlists found on origins --------------------------------------------------

    def playlist_files_in(self, origin: str, reldir: str) -> dict[str, tuple[int, int]]:
        """The playlist files of folder *reldir* of *origin* that were read, as
        file name -> (size, mtime_ns) of the version read."""
        rows = self._conn.execute(
            "SELECT name, size, mtime_ns FROM playlist_files WHERE origin = ? AND reldir = ?",
            (origin, reldir),
        )
        return {row[0]: (int(row[1]), int(row[2])) for row in rows}

    def playlist_file_paths(self, origin: str) -> list[str]:
        """The relpaths of every playlist file of *origin* that was read."""
        rows = self._conn.execute(
            "SELECT reldir, name FROM playlist_files WHERE origin = ?", (origin,)
        )
        return [join_relpath(row[0], row[1]) for row in rows]

    def store_origin_playlist(
        self,
        origin: str,
        relpath: str,
        size: int,
        mtime_ns: int,
        entries: Sequence[tuple[int | None, str]],
    ) -> str:
        """Store the playlist read from *relpath* of *origin* (that version);
        returns its name: the file's stem, or with `` (n)`` when another playlist
        has that name already. A file read again keeps its playlist's name."""
        reldir, filename = split_relpath(relpath)
        row = self._conn.execute(
            "SELECT p.id, p.name FROM playlist_files f JOIN playlists p ON p.id = f.playlist "
            "WHERE f.origin = ? AND f.reldir = ? AND f.name = ?",
            (origin, reldir, filename),
        ).fetchone()
        if row is not None:
            playlist, name = int(row[0]), str(row[1])
            self._conn.execute(
                "UPDATE playlist_files SET size = ?, mtime_ns = ? WHERE playlist = ?",
                (size, mtime_ns, playlist),
            )
        else:
            name = self._free_name(playlist_stem(filename))
            playlist = int(
                self._conn.execute(
                    "INSERT INTO playlists (name, source) VALUES (?, ?) RETURNING id",
                    (name, f"{ORIGIN_SOURCE}{origin}:{relpath}"),
                ).fetchone()[0]
            )
            self._conn.execute(
                "INSERT INTO playlist_files (playlist, origin, reldir, name, size, mtime_ns) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (playlist, origin, reldir, filename, size, mtime_ns),
            )
        self._set_entries(playlist, entries)
        return name

    def _free_name(self, stem: str) -> str:
        taken = {
            r[0]
            for r in self._conn.execute(
                "SELECT name FROM playlists WHERE name = ? OR name LIKE ? ESCAPE '\\'",
                (stem, _like_prefix(stem) + " (%)"),
            )
        }
        name, n = stem, 1
        while name in taken:
            n += 1
            name = f"{stem} ({n})"
        return name

    def drop_origin_playlists(self, origin: str, relpaths: Iterable[str]) -> None:
        """Forget the playlists read from these files of *origin* (they are gone)."""
        self._conn.executemany(
            "DELETE FROM playlists WHERE id IN (SELECT playlist FROM playlist_files "
            "WHERE origin = ? AND reldir = ? AND name = ?)",
            [(origin, *split_relpath(relpath)) for relpath in relpaths],
        )

    def drop_origin_playlists_under(self, origin: str, reldir: str) -> None:
        """Forget the playlists read from files in folder *reldir* of *origin* or
        below it ("" : the whole origin)."""
        # The folder itself and every folder below it ("" : all of them).
        self._conn.execute(
            "DELETE FROM playlists WHERE id IN (SELECT playlist FROM playlist_files "
            "WHERE origin = ?1 AND (?2 = '' OR reldir = ?2 OR substr(reldir, 1, ?3) = ?2 || '/'))",
            (origin, reldir, len(reldir) + 1),
        )

    def unmatched_playlist_entries(self, origin: str) -> list[tuple[int, int, str, str]]:
        """Entries of *origin*'s playlists that match no file (yet): (playlist,
        position, folder of the playlist file, text)."""
        rows = self._conn.execute(
            "SELECT e.playlist, e.position, f.reldir, e.text FROM playlist_files f "
            "JOIN playlist_entries e ON e.playlist = f.playlist "
            "WHERE f.origin = ? AND e.file_id IS NULL",
            (origin,),
        )
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    def match_playlist_entries(self, matches: Sequence[tuple[int, int, int]]) -> None:
        """Set the file of entries, given as (file id, playlist, position)."""
        self._conn.executemany(
            "UPDATE playlist_entries SET file_id = ? WHERE playlist = ? AND position = ?",
            matches,
        )


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
