"""The ``shared`` section of bench.py: a catalog shared on PostgreSQL (issue 16).

Runs the installed PostgreSQL like the tests do (tests/servers/postgres.py: a
throwaway cluster on 127.0.0.1; the section is skipped, saying why, when
PostgreSQL is not installed) and measures, at each size (100,000 and 1,000,000
tracks by default, ``--shared-sizes``):

* ``migrate``: ``musicfs catalog migrate``'s work (`migrate_catalog`): a
  synthetic SQLite catalog (bench_data) copied into an empty shared catalog;
* ``bootstrap``: the first copy of a new machine's replica (`feed.bootstrap`),
  time to a complete replica; then ``tree``: laying out its tree with the
  default template (`Layout`), as the mount does: the two together are the
  time to a full tree;
* ``lookup``/``getattr``/``readdir``: the catalog queries the FUSE handlers
  make (lookup of every path component, the node of a file, the root's
  listing in pages), on the replica and on the plain SQLite catalog of the
  same size. In-process: the mount wiring of a shared catalog is not merged
  yet, so no FUSE mount is measured here.

and once (on a small catalog) ``propagation``: the time from a write on one
machine's `SharedCatalog` (an override) to the value in another machine's
replica, whose thread waits on `Listener` and runs `apply_changes` (as the
mount's follower does), p50/p95 over many samples.
"""

from __future__ import annotations

import random
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.servers.postgres

import bench_data  # noqa: E402
import bench_measure as bm  # noqa: E402

SAMPLES = 2000  # paths looked up per catalog
PROPAGATION_SAMPLES = 300


def bench_shared(ctx: Any, out: dict[str, Any]) -> dict[str, Any]:
    from tests.servers.postgres import postgres_server

    s = ctx.settings
    try:
        with postgres_server() as pg:
            out["postgres"] = str(pg.bin_dir.parent.name)
            out["in_process"] = True
            out["sizes"] = {}
            for n in s.shared_sizes:
                ctx.log(f"  shared catalog of {n:,} tracks")
                out["sizes"][str(n)] = _one_size(ctx, pg, n)
            ctx.log("  change propagation between two replicas")
            out["propagation"] = _propagation(pg, PROPAGATION_SAMPLES if not s.quick else 50)
    except FileNotFoundError as exc:
        ctx.log(f"  [skip] shared: {exc}")
        out["skipped"] = str(exc)
    return out


def _one_size(ctx: Any, pg: Any, n: int) -> dict[str, Any]:
    from musicfs.core.catalog.layout import Layout
    from musicfs.core.catalog.store import Catalog
    from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
    from musicfs.core.shared.feed import bootstrap
    from musicfs.core.shared.migrate import migrate_catalog
    from musicfs.core.shared.store import SharedCatalog

    s = ctx.settings
    syn = bench_data.synthetic_catalog(s.cache_root, n, layout_max=s.layout_max, log=ctx.log)
    plain = Path(syn["cache_dir"]) / "catalog.sqlite3"
    work = ctx.mounter.workdir / f"shared-{n}"
    work.mkdir()
    migrated = work / "a" / "catalog.sqlite3"
    migrated.parent.mkdir()
    shutil.copyfile(plain, migrated)  # the migration makes it a replica: not the cached one
    url = pg.create_database()
    result: dict[str, Any] = {"tracks": n}
    t = time.perf_counter()
    report = migrate_catalog(migrated, url)
    result["migrate_s"] = round(time.perf_counter() - t, 3)
    result["migrate_tracks_per_s"] = round(n / result["migrate_s"])
    assert report.tracks == n, report
    replica_path = work / "b" / "catalog.sqlite3"
    with SharedCatalog.open(url) as shared, Catalog.open(replica_path, cache_mib=64) as replica:
        t = time.perf_counter()
        copied = bootstrap(replica, shared)
        result["bootstrap_s"] = round(time.perf_counter() - t, 3)
        assert copied == n, copied
        result["bootstrap_tracks_per_s"] = round(n / result["bootstrap_s"])
        ctx.log(f"    migrate {result['migrate_s']:.1f} s, bootstrap {result['bootstrap_s']:.1f} s")
        t = time.perf_counter()
        with replica.transaction(), replica.page_cache(256):
            placed = Layout(replica, PathTemplate.parse(DEFAULT_TEMPLATE)).rebuild()
        result["tree_s"] = round(time.perf_counter() - t, 3)
        assert placed == n, placed
        result["full_tree_s"] = round(result["bootstrap_s"] + result["tree_s"], 3)
        ctx.log(f"    tree {result['tree_s']:.1f} s")
    result["replica_bytes"] = replica_path.stat().st_size
    rng = random.Random(n)
    paths = [bench_data.synthetic_virtual_path(rng.randrange(n)) for _ in range(SAMPLES)]
    for kind, path in (("plain", plain), ("replica", replica_path)):
        with Catalog.open(path, readonly=True) as catalog:
            result[kind] = _queries(catalog, paths)
    pg.sql(f"DROP DATABASE {url.rsplit('/', 1)[1]}")
    shutil.rmtree(work, ignore_errors=True)
    return result


def _queries(catalog: Any, paths: list[str]) -> dict[str, Any]:
    """What the FUSE handlers ask of the catalog: lookup per component, getattr, readdir."""
    from musicfs.core.catalog.store import ROOT_NODE

    lookups: list[int] = []
    getattrs: list[int] = []
    for _ in range(2):  # the first round warms SQLite's page cache; the second counts
        lookups.clear()
        getattrs.clear()
        for path in paths:
            parent = ROOT_NODE
            t = time.perf_counter_ns()
            for name in path.split("/"):
                node = catalog.lookup(parent, name)
                assert node is not None, path
                parent = node.id
            lookups.append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            catalog.node(parent)
            getattrs.append(time.perf_counter_ns() - t)
    listings: list[float] = []
    entries = 0
    for _ in range(5):
        started = time.perf_counter()
        after, entries = 0, 0
        while page := catalog.children(ROOT_NODE, after, 1000):
            entries += len(page)
            after = page[-1].id
        listings.append(time.perf_counter() - started)
    return {
        "lookup_path": bm.summary_us(lookups),
        "getattr": bm.summary_us(getattrs),
        "readdir_root": {
            "entries": entries,
            "median_ms": round(statistics.median(listings) * 1000, 2),
            "first_ms": round(listings[0] * 1000, 2),
        },
    }


def _propagation(pg: Any, samples: int) -> dict[str, Any]:
    """Write on A, see it in B's replica (B: Listener + apply_changes in a thread)."""
    from musicfs.core.catalog.store import Catalog
    from musicfs.core.shared.feed import Listener, apply_changes, bootstrap
    from musicfs.core.shared.store import SharedCatalog
    from tests.servers.replicas import scanned

    url = pg.create_database()
    work = Path(bench_data.__file__).resolve().parent / "results" / "shared-propagation"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    seen: dict[int, int] = {}  # track id -> perf_counter_ns when B applied it
    stop = threading.Event()
    ready = threading.Event()
    threads: list[threading.Thread] = []
    try:
        with SharedCatalog.open(url) as a:
            ids = a.write_scan_batch([scanned(f"A/{i:04d}.flac") for i in range(1000)])

            def follow() -> None:
                with (
                    SharedCatalog.open(url) as shared,
                    Catalog.open(work / "b.sqlite3") as replica,
                    Listener(shared.address) as listener,
                ):
                    bootstrap(replica, shared)
                    listener.wait_for_notify(0)  # LISTEN before the first write
                    ready.set()
                    while not stop.is_set():
                        if listener.wait_for_notify(0.2):
                            applied = apply_changes(replica, shared)
                            now = time.perf_counter_ns()
                            for file_id in applied.overrides:
                                seen.setdefault(file_id, now)

            thread = threading.Thread(target=follow, daemon=True)
            threads.append(thread)
            thread.start()
            if not ready.wait(30):
                raise RuntimeError("the follower did not start")
            latencies: list[int] = []
            for i in range(samples):
                file_id = ids[i % len(ids)]
                seen.pop(file_id, None)
                t = time.perf_counter_ns()
                a.set_overrides(file_id, {"genre": f"g{i}"})
                deadline = time.monotonic() + 10
                while file_id not in seen:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"change {i} did not reach the replica in 10 s")
                    time.sleep(0.0002)
                latencies.append(seen[file_id] - t)
                time.sleep(0.005)  # writes apart, as users make them
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        shutil.rmtree(work, ignore_errors=True)
    ms = [v / 1e6 for v in latencies]
    return {
        "samples": len(ms),
        "p50_ms": round(bm.pct(ms, 50), 2),
        "p95_ms": round(bm.pct(ms, 95), 2),
        "max_ms": round(max(ms), 2),
        "what": "set_overrides on A -> NOTIFY -> B's Listener wakes -> apply_changes committed",
    }
