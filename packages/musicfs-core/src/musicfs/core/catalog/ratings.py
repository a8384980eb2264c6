"""Ratings: one per file, 0-100 (iTunes' scale, 20 a star), from an import
(``musicfs import itunes``, ``import musicfs``). They go with their file
(foreign key, ON DELETE CASCADE), like overrides and plays.
"""

from __future__ import annotations

from musicfs.core.catalog.rows import Part


class Ratings(Part):
    """The ``ratings`` table."""

    def rating(self, file_id: int) -> int | None:
        row = self._conn.execute(
            "SELECT value FROM ratings WHERE file_id = ?", (file_id,)
        ).fetchone()
        return None if row is None else int(row[0])

    def all_ratings(self) -> dict[int, int]:
        """Every rated file's rating, by file id (what ``musicfs export`` writes)."""
        return {
            int(r[0]): int(r[1]) for r in self._conn.execute("SELECT file_id, value FROM ratings")
        }

    def set_rating(self, file_id: int, value: int | None, source: str) -> None:
        """Rate a file 0-100 (None: no rating)."""
        if value is None:
            self._conn.execute("DELETE FROM ratings WHERE file_id = ?", (file_id,))
            return
        if not 0 <= value <= 100:
            raise ValueError(f"a rating is 0-100, got {value}")
        self._conn.execute(
            "INSERT INTO ratings (file_id, value, source) VALUES (?, ?, ?) "
            "ON CONFLICT (file_id) DO UPDATE SET value = excluded.value, source = excluded.source",
            (file_id, value, source),
        )
