"""LatencyRecorder: quantiles from fixed buckets, bounded memory, thread safety,
and what timing every FUSE request costs (`musicfs.core.fuse.fs._fuse_op`)."""

from __future__ import annotations

import bisect
import contextlib
import errno
import itertools
import math
import random
import threading
import time
import tracemalloc
from collections import Counter
from typing import Any

import pyfuse3
import pytest

from musicfs.core.content.library import LibraryError
from musicfs.core.fuse import fs
from musicfs.core.fuse.latency import (
    BATCH,
    FINE_BOUNDS,
    MAX_OPERATIONS,
    OTHER,
    PROMETHEUS_BOUNDS,
    Histogram,
    LatencyRecorder,
    empty_histogram,
    merge,
)


def exact_quantile(values: list[float], q: float) -> float:
    """The smallest value with at least q of all values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def bucket_of(value: float) -> tuple[float, float]:
    index = bisect.bisect_left(FINE_BOUNDS, value)
    return (FINE_BOUNDS[index - 1] if index else 0.0), FINE_BOUNDS[index]


def record_all(values: list[float], op: str = "read") -> Histogram:
    recorder = LatencyRecorder()
    for value in values:
        recorder.record(op, value)
    return recorder.snapshot()[op]


def test_bounds_are_sorted_and_prometheus_bounds_are_fine_bounds() -> None:
    assert list(FINE_BOUNDS) == sorted(set(FINE_BOUNDS))
    assert set(PROMETHEUS_BOUNDS) <= set(FINE_BOUNDS)
    ratios = [b / a for a, b in itertools.pairwise(FINE_BOUNDS)]
    assert max(ratios) <= 1.25 + 1e-9  # hence the error bound of the quantiles


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quantiles_of_known_data_fall_in_the_true_values_bucket(seed: int) -> None:
    rng = random.Random(seed)
    # Log-uniform from 5 µs to 2 s: the spread FUSE requests have.
    values = [math.exp(rng.uniform(math.log(5e-6), math.log(2.0))) for _ in range(20_000)]
    histogram = record_all(values)
    assert histogram.count == len(values)
    assert histogram.total == pytest.approx(sum(values))
    for q in (0.5, 0.95, 0.99):
        true = exact_quantile(values, q)
        lower, upper = bucket_of(true)
        estimate = histogram.quantile(q)
        assert lower <= estimate <= upper, (q, true, estimate)
        assert estimate == pytest.approx(true, rel=0.25)
        # Within a bucket the data are close to uniform: interpolation does far better.
        assert estimate == pytest.approx(true, rel=0.03)


def test_quantiles_of_a_small_exact_set() -> None:
    # 100 requests: 1..100 ms. p50 = 50 ms, p95 = 95 ms, p99 = 99 ms.
    values = [i / 1000 for i in range(1, 101)]
    histogram = record_all(values)
    assert histogram.quantile(0.5) == pytest.approx(0.050, rel=0.05)
    assert histogram.quantile(0.95) == pytest.approx(0.095, rel=0.05)
    assert histogram.quantile(0.99) == pytest.approx(0.099, rel=0.05)
    assert histogram.quantile(1.0) == pytest.approx(0.100)  # the top of its bucket
    assert histogram.quantile(0.0) == pytest.approx(0.0009)  # the bottom of the first


def test_all_values_alike() -> None:
    histogram = record_all([0.003] * 1000)  # 3 ms is a bound: bucket (2.5 ms, 3 ms]
    for q in (0.5, 0.95, 0.99):
        assert 0.0025 <= histogram.quantile(q) <= 0.003


def test_edges() -> None:
    assert empty_histogram().quantile(0.5) == 0.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        empty_histogram().quantile(1.5)
    slow = record_all([500.0, 1000.0])  # above the last bound: answered with it
    assert slow.quantile(0.99) == FINE_BOUNDS[-1]
    tiny = record_all([1e-9, 0.0, -1.0])  # a clock step back lands in the first bucket
    assert tiny.counts[0] == 3
    assert 0.0 <= tiny.quantile(0.5) <= FINE_BOUNDS[0]


def test_cumulative_buckets_are_exact_counts() -> None:
    rng = random.Random(7)
    values = [math.exp(rng.uniform(math.log(1e-6), math.log(200.0))) for _ in range(5000)]
    values += list(PROMETHEUS_BOUNDS)  # on a bound: counted as ≤ it
    cumulative = record_all(values).cumulative(PROMETHEUS_BOUNDS)
    assert [b for b, _ in cumulative] == [*PROMETHEUS_BOUNDS, math.inf]
    for bound, count in cumulative:
        assert count == sum(1 for v in values if v <= bound), bound


def test_merge_and_summary() -> None:
    recorder = LatencyRecorder()
    for _ in range(90):
        recorder.record("getattr", 20e-6)
    for _ in range(10):
        recorder.record("read", 0.2)
    snapshot = recorder.snapshot()
    merged = merge(snapshot.values())
    assert merged.count == 100
    assert merged.total == pytest.approx(90 * 20e-6 + 10 * 0.2)
    summary = recorder.summary()
    assert 0.0175 <= summary["latency_p50_ms"] <= 0.020  # type: ignore[operator]
    assert 175 <= summary["latency_p95_ms"] <= 200  # type: ignore[operator]
    assert [o["op"] for o in summary["op_latency"]] == ["getattr", "read"]  # type: ignore[attr-defined]
    read = summary["op_latency"][1]  # type: ignore[index]
    assert read["count"] == 10
    assert 175 <= read["p99_ms"] <= 200
    assert LatencyRecorder().summary() == {
        "latency_p50_ms": 0.0,
        "latency_p95_ms": 0.0,
        "latency_p99_ms": 0.0,
        "op_latency": [],
    }


def test_memory_is_bounded_in_names_and_in_requests() -> None:
    recorder = LatencyRecorder()
    for i in range(10 * MAX_OPERATIONS):
        recorder.record(f"op{i}", 1e-4)
    snapshot = recorder.snapshot()
    assert len(snapshot) == MAX_OPERATIONS
    assert snapshot[OTHER].count == 10 * MAX_OPERATIONS - (MAX_OPERATIONS - 1)

    recorder = LatencyRecorder()
    rng = random.Random(3)
    for _ in range(1000):
        recorder.record("read", rng.uniform(0, 2))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100_000):
            recorder.record("read", rng.uniform(0, 2))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 100,000 more requests take no more room than one batch of pending durations.
    assert grown < BATCH * 64
    assert len(recorder.snapshot()["read"].counts) == len(FINE_BOUNDS) + 1


def test_thread_safety_no_lost_counts_and_monotonic_snapshots() -> None:
    recorder = LatencyRecorder()
    threads, per_thread = 8, 20_000
    start = threading.Barrier(threads + 1)
    stop = threading.Event()
    seen: list[int] = []

    def write(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            recorder.record("read" if i % 2 else "getattr", (n + 1) * 1e-5)

    def read() -> None:
        start.wait()
        while not stop.is_set():
            seen.append(sum(h.count for h in recorder.snapshot().values()))

    writers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    reader = threading.Thread(target=read)
    for thread in [*writers, reader]:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    snapshot = recorder.snapshot()
    assert snapshot["read"].count == snapshot["getattr"].count == threads * per_thread // 2
    expected = sum((n + 1) * 1e-5 for n in range(threads)) * per_thread
    assert merge(snapshot.values()).total == pytest.approx(expected)
    assert seen == sorted(seen)  # never a count that goes back


# -- the FUSE decorator ---------------------------------------------------------------


class FakeOps:
    """Just what `_fuse_op` touches on MusicFSOperations."""

    def __init__(self) -> None:
        self.op_counts: Counter[str] = Counter()
        self.latency = LatencyRecorder()

    async def getattr(self, inode: int) -> int:
        if inode == 0:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if inode < 0:
            raise LibraryError(errno.EIO, "gone")
        return inode

    timed = fs._fuse_op(getattr)


def run(coroutine: Any) -> Any:
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the coroutine suspended")


def test_every_fuse_request_is_timed_answers_and_errors_alike() -> None:
    ops = FakeOps()
    assert run(FakeOps.timed(ops, 5)) == 5
    for inode in (0, -1):
        with pytest.raises(pyfuse3.FUSEError):
            run(FakeOps.timed(ops, inode))
    histogram = ops.latency.snapshot()["getattr"]
    assert histogram.count == ops.op_counts["getattr"] == 3
    assert 0 < histogram.total < 1


def _plain_fuse_op(func: Any) -> Any:
    """`_fuse_op` as it was before timing: the baseline for the overhead."""

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        ops = args[0]
        ops.op_counts[func.__name__] += 1
        try:
            return await func(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except LibraryError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    return wrapper


def overhead_per_request(rounds: int = 300, n: int = 1000) -> float:
    """Seconds `_fuse_op`'s timing adds to one request: the best of many short
    rounds of each, interleaved, so that other processes on the machine (which
    only ever make a round slower) are filtered out."""
    plain, timed = _plain_fuse_op(FakeOps.getattr), FakeOps.timed
    ops = FakeOps()
    best = {plain: math.inf, timed: math.inf}
    for _ in range(rounds):
        for wrapped in (plain, timed):
            started = time.perf_counter()
            for i in range(1, n + 1):
                coroutine = wrapped(ops, i)
                with contextlib.suppress(StopIteration):
                    coroutine.send(None)
            best[wrapped] = min(best[wrapped], (time.perf_counter() - started) / n)
    return best[timed] - best[plain]


def test_timing_a_request_costs_well_under_a_microsecond() -> None:
    overhead = overhead_per_request()
    print(f"timing a FUSE request costs {overhead * 1e9:.0f} ns")
    # About 0.4 µs on this 2-core machine; the bound leaves room for a slower CI.
    assert overhead < 2e-6
