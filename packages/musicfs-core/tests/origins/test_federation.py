"""Federation: ranking, retries, health with backoff, request bounds and bandwidth."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.model import FileStat
from musicfs.core.origins import LocalOrigin
from musicfs.core.origins.base import OriginUnavailable
from musicfs.core.origins.federation import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    RETRY_DELAYS,
    Deadline,
    Federation,
    Health,
    LimitedFile,
    OriginLimits,
    TokenBucket,
)
from musicfs.core.sync.scanner import Scanner


class SwitchableOrigin(LocalOrigin):
    """A folder that can be told to stop answering, or to hang until released.

    Counts requests (``stat``, ``open``, ``check``) and how many run at once.
    """

    def __init__(self, origin_id: str, root: Path) -> None:
        super().__init__(origin_id, root)
        self.mode = "ok"  # "ok", "fail" (OriginUnavailable) or "hang" (until `release`)
        self.fail_times = 0  # fail this many more requests, then answer
        self.release = threading.Event()
        self.calls: list[float] = []  # monotonic time of each request
        self.checks = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._count = threading.Lock()

    def _request(self) -> None:
        with self._count:
            self.calls.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.mode == "hang":
                assert self.release.wait(10), "a hanging request was never released"
            if self.fail_times > 0:
                self.fail_times -= 1
                raise OriginUnavailable(self.id, "flaky")
            if self.mode == "fail":
                raise OriginUnavailable(self.id, "switched off")
        finally:
            with self._count:
                self.in_flight -= 1

    def check(self) -> None:
        self.checks += 1
        self._request()
        super().check()

    def stat(self, relpath: str) -> FileStat:
        self._request()
        return super().stat(relpath)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    root.mkdir()
    (root / "a.wav").write_bytes(b"RIFF" + bytes(1000))
    return root


@pytest.fixture
def flaky(folder: Path) -> Iterator[SwitchableOrigin]:
    origin = SwitchableOrigin("flaky", folder)
    yield origin
    origin.release.set()  # never leave a thread hanging


HealthEvents = list[tuple[str, bool, int]]


def listener(events: HealthEvents) -> Callable[[str, Health], None]:
    # The Health object is updated in place later: record what it said then.
    return lambda oid, health: events.append((oid, health.online, health.failures))


# -- ranking -------------------------------------------------------------------------


def test_ranked_puts_online_origins_first_then_by_priority(tmp_path: Path) -> None:
    origins = {oid: LocalOrigin(oid, tmp_path / oid) for oid in ("a", "b", "c", "d")}
    limits = {
        "a": OriginLimits(priority=3),
        "b": OriginLimits(priority=1),
        "c": OriginLimits(priority=2),
        "d": OriginLimits(priority=0),
    }
    fed = Federation(origins, limits)
    assert fed.ranked(["a", "b", "c", "d"]) == ["d", "b", "c", "a"]
    assert fed.ranked(["c", "a"]) == ["c", "a"]
    assert fed.ranked(["a", "nowhere", "b"]) == ["b", "a"]  # unknown ids are left out
    fed.failed("d", OriginUnavailable("d", "down"))
    fed.failed("b", OriginUnavailable("b", "down"))
    assert fed.ranked(["a", "b", "c", "d"]) == ["c", "a", "d", "b"]


def test_origins_without_limits_get_the_defaults(tmp_path: Path) -> None:
    fed = Federation({"a": LocalOrigin("a", tmp_path)})
    assert fed.limits["a"] == OriginLimits()
    assert fed.online("a")
    assert not fed.online("nowhere")
    assert fed.buckets == {}  # no bandwidth limit by default


# -- retries and health ----------------------------------------------------------------


def test_an_unanswered_request_is_retried_then_marks_the_origin_offline(
    flaky: SwitchableOrigin,
) -> None:
    events: HealthEvents = []
    fed = Federation({"flaky": flaky}, on_health=listener(events))
    flaky.mode = "fail"
    started = time.monotonic()
    with pytest.raises(OriginUnavailable, match="switched off"):
        fed.call(flaky, lambda: flaky.stat("a.wav"))
    elapsed = time.monotonic() - started
    assert len(flaky.calls) == len(RETRY_DELAYS) + 1
    gaps = [later - earlier for earlier, later in zip(flaky.calls, flaky.calls[1:], strict=False)]
    for gap, delay in zip(gaps, RETRY_DELAYS, strict=True):
        assert delay <= gap < delay + 0.2
    assert elapsed >= sum(RETRY_DELAYS)
    health = fed.health["flaky"]
    assert not health.online
    assert health.failures == 1
    assert "switched off" in health.last_error
    assert events == [("flaky", False, 1)]
    # Offline now: the next request is not retried (the origin is known to be down).
    flaky.calls.clear()
    with pytest.raises(OriginUnavailable):
        fed.call(flaky, lambda: flaky.stat("a.wav"))
    assert len(flaky.calls) == 1
    assert events == [("flaky", False, 1)]  # went down once, told once


def test_a_request_that_succeeds_on_retry_keeps_the_origin_online(
    flaky: SwitchableOrigin,
) -> None:
    events: HealthEvents = []
    fed = Federation({"flaky": flaky}, on_health=listener(events))
    flaky.fail_times = len(RETRY_DELAYS)  # every retry is needed, the last one works
    assert fed.call(flaky, lambda: flaky.stat("a.wav")).size == 1004
    assert len(flaky.calls) == len(RETRY_DELAYS) + 1
    assert fed.online("flaky")
    assert fed.health["flaky"].failures == 0
    assert events == []


def test_no_attempt_starts_past_the_request_deadline(flaky: SwitchableOrigin) -> None:
    fed = Federation({"flaky": flaky})
    flaky.fail_times = len(RETRY_DELAYS)  # would answer on the last retry...
    with pytest.raises(OriginUnavailable, match="flaky"):  # ...but no time is left for one
        fed.call(flaky, lambda: flaky.stat("a.wav"), Deadline.after(RETRY_DELAYS[0] / 2))
    assert len(flaky.calls) == 1
    assert not fed.online("flaky")


def test_a_request_waits_for_a_slot_no_longer_than_its_deadline(flaky: SwitchableOrigin) -> None:
    fed = Federation({"flaky": flaky}, {"flaky": OriginLimits(max_requests=1)})
    flaky.mode = "hang"
    hung = threading.Thread(target=fed.call, args=(flaky, lambda: flaky.stat("a.wav")))
    hung.start()
    try:
        while not flaky.calls:  # the one slot is taken by a request that hangs
            time.sleep(0.01)
        with pytest.raises(OriginUnavailable) as info:
            fed.call(flaky, lambda: flaky.stat("a.wav"), Deadline.after(0.2))
        assert info.value.errno == errno.ETIMEDOUT
        assert len(flaky.calls) == 1  # the second request never reached the origin
    finally:
        flaky.release.set()
        hung.join(10)


@pytest.mark.parametrize(
    "error", [FileNotFoundError(errno.ENOENT, "gone"), PermissionError(errno.EACCES, "no")]
)
def test_answers_pass_through_without_retry_or_marking_offline(
    flaky: SwitchableOrigin, error: OSError
) -> None:
    events: HealthEvents = []
    fed = Federation({"flaky": flaky}, on_health=listener(events))

    def request() -> None:
        flaky.calls.append(time.monotonic())
        raise error

    with pytest.raises(type(error)):
        fed.call(flaky, request)
    assert len(flaky.calls) == 1
    assert fed.online("flaky")
    assert fed.health["flaky"].failures == 0
    assert events == []


def test_a_missing_file_on_a_real_folder_passes_through(folder: Path) -> None:
    origin = LocalOrigin("lib", folder)
    fed = Federation({"lib": origin})
    with pytest.raises(FileNotFoundError):
        fed.open("lib", "nope.wav")
    assert fed.online("lib")
    with fed.open("lib", "a.wav") as opened:
        assert isinstance(opened, LimitedFile)
        assert opened.origin_id == "lib"
        assert opened.read(0, 4) == b"RIFF"


def test_an_unreachable_real_folder_goes_offline(folder: Path) -> None:
    origin = LocalOrigin("lib", folder)
    fed = Federation({"lib": origin})
    folder.rename(folder.with_name("unplugged"))
    with pytest.raises(OriginUnavailable, match="unreachable"):
        fed.open("lib", "a.wav")
    assert not fed.online("lib")
    assert not fed.probe("lib")
    folder.with_name("unplugged").rename(folder)
    assert fed.probe("lib")
    assert fed.online("lib")


def test_check_due_backs_off_exponentially_and_brings_the_origin_back(
    flaky: SwitchableOrigin,
) -> None:
    events: HealthEvents = []
    fed = Federation({"flaky": flaky}, on_health=listener(events))
    health = fed.health["flaky"]
    flaky.mode = "fail"
    before = time.monotonic()
    fed.failed("flaky", OriginUnavailable("flaky", "down"))
    assert events == [("flaky", False, 1)]
    assert before + BACKOFF_FIRST <= health.next_check <= time.monotonic() + BACKOFF_FIRST

    # Not due yet: no probe at all.
    assert fed.check_due() == []
    assert flaky.checks == 0

    # Each failed probe doubles the wait, up to BACKOFF_MAX.
    expected = BACKOFF_FIRST
    for failures in range(2, 10):
        health.next_check = time.monotonic()  # the backoff ran out
        assert fed.check_due() == []
        assert flaky.checks == failures - 1
        expected = min(BACKOFF_MAX, expected * 2)
        assert health.failures == failures
        assert not health.online
        wait = health.next_check - time.monotonic()
        assert expected - 0.5 < wait <= expected
        assert fed.check_due() == []  # and the new wait is respected
        assert flaky.checks == failures - 1
    assert expected == BACKOFF_MAX
    assert events == [("flaky", False, 1)]  # failed probes of an offline origin tell nobody

    flaky.mode = "ok"
    assert fed.check_due() == []  # answering again, but not due: not probed
    health.next_check = time.monotonic()
    changed_before = health.changed_at
    assert fed.check_due() == ["flaky"]
    assert health.online
    assert health.failures == 0
    assert health.last_error == ""
    assert health.changed_at >= changed_before
    assert health.latency_ms >= 0
    assert events == [("flaky", False, 1), ("flaky", True, 0)]
    assert fed.check_due() == []  # online origins are not probed
    assert flaky.checks == 9


def test_check_due_probes_only_the_origins_whose_backoff_ran_out(tmp_path: Path) -> None:
    origins = {oid: SwitchableOrigin(oid, tmp_path) for oid in ("a", "b", "c")}
    fed = Federation(origins)
    for oid in ("a", "b"):
        fed.failed(oid, OriginUnavailable(oid, "down"))
    fed.health["a"].next_check = time.monotonic() - 1
    assert fed.check_due() == ["a"]
    assert [origins[oid].checks for oid in ("a", "b", "c")] == [1, 0, 0]
    assert fed.online("a")
    assert not fed.online("b")


def test_a_successful_request_brings_an_offline_origin_back(flaky: SwitchableOrigin) -> None:
    events: HealthEvents = []
    fed = Federation({"flaky": flaky}, on_health=listener(events))
    fed.failed("flaky", OriginUnavailable("flaky", "down"))
    assert fed.call(flaky, lambda: flaky.stat("a.wav")).size == 1004
    assert fed.online("flaky")
    assert events == [("flaky", False, 1), ("flaky", True, 0)]


def test_a_failing_health_listener_does_not_break_the_federation(
    flaky: SwitchableOrigin,
) -> None:
    def broken(origin_id: str, health: Health) -> None:
        raise RuntimeError("listener bug")

    fed = Federation({"flaky": flaky}, on_health=broken)
    fed.failed("flaky", OriginUnavailable("flaky", "down"))
    assert not fed.online("flaky")
    assert fed.probe("flaky")
    assert fed.online("flaky")


# -- request bounds ----------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_max_requests_bounds_concurrent_requests_per_origin(
    tmp_path: Path, flaky: SwitchableOrigin
) -> None:
    other = SwitchableOrigin("other", flaky.root)
    fed = Federation({"flaky": flaky, "other": other}, {"flaky": OriginLimits(max_requests=3)})
    flaky.mode = "hang"
    results: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(fed.call(flaky, lambda: flaky.stat("a.wav")).size)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: flaky.in_flight == 3)
        time.sleep(0.2)  # time for any further thread to (wrongly) get in
        assert flaky.in_flight == 3
        assert len(flaky.calls) == 3
        # The bound is per origin: another origin still answers at once.
        assert fed.call(other, lambda: other.stat("a.wav")).size == 1004
    finally:
        flaky.release.set()
        for thread in threads:
            thread.join(10)
    assert errors == []
    assert results == [1004] * 8
    assert flaky.max_in_flight == 3
    assert len(flaky.calls) == 8
    assert flaky.in_flight == 0


class BatchOrigin(SwitchableOrigin):
    """A `SwitchableOrigin` that reads many files' heads at once, as SFTP does."""

    heads_at_once = True

    def read_heads(self, heads: Sequence[tuple[str, FileStat, int]]) -> list[bytes | OSError]:
        self._request()
        return super().read_heads(heads)


def test_a_batch_of_heads_takes_a_request_slot_per_file(folder: Path) -> None:
    """Its files' requests are in flight at once: with 3 of 4 slots held by a
    batch of 3, one more request gets in and the next waits."""
    origin = BatchOrigin("batch", folder)
    fed = Federation({"batch": origin}, {"batch": OriginLimits(max_requests=4)})
    files = [("a.wav", origin.stat("a.wav"), 64)] * 3
    origin.mode = "hang"
    results: list[object] = []
    batch = threading.Thread(target=lambda: results.append(fed.read_heads("batch", files)))
    single = threading.Thread(target=lambda: results.append(fed.call(origin, origin.check)))
    try:
        batch.start()
        wait_until(lambda: origin.in_flight == 1)
        single.start()  # the fourth slot
        wait_until(lambda: origin.in_flight == 2)
        with pytest.raises(OriginUnavailable) as info:
            fed.call(origin, origin.check, Deadline.after(0.2))
        assert info.value.errno == errno.ETIMEDOUT
        assert origin.in_flight == 2  # it never reached the origin
    finally:
        origin.release.set()
        batch.join(10)
        single.join(10)
    head = (folder / "a.wav").read_bytes()[:64]
    assert [head] * 3 in results
    # A batch wider than the limit takes every slot, and still runs.
    origin.mode = "ok"
    assert fed.read_heads("batch", [("a.wav", origin.stat("a.wav"), 64)] * 9) == [head] * 9


def test_a_waiting_retry_does_not_hold_a_request_slot(flaky: SwitchableOrigin) -> None:
    fed = Federation({"flaky": flaky}, {"flaky": OriginLimits(max_requests=1)})
    flaky.fail_times = 1
    done = threading.Event()

    def retrying() -> None:
        fed.call(flaky, lambda: flaky.stat("a.wav"))
        done.set()

    thread = threading.Thread(target=retrying)
    thread.start()
    try:
        wait_until(lambda: len(flaky.calls) == 1)
        # The first attempt failed and the call now pauses before retrying: the
        # only slot is free meanwhile.
        started = time.monotonic()
        assert fed.call(flaky, lambda: flaky.stat("a.wav")).size == 1004
        assert time.monotonic() - started < RETRY_DELAYS[0]
    finally:
        thread.join(10)
    assert done.is_set()


# -- bandwidth -------------------------------------------------------------------------------


def test_bandwidth_limit_is_the_configured_rate(tmp_path: Path) -> None:
    total, chunk, rate = 4_000_000, 64 * 1024, 4_000_000
    payload = bytes(range(256)) * (total // 256)
    (tmp_path / "big.wav").write_bytes(payload)
    origin = LocalOrigin("lib", tmp_path)
    # The bucket starts empty and earns credit from its creation on: timing from
    # there, the quarter second of credit it may hold is already accounted for.
    started = time.monotonic()
    fed = Federation({"lib": origin}, {"lib": OriginLimits(bandwidth=rate)})
    read = bytearray()
    with fed.open("lib", "big.wav") as opened:
        while len(read) < total:
            read += opened.read(len(read), chunk)
    elapsed = time.monotonic() - started
    assert read == payload
    assert total / rate * 0.9 <= elapsed <= total / rate * 1.1


def test_an_origin_without_a_limit_is_not_slowed(tmp_path: Path) -> None:
    (tmp_path / "big.wav").write_bytes(bytes(4_000_000))
    fed = Federation(
        {"slow": LocalOrigin("slow", tmp_path), "fast": LocalOrigin("fast", tmp_path)},
        {"slow": OriginLimits(bandwidth=1000)},
    )
    assert set(fed.buckets) == {"slow"}
    started = time.monotonic()
    with fed.open("fast", "big.wav") as opened:
        for offset in range(0, 4_000_000, 64 * 1024):
            opened.read(offset, 64 * 1024)
    assert time.monotonic() - started < 0.5


def test_token_bucket_holds_at_most_a_quarter_second_of_credit() -> None:
    rate = 4_000_000
    bucket = TokenBucket(rate)
    time.sleep(0.6)  # quiet: credit for 2.4 MB would pile up, but only 1 MB is kept
    started = time.monotonic()
    bucket.take(rate // 4)
    assert time.monotonic() - started < 0.05  # the burst passes at once
    for _ in range(16):  # 1 MB more: at the rate
        bucket.take(rate // 64)
    assert 0.2 <= time.monotonic() - started <= 0.3


# -- scans go through the federation too ---------------------------------------------


def test_a_scan_retries_an_origin_that_drops_one_request(flaky: SwitchableOrigin) -> None:
    """A scan's requests are the federation's: retried, bounded, and counted for
    health (before, a scan called the origin directly and one dropped request
    left the origin unscanned)."""
    events: HealthEvents = []
    fed = Federation({"flaky": flaky}, on_health=listener(events))
    flaky.fail_times = 1
    with Catalog.open(flaky.root.parent / "catalog.sqlite3") as catalog:
        scanner = Scanner(catalog, PathTemplate.parse(DEFAULT_TEMPLATE), federation=fed)
        try:
            report = scanner.scan(flaky)
        finally:
            scanner.close()
    assert report.complete
    assert flaky.checks == 2  # the dropped probe, then its retry
    assert events == []  # one retry is not an outage


def test_a_scan_of_an_origin_that_never_answers_marks_it_offline(
    flaky: SwitchableOrigin,
) -> None:
    events: HealthEvents = []
    fed = Federation({"flaky": flaky}, on_health=listener(events))
    flaky.mode = "fail"
    with Catalog.open(flaky.root.parent / "catalog.sqlite3") as catalog:
        scanner = Scanner(catalog, PathTemplate.parse(DEFAULT_TEMPLATE), federation=fed)
        try:
            report = scanner.scan(flaky)
        finally:
            scanner.close()
    assert not report.complete
    assert events == [("flaky", False, 1)]
