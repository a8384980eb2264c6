"""The full-text index's queries (FR-14): FTS5 tables over the files' tags
(``search``, schema 6) and over their overrides (``search_overrides``, schema 9),
with their vocabularies (``search_terms``, ``search_override_terms``).

Triggers keep both indexes in step with the rows, in the same transaction.
`musicfs.core.catalog.search.Searcher` turns what a person types into these
queries (MATCH expressions of quoted terms) and ranks what they return.
"""

from __future__ import annotations

from collections.abc import Sequence

from musicfs.core.catalog.rows import Part

_TABLES = ("search", "search_overrides")


class SearchIndex(Part):
    """Matches, and the indexed words (for corrections)."""

    def search_matches(
        self, match: str, weights: Sequence[float], limit: int, *, ranked: bool = True
    ) -> list[tuple[int, float]]:
        """(file id, BM25 score: lower is better) of files whose own tags match the
        FTS5 expression *match*: the best *limit* when *ranked*, else the first."""
        bm25 = f"bm25(search, {', '.join(str(float(w)) for w in weights)})"
        order = f" ORDER BY {bm25}" if ranked else ""
        rows = self._conn.execute(
            f"SELECT rowid, {bm25} FROM search WHERE search MATCH ?{order} LIMIT ?",
            (match, limit),
        )
        return [(row[0], row[1]) for row in rows]

    def override_matches(self, match: str, limit: int) -> list[int]:
        """Up to *limit* files whose override values match *match*."""
        rows = self._conn.execute(
            "SELECT rowid FROM search_overrides WHERE search_overrides MATCH ? LIMIT ?",
            (match, limit),
        )
        return [row[0] for row in rows]

    def matching_among(self, match: str, file_ids: Sequence[int]) -> set[int]:
        """Those of *file_ids* whose own tags or overrides match *match*."""
        ids = ",".join(str(int(i)) for i in file_ids)  # integers: safe in the text
        found: set[int] = set()
        for table in _TABLES:
            found.update(row[0] for row in self._conn.execute(
                f"SELECT rowid FROM {table} WHERE {table} MATCH ? AND rowid IN ({ids})",
                (match,),
            ))  # fmt: skip
        return found

    def term_files(self, term: str, *, prefix: bool = False) -> int:
        """About how many files hold the indexed word *term* (or words starting
        with it, *prefix*): an upper bound."""
        if prefix:
            row = self._conn.execute(
                "SELECT coalesce(sum(doc), 0) FROM search_terms WHERE term >= ? AND term < ?",
                (term, term + "\U0010ffff"),
            ).fetchone()
        else:
            row = self._conn.execute(
                "SELECT coalesce(sum(doc), 0) FROM search_terms WHERE term = ?", (term,)
            ).fetchone()
        return int(row[0])

    def has_term_prefix(self, word: str) -> bool:
        """Whether an indexed word (of tags or overrides) starts with *word*."""
        for terms in ("search_terms", "search_override_terms"):
            row = self._conn.execute(
                f"SELECT 1 FROM {terms} WHERE term >= ? AND term < ? LIMIT 1",
                (word, word + "\U0010ffff"),
            ).fetchone()
            if row is not None:
                return True
        return False

    def known_terms(self, candidates: Sequence[str]) -> list[tuple[str, int]]:
        """(word, files holding it) for those of *candidates* the tags' index holds."""
        found: list[tuple[str, int]] = []
        for i in range(0, len(candidates), 500):
            chunk = candidates[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT term, doc FROM search_terms WHERE term IN ({marks})", chunk
            )
            found += [(term, doc) for term, doc in rows]
        return found

    def optimize_search(self) -> None:
        """Merge the index's segments into one (after a bulk load: faster queries)."""
        self._conn.execute("INSERT INTO search (search) VALUES ('optimize')")
