"""The Prometheus endpoint (SPEC NFR-10): ``[metrics] listen = "127.0.0.1:9464"``.

`MetricsServer` serves ``/metrics`` over HTTP from prometheus-client's own
threads; the daemon starts it after READY and stops it at shutdown. Nothing is
counted twice: `MusicFSCollector` reads the live state of the mount through
its facade (`musicfs.core.mount.facade.MountControl`) when Prometheus scrapes —
the FUSE counters and latency histograms, the cache tiers' `TierStats`, the
origins' health, the event bus's counters — so the FUSE thread does no extra
work for the metrics.
Those reads are of counters and snapshots only (no lock that FUSE waits on for
long, no trio hop). The catalog's counts come from `MountControl.counts`, which
opens its own read-only connection in the HTTP thread, at most every
`COUNTS_MAX_AGE` seconds. Sync counters come from the event bus: the server
subscribes to ``sync.completed`` and adds each report up in a thread of its own.

Series (``{label}``; counters end in ``_total``):

- ``musicfs_build_info{version}``, ``musicfs_start_time_seconds``,
  ``musicfs_mount_state{state}`` (1 for the current state), ``musicfs_open_handles``
- ``musicfs_fuse_ops_total{op}``; ``musicfs_fuse_latency_seconds{op}`` (histogram)
- ``musicfs_catalog_tracks``, ``musicfs_catalog_directories``,
  ``musicfs_catalog_unreadable_files``
- ``musicfs_cache_entries{tier}``, ``musicfs_cache_size_bytes{tier}``,
  ``musicfs_cache_hits_total{tier}``, ``musicfs_cache_misses_total{tier}``,
  ``musicfs_cache_evictions_total{tier}`` (tier: l1 directories in memory,
  l2 headers, l3 payload chunks), ``musicfs_cache_limit_bytes``,
  ``musicfs_cache_corrupt_chunks_total``, ``musicfs_cache_origin_bytes_total``
- ``musicfs_origin_info{origin,type}``, ``musicfs_origin_health{origin}`` (1 online),
  ``musicfs_origin_consecutive_failures{origin}``,
  ``musicfs_origin_probe_latency_seconds{origin}``,
  ``musicfs_origin_health_changed_timestamp_seconds{origin}``
- ``musicfs_sync_running``, ``musicfs_syncs_total{origin,result}``,
  ``musicfs_sync_files_total{origin,change}``,
  ``musicfs_sync_last_completed_timestamp_seconds{origin}``
- ``musicfs_events_published_total{type}``, ``musicfs_events_dropped_total``,
  ``musicfs_event_subscribers``
- ``musicfs_webhook_events_total{hook,outcome}`` (delivered, failed, dropped),
  ``musicfs_webhook_retries_total{hook}``, when webhooks are configured
- ``musicfs_notify_rounds_total{server,outcome}`` (sent, failed),
  ``musicfs_notify_retries_total{server}``, ``musicfs_notify_folders_total{server}``,
  when ``[[notify]]`` media servers are configured
- prometheus-client's ``process_*`` and ``python_info``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from musicfs.core.events import Event, EventType
from musicfs.core.mount.facade import PROMETHEUS_BOUNDS, MountControl, MountState, version

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger(__name__)

#: Seconds the catalog's counts are reused between scrapes (a count of a big
#: catalog takes a while; Prometheus scrapes every 15 s or so).
COUNTS_MAX_AGE = 10.0

_SYNC_CHANGES = ("added", "changed", "removed", "unreadable")
_WEBHOOK_OUTCOMES = ("delivered", "failed", "dropped")

#: hook id -> its counters (`musicfs.control.webhooks.Webhooks.stats`); also
#: entry id -> its counters (`musicfs.control.notify.notifier.Notifiers.stats`).
WebhookStats = Callable[[], Mapping[str, Mapping[str, object]]]
#: The outcomes of a media server's rounds, and the counter each is read from.
_NOTIFY_OUTCOMES = {"sent": "rounds", "failed": "failed"}


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); ValueError if it is neither."""
    host, sep, port = listen.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    return host, int(port)


class SyncCounters:
    """What the ``sync.completed`` events reported, added up per origin."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.syncs: dict[tuple[str, str], int] = {}  # (origin, result) -> count
        self.files: dict[tuple[str, str], int] = {}  # (origin, change) -> files
        self.last_completed: dict[str, float] = {}  # origin -> event time

    def add(self, event: Event) -> None:
        if event.type is not EventType.SYNC_COMPLETED:
            return
        result = "complete" if event.details.get("complete") else "incomplete"
        with self._lock:
            key = (event.origin, result)
            self.syncs[key] = self.syncs.get(key, 0) + 1
            for change in _SYNC_CHANGES:
                value = event.details.get(change, 0)
                if isinstance(value, int | float):
                    key = (event.origin, change)
                    self.files[key] = self.files.get(key, 0) + int(value)
            self.last_completed[event.origin] = event.time

    def snapshot(
        self,
    ) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int], dict[str, float]]:
        with self._lock:
            return dict(self.syncs), dict(self.files), dict(self.last_completed)


class MusicFSCollector(Collector):
    """Reads one mount's state at scrape time (prometheus-client calls `collect`
    from its HTTP threads)."""

    def __init__(
        self,
        fs: MountControl,
        syncs: SyncCounters | None = None,
        counts_max_age: float = COUNTS_MAX_AGE,
        webhook_stats: WebhookStats | None = None,
        notify_stats: WebhookStats | None = None,
    ) -> None:
        self.fs = fs
        self.syncs = syncs or SyncCounters()
        self.webhook_stats = webhook_stats
        self.notify_stats = notify_stats
        self.counts_max_age = counts_max_age
        self._counts: dict[str, int] | None = None
        self._counts_at = 0.0
        self._counts_lock = threading.Lock()
        # Counters the core keeps without a lock may, in a rare race between two
        # threads, step back by a few; Prometheus would take that for a reset.
        self._highest: dict[tuple[str, tuple[str, ...]], float] = {}
        self._highest_lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        yield from self._mount()
        yield from self._fuse()
        yield from self._catalog()
        yield from self._cache()
        yield from self._origins()
        yield from self._sync()
        yield from self._events()
        yield from self._webhooks()
        yield from self._notify()

    # -- helpers --------------------------------------------------------------------

    def _counter(
        self, name: str, doc: str, labels: tuple[str, ...], values: dict[tuple[str, ...], float]
    ) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=list(labels))
        with self._highest_lock:
            for key, now in sorted(values.items()):
                value = max(self._highest.get((name, key), 0.0), now)
                self._highest[(name, key)] = value
                family.add_metric(list(key), value)
        return family

    @staticmethod
    def _gauge(
        name: str, doc: str, labels: tuple[str, ...], values: dict[tuple[str, ...], float]
    ) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=list(labels))
        for key, value in sorted(values.items()):
            family.add_metric(list(key), value)
        return family

    # -- the series -------------------------------------------------------------------

    def _mount(self) -> Iterator[Metric]:
        fs = self.fs
        info = InfoMetricFamily("musicfs_build", "The MusicFS version serving this mount.")
        info.add_metric([], {"version": version()})
        yield info
        yield GaugeMetricFamily(
            "musicfs_start_time_seconds",
            "When the daemon started, in seconds since the Unix epoch.",
            value=fs.started,
        )
        state = fs.state()
        yield self._gauge(
            "musicfs_mount_state",
            "The mount's state: 1 for the current one, 0 for the others.",
            ("state",),
            {(s.value,): float(s is state) for s in MountState},
        )
        yield GaugeMetricFamily(
            "musicfs_open_handles",
            "Files open through the mount right now.",
            value=fs.open_handles(),
        )

    def _fuse(self) -> Iterator[Metric]:
        counts = self.fs.op_counts()
        yield self._counter(
            "musicfs_fuse_ops_total",
            "FUSE requests answered, by operation (write_refused: write-type calls, "
            "answered EROFS).",
            ("op",),
            {(op,): float(n) for op, n in counts.items()},
        )
        histograms = self.fs.latency_histograms()
        family = HistogramMetricFamily(
            "musicfs_fuse_latency_seconds",
            "Time the daemon took to answer FUSE requests, by operation.",
            labels=["op"],
        )
        for op, histogram in sorted(histograms.items()):
            buckets = [
                (_le(bound), float(count))
                for bound, count in histogram.cumulative(PROMETHEUS_BOUNDS)
            ]
            family.add_metric([op], buckets, sum_value=histogram.total)
        yield family

    def _catalog(self) -> Iterator[Metric]:
        counts = self._catalog_counts()
        if counts is None:
            return
        for key, doc in (
            ("tracks", "Tracks in the tree."),
            ("directories", "Directories in the tree."),
            ("unreadable_files", "Files on the origins whose tags could not be read."),
        ):
            yield GaugeMetricFamily(f"musicfs_catalog_{key}", doc, value=counts.get(key, 0))

    def _catalog_counts(self) -> dict[str, int] | None:
        with self._counts_lock:
            now = time.monotonic()
            if self._counts is None or now - self._counts_at >= self.counts_max_age:
                try:
                    self._counts = self.fs.counts()
                except Exception as exc:  # a busy or damaged catalog: leave the series out
                    log.warning("metrics: cannot count the catalog: %s", exc)
                    return self._counts
                self._counts_at = now
            return self._counts

    def _cache(self) -> Iterator[Metric]:
        tiers = self.fs.cache_tiers()
        content = self.fs.content_cache()
        yield self._gauge(
            "musicfs_cache_entries",
            "Entries a cache tier holds (l1: directory entries in memory, l2: file "
            "headers, l3: payload chunks).",
            ("tier",),
            {(tier,): float(stats.entries) for tier, stats in tiers.items()},
        )
        yield self._gauge(
            "musicfs_cache_size_bytes",
            "Bytes a cache tier holds on disk.",
            ("tier",),
            {(tier,): float(stats.bytes) for tier, stats in tiers.items() if tier != "l1"},
        )
        for what, doc in (
            ("hits", "Lookups a cache tier answered."),
            ("misses", "Lookups a cache tier could not answer."),
            ("evictions", "Entries a cache tier dropped to stay within its limit."),
        ):
            yield self._counter(
                f"musicfs_cache_{what}_total",
                doc,
                ("tier",),
                {(tier,): float(getattr(stats, what)) for tier, stats in tiers.items()},
            )
        if content is not None:
            yield GaugeMetricFamily(
                "musicfs_cache_limit_bytes",
                "The content cache's size limit (l3).",
                value=content["limit_bytes"],
            )
            yield self._counter(
                "musicfs_cache_corrupt_chunks_total",
                "Cached chunks found damaged (dropped, fetched again from the origin).",
                (),
                {(): float(tiers["l3"].corrupt)},
            )
            yield self._counter(
                "musicfs_cache_origin_bytes_total",
                "Bytes read from origins to fill the content cache.",
                (),
                {(): float(content["origin_bytes"])},
            )

    def _origins(self) -> Iterator[Metric]:
        fs = self.fs
        health = fs.origin_health_all()
        kinds = fs.origin_kinds()
        yield self._gauge(
            "musicfs_origin_info",
            "The configured origins and their types (always 1).",
            ("origin", "type"),
            {(oid, kind): 1.0 for oid, kind in kinds.items()},
        )
        yield self._gauge(
            "musicfs_origin_health",
            "Whether an origin answers: 1 online, 0 offline.",
            ("origin",),
            {(oid,): float(h.online) for oid, h in health.items()},
        )
        yield self._gauge(
            "musicfs_origin_consecutive_failures",
            "Requests and probes of an origin that failed in a row.",
            ("origin",),
            {(oid,): float(h.failures) for oid, h in health.items()},
        )
        yield self._gauge(
            "musicfs_origin_probe_latency_seconds",
            "Round trip of the last successful health probe of an origin.",
            ("origin",),
            {(oid,): h.latency_ms / 1000 for oid, h in health.items()},
        )
        yield self._gauge(
            "musicfs_origin_health_changed_timestamp_seconds",
            "When an origin last went offline or came back (or the daemon started).",
            ("origin",),
            {(oid,): h.changed_at for oid, h in health.items()},
        )

    def _sync(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "musicfs_sync_running", "1 while a rescan runs.", value=float(self.fs.scanning)
        )
        syncs, files, last = self.syncs.snapshot()
        yield self._counter(
            "musicfs_syncs_total",
            "Rescans of an origin that finished (incomplete: some folders could not be listed).",
            ("origin", "result"),
            {key: float(n) for key, n in syncs.items()},
        )
        yield self._counter(
            "musicfs_sync_files_total",
            "Files rescans found added, changed, removed or unreadable, by origin.",
            ("origin", "change"),
            {key: float(n) for key, n in files.items()},
        )
        yield self._gauge(
            "musicfs_sync_last_completed_timestamp_seconds",
            "When the last rescan of an origin finished, in seconds since the epoch.",
            ("origin",),
            {(origin,): t for origin, t in last.items()},
        )

    def _events(self) -> Iterator[Metric]:
        events = self.fs.events
        yield self._counter(
            "musicfs_events_published_total",
            "Events published on the event bus, by type.",
            ("type",),
            {(t.value,): float(n) for t, n in dict(events.published).items()},
        )
        yield self._counter(
            "musicfs_events_dropped_total",
            "Events a subscriber was too slow to take (its queue was full).",
            (),
            {(): float(events.dropped)},
        )
        yield GaugeMetricFamily(
            "musicfs_event_subscribers",
            "Event streams and other listeners subscribed right now.",
            value=events.subscribers,
        )

    def _webhooks(self) -> Iterator[Metric]:
        if self.webhook_stats is None:
            return
        hooks = self.webhook_stats()

        def counted(hook: Mapping[str, object], key: str) -> float:
            value = hook.get(key, 0)
            return float(value) if isinstance(value, int | float) else 0.0

        yield self._counter(
            "musicfs_webhook_events_total",
            "Events a webhook delivered, gave up on (failed) or dropped (queue full).",
            ("hook", "outcome"),
            {(hid, o): counted(h, o) for hid, h in hooks.items() for o in _WEBHOOK_OUTCOMES},
        )
        yield self._counter(
            "musicfs_webhook_retries_total",
            "Delivery attempts after the first, by webhook.",
            ("hook",),
            {(hid,): counted(h, "retried") for hid, h in hooks.items()},
        )

    def _notify(self) -> Iterator[Metric]:
        if self.notify_stats is None:
            return
        servers = self.notify_stats()

        def counted(entry: Mapping[str, object], key: str) -> float:
            value = entry.get(key, 0)
            return float(value) if isinstance(value, int | float) else 0.0

        yield self._counter(
            "musicfs_notify_rounds_total",
            "Rounds of changed folders a media server took (sent) or that were given up.",
            ("server", "outcome"),
            {
                (sid, o): counted(e, key)
                for sid, e in servers.items()
                for o, key in _NOTIFY_OUTCOMES.items()
            },
        )
        yield self._counter(
            "musicfs_notify_retries_total",
            "Attempts after the first to tell a media server of changed folders.",
            ("server",),
            {(sid,): counted(e, "retried") for sid, e in servers.items()},
        )
        yield self._counter(
            "musicfs_notify_folders_total",
            "Folders named in the rounds a media server took.",
            ("server",),
            {(sid,): counted(e, "folders") for sid, e in servers.items()},
        )


class MetricsServer:
    """``/metrics`` over HTTP for one mount, and the sync-event listener behind it."""

    def __init__(
        self,
        fs: MountControl,
        listen: str,
        webhook_stats: WebhookStats | None = None,
        notify_stats: WebhookStats | None = None,
    ) -> None:
        self.fs = fs
        self.host, self.port = parse_listen(listen)
        self.syncs = SyncCounters()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            MusicFSCollector(fs, self.syncs, webhook_stats=webhook_stats, notify_stats=notify_stats)
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._httpd: WSGIServer | None = None
        self._http_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

    def start(self) -> None:
        """Listen (OSError if the address is taken) and start counting syncs."""
        self._httpd, self._http_thread = start_http_server(
            self.port, self.host, registry=self.registry
        )
        self.port = self._httpd.server_port
        subscription = self.fs.events.subscribe([EventType.SYNC_COMPLETED], maxsize=10_000)

        def listen() -> None:
            with subscription:
                while not self._stop.is_set():
                    event = subscription.get(timeout=0.5)
                    if event is not None:
                        self.syncs.add(event)

        self._listener = threading.Thread(target=listen, name="musicfs-metrics-events",
                                          daemon=True)  # fmt: skip
        self._listener.start()
        log.info("serving metrics on http://%s/metrics", _url_host(self.host, self.port))

    def stop(self) -> None:
        """Stop serving (blocking: call it from a worker thread)."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        for thread in (self._http_thread, self._listener):
            if thread is not None:
                thread.join(timeout=5)


def _le(bound: float) -> str:
    """A bucket's ``le`` label: "+Inf", else Python's shortest repr (5e-06, 0.25, 1.0)."""
    return "+Inf" if bound == float("inf") else repr(bound)


def _url_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
