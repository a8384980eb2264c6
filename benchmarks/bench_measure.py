"""Measurement primitives: each takes paths and returns plain numbers.

Timings use `time.perf_counter_ns` around single system calls; the Python
overhead of the loop (~0.1-0.3 µs) is the same for every filesystem compared.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def drop_caches() -> bool:
    """``sync; echo 3 > /proc/sys/vm/drop_caches`` (needs root). False if not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def pct(values: list[float], q: float) -> float:
    """The *q*-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary_us(ns: list[int]) -> dict[str, float]:
    us = [v / 1000 for v in ns]
    return {
        "n": len(us),
        "p50_us": round(pct(us, 50), 2),
        "p90_us": round(pct(us, 90), 2),
        "p99_us": round(pct(us, 99), 2),
        "mean_us": round(statistics.fmean(us), 2),
        "max_us": round(max(us), 1),
    }


# -- metadata -------------------------------------------------------------------------


def stat_pass(paths: list[str]) -> list[int]:
    """os.stat every path once; the time of each call in ns."""
    out = []
    clock = time.perf_counter_ns
    stat = os.stat
    for p in paths:
        t = clock()
        stat(p)
        out.append(clock() - t)
    return out


def listdir_seconds(path: str, expected: int | None = None) -> float:
    t = time.perf_counter()
    names = os.listdir(path)
    seconds = time.perf_counter() - t
    if expected is not None and len(names) != expected:
        raise AssertionError(f"{path}: listed {len(names)} entries, expected {expected}")
    return seconds


def readdir_series(path: str, expected: int, repeats: int) -> dict[str, Any]:
    """First listing, then *repeats* more: first and median in ms."""
    first = listdir_seconds(path, expected)
    again = [listdir_seconds(path, expected) for _ in range(repeats)]
    return {
        "entries": expected,
        "first_ms": round(first * 1000, 2),
        "median_ms": round(statistics.median(again) * 1000, 2),
        "min_ms": round(min(again) * 1000, 2),
        "runs_ms": [round(s * 1000, 2) for s in again],
    }


def walk_stat(root: str) -> tuple[float, int]:
    """os.walk *root* and os.stat every file: (seconds, files)."""
    t = time.perf_counter()
    count = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.stat(os.path.join(dirpath, name))
            count += 1
    return time.perf_counter() - t, count


def largest_mappings(pid: int, top: int = 6) -> dict[str, int]:
    """Resident KiB of a process's largest mappings (/proc/PID/smaps), by file
    ("[anon]" for anonymous memory: the Python heap, SQLite's page caches)."""
    sizes: dict[str, int] = {}
    name = "[anon]"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                fields = line.split()
                if fields and not fields[0].endswith(":"):  # a mapping's header line
                    name = fields[5] if len(fields) > 5 else "[anon]"
                elif fields and fields[0] == "Rss:":
                    sizes[name] = sizes.get(name, 0) + int(fields[1])
    except OSError:
        return {}
    biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:top]
    return {os.path.basename(k) if k.startswith("/") else k: v for k, v in biggest}


# -- data -------------------------------------------------------------------------------

_CHUNK = 1 << 20


def seq_read(path: str, bufsize: int = _CHUNK) -> dict[str, float]:
    """Read the whole file with *bufsize* reads into one reused buffer: GB/s."""
    buf = bytearray(bufsize)
    view = memoryview(buf)
    total = 0
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            total += n
    seconds = time.perf_counter() - t
    return {
        "bytes": total,
        "seconds": round(seconds, 4),
        "gb_per_s": round(total / seconds / 1e9, 3),
    }


def fingerprint(path: str, size: int) -> bytes:
    """A few 4 KiB pieces of the file, to check a mount returns the right bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return b"".join(
            os.pread(fd, 4096, off) for off in (0, size // 3, size // 2, max(0, size - 4096))
        )
    finally:
        os.close(fd)


def random_reads(path: str, size: int, count: int, seed: int = 1) -> dict[str, Any]:
    """*count* 4 KiB preads at random aligned offsets on one newly opened fd.

    Call it after the file has been read (warm caches). The first round
    (``warm``) is what SPEC §11 compares: a new open of a recently read file, so a
    filesystem that drops its page cache on open (mergerfs ``cache.files=partial``,
    rclone) answers from its daemon, one that keeps it (MusicFS ``keep_cache``)
    from the page cache. The second round reads the same offsets again
    (``repeat``): every filesystem then answers from the page cache.
    """
    rng = random.Random(seed)
    offsets = [rng.randrange(0, size // 4096) * 4096 for _ in range(count)]
    fd = os.open(path, os.O_RDONLY)
    clock = time.perf_counter_ns
    rounds: list[list[int]] = []
    try:
        for _ in range(2):
            times = []
            for off in offsets:
                t = clock()
                os.pread(fd, 4096, off)
                times.append(clock() - t)
            rounds.append(times)
    finally:
        os.close(fd)
    return {"warm": summary_us(rounds[0]), "repeat": summary_us(rounds[1])}


def _bdi(mountpoint: Path) -> Path | None:
    try:
        dev = subprocess.run(
            ["mountpoint", "-d", str(mountpoint)], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(f"/sys/class/bdi/{dev}/read_ahead_kb")


def read_ahead_kb(mountpoint: Path) -> int | None:
    """The kernel read-ahead of the mount's backing device (FUSE request size follows it)."""
    bdi = _bdi(mountpoint)
    try:
        return None if bdi is None else int(bdi.read_text())
    except (OSError, ValueError):
        return None


def set_read_ahead_kb(mountpoint: Path, kb: int) -> bool:
    """Change it (root only; it lasts as long as the mount). True if it took."""
    bdi = _bdi(mountpoint)
    try:
        if bdi is None:
            return False
        bdi.write_text(f"{kb}\n")
    except OSError:
        return False
    return read_ahead_kb(mountpoint) == kb


def stall_during(probe: Callable[[], object], action: Callable[[], object]) -> dict[str, float]:
    """Run *action* while another thread calls *probe* in a loop; how long *probe* stalled.

    With a probe that must reach the filesystem daemon (listing a small directory
    is never answered from the kernel's caches), the longest probe is how long
    *action* kept the daemon from answering anything else.
    """
    done = threading.Event()
    latencies: list[float] = []

    def loop() -> None:
        while not done.is_set():
            t = time.perf_counter()
            probe()
            latencies.append(time.perf_counter() - t)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    time.sleep(0.05)
    t = time.perf_counter()
    action()
    action_s = time.perf_counter() - t
    time.sleep(0.02)
    done.set()
    thread.join(timeout=30)
    return {
        "action_s": round(action_s, 4),
        "probe_max_ms": round(max(latencies, default=0.0) * 1000, 2),
        "probe_median_ms": round(statistics.median(latencies) * 1000, 3) if latencies else 0.0,
        "probes": len(latencies),
    }


@contextlib.contextmanager
def heap_kept_aside() -> Iterator[int]:
    """For an in-process scan: this process's own heap (boto3's models, earlier
    sections' results: 140,000-160,000 objects in a full run) kept out of the
    garbage collector's full passes, which a scan's allocations start again and
    again. The daemon's heap is about 55,000 objects after start-up: the figure
    is to be MusicFS's, not this harness's (an A/B of a 2,000-track SFTP scan:
    10% slower with 750,000 objects more; with this run's heap, within the
    noise). Yields the objects kept aside."""
    gc.collect()
    gc.freeze()
    try:
        yield gc.get_freeze_count()
    finally:
        gc.unfreeze()
