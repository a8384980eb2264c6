"""Full-text search over the catalog's tags (FR-14): `Searcher` turns what a
person types into MATCH queries, corrects typos and ranks. The index's queries
are `musicfs.core.catalog.index`, its tables and triggers `schema`.

The index is an SQLite FTS5 table over the ``files`` table's own columns
(external content, no copy of the text), kept in step by triggers — so it
changes in the same transaction as the rows it indexes and is consistent
after any crash (catalog schema 6). Its tokenizer folds case and diacritics:
"beyonce" finds "Beyoncé".

`Searcher.search` takes what a person types:

- every word must match, as a word or the start of one ("metal" finds
  "Metallica");
- a word the index does not know is corrected to the indexed words one edit
  away (a letter missing, extra, swapped or wrong: "metalica" → "metallica");
- results are ranked with BM25, artist and title weighing most, and a track
  whose artist or title *is* the query comes before the rest;
- tags set through the metadata overlay are found too (catalog schema 9 keeps
  a second index of the override values, also by triggers), alone or mixed
  with the file's own tags.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass

from musicfs.core.catalog.store import Catalog, Track

log = logging.getLogger(__name__)

#: Columns of the index, in order, and their BM25 weights.
COLUMNS = ("artist", "albumartist", "album", "title", "genre", "composer", "name")
_WEIGHTS = (10.0, 6.0, 4.0, 10.0, 1.0, 1.0, 0.5)
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_WORD = re.compile(r"\w+")
_MAX_WORDS = 8
_MAX_VARIANTS = 4  # corrections tried per unknown word
_POOL = 200  # best BM25 matches re-ranked by exact artist/title equality
_BROAD = 20_000  # a query matching more files than this is not ranked by BM25
_OVERRIDE_POOL = 5_000  # files with overlay tags looked at per query


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result."""

    track: Track
    score: float  # higher is better


def fold(text: str) -> str:
    """*text* as the index sees it: lower case, no diacritics."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words_of(query: str) -> list[str]:
    return _WORD.findall(fold(query))[:_MAX_WORDS]


def _edits(word: str) -> set[str]:
    """Words one edit away from *word* (deletion, transposition, replacement, insertion)."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    out = {a + b[1:] for a, b in splits if b}
    out |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    out |= {a + c + b[1:] for a, b in splits if b for c in _ALPHABET}
    out |= {a + c + b for a, b in splits for c in _ALPHABET}
    out.discard(word)
    return out


class Searcher:
    """Searches one catalog (any connection; read-only is enough)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def search(self, query: str, limit: int = 50) -> list[Hit]:
        words = words_of(query)
        if not words:
            return []
        alternatives = [self._forms(word, last=i == len(words) - 1) for i, word in enumerate(words)]
        if any(not forms for forms in alternatives):
            return []  # a word that matches nothing, even corrected
        match = " AND ".join("(" + " OR ".join(forms) + ")" for forms in alternatives)
        # Ranking every match of a broad query (a short prefix) costs more than it
        # tells: take the first matches, and rank those.
        broad = min(self._matches(forms) for forms in alternatives) > _BROAD
        rows = self.catalog.search_matches(match, _WEIGHTS, max(limit, _POOL), ranked=not broad)
        wanted = fold(query).strip()
        rows += [(file_id, -1.0) for file_id in self._by_overrides(alternatives)]
        hits, seen = [], set()
        for file_id, bm25 in rows:
            if file_id in seen:
                continue
            seen.add(file_id)
            track = self.catalog.track(file_id)
            if track is None:
                continue
            score = -float(bm25)  # FTS5's bm25 is lower-is-better
            tags = self.catalog.effective_tags(track.id, track.tags)
            if wanted in (fold(tags.artist or ""), fold(tags.title or "")):
                score += 1000.0  # the artist or title *is* what was typed
            hits.append(Hit(track, score))
        hits.sort(key=lambda h: (-h.score, h.track.id))
        return hits[:limit]

    def _by_overrides(self, alternatives: list[list[str]]) -> list[int]:
        """Files with tags set through the overlay (``musicfs tag set``) whose every
        word matches either their own tags or those overrides ("beyonce remastered"
        finds Beyoncé's Halo once its title override says "Remastered")."""
        groups = ["(" + " OR ".join(forms) + ")" for forms in alternatives]
        candidates = self.catalog.override_matches(" OR ".join(groups), _OVERRIDE_POOL)
        if not candidates:
            return []
        matching = set(candidates)
        for group in groups:
            matching &= self.catalog.matching_among(group, candidates)
        return sorted(matching)

    def _forms(self, word: str, last: bool) -> list[str]:
        """FTS5 query terms for one typed word: itself (as a prefix), or corrections."""
        quoted = f'"{word}"'
        if self._known_prefix(word):
            return [quoted + "*"]
        if len(word) < 3:
            return []
        variants = sorted(_edits(word))
        known = self._known(variants)[:_MAX_VARIANTS]
        if not known and last and len(word) >= 4:  # still being typed: correct its start
            known = [v for v in self._known(sorted(_edits(word[:-1]))) if v][:_MAX_VARIANTS]
            return [f'"{v}"*' for v in known]
        return [f'"{v}"' for v in known]

    def _matches(self, forms: list[str]) -> int:
        """About how many files the terms *forms* match (an upper bound)."""
        total = 0
        for form in forms:
            term = form.strip("*").strip('"')
            total += self.catalog.term_files(term, prefix=form.endswith("*"))
        return total

    def _known_prefix(self, word: str) -> bool:
        return self.catalog.has_term_prefix(word)

    def _known(self, candidates: list[str]) -> list[str]:
        """Which of *candidates* are indexed words, most frequent first."""
        found = [(doc, term) for term, doc in self.catalog.known_terms(candidates)]
        return [term for _, term in sorted(found, reverse=True)]
