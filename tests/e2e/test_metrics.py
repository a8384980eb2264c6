"""The Prometheus endpoint of a real daemon (SPEC NFR-10) and the latency in GetStatus.

A mount with ``[metrics] listen = "127.0.0.1:<port>"`` serves ``/metrics``
once it is up. After reading some files through the mount, the scraped text
must hold the SPEC §9 series with values that match what happened — requests
counted, latency buckets filled, as many tracks as the origin has — and pass
``promtool check metrics`` (Prometheus' own linter). ``musicfs status --json``
reports p50/p95/p99 of the same requests.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import (
    Mount,
    describe,
    mounted,
    run_musicfs,
    sha256_of,
    wait_until,
    write_config,
)
from tests.e2e.library import Library, make_origin, render_path
from tests.e2e.test_offline import HIKARI, JOGA, SVEFN, UNRAVEL
from tests.servers import free_port

pytestmark = [pytest.mark.mount, pytest.mark.media]

TRACKS = [JOGA, UNRAVEL, SVEFN, HIKARI]

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        content_type = response.headers["Content-Type"]
        assert content_type.startswith("text/plain"), content_type
        text: str = response.read().decode()
        return text


def wait_for_endpoint(port: int) -> str:
    """The endpoint starts just after READY, in a worker thread: give it a moment."""

    def attempt() -> str | None:
        try:
            return scrape(port)
        except (urllib.error.URLError, ConnectionError):
            return None

    return wait_until(attempt, timeout=20, what=f"the metrics endpoint on port {port}")


def samples(text: str) -> Samples:
    """sample name -> {frozenset of (label, value)} -> value."""
    found: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name][frozenset(sample.labels.items())] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    series = found.get(name, {})
    key = frozenset(labels.items())
    assert key in series, f"{name}{labels} not exported; have: {[dict(k) for k in series]}"
    return series[key]


def by_label(found: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(key)[label]: v for key, v in found.get(name, {}).items()}


def promtool_check(text: str) -> None:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: apt-get install --no-install-recommends prometheus")
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        check=False,
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, describe(result)


def metrics_mount(library: Library, tmp_path: Path, port: int) -> tuple[Path, list[Path]]:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, TRACKS)
    config = write_config(
        tmp_path / "config.toml", [], {"metrics": {"listen": f"127.0.0.1:{port}"}}
    )
    return config, [Path(render_path(specs[t])) for t in TRACKS]


def read_all(mount: Mount, paths: list[Path]) -> None:
    for path in paths:
        (mount.mountpoint / path).stat()
        sha256_of(mount.mountpoint / path)


def test_endpoint_serves_the_spec_series_and_passes_promtool(
    library: Library, tmp_path: Path
) -> None:
    port = free_port()
    config, paths = metrics_mount(library, tmp_path, port)
    with mounted([tmp_path / "music"], tmp_path / "mnt", tmp_path / "cache",
                 "--config", str(config)) as mount:  # fmt: skip
        first = samples(wait_for_endpoint(port))
        read_all(mount, paths)
        text = scrape(port)
        promtool_check(text)
        found = samples(text)
        status = mount.status()

        # What the daemon did, counted.
        ops = by_label(found, "musicfs_fuse_ops_total", "op")
        assert ops["open"] >= len(paths)
        assert ops["read"] >= len(paths)
        assert ops["lookup"] >= 1
        assert ops["release"] >= len(paths)
        for op in ("open", "read", "lookup"):
            count = value(found, "musicfs_fuse_latency_seconds_count", op=op)
            assert count >= len(paths) if op != "lookup" else count >= 1
            assert value(found, "musicfs_fuse_latency_seconds_sum", op=op) > 0
            buckets = {
                float(dict(k)["le"]): v
                for k, v in found["musicfs_fuse_latency_seconds_bucket"].items()
                if dict(k)["op"] == op
            }
            assert buckets[float("inf")] == count
            ordered = [buckets[le] for le in sorted(buckets)]
            assert ordered == sorted(ordered)  # cumulative
            assert ordered[-2] > 0  # below the top bound: no read took a minute
        assert value(found, "musicfs_open_handles") == 0

        # The library and its state.
        assert value(found, "musicfs_catalog_tracks") == len(TRACKS) == status["tracks"]
        assert value(found, "musicfs_catalog_directories") == status["directories"]
        assert value(found, "musicfs_catalog_unreadable_files") == 0
        assert value(found, "musicfs_mount_state", state="READY") == 1
        assert value(found, "musicfs_mount_state", state="DEGRADED") == 0
        assert value(found, "musicfs_origin_health", origin="music") == 1
        assert value(found, "musicfs_origin_info", origin="music", type="local") == 1
        assert value(found, "musicfs_origin_consecutive_failures", origin="music") == 0
        assert value(found, "musicfs_syncs_total", origin="music", result="complete") >= 1
        added = value(found, "musicfs_sync_files_total", origin="music", change="added")
        assert added == len(TRACKS)
        assert value(found, "musicfs_sync_last_completed_timestamp_seconds", origin="music") > 0
        assert value(found, "musicfs_sync_running") in (0, 1)
        assert value(found, "musicfs_build_info", version=status["version"]) == 1
        assert value(found, "musicfs_start_time_seconds") > 0

        # Caches and events.
        for what in ("hits", "misses", "evictions"):
            assert set(by_label(found, f"musicfs_cache_{what}_total", "tier")) == {"l1", "l2", "l3"}
        assert set(by_label(found, "musicfs_cache_entries", "tier")) == {"l1", "l2", "l3"}
        assert set(by_label(found, "musicfs_cache_size_bytes", "tier")) == {"l2", "l3"}
        assert value(found, "musicfs_cache_limit_bytes") > 0
        assert value(found, "musicfs_cache_corrupt_chunks_total") == 0
        assert value(found, "musicfs_events_published_total", type="file.opened") >= len(paths)
        assert value(found, "musicfs_events_dropped_total") == 0
        assert value(found, "musicfs_event_subscribers") >= 1  # the metrics' own listener
        assert value(found, "process_resident_memory_bytes") > 0

        # Counters never go back: a later scrape has at least as much everywhere.
        for name, series in first.items():
            if name.endswith("_total") or name.endswith("_count"):
                for labels, before in series.items():
                    assert found[name][labels] >= before, (name, dict(labels))

        # The same requests, as quantiles in GetStatus (musicfs status --json).
        assert 0 < status["latency_p50_ms"] <= status["latency_p95_ms"] <= status["latency_p99_ms"]
        per_op = {o["op"]: o for o in status["op_latency"]}
        assert per_op["read"]["count"] >= len(paths)
        assert 0 < per_op["read"]["p50_ms"] <= per_op["read"]["p99_ms"]
        assert per_op["open"]["count"] >= len(paths)
        shown = run_musicfs("status", mount.mountpoint)
        assert shown.returncode == 0, describe(shown)
        assert "latency p50/p95/p99" in shown.stdout
        assert "FUSE operations" in shown.stdout
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        scrape(port)  # stopped with the daemon


def test_a_taken_port_does_not_stop_the_mount(library: Library, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config, paths = metrics_mount(library, tmp_path, port)
        with mounted([tmp_path / "music"], tmp_path / "mnt", tmp_path / "cache",
                     "--config", str(config)) as mount:  # fmt: skip
            read_all(mount, paths[:1])
            log = mount.cache_dir / "musicfs.log"
            wait_until(lambda: "cannot serve metrics" in log.read_text(), timeout=20,
                       what="the metrics error in the daemon log")  # fmt: skip
            assert mount.status()["latency_p50_ms"] > 0


def test_a_bad_listen_address_is_a_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", [], {"metrics": {"listen": "localhost"}})
    (tmp_path / "mnt").mkdir()
    result = run_musicfs("mount", tmp_path / "mnt", "--origin", tmp_path, "--config", config)
    assert result.returncode == 2, describe(result)
    assert "metrics.listen" in result.stderr, describe(result)
    assert "HOST:PORT" in result.stderr, describe(result)
