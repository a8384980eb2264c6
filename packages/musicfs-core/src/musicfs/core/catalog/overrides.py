"""The metadata overlay's rows (FR-5.3): ``overrides``, the tag values a user or a
metadata plugin set for a file (a NULL value removes the tag), and ``overlays``,
the header synthesized from them for one version (size, mtime) of the file.

`musicfs.core.content.overlay` makes the headers; the tree and reads use them.
Overrides go with their file (foreign keys, ON DELETE CASCADE), and setting or
clearing one drops the file's overlay, which is then made again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from musicfs.core.catalog.rows import Overlay, Part
from musicfs.core.model import TrackTags, apply_overrides


class Overrides(Part):
    """Overrides and synthesized headers."""

    def has_overrides(self) -> bool:
        """Whether any file has an override (most libraries have none)."""
        return self._conn.execute("SELECT 1 FROM overrides LIMIT 1").fetchone() is not None

    def overrides(self, file_id: int) -> dict[str, str | None]:
        rows = self._conn.execute(
            "SELECT field, value FROM overrides WHERE file_id = ? ORDER BY field", (file_id,)
        )
        return {row[0]: row[1] for row in rows}

    def override_sources(self, file_id: int) -> dict[str, str]:
        """Who set each override of a file ("user", a plugin's name, "beets"...)."""
        rows = self._conn.execute(
            "SELECT field, source FROM overrides WHERE file_id = ? ORDER BY field", (file_id,)
        )
        return {row[0]: row[1] for row in rows}

    def all_overrides(self) -> dict[int, dict[str, str | None]]:
        """Every file's overrides, by file id (what ``musicfs export`` writes)."""
        found: dict[int, dict[str, str | None]] = {}
        for row in self._conn.execute(
            "SELECT file_id, field, value FROM overrides ORDER BY file_id, field"
        ):
            found.setdefault(row[0], {})[row[1]] = row[2]
        return found

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

    def overlays_due(self) -> list[int]:
        """Files with overrides whose current version has no overlay made yet."""
        rows = self._conn.execute(
            "SELECT DISTINCT o.file_id FROM overrides o JOIN files f ON f.id = o.file_id "
            "LEFT JOIN overlays v ON v.file_id = f.id AND v.size = f.size "
            "AND v.mtime_ns = f.mtime_ns WHERE v.file_id IS NULL AND f.error IS NULL"
        )
        return [row[0] for row in rows]
