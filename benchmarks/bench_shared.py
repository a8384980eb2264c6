"""The ``shared`` section of bench.py: a catalog shared on PostgreSQL (issue 16).

Runs the installed PostgreSQL like the tests do (tests/servers/postgres.py: a
throwaway cluster on 127.0.0.1, ``trust`` authentication, so no password; the
section is skipped, saying why, when PostgreSQL is not installed) and measures,
through real ``musicfs mount`` daemons configured with ``[catalog] shared``
(``MUSICFS_CATALOG_SHARED``):

* at each size (100,000 and 1,000,000 tracks by default, ``--shared-sizes``),
  on a synthetic catalog (bench_data):

  - ``migrate``: ``musicfs catalog migrate``'s work (`migrate_catalog`) into an
    empty shared catalog: the first machine's catalog, now shared;
  - ``first_mount``: a second machine's first mount, on an empty cache dir:
    time from starting ``musicfs mount`` to a listable root, to the first
    tracks in the tree, and to a **full tree**: the replica's file (read from
    the side every 0.1 s) says the copy is done and every track placed, and
    ``musicfs status`` then confirms every track in the tree, the copy done
    (``bootstrapping`` false) and no lag. Then the root's listing and sample
    paths are checked and, up to 100,000 tracks, a walk of the whole tree
    counts every track (at 1,000,000 a walk through FUSE would take minutes:
    status and samples only);
  - ``next_mount``: the same machine mounting again (no copy), beside a
    SQLite-only mount of the same catalog;
  - ``plain``/``replica``: the catalog queries the FUSE handlers make, in
    process, on the plain SQLite catalog and on the replica the daemon made;

* ``mounted``: stat (first, again), readdir of the 100,000-entry folder and
  walk + stat of the 20,000-file tree of the bench library, on a mounted
  replica side by side with a SQLite-only mount of the same library, in the
  same rounds, with bench.py's own stat/readdir/walk sections (system
  "replica" beside "musicfs");

* ``propagation``: the time from a write on one machine's `SharedCatalog` (an
  override) to the value in another machine's replica, whose thread waits on
  `Listener` and runs `apply_changes` (as the mount's follower does), p50/p95.

**The origin is never scanned.** The synthetic catalogs' origin folder
``lib`` is empty (and the bench library's files are empty too), so a mount
that scanned it would remove every track from the shared catalog. A mount on
a shared catalog scans an origin only when it holds that origin's advisory
lock, whatever ``MUSICFS_SCAN_ON_START`` says: the benchmark takes the lock of
origin ``lib`` itself (`OriginLocks`, as the first machine's mount would) for
as long as its mounts run, so they follow the catalog and never scan.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.servers.postgres

import bench_data  # noqa: E402
import bench_measure as bm  # noqa: E402
from bench_mounts import Mount, musicfs_status, wait_idle  # noqa: E402

SAMPLES = 2000  # paths looked up per catalog
PROPAGATION_SAMPLES = 300
#: The environment variable that sets ``[catalog] shared`` for a daemon.
SHARED_ENV = "MUSICFS_CATALOG_SHARED"
#: The origin id of the synthetic catalogs and of the bench library (their folder's name).
ORIGIN_ID = "lib"
#: A walk of the whole tree proves a full tree up to this size (beyond: status and samples).
WALK_MAX = 100_000

#: bench.py's stat/readdir/walk sections: ``section(ctx, out)``.
Section = Callable[[Any, dict[str, Any]], dict[str, Any]]


def bench_shared(ctx: Any, out: dict[str, Any], metadata: dict[str, Section]) -> dict[str, Any]:
    """The section; *metadata* holds bench.py's ``stat``, ``readdir`` and ``walk``."""
    from tests.servers.postgres import postgres_server

    s = ctx.settings
    try:
        with postgres_server() as pg:
            out["postgres"] = str(pg.bin_dir.parent.name)
            out["origin_lock"] = (
                f"held by the benchmark for origin {ORIGIN_ID!r}: the mounts follow, never scan"
            )
            _warm_up(ctx, pg)
            out["sizes"] = {}
            for n in s.shared_sizes:
                ctx.log(f"  shared catalog of {n:,} tracks")
                out["sizes"][str(n)] = _one_size(ctx, pg, n)
            ctx.log("  the bench library on a mounted replica and on a SQLite-only mount")
            out["mounted"] = _mounted(ctx, pg, metadata)
            ctx.log("  change propagation between two replicas")
            out["propagation"] = _propagation(pg, PROPAGATION_SAMPLES if not s.quick else 50)
    except FileNotFoundError as exc:
        ctx.log(f"  [skip] shared: {exc}")
        out["skipped"] = str(exc)
    return out


@contextlib.contextmanager
def scanner_elsewhere(url: str) -> Iterator[None]:
    """Hold origin ``lib``'s lock on the shared catalog at *url*, as the machine
    that scans it would: a mount started meanwhile follows the feed, never scans."""
    from musicfs.core.shared.connect import parse_url
    from musicfs.core.shared.locks import OriginLocks

    locks = OriginLocks(parse_url(url))
    try:
        if not locks.try_lock_origin(ORIGIN_ID):
            raise RuntimeError(f"the lock of origin {ORIGIN_ID} on {url} is taken already")
        yield
    finally:
        locks.close()


def _warm_up(ctx: Any, pg: Any) -> None:
    """One unmeasured mount on an empty shared catalog: the first daemon to import
    the PostgreSQL driver compiles it into the benchmark's bytecode cache."""
    url = pg.create_database()
    work = ctx.mounter.workdir / "shared-warm-up"
    (work / "lib").mkdir(parents=True)
    with (
        scanner_elsewhere(url),
        ctx.mounter.mounted("musicfs", work / "lib", cache_dir=work / "cache",
                            env={SHARED_ENV: url}) as m,
    ):  # fmt: skip
        deadline = time.monotonic() + 60
        while not musicfs_status(m.mountpoint, timeout=60)["catalog"]["online"]:
            if time.monotonic() > deadline:
                raise AssertionError("the warm-up mount never reached the shared catalog")
            time.sleep(0.1)
        wait_idle(m.pid)  # the follower connected, copied nothing, waits
    shutil.rmtree(work, ignore_errors=True)


def _one_size(ctx: Any, pg: Any, n: int) -> dict[str, Any]:
    from musicfs.core.catalog.store import Catalog
    from musicfs.core.shared.migrate import migrate_catalog

    s = ctx.settings
    syn = bench_data.synthetic_catalog(s.cache_root, n, layout_max=s.layout_max, log=ctx.log)
    plain = Path(syn["cache_dir"]) / "catalog.sqlite3"
    origin = Path(syn["origin"])
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
    migrated.unlink()
    replica = work / "b"  # the second machine's cache dir: empty
    replica.mkdir()

    def check(m: Mount) -> None:
        root = os.listdir(m.mountpoint)
        if len(root) != -(-n // 100):
            raise AssertionError(f"replica root has {len(root)} entries, expected {-(-n // 100)}")
        for i in (0, n // 2, n - 1):
            st = os.stat(m.mountpoint / bench_data.synthetic_virtual_path(i))
            if st.st_size != 20_000_000 + i:
                raise AssertionError(f"track {i}: size {st.st_size}, expected {20_000_000 + i}")

    with scanner_elsewhere(url):
        first = _first_mount(ctx, url, origin, replica, n, check=check)
        result["first_mount"] = first
        ctx.log(
            f"    migrate {result['migrate_s']:.1f} s; 2nd machine's first mount: root listable "
            f"{first['listable_s']:.2f} s, full tree {first['full_tree_s']:.1f} s "
            f"({first['tracks_per_s']:,} tracks/s), RSS {first['rss_mib']} MiB"
        )
        result["next_mount"] = _listable(ctx, origin, replica, n, {SHARED_ENV: url})
    result["plain_mount"] = _listable(ctx, origin, Path(syn["cache_dir"]), n, {})
    ctx.log(
        f"    next mount: root listable {result['next_mount']['listable_s']:.3f} s "
        f"(SQLite-only: {result['plain_mount']['listable_s']:.3f} s)"
    )
    replica_path = replica / "catalog.sqlite3"
    result["replica_bytes"] = replica_path.stat().st_size
    rng = random.Random(n)
    paths = [bench_data.synthetic_virtual_path(rng.randrange(n)) for _ in range(SAMPLES)]
    for kind, path in (("plain", plain), ("replica", replica_path)):
        with Catalog.open(path, readonly=True) as catalog:
            result[kind] = _queries(catalog, paths)
    pg.sql(f"DROP DATABASE {url.rsplit('/', 1)[1]}")
    shutil.rmtree(work, ignore_errors=True)
    return result


def _first_mount(
    ctx: Any,
    url: str,
    origin: Path,
    cache_dir: Path,
    n: int,
    *,
    check: Callable[[Mount], None],
    template: str | None = None,
) -> dict[str, Any]:
    """A second machine's first mount (empty *cache_dir*) of the shared catalog at
    *url*: from `musicfs mount` to a listable root, to the first tracks, to a full tree.

    The replica is watched through its SQLite file (read-only, cheap queries: the
    copy's state, the highest track id copied and placed), every 0.1 s; ``musicfs
    status`` is asked only once that says the copy is done, to confirm the full
    tree. Status counts the tree, which takes about a second at 1,000,000 tracks:
    polling it all along would keep a core of the daemon busy counting.
    """
    deadline = time.monotonic() + max(300.0, n / 200)
    env = {SHARED_ENV: url}
    with ctx.mounter.mounted(
        "musicfs", origin, cache_dir=cache_dir, template=template, env=env
    ) as m:
        result: dict[str, Any] = {
            "command_s": round(m.command_seconds, 3),
            "listable_s": round(m.listable_seconds, 3),
        }
        progress: list[tuple[float, int, int]] = []  # (s since start, placed, copied)
        confirmations = 0
        with _ReplicaFile(cache_dir / "catalog.sqlite3") as replica:
            while True:
                copied, placed = replica.state()
                now = time.perf_counter() - m.started
                progress.append((round(now, 3), placed, copied))
                if placed and "first_tracks_s" not in result:
                    result["first_tracks_s"] = round(now, 3)
                if placed >= n and not replica.copying():
                    status = musicfs_status(m.mountpoint, timeout=60)
                    confirmations += 1
                    catalog = status["catalog"]
                    origins = [o["id"] for o in status["origins"]]
                    if origins != [ORIGIN_ID] or not catalog["shared"]:
                        raise AssertionError(f"unexpected mount: origins {origins}, {catalog}")
                    if catalog["scanning_origins"]:
                        raise AssertionError(f"the replica scans {catalog['scanning_origins']}")
                    done = not catalog["bootstrapping"] and catalog["lag"] == 0
                    if status["tracks"] == n and done and catalog["online"]:
                        now = time.perf_counter() - m.started
                        break
                if time.monotonic() > deadline:
                    raise AssertionError(f"no full tree in time: {placed} tracks placed")
                time.sleep(0.1)
        result["full_tree_s"] = round(now, 3)  # when the confirming status call returned
        result["tracks_per_s"] = round(n / now)
        result["status_calls"] = confirmations
        result["rss_mib"] = round((m.rss() or {}).get("VmRSS", 0) / 1024, 1)
        check(m)
        if n <= WALK_MAX:
            seconds, files = bm.walk_stat(str(m.mountpoint))
            if files != n:
                raise AssertionError(f"a walk of the replica's tree found {files} files, not {n}")
            result["walk_after"] = {"files": files, "seconds": round(seconds, 3)}
        step = max(1, len(progress) // 40)  # enough to plot the tree growing
        result["progress"] = progress[::step]
        if (len(progress) - 1) % step:
            result["progress"].append(progress[-1])
    return result


class _ReplicaFile:
    """A mount's replica, read from the side: how far its first copy is."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> _ReplicaFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()

    def state(self) -> tuple[int, int]:
        """(highest track id copied, highest placed in the tree): a copy writes
        tracks in id order, and the mount places each batch as it comes."""
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
            copied = self._conn.execute("SELECT max(id) FROM files").fetchone()[0] or 0
            placed = self._conn.execute("SELECT max(file_id) FROM nodes").fetchone()[0] or 0
        except sqlite3.OperationalError:  # not made yet, or its schema not yet
            return 0, 0
        return int(copied), int(placed)

    def copying(self) -> bool:
        """Whether the first copy has not finished yet (`Catalog.replica_state`)."""
        from musicfs.core.catalog.store import Catalog

        with Catalog.open(self.path, readonly=True) as catalog:
            catalog_id, _, bootstrapping = catalog.replica_state()
        return catalog_id is None or bootstrapping


def _listable(
    ctx: Any, origin: Path, cache_dir: Path, n: int, env: dict[str, str]
) -> dict[str, Any]:
    """A mount of a catalog already there: time to a listable root; its tracks counted."""
    with ctx.mounter.mounted("musicfs", origin, cache_dir=cache_dir, env=env) as m:
        status = musicfs_status(m.mountpoint, timeout=60)
        if status["tracks"] != n:
            raise AssertionError(f"mount of {cache_dir} shows {status['tracks']} tracks, not {n}")
        return {
            "command_s": round(m.command_seconds, 3),
            "listable_s": round(m.listable_seconds, 3),
        }


# -- stat, readdir and walk: a mounted replica beside a SQLite-only mount ----------------------


class SideBySide:
    """bench.py's `Context` with two systems: "musicfs" (the bench library's own
    SQLite catalog, as in every other section) and "replica" (a mount whose
    catalog is a replica of the same library's catalog, shared on PostgreSQL)."""

    def __init__(self, ctx: Any, replica_cache: Path, url: str) -> None:
        self._ctx = ctx
        self.replica_cache = replica_cache
        self.url = url

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def systems(self) -> list[str]:
        return ["musicfs", "replica"]

    @contextlib.contextmanager
    def fresh_mount(self, kind: str) -> Iterator[Mount]:
        if kind != "replica":
            with self._ctx.fresh_mount(kind) as m:
                yield m
            return
        with self._ctx.mounter.mounted(
            "musicfs",
            self._ctx.origin,
            cache_dir=self.replica_cache,
            template=self._ctx.lib["template"],
            env={SHARED_ENV: self.url},
        ) as m:
            m.extra["settle_s"] = round(wait_idle(m.pid), 3)  # start-up work done
            yield m


def _mounted(ctx: Any, pg: Any, metadata: dict[str, Section]) -> dict[str, Any]:
    from musicfs.core.shared.migrate import migrate_catalog

    s = ctx.settings
    if not ctx.lib:  # --only shared
        ctx.lib = bench_data.bench_library(
            s.cache_root, tree=s.tree_files, big_dir=s.big_dir, small_dir=s.small_dir,
            big_mib=s.big_file_mib, log=ctx.log,
        )  # fmt: skip
    lib = ctx.lib
    n = lib["tree_files"] + lib["big_dir_files"] + lib["small_dir_files"] + 1
    work = ctx.mounter.workdir / "shared-benchlib"
    work.mkdir()
    migrated = work / "a" / "catalog.sqlite3"
    migrated.parent.mkdir()
    shutil.copyfile(Path(lib["cache_dir"]) / "catalog.sqlite3", migrated)
    url = pg.create_database()
    migrate_catalog(migrated, url)
    replica = work / "b"
    replica.mkdir()
    out: dict[str, Any] = {"tracks": n, "rounds": s.rounds}

    def check(m: Mount) -> None:
        bm.listdir_seconds(str(m.mountpoint / lib["big_dir"]), lib["big_dir_files"])

    with scanner_elsewhere(url):
        out["first_mount"] = _first_mount(
            ctx, url, ctx.origin, replica, n, check=check, template=lib["template"]
        )
        ctx.log(f"    replica of {n:,} tracks copied in {out['first_mount']['full_tree_s']:.1f} s")
        side = SideBySide(ctx, replica, url)
        for name in ("stat", "readdir", "walk"):
            ctx.log(f"    [{name}] SQLite-only (musicfs) and replica, {s.rounds} round(s)")
            section: dict[str, Any] = {}
            out[name] = metadata[name](side, section)
    pg.sql(f"DROP DATABASE {url.rsplit('/', 1)[1]}")
    shutil.rmtree(work, ignore_errors=True)
    return out


# -- in-process catalog queries, change propagation ----------------------------------------------


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
