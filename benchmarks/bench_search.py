"""Search latency on a synthetic catalog of 1,000,000 tracks (issue 7, FR-14).

    python benchmarks/bench_search.py [--tracks 1000000] [--queries 300] [--output FILE]

Builds (once, cached under benchmarks/results/search-catalog-N.sqlite3) a
catalog of N tracks with made-up artists, albums and titles drawn from a word
list, through the real `Catalog.upsert_file` (so the search triggers index
them as a scan would). Then times `Searcher.search(query, 50)` for a mix of
queries people type: an exact artist, artist + title words, a word prefix, a
one-letter typo, a diacritics-free spelling — p50 and p95 over *queries*
searches, each on the same read-only connection the daemon's search uses.
Target (issue 7): p95 < 50 ms. Writes JSON and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from musicfs.core.catalog.search import Searcher
from musicfs.core.catalog.store import Catalog
from musicfs.core.model import FileStat, ScannedFile, TrackTags

ROOT = Path(__file__).resolve().parent
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "tu",
    "ve",
    "son",
    "dar",
    "mel",
    "thi",
    "rö",
    "zé",
    "qua",
    "bri",
    "nox",
    "lum",
    "fer",
    "gal",
    "hy",
    "pel",
    "ost",
    "ivo",
]
GENRES = ["Rock", "Pop", "Jazz", "Électro"]


def word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))


def build(path: Path, tracks: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    artists = [" ".join(word(rng) for _ in range(rng.randint(1, 2))).title() for _ in range(20_000)]
    started = time.monotonic()
    with Catalog.open(path, cache_mib=256) as catalog:
        batch = 5000
        for start in range(0, tracks, batch):
            with catalog.transaction():
                for i in range(start, min(start + batch, tracks)):
                    artist = artists[i % len(artists)]
                    album = " ".join(word(rng) for _ in range(rng.randint(1, 3))).title()
                    title = " ".join(word(rng) for _ in range(rng.randint(1, 4))).title()
                    tags = TrackTags(title=title, artist=artist, album=album, track=i % 20 + 1,
                                     genre=rng.choice(GENRES))  # fmt: skip
                    scanned = ScannedFile("lib", f"{artist}/{album}/{i}.flac", FileStat(i, i),
                                          "flac", tags)  # fmt: skip
                    catalog.upsert_file(scanned)
            if start % 100_000 == 0:
                print(f"  {start:,} tracks ({time.monotonic() - started:.0f} s)", flush=True)
        catalog.optimize_search()


def queries(catalog: Catalog, count: int, seed: int = 11) -> list[tuple[str, str]]:
    """(kind, query) pairs made from tracks that exist."""
    rng = random.Random(seed)
    with closing(sqlite3.connect(catalog.path)) as db:  # the benchmark's own look at the rows
        rows = db.execute(
            "SELECT artist, title FROM files WHERE id IN "
            "(SELECT id FROM files ORDER BY random() LIMIT ?)",
            (count,),
        ).fetchall()
    out: list[tuple[str, str]] = []
    for i, (artist, title) in enumerate(rows):
        kind = ("artist", "artist+title", "prefix", "typo", "folded")[i % 5]
        first = title.split()[0]
        if kind == "artist":
            q = artist
        elif kind == "artist+title":
            q = f"{artist.split()[0]} {first}"
        elif kind == "prefix":
            q = first[: max(3, len(first) - 2)]
        elif kind == "typo":
            cut = rng.randrange(1, len(first) - 1)
            q = first[:cut] + first[cut + 1 :]  # one letter missing
        else:
            q = artist.replace("ö", "o").replace("é", "e").lower()
        out.append((kind, q))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    (ROOT / "results").mkdir(exist_ok=True)
    path = ROOT / "results" / f"search-catalog-{args.tracks}.sqlite3"
    if path.exists():
        Catalog.open(path).close()  # bring it to the current schema
    else:
        print(f"building a catalog of {args.tracks:,} tracks (once) in {path}")
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        build(partial, args.tracks)
        partial.rename(path)
    with Catalog.open(path, readonly=True) as catalog:
        searcher = Searcher(catalog)
        cases = queries(catalog, args.queries)
        for _, q in cases[:20]:
            searcher.search(q)  # warm the page cache, as a running daemon has it
        by_kind: dict[str, list[float]] = {}
        found = 0
        for kind, q in cases:
            started = time.perf_counter()
            hits = searcher.search(q, 50)
            by_kind.setdefault(kind, []).append(time.perf_counter() - started)
            found += bool(hits)
    all_ms = sorted(s * 1000 for samples in by_kind.values() for s in samples)
    result: dict[str, Any] = {
        "tracks": args.tracks,
        "queries": len(cases),
        "found_something": found,
        "p50_ms": statistics.median(all_ms),
        "p95_ms": statistics.quantiles(all_ms, n=100, method="inclusive")[94],
        "target_p95_ms": 50,
        "by_kind": {
            kind: {
                "p50_ms": statistics.median(s * 1000 for s in samples),
                "p95_ms": statistics.quantiles(
                    [x * 1000 for x in samples], n=100, method="inclusive"
                )[94],
            }
            for kind, samples in by_kind.items()
        },
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = args.output or ROOT / "results" / f"search-{stamp}.json"
    output.write_text(json.dumps(result, indent=2))
    print(f"\nsearch over {args.tracks:,} tracks, {len(cases)} queries "
          f"({found} found something)")  # fmt: skip
    print(f"{'query kind':<14} {'p50 ms':>8} {'p95 ms':>8}")
    for kind, figures in result["by_kind"].items():
        print(f"{kind:<14} {figures['p50_ms']:>8.1f} {figures['p95_ms']:>8.1f}")
    print(f"{'all':<14} {result['p50_ms']:>8.1f} {result['p95_ms']:>8.1f}   (target p95 < 50)")
    print(f"written to {output}")


if __name__ == "__main__":
    main()
