"""What was played: the access log (``plays``: one row per open of a file, at most
one per file and minute) and which file followed which (``played_after``, for
prefetch, FR-19); and the smart collections' rules (FR-15), which read both
with the files' tags.

A collection's rule is compiled to one query here (`collection_file_ids`);
`musicfs.core.config.collections` parses the rules, and
`musicfs.core.namespace.collections` shows them as folders.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from musicfs.core.catalog.rows import Part

#: Orders a collection may be sorted in, as SQL over files f (plays, last_played).
ORDERS = {
    "artist": "f.artist, f.album, f.disc, f.track, f.id",
    "year": "f.year DESC, f.artist, f.album, f.track",
    "added": "f.id DESC",
    "played": "last_played DESC",
    "plays": "plays DESC, last_played DESC",
}
_TEXT = ("artist", "albumartist", "album", "genre", "format")


class CollectionRule(Protocol):
    """What a collection asks for (`musicfs.core.config.collections.Collection`);
    unset conditions (empty, 0) match all."""

    @property
    def artist(self) -> str: ...
    @property
    def albumartist(self) -> str: ...
    @property
    def album(self) -> str: ...
    @property
    def genre(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def year_from(self) -> int: ...
    @property
    def year_to(self) -> int: ...
    @property
    def added_within_days(self) -> float: ...
    @property
    def played_within_days(self) -> float: ...
    @property
    def min_plays(self) -> int: ...
    @property
    def order(self) -> str: ...
    @property
    def limit(self) -> int: ...


class Plays(Part):
    """The access log, what follows what, and collections over them."""

    def record_plays(self, plays: Sequence[tuple[int, float]]) -> None:
        """Add (file id, time) rows to the access log."""
        self._conn.executemany("INSERT INTO plays (file_id, at) VALUES (?, ?)", plays)

    def play_totals(self) -> dict[int, tuple[int, float]]:
        """(how many plays, when last) of every file played, by file id."""
        rows = self._conn.execute("SELECT file_id, count(*), max(at) FROM plays GROUP BY file_id")
        return {row[0]: (int(row[1]), float(row[2])) for row in rows}

    def play_stats(self, file_id: int) -> tuple[int, float | None]:
        """(how many plays, when last) of one file."""
        row = self._conn.execute(
            "SELECT count(*), max(at) FROM plays WHERE file_id = ?", (file_id,)
        ).fetchone()
        return int(row[0]), row[1]

    def add_plays(self, file_id: int, count: int, last_at: float) -> None:
        """Add *count* plays of a file, at *last_at* (an import: the counts add
        up and the last played time becomes the later of the two)."""
        self.record_plays([(file_id, last_at)] * count)

    def imported_plays(self, source: str) -> dict[int, int]:
        """The play count last imported from *source* for each file, by file id."""
        rows = self._conn.execute(
            "SELECT file_id, count FROM imported_plays WHERE source = ?", (source,)
        )
        return {int(row[0]): int(row[1]) for row in rows}

    def import_plays(self, file_id: int, source: str, count: int, last_at: float) -> int:
        """A play count from another program (*source*, e.g. "itunes") that keeps
        its own running total: add the plays it counted since the last import
        from it, at *last_at*, and return how many were added (0 when none are
        new, so importing the same file again changes nothing). A count lower
        than the last one (reset in that program) adds nothing and is the new base."""
        row = self._conn.execute(
            "SELECT count FROM imported_plays WHERE file_id = ? AND source = ?",
            (file_id, source),
        ).fetchone()
        new = count - (int(row[0]) if row is not None else 0)
        if new > 0:
            self.add_plays(file_id, new, last_at)
        self._conn.execute(
            "INSERT INTO imported_plays (file_id, source, count) VALUES (?, ?, ?) "
            "ON CONFLICT (file_id, source) DO UPDATE SET count = excluded.count",
            (file_id, source, count),
        )
        return max(new, 0)

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

    def collection_file_ids(self, rule: CollectionRule, now: float | None = None) -> list[int]:
        """The readable files that *rule* selects, in its order, at most its limit."""
        now = time.time() if now is None else now
        where, params = ["f.error IS NULL"], []
        for key in _TEXT:
            wanted = getattr(rule, key)
            if wanted:
                where.append(f"lower(f.{key}) = lower(?)")
                params.append(wanted)
        if rule.year_from:
            where.append("f.year >= ?")
            params.append(rule.year_from)
        if rule.year_to:
            where.append("f.year <= ?")
            params.append(rule.year_to)
        if rule.added_within_days:
            where.append("f.scanned_at >= ?")
            params.append(now - rule.added_within_days * 86400)
        having = []
        if rule.min_plays:
            having.append("plays >= ?")
        if rule.played_within_days:
            having.append("last_played >= ?")
        sql = (
            "SELECT f.id, count(p.at) AS plays, max(p.at) AS last_played FROM files f "
            "LEFT JOIN plays p ON p.file_id = f.id WHERE " + " AND ".join(where) +
            " GROUP BY f.id" + (" HAVING " + " AND ".join(having) if having else "") +
            f" ORDER BY {ORDERS[rule.order]} LIMIT ?"
        )  # fmt: skip
        if rule.min_plays:
            params.append(rule.min_plays)
        if rule.played_within_days:
            params.append(now - rule.played_within_days * 86400)
        params.append(rule.limit)
        return [row[0] for row in self._conn.execute(sql, params)]
