"""The benchmark's synthetic catalogs stay in step with the catalog (issue 17).

`nox -s bench` builds catalogs of 1,000,000 tracks by inserting rows with SQL
(benchmarks/bench_data.py), since placing them one by one with `Layout` takes
minutes. A column added to the catalog, or a change of what `Layout` stores,
must fail here, not make the benchmark fall back to the slow path (or measure
a catalog the product would never make).
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[4] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_data  # noqa: E402


def test_the_bulk_sql_catalog_is_the_one_layout_makes(tmp_path: Path) -> None:
    # 1,050 tracks: 10 artists of 10 albums, then one with 5 (folders begun and left off).
    assert bench_data.bulk_matches_layout(tmp_path, 1_050) is None
    # Both were compared whole: every track, with what Layout derives from it.
    rows = bench_data.catalog_rows(tmp_path / "bulk-check-sql" / "catalog.sqlite3")
    files_cols, files = rows["files"]
    assert len(files) == 1_050
    assert all(row[files_cols.index("replica_key")] for row in files)
    nodes_cols, nodes = rows["nodes"]
    assert len(nodes) == 1 + 11 + 105 + 1_050  # root, artists, albums, tracks
    assert all(row[nodes_cols.index("version")] for row in nodes if row[3] is not None)
