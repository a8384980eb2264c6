"""Figures about the catalog as a whole, for status, metrics and the CLI."""

from __future__ import annotations

from musicfs.core.catalog.rows import Part


class Stats(Part):
    """Counts and sizes."""

    def counts(self) -> tuple[int, int, int]:
        """(tracks in the tree, directories, files that could not be read)."""
        tracks = self._conn.execute("SELECT count(*) FROM nodes WHERE file_id IS NOT NULL")
        dirs = self._conn.execute("SELECT count(*) FROM nodes WHERE file_id IS NULL")
        errors = self._conn.execute("SELECT count(*) FROM files WHERE error IS NOT NULL")
        return tracks.fetchone()[0], dirs.fetchone()[0], errors.fetchone()[0]

    def total_size(self) -> int:
        return int(self._conn.execute("SELECT coalesce(sum(size), 0) FROM files").fetchone()[0])

    def tracks_per_origin(self) -> dict[str, int]:
        rows = self._conn.execute("SELECT origin, count(*) FROM files GROUP BY origin")
        return {row[0]: row[1] for row in rows}
