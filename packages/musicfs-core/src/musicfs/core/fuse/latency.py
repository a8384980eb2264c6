"""How long FUSE operations take: a bounded, thread-safe latency recorder (NFR-10).

Every FUSE handler is timed (`musicfs.core.fuse.fs`) and the time goes into one
histogram per operation. The histograms have fixed buckets, so memory does not
grow with the number of requests: `FINE_BOUNDS` (1 µs to 100 s, 14 buckets per
decade, neighbours at most 25% apart) plus one bucket above. From them come

- the quantiles of `musicfs status` (p50/p95/p99), interpolated linearly inside
  the bucket where the rank falls, as Prometheus' ``histogram_quantile`` does:
  the estimate lies in the same bucket as the true value, so it is off by less
  than that bucket's width (at most 25% of the value, usually a few percent);
- the Prometheus histogram (`PROMETHEUS_BOUNDS`, a subset of the fine bounds,
  so its cumulative counts are exact sums of fine buckets).

`LatencyRecorder.record` is called once per FUSE request in the trio thread: it
appends the duration to a short list, and the bucket counting happens in
batches (see the class); with the two clock reads, timing a request costs a
few hundred ns (measured in ``tests/test_latency.py``). Readers in other
threads (gRPC, the metrics endpoint) take consistent snapshots under a lock.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_MANTISSAS = ("1", "1.25", "1.5", "1.75", "2", "2.5", "3", "3.5", "4", "5", "6", "7", "8", "9")

#: Upper bounds (seconds, inclusive) of the recorder's buckets; one more bucket
#: holds everything above the last bound. Built from decimal strings, so each
#: bound is exactly the double nearest its decimal (clean ``le`` labels).
FINE_BOUNDS: tuple[float, ...] = (
    *(float(f"{m}e{exponent}") for exponent in range(-6, 2) for m in _MANTISSAS),
    100.0,
)

#: The ``le`` bounds of ``musicfs_fuse_latency_seconds`` (5 µs to 60 s): every
#: one is also in `FINE_BOUNDS`.
PROMETHEUS_BOUNDS: tuple[float, ...] = (
    5e-06, 1e-05, 2.5e-05, 5e-05, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

#: Operation names kept apart at most; further names share `OTHER`, so a
#: caller passing arbitrary names cannot make the recorder grow.
MAX_OPERATIONS = 64
OTHER = "other"

QUANTILES = (0.5, 0.95, 0.99)

#: Durations of one operation kept pending before they are folded into its
#: histogram: bounds the memory (names x BATCH floats) and amortises a fold.
BATCH = 256


@dataclass(frozen=True, slots=True)
class Histogram:
    """A snapshot of one operation's latencies.

    *counts* has one entry per bucket of *bounds* plus the one above the last
    bound (not cumulative); *total* is the sum of all observations in seconds.
    """

    counts: tuple[int, ...]
    total: float
    bounds: tuple[float, ...] = FINE_BOUNDS

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float:
        """The *q*-quantile (0 ≤ q ≤ 1) in seconds, 0.0 with no observations.

        Interpolates linearly between the bounds of the bucket holding the rank
        (the first bucket starts at 0); a rank in the bucket above the last
        bound answers that bound.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"a quantile is between 0 and 1, got {q}")
        count = self.count
        if count == 0:
            return 0.0
        rank = q * count
        seen = 0
        for index, in_bucket in enumerate(self.counts):
            if in_bucket and seen + in_bucket >= rank:
                if index == len(self.bounds):
                    return self.bounds[-1]
                lower = self.bounds[index - 1] if index else 0.0
                upper = self.bounds[index]
                return lower + (upper - lower) * max(0.0, rank - seen) / in_bucket
            seen += in_bucket
        return self.bounds[-1]  # not reached: the last non-empty bucket holds rank ≤ count

    def cumulative(self, bounds: Sequence[float] = PROMETHEUS_BOUNDS) -> list[tuple[float, int]]:
        """(upper bound, observations ≤ it) for each of *bounds* (each one of
        this histogram's bounds), then (inf, all observations)."""
        result = []
        running, index = 0, 0
        for bound in bounds:
            while index < len(self.bounds) and self.bounds[index] <= bound:
                running += self.counts[index]
                index += 1
            result.append((bound, running))
        result.append((float("inf"), self.count))
        return result

    def merged(self, other: Histogram) -> Histogram:
        return Histogram(
            tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
            self.total + other.total,
            self.bounds,
        )


def empty_histogram() -> Histogram:
    return Histogram((0,) * (len(FINE_BOUNDS) + 1), 0.0)


def merge(histograms: Iterable[Histogram]) -> Histogram:
    """All observations of *histograms* in one."""
    result = empty_histogram()
    for histogram in histograms:
        result = result.merged(histogram)
    return result


class LatencyRecorder:
    """One fixed-bucket histogram per operation name. Thread-safe, bounded.

    `record` only appends the duration to its operation's pending list (one
    atomic ``list.append``: no lock, no bucket search on the request path);
    every `BATCH` durations of one operation, and at each `snapshot`, the
    pending durations are folded into the histograms under the lock: sorted
    (C), then counted per bucket with one bisect per bound. A fold takes the
    first *n* pending entries and deletes exactly those (``del pending[:n]``),
    so durations appended meanwhile by other threads wait for the next fold.
    """

    def __init__(self, max_operations: int = MAX_OPERATIONS) -> None:
        self.max_operations = max(1, max_operations)
        self._lock = threading.Lock()  # guards folding and the dicts' keys
        self._pending: dict[str, list[float]] = {}  # name -> durations not yet folded
        # name -> [count per bucket..., sum of seconds]; counts are floats (exact
        # up to 2**53) so the list is of one type.
        self._folded: dict[str, list[float]] = {}

    def record(self, op: str, seconds: float) -> None:
        """Count one *op* that took *seconds*."""
        pending = self._pending.get(op)
        if pending is None:
            pending = self._pending_for(op)
        pending.append(seconds)
        if len(pending) >= BATCH:
            with self._lock:
                self._fold()

    def _pending_for(self, op: str) -> list[float]:
        with self._lock:
            pending = self._pending.get(op)
            if pending is not None:
                return pending
            if len(self._pending) >= self.max_operations - 1 and op != OTHER:
                op = OTHER  # keep one name free for everything past the limit
            pending = self._pending.get(op)
            if pending is None:
                self._folded[op] = [0.0] * (len(FINE_BOUNDS) + 2)
                pending = self._pending[op] = []  # published last: folding finds both
            return pending

    def _fold(self) -> None:
        """Move every pending duration into its histogram (hold the lock)."""
        last = len(FINE_BOUNDS)
        for op, pending in self._pending.items():
            n = len(pending)
            if not n:
                continue
            batch = pending[:n]
            del pending[:n]  # appends since `n` was taken stay pending
            batch.sort()
            slots = self._folded[op]
            done = 0
            for index, bound in enumerate(FINE_BOUNDS):
                if done == n:
                    break
                upto = bisect.bisect_right(batch, bound, done)
                slots[index] += upto - done
                done = upto
            slots[last] += n - done  # above the last bound
            slots[-1] += math.fsum(batch)

    def snapshot(self) -> dict[str, Histogram]:
        """Every operation seen so far and its histogram, consistent at one moment."""
        with self._lock:
            self._fold()
            copies = {op: list(slots) for op, slots in self._folded.items()}
        return {
            op: Histogram(tuple(int(c) for c in slots[:-1]), slots[-1])
            for op, slots in copies.items()
        }

    def summary(self) -> dict[str, object]:
        """p50/p95/p99 in milliseconds over all operations, and per operation (plain data).

        ``{"latency_p50_ms": .., "latency_p95_ms": .., "latency_p99_ms": ..,
        "op_latency": [{"op", "count", "p50_ms", "p95_ms", "p99_ms"}, ...]}``,
        operations sorted by name.
        """
        histograms = self.snapshot()
        result: dict[str, object] = {
            f"latency_p{round(q * 100)}_ms": _ms(merge(histograms.values()).quantile(q))
            for q in QUANTILES
        }
        result["op_latency"] = [_op_summary(op, h) for op, h in sorted(histograms.items())]
        return result


def _op_summary(op: str, histogram: Histogram) -> Mapping[str, object]:
    data: dict[str, object] = {"op": op, "count": histogram.count}
    for q in QUANTILES:
        data[f"p{round(q * 100)}_ms"] = _ms(histogram.quantile(q))
    return data


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 4)
