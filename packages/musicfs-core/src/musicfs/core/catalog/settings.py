"""Settings and origins: small key/value facts about the catalog (such as the
template its tree was built with), and the origins it has files of.
"""

from __future__ import annotations

from musicfs.core.catalog.rows import Part


class Settings(Part):
    """The ``settings`` and ``origins`` tables."""

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
