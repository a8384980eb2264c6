"""Playlists kept in the catalog: a name, where it came from (``source``, e.g.
"itunes"), and its entries in order, each the file it matched (None: none)
and the entry's original text. An entry whose file is removed keeps its text
(ON DELETE SET NULL), so nothing is dropped silently.

A minimal version of the playlists' storage, for ``musicfs import itunes``;
the same API and tables as the playlists' own module, which replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence

from musicfs.core.catalog.rows import Part


class Playlists(Part):
    """The ``playlists`` and ``playlist_entries`` tables."""

    def replace_playlist(
        self, name: str, source: str, entries: Sequence[tuple[int | None, str]]
    ) -> None:
        """Store the playlist *name* (from *source*) as *entries*, in place of any
        playlist of that name."""
        self._conn.execute("DELETE FROM playlists WHERE name = ?", (name,))
        playlist = self._conn.execute(
            "INSERT INTO playlists (name, source) VALUES (?, ?)", (name, source)
        ).lastrowid
        self._conn.executemany(
            "INSERT INTO playlist_entries (playlist, position, file_id, text) VALUES (?, ?, ?, ?)",
            [(playlist, n, file_id, text) for n, (file_id, text) in enumerate(entries)],
        )

    def playlist_names(self) -> list[str]:
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
