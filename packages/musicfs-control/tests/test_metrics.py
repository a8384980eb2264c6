"""MusicFSCollector and MetricsServer in-process, over the facade of a stand-in mount.

The end-to-end test (tests/e2e/test_metrics.py) scrapes a real daemon; these
check what is awkward to reach from there: counters that never step back, the
catalog counts reused between scrapes and left out when they fail, sync
events added up, a server that starts and stops, and the ``[metrics]``
setting's validation.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from musicfs.control.config import METRICS, SECTIONS
from musicfs.control.metrics import (
    MetricsServer,
    MusicFSCollector,
    SyncCounters,
    parse_listen,
)
from musicfs.core.config.settings import ConfigError, load_config
from musicfs.core.content.stats import TierStats
from musicfs.core.events import EventBus, EventType
from musicfs.core.fuse.latency import LatencyRecorder
from musicfs.core.mount.facade import MountControl, MountState
from musicfs.core.origins.federation import Health
from musicfs.core.supervise import Supervisor


class FakeControl(MountControl):
    """The facade over a stand-in for `MusicFS` (`fs`), with counts() counted."""

    counted = 0
    counts_fail = False

    def counts(self) -> dict[str, int]:
        self.counted += 1
        if self.counts_fail:
            raise OSError("database is locked")
        return {"tracks": 12, "directories": 5, "unreadable_files": 1}


def fake_mount() -> Any:
    latency = LatencyRecorder()
    for seconds in (20e-6, 30e-6, 0.002):
        latency.record("read", seconds)
    latency.record("lookup", 15e-6)
    library = SimpleNamespace(
        open_handles=2, directories=SimpleNamespace(stats=TierStats(3, 0, 10, 4))
    )
    store = SimpleNamespace(stats=TierStats(7, 7000, 5, 1, 2, 1), limit=1 << 30)
    mount = SimpleNamespace(
        life=SimpleNamespace(started=time.time() - 60),
        state=MountState.READY,
        supervisor=Supervisor(),
        rescans=SimpleNamespace(scanning=False),
        shared=None,  # no [catalog] shared
        operations=SimpleNamespace(
            op_counts=Counter({"read": 3, "lookup": 1}), latency=latency, library=library
        ),
        content=SimpleNamespace(headers=TierStats(2, 300, 6, 2), store=store, origin_bytes=9000),
        origins={"music": SimpleNamespace(kind="local"), "nas": SimpleNamespace(kind="smb")},
        federation=SimpleNamespace(
            health={"music": Health(latency_ms=2.0), "nas": Health(online=False, failures=3)}
        ),
        events=EventBus(),
    )
    return FakeControl(cast(Any, mount))


def scrape(
    collector: MusicFSCollector,
) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    values = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, values


def test_series_and_values() -> None:
    fs = fake_mount()
    fs.events.publish(EventType.FILE_OPENED, origin="music", path="a.flac")
    text, found = scrape(MusicFSCollector(fs))
    assert found[("musicfs_fuse_ops_total", frozenset({("op", "read")}))] == 3
    assert found[("musicfs_fuse_latency_seconds_count", frozenset({("op", "read")}))] == 3
    read_le = lambda le: found[  # noqa: E731
        ("musicfs_fuse_latency_seconds_bucket", frozenset({("op", "read"), ("le", le)}))
    ]
    assert (read_le("2.5e-05"), read_le("5e-05"), read_le("0.001"), read_le("0.0025")) == (
        1,
        2,
        2,
        3,
    )
    assert read_le("+Inf") == 3
    assert found[
        ("musicfs_fuse_latency_seconds_sum", frozenset({("op", "read")}))
    ] == pytest.approx(0.00205)
    assert found[("musicfs_catalog_tracks", frozenset())] == 12
    assert found[("musicfs_open_handles", frozenset())] == 2
    # READY with an origin offline is DEGRADED, as in musicfs status.
    assert found[("musicfs_mount_state", frozenset({("state", "DEGRADED")}))] == 1
    assert found[("musicfs_mount_state", frozenset({("state", "READY")}))] == 0
    assert found[("musicfs_origin_health", frozenset({("origin", "nas")}))] == 0
    assert found[("musicfs_origin_health", frozenset({("origin", "music")}))] == 1
    assert found[("musicfs_origin_consecutive_failures", frozenset({("origin", "nas")}))] == 3
    assert (
        found[("musicfs_origin_probe_latency_seconds", frozenset({("origin", "music")}))] == 0.002
    )
    assert found[("musicfs_cache_hits_total", frozenset({("tier", "l1")}))] == 10
    assert found[("musicfs_cache_misses_total", frozenset({("tier", "l2")}))] == 2
    assert found[("musicfs_cache_evictions_total", frozenset({("tier", "l3")}))] == 2
    assert found[("musicfs_cache_size_bytes", frozenset({("tier", "l3")}))] == 7000
    assert found[("musicfs_cache_corrupt_chunks_total", frozenset())] == 1
    assert found[("musicfs_cache_origin_bytes_total", frozenset())] == 9000
    assert found[("musicfs_events_published_total", frozenset({("type", "file.opened")}))] == 1
    if shutil.which("promtool"):
        result = subprocess.run(
            ["promtool", "check", "metrics"],
            check=False,
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_failing_background_task_is_degraded_as_in_status() -> None:
    fs = fake_mount()
    fs.fs.federation.health["nas"] = Health(latency_ms=3.0)  # every origin online
    assert (
        scrape(MusicFSCollector(fs))[1][("musicfs_mount_state", frozenset({("state", "READY")}))]
        == 1
    )
    fs.fs.supervisor.failed("sync", OSError("database is locked"))
    found = scrape(MusicFSCollector(fs))[1]
    assert found[("musicfs_mount_state", frozenset({("state", "DEGRADED")}))] == 1
    fs.fs.supervisor.ok("sync")
    found = scrape(MusicFSCollector(fs))[1]
    assert found[("musicfs_mount_state", frozenset({("state", "READY")}))] == 1


def test_passthrough_and_unmounted_leave_series_out_without_failing() -> None:
    fs = fake_mount()
    fs.fs.content = None
    fs.fs.operations = None
    _, found = scrape(MusicFSCollector(fs))
    assert ("musicfs_cache_limit_bytes", frozenset()) not in found
    assert found[("musicfs_open_handles", frozenset())] == 0
    assert not any(name == "musicfs_fuse_ops_total" for name, _ in found)


def test_counters_never_step_back() -> None:
    fs = fake_mount()
    collector = MusicFSCollector(fs)
    _, before = scrape(collector)
    fs.fs.operations.library.directories.stats.hits = 4  # a lost update in the core
    _, after = scrape(collector)
    key = ("musicfs_cache_hits_total", frozenset({("tier", "l1")}))
    assert before[key] == after[key] == 10
    fs.fs.operations.library.directories.stats.hits = 11
    assert scrape(collector)[1][key] == 11


def test_catalog_counts_are_reused_and_left_out_when_they_fail() -> None:
    fs = fake_mount()
    collector = MusicFSCollector(fs, counts_max_age=60)
    scrape(collector)
    scrape(collector)
    assert fs.counted == 1
    fs.counts_fail = True
    collector = MusicFSCollector(fs, counts_max_age=0)
    _, found = scrape(collector)
    assert ("musicfs_catalog_tracks", frozenset()) not in found
    assert ("musicfs_fuse_ops_total", frozenset({("op", "read")})) in found


def test_webhook_counters() -> None:
    hooks = {"ci": {"id": "ci", "url": "http://x/", "signed": True, "delivered": 3, "failed": 1,
                    "retried": 2, "dropped": 0, "last_error": "timed out"}}  # fmt: skip
    _, found = scrape(MusicFSCollector(fake_mount(), webhook_stats=lambda: hooks))
    events = "musicfs_webhook_events_total"
    assert found[(events, frozenset({("hook", "ci"), ("outcome", "delivered")}))] == 3
    assert found[(events, frozenset({("hook", "ci"), ("outcome", "failed")}))] == 1
    assert found[(events, frozenset({("hook", "ci"), ("outcome", "dropped")}))] == 0
    assert found[("musicfs_webhook_retries_total", frozenset({("hook", "ci")}))] == 2
    _, without = scrape(MusicFSCollector(fake_mount()))
    assert not any(name.startswith("musicfs_webhook") for name, _ in without)


def test_notify_counters() -> None:
    servers = {"mpd": {"id": "mpd", "type": "mpd", "rounds": 4, "folders": 9, "failed": 1,
                       "retried": 3, "dropped": 0, "last_error": ""}}  # fmt: skip
    _, found = scrape(MusicFSCollector(fake_mount(), notify_stats=lambda: servers))
    rounds = "musicfs_notify_rounds_total"
    assert found[(rounds, frozenset({("server", "mpd"), ("outcome", "sent")}))] == 4
    assert found[(rounds, frozenset({("server", "mpd"), ("outcome", "failed")}))] == 1
    assert found[("musicfs_notify_retries_total", frozenset({("server", "mpd")}))] == 3
    assert found[("musicfs_notify_folders_total", frozenset({("server", "mpd")}))] == 9
    _, without = scrape(MusicFSCollector(fake_mount()))
    assert not any(name.startswith("musicfs_notify") for name, _ in without)


def test_sync_events_are_added_up() -> None:
    bus = EventBus()
    syncs = SyncCounters()
    for complete, added in ((True, 5), (False, 2), (True, 0)):
        syncs.add(bus.publish(EventType.SYNC_COMPLETED, origin="music", complete=complete,
                              added=added, changed=1, removed=0, unreadable=0))  # fmt: skip
    syncs.add(bus.publish(EventType.SYNC_STARTED, origin="music"))
    counts, files, last = syncs.snapshot()
    assert counts == {("music", "complete"): 2, ("music", "incomplete"): 1}
    assert files[("music", "added")] == 7
    assert files[("music", "changed")] == 3
    assert last["music"] > 0


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    for bad in ("9464", ":9464", "host:0", "host:http", "host:70000"):
        with pytest.raises(ValueError, match="expected HOST:PORT"):
            parse_listen(bad)
    assert load_config(env={}, sections=SECTIONS).section(METRICS).listen == ""
    env = {"MUSICFS_METRICS_LISTEN": "127.0.0.1:9464"}
    assert load_config(env=env, sections=SECTIONS).section(METRICS).listen == "127.0.0.1:9464"
    with pytest.raises(ConfigError, match=r"MUSICFS_METRICS_LISTEN.*HOST:PORT"):
        load_config(env={"MUSICFS_METRICS_LISTEN": "localhost"}, sections=SECTIONS)
    with pytest.raises(ConfigError, match="name the address"):
        load_config(env={"MUSICFS_METRICS_LISTEN": ":9464"}, sections=SECTIONS)


def test_core_alone_does_not_know_the_metrics_section() -> None:
    """``[metrics]`` is control's: a config loaded without its sections refuses it."""
    with pytest.raises(ConfigError, match="MUSICFS_METRICS_LISTEN is not a MusicFS setting"):
        load_config(env={"MUSICFS_METRICS_LISTEN": "127.0.0.1:9464"})


def test_server_serves_counts_syncs_and_stops() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fs = fake_mount()
    server = MetricsServer(fs, f"127.0.0.1:{port}")
    server.start()
    try:
        assert fs.events.subscribers == 1
        fs.events.publish(EventType.SYNC_COMPLETED, origin="music", complete=True, added=3)
        url = f"http://127.0.0.1:{port}/metrics"

        def synced() -> str:
            with urllib.request.urlopen(url, timeout=10) as response:
                text: str = response.read().decode()
            return text

        deadline = time.monotonic() + 10
        while 'musicfs_syncs_total{origin="music",result="complete"} 1.0' not in synced():
            assert time.monotonic() < deadline, synced()
            time.sleep(0.05)
        assert "process_resident_memory_bytes" in synced()
    finally:
        server.stop()
    assert fs.events.subscribers == 0
    with pytest.raises(urllib.error.URLError, match="refused"):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
