"""What-if: listings kept by the kernel (FOPEN_CACHE_DIR), which pyfuse3 3.5 cannot ask for.

Since Linux 4.20 a FUSE filesystem may answer ``opendir`` with
``FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE`` (libfuse >= 3.5: ``fi->cache_readdir``,
``fi->keep_cache``): the kernel then keeps the folder's listing in its page
cache and answers the next ``ls`` without asking the daemon, until the folder's
mtime changes or the daemon invalidates the inode. pyfuse3 3.5 fills
``fuse_file_info`` itself and sets neither. This script measures what a minimal
patch of the binding (``pyfuse3-cache-readdir.patch`` beside it: both flags on
every opendir while ``PYFUSE3_CACHE_READDIR=1``) would give, against the same
systems unpatched and mergerfs, interleaved in one run, on bench.py's library:

    # build the patched binding once, outside the project's lock and venvs:
    pip download pyfuse3==3.5.0 --no-binary :all: --no-deps -d /tmp/pf
    tar xzf /tmp/pf/pyfuse3-3.5.0.tar.gz -C /tmp/pf && cd /tmp/pf/pyfuse3-3.5.0
    patch -p1 < .../benchmarks/pyfuse3-cache-readdir.patch && rm src/pyfuse3/__init__.c
    SETUPTOOLS_SCM_PRETEND_VERSION=3.5.0 pip wheel --no-deps -w /tmp/pf/wheel .
    python -m zipfile -e /tmp/pf/wheel/pyfuse3-*.whl /tmp/pf/patched
    # then, as root, with bench.py's library built (python benchmarks/bench.py --only readdir):
    python benchmarks/whatif_cache_readdir.py --patched /tmp/pf/patched --rounds 3

Run as root (FUSE mounts). Prints a table; the JSON goes to results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_measure as bm
from bench_mounts import Mount, Mounter, wait_idle

RESULTS = Path(__file__).resolve().parent / "results"
SYSTEMS = ("musicfs", "musicfs+cache_readdir", "floor", "floor+cache_readdir", "mergerfs")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--patched", type=Path, required=True, help="dir holding the patched pyfuse3")
    p.add_argument("--rounds", type=int, default=3, help="fresh mounts per system")
    p.add_argument("--repeats", type=int, default=5, help="listings after the first, per round")
    p.add_argument("--cache-root", type=Path, default=RESULTS / "cache")
    a = p.parse_args()
    libs = sorted(a.cache_root.glob("benchlib-t*-d100000-*"))
    if not libs:
        sys.exit("no bench library: run `python benchmarks/bench.py --only readdir` once")
    meta = json.loads((libs[-1] / "meta.json").read_text())
    origin, big, entries = Path(meta["origin"]), meta["big_dir"], meta["big_dir_files"]
    work = Path(tempfile.mkdtemp(prefix="whatif-readdir-"))
    mounter = Mounter(work, a.cache_root / "pycache")
    patched = {"PYTHONPATH": str(a.patched), "PYFUSE3_CACHE_READDIR": "1"}
    copy = work / "cache"  # the patched daemon's own copy of the cache dir (one daemon each)
    shutil.copytree(meta["cache_dir"], copy, ignore=shutil.ignore_patterns("lock", "*.sock"))

    def mount(kind: str) -> Mount:
        if kind == "musicfs":
            return mounter.mount_musicfs(
                origin, cache_dir=Path(meta["cache_dir"]), template=meta["template"]
            )
        if kind == "musicfs+cache_readdir":
            return mounter.mount_musicfs(
                origin, cache_dir=copy, template=meta["template"], env=patched
            )
        if kind == "mergerfs":
            return mounter.mount_mergerfs(origin)
        mnt = mounter.fresh_mountpoint("floor")
        floor = str(Path(__file__).with_name("bench_floorfs.py"))
        saved = dict(os.environ)
        if kind == "floor+cache_readdir":
            os.environ.update(patched)  # the floor's process inherits it
        try:
            return mounter._mount_foreground(
                "floor", origin, mnt, [sys.executable, floor, str(origin), str(mnt)]
            )
        finally:
            os.environ.clear()
            os.environ.update(saved)

    first: dict[str, list[float]] = {k: [] for k in SYSTEMS}
    median: dict[str, list[float]] = {k: [] for k in SYSTEMS}
    try:
        for r in range(a.rounds):
            with contextlib.ExitStack() as stack:
                mounts = {}
                for kind in SYSTEMS:
                    mounts[kind] = m = mount(kind)
                    stack.callback(mounter.unmount, m)
                    wait_idle(m.pid)
                order = list(SYSTEMS[r % len(SYSTEMS) :] + SYSTEMS[: r % len(SYSTEMS)])
                for kind in order:
                    path = str(mounts[kind].mountpoint / big)
                    first[kind].append(bm.listdir_seconds(path, entries) * 1000)
                runs: dict[str, list[float]] = {k: [] for k in SYSTEMS}
                for rep in range(a.repeats):
                    for kind in order[rep % len(order) :] + order[: rep % len(order)]:
                        path = str(mounts[kind].mountpoint / big)
                        runs[kind].append(bm.listdir_seconds(path, entries) * 1000)
                for kind in SYSTEMS:
                    median[kind].append(statistics.median(runs[kind]))
    finally:
        mounter.cleanup_all()
        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {
        "entries": entries,
        "rounds": a.rounds,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "systems": {
            k: {
                "first_ms": round(statistics.median(first[k]), 1),
                "median_ms": round(statistics.median(median[k]), 1),
                "first_rounds_ms": [round(x, 1) for x in first[k]],
                "median_rounds_ms": [round(x, 1) for x in median[k]],
            }
            for k in SYSTEMS
        },
    }
    print(f"readdir of {entries:,} entries, median of {a.rounds} rounds (ms):")
    print(f"  {'system':24} {'first':>9} {'median':>9}")
    for kind, row in result["systems"].items():
        print(f"  {kind:24} {row['first_ms']:9.1f} {row['median_ms']:9.1f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"whatif-cache-readdir-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
