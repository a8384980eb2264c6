"""Webhooks through a real daemon and a real HTTP receiver on 127.0.0.1 (FR-18.2).

The receiver (`tests.servers.webhook`) checks every request's
``X-MusicFS-Signature`` with the hook's secret, and plays receivers that fail
on purpose (500 a few times, then 200; 400), that are slow on purpose (past
the hook's timeout) and that are dead (a port nobody listens on, a request
held forever). Files are read through the mount, so the events are the real
ones. The counters of each hook are read from the line the daemon logs at
shutdown. Last, reads are timed on two mounts of the same folder at once, one
with dead webhooks and one without: the dead ones must not slow reads.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import re
import signal
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    Mount,
    assert_no_secret_shown,
    forget_pages,
    mounted,
    sha256_of,
    toml_value,
    wait_until,
)
from tests.e2e.library import Library, make_origin, render_path
from tests.e2e.test_federation import unique_tracks
from tests.e2e.test_offline import JOGA, UNRAVEL
from tests.servers import free_port
from tests.servers.webhook import Delivery, WebhookReceiver, webhook_receiver

pytestmark = [pytest.mark.mount, pytest.mark.media]

SECRET = "whsec-7f3a9c1e-musicfs-e2e"


def hooks_config(path: Path, hooks: Sequence[Mapping[str, object]]) -> Path:
    """A config file holding only ``[[webhooks]]`` tables (origins come from --origin)."""
    lines: list[str] = []
    for hook in hooks:
        lines += ["[[webhooks]]", *(f"{k} = {toml_value(v)}" for k, v in hook.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def counters(cache_dir: Path) -> dict[str, dict[str, int]]:
    """Each hook's counters, from the line the daemon logs when it stops them."""
    text = (cache_dir / "musicfs.log").read_text(errors="replace")
    found = {}
    for m in re.finditer(
        r"webhook (\S+): delivered=(\d+) failed=(\d+) retried=(\d+) dropped=(\d+)", text
    ):
        found[m.group(1)] = dict(
            zip(
                ("delivered", "failed", "retried", "dropped"), map(int, m.groups()[1:]), strict=True
            )
        )
    return found


def log_has(mount: Mount, pattern: str) -> bool:
    """Whether the daemon log of *mount* has a line matching *pattern* yet."""
    text = (mount.cache_dir / "musicfs.log").read_text(errors="replace")
    return re.search(pattern, text) is not None


def opened(path: str) -> Callable[[Delivery], bool]:
    """Matches the file.opened deliveries of *path* (origin-relative)."""
    return lambda d: d.event == "file.opened" and d.payload["path"] == path


def test_signed_and_filtered_deliveries(library: Library, tmp_path: Path) -> None:
    """One hook signed, for file.opened only; one unsigned, for origin 'second' only.
    The receiver verifies each signature with the secret; anything else fails."""
    first, second = tmp_path / "first", tmp_path / "second"
    specs = make_origin(library, first, [JOGA]) | make_origin(library, second, [UNRAVEL])
    with webhook_receiver() as receiver:
        config = hooks_config(tmp_path / "config.toml", [
            {"id": "signed", "url": receiver.on("/signed", secret=SECRET),
             "events": ["file.opened"]},
            {"id": "second-only", "url": receiver.on("/second"), "origin": "second"},
        ])  # fmt: skip
        env = {"MUSICFS_SECRET_SIGNED_SECRET": SECRET}
        started = time.time()
        with mounted(
            [first, second], tmp_path / "mnt", tmp_path / "cache", "--config", str(config), env=env
        ) as mount:
            joga = mount.mountpoint / render_path(specs[JOGA])
            unravel = mount.mountpoint / render_path(specs[UNRAVEL])
            sha256_of(joga)
            receiver.wait_for("/signed", opened(JOGA))
            sha256_of(unravel)
            receiver.wait_for("/signed", opened(UNRAVEL))
            receiver.wait_for("/second", opened(UNRAVEL))
            # A rescan: sync.* events of both origins, which /signed must not get.
            os.kill(mount.pid, signal.SIGHUP)
            receiver.wait_for("/second", lambda d: d.event == "sync.completed", count=2)
            sha256_of(unravel)
            # Each hook sends in order: whatever the filter let through by mistake
            # came before this second open of UNRAVEL.
            receiver.wait_for("/signed", opened(UNRAVEL), count=2, answered=True)
            assert_no_secret_shown(mount, SECRET)
        finished = time.time()

    signed = receiver.deliveries("/signed")
    assert [(d.event, d.payload["origin"], d.payload["path"]) for d in signed] == [
        ("file.opened", "first", JOGA),
        ("file.opened", "second", UNRAVEL),
        ("file.opened", "second", UNRAVEL),
    ]
    for d in signed:
        assert d.signature_ok, f"bad signature {d.headers.get('X-MusicFS-Signature')!r}"
        assert d.status == 200
        check_envelope(d, started, finished)
    assert len({d.delivery for d in signed}) == 3  # one delivery id per event

    others = receiver.deliveries("/second")
    assert {d.payload["origin"] for d in others} == {"second"}, [d.payload for d in others]
    assert {"file.opened", "sync.started", "sync.completed"} <= {d.event for d in others}
    for d in others:
        assert "X-MusicFS-Signature" not in d.headers  # no secret: not signed
        check_envelope(d, started, finished)
    assert counters(tmp_path / "cache")["signed"] == {
        "delivered": 3, "failed": 0, "retried": 0, "dropped": 0
    }  # fmt: skip


def check_envelope(d: Delivery, started: float, finished: float) -> None:
    """The headers and JSON body every delivery has."""
    assert d.headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"musicfs/\S+", d.headers["User-Agent"]), d.headers["User-Agent"]
    assert d.headers["X-MusicFS-Event"] == d.event
    assert d.headers["X-MusicFS-Delivery"] == d.delivery
    payload = d.payload
    assert set(payload) == {"event", "time", "timestamp", "origin", "path", "details",
                            "delivery", "attempt", "webhook"}  # fmt: skip
    assert started - 1 <= payload["timestamp"] <= finished + 1
    when = datetime.datetime.fromisoformat(payload["time"].replace("Z", "+00:00"))
    assert abs(when.timestamp() - payload["timestamp"]) < 0.001
    assert payload["attempt"] == 1
    assert re.fullmatch(r"[0-9a-f-]{36}", payload["delivery"])
    assert isinstance(payload["details"], dict)
    assert json.loads(d.body) == payload


def test_a_failing_receiver_is_retried_with_backoff_but_a_400_is_not(
    library: Library, tmp_path: Path
) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    fails = 2  # /flaky answers 500 to the first two attempts of each delivery

    def flaky(_d: Delivery, attempt: int) -> int:
        return 500 if attempt <= fails else 200

    with webhook_receiver() as receiver:
        config = hooks_config(tmp_path / "config.toml", [
            {"id": "flaky", "url": receiver.on("/flaky", flaky), "events": ["file.opened"],
             "retries": 5, "backoff": 0.2},
            {"id": "rejecting", "url": receiver.on("/reject", lambda _d, _a: 400),
             "events": ["file.opened"], "retries": 5, "backoff": 0.2},
        ])  # fmt: skip
        with mounted([origin], tmp_path / "mnt", tmp_path / "cache", "--config", str(config)) as m:
            sha256_of(m.mountpoint / render_path(specs[JOGA]))
            done = receiver.wait_for("/flaky", lambda d: d.status == 200)
            sha256_of(m.mountpoint / render_path(specs[UNRAVEL]))
            receiver.wait_for("/flaky", lambda d: d.status == 200, count=2)
            # In order, one at a time: the second event reached /reject, so the
            # first's 400 was final.
            receiver.wait_for("/reject", opened(UNRAVEL), answered=True)

    attempts = [d for d in receiver.deliveries("/flaky") if d.delivery == done.delivery]
    assert [(d.attempt, d.status) for d in attempts] == [(1, 500), (2, 500), (3, 200)]
    assert done.attempt == fails + 1
    assert done.payload["path"] == JOGA
    gaps = [b.received - a.received for a, b in itertools.pairwise(attempts)]
    print(f"\nbackoff 0.2 s: gaps between attempts {[round(g, 3) for g in gaps]} s")
    assert gaps[0] >= 0.2 * 0.95, gaps  # first wait: backoff
    assert gaps[1] >= 0.4 * 0.95, gaps  # then doubled
    rejected = receiver.deliveries("/reject")
    assert [(d.payload["path"], d.attempt, d.status) for d in rejected] == [
        (JOGA, 1, 400),
        (UNRAVEL, 1, 400),
    ]
    found = counters(tmp_path / "cache")
    assert found["flaky"] == {"delivered": 2, "failed": 0, "retried": 4, "dropped": 0}
    assert found["rejecting"] == {"delivered": 0, "failed": 2, "retried": 0, "dropped": 0}


def test_a_slow_receiver_times_out_and_is_retried(library: Library, tmp_path: Path) -> None:
    """Timeout 0.5 s: /slow holds only the first attempt 3 s (the retry gets through),
    /too-slow holds every attempt (the event is given up after its one retry)."""
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA])

    with webhook_receiver() as receiver:

        def slow(_d: Delivery, attempt: int) -> int:
            if attempt == 1:
                receiver.hold(3.0)
            return 200

        def too_slow(_d: Delivery, _attempt: int) -> int:
            receiver.hold(3.0)
            return 200

        common = {"events": ["file.opened"], "timeout": 0.5, "retries": 1, "backoff": 0.1}
        config = hooks_config(tmp_path / "config.toml", [
            {"id": "slow", "url": receiver.on("/slow", slow), **common},
            {"id": "too-slow", "url": receiver.on("/too-slow", too_slow), **common},
        ])  # fmt: skip
        with mounted([origin], tmp_path / "mnt", tmp_path / "cache", "--config", str(config)) as m:
            began = time.monotonic()
            sha256_of(m.mountpoint / render_path(specs[JOGA]))
            read_time = time.monotonic() - began
            second = receiver.wait_for("/slow", lambda d: d.attempt == 2)
            receiver.wait_for("/too-slow", lambda d: d.attempt == 2)
            wait_until(
                lambda: log_has(m, r"webhook too-slow .*gave up on a file\.opened event after 2"),
                timeout=30,
                what="the too-slow hook to give up",
            )
        first = receiver.deliveries("/slow")[0]
    assert read_time < 0.5, f"the read took {read_time:.3f} s"
    assert first.delivery == second.delivery
    assert second.received - first.received >= 0.55  # the timeout (0.5 s), then backoff
    assert len(receiver.deliveries("/slow")) == 2
    assert len(receiver.deliveries("/too-slow")) == 2
    found = counters(tmp_path / "cache")
    assert found["slow"] == {"delivered": 1, "failed": 0, "retried": 1, "dropped": 0}
    assert found["too-slow"] == {"delivered": 0, "failed": 1, "retried": 1, "dropped": 0}


def timed_read(path: Path) -> float:
    """Seconds to open and read all of *path*, its cached pages dropped first."""
    forget_pages(path)
    began = time.perf_counter()
    with open(path, "rb") as fh:
        while fh.read(1 << 20):
            pass
    return time.perf_counter() - began


def test_a_dead_receiver_does_not_slow_reads(library: Library, tmp_path: Path) -> None:
    """The same folder mounted twice at once, without webhooks and with two dead
    ones (every event type): a port nobody listens on, and a receiver that holds
    every request, whose queue is full while reads are timed. Reads alternate
    between the mounts; the medians must be close."""
    tracks = unique_tracks(library)[:8]
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [t.spec.relpath for t in tracks])
    rounds = 50
    with webhook_receiver() as receiver:
        config = hooks_config(tmp_path / "config.toml", [
            {"id": "refused", "url": f"http://127.0.0.1:{free_port()}/hook",
             "retries": 2, "backoff": 0.05},
            {"id": "hanging", "url": receiver.on("/hang", lambda _d, _a: _hang(receiver))},
        ])  # fmt: skip
        with (
            mounted([origin], tmp_path / "plain", tmp_path / "cache-plain") as plain,
            mounted(
                [origin], tmp_path / "hooked", tmp_path / "cache-hooked", "--config", str(config)
            ) as hooked,
        ):
            files = [render_path(spec) for spec in specs.values()]
            for name in files * 2:  # warm up both: first opens, content copies
                timed_read(plain.mountpoint / name)
                timed_read(hooked.mountpoint / name)
            receiver.wait_for("/hang")  # the hanging hook is busy...
            wait_until(  # ...and the refused one has given up on an event already
                lambda: log_has(hooked, r"webhook refused .*gave up .*after 3 attempt"),
                timeout=30,
                what="the refused hook to give up on an event",
            )
            # Fill the hanging hook's queue (1,000 events): from now on its events are
            # dropped, counted, while the reads below are timed.
            for _ in range(1100):
                os.close(os.open(hooked.mountpoint / files[0], os.O_RDONLY))
            without: list[float] = []
            with_dead: list[float] = []
            for i in range(rounds):
                name = files[i % len(files)]
                pairs = [(plain, without), (hooked, with_dead)]
                for mount, times in pairs if i % 2 == 0 else pairs[::-1]:
                    times.append(timed_read(mount.mountpoint / name))
            hooked_status = hooked.status()
        hooked_counters = counters(tmp_path / "cache-hooked")

    median_without = statistics.median(without)
    median_with = statistics.median(with_dead)
    print(
        f"\nread latency over {rounds} reads each ({len(files)} files, pages dropped first): "
        f"median {median_without * 1000:.3f} ms without webhooks, "
        f"{median_with * 1000:.3f} ms with two dead ones "
        f"(p90 {_p90(without) * 1000:.3f} / {_p90(with_dead) * 1000:.3f} ms); "
        f"hooks {hooked_counters}; events dropped (bus) {hooked_status.get('events_dropped')}"
    )
    assert median_with < 2 * median_without + 0.005, (median_without, median_with)
    assert len(receiver.deliveries("/hang")) >= 1
    refused = hooked_counters["refused"]
    assert refused["failed"] >= 1, refused
    assert refused["retried"] >= 2, refused
    assert hooked_counters["hanging"]["delivered"] == 0
    assert hooked_counters["hanging"]["dropped"] > rounds, hooked_counters


def _hang(receiver: WebhookReceiver) -> int:
    receiver.hold(600.0)  # until the test ends
    return 200


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]
