#!/usr/bin/env python3
"""The figures people can see: docs/performance.md and its PNG plots, from one bench run's JSON.

    python benchmarks/bench_plots.py benchmarks/results/latest.json
    python benchmarks/bench_plots.py RUN.json --out DIR  # DIR/performance.md, DIR/performance/

bench.py calls :func:`write` at the end of its run (so ``nox -s bench`` refreshes the page);
this script redraws the page from any saved run. The JSON stays the source of truth: every
number on the page is copied from it, each plot has a table of the numbers it draws, and
each plot states the machine (CPU model, cores, kernel) and the date of the run. A plot
whose section the run lacks (``--only``, a failed section, a section not written yet) is
left out with a line saying so, never drawn from another run.

Plots: metadata latency (stat, readdir, walk) and reads (throughput, 4 KiB latency) for
MusicFS against direct disk, the pyfuse3 floor, mergerfs and rclone; scan rate against
catalog size (``scan``) and against round-trip time (``remote-scan``); mount time and
daemon RSS against catalog size (``mount``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import matplotlib
except ImportError:  # run outside the locked venv
    sys.exit(
        "bench_plots: matplotlib is not installed; run it in `nox -s bench`'s venv "
        "(.nox/bench/bin/python) or install requirements-dev.lock"
    )

matplotlib.use("Agg")  # no display: the plots are files, whether run by nox, bench.py or a test

import matplotlib.pyplot as plt  # after the backend is chosen
from matplotlib.axes import Axes

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
PNG_DIR = "performance"  # next to performance.md, so the page's links are relative

#: Every system a section may hold, in the order bars and columns show them.
SYSTEMS = ("musicfs", "before", "floor", "direct", "mergerfs", "rclone")
LABEL = {
    "musicfs": "MusicFS",
    "before": "MusicFS before",
    "floor": "pyfuse3 floor",
    "direct": "direct disk",
    "mergerfs": "mergerfs",
    "rclone": "rclone",
}
COLOR = {
    "musicfs": "#1f77b4",
    "before": "#9ecae1",
    "floor": "#7f7f7f",
    "direct": "#2ca02c",
    "mergerfs": "#ff7f0e",
    "rclone": "#d62728",
}
RATIO = "MusicFS ÷ floor"
#: Names of the remote-scan section the plotter accepts (its keys are not settled yet).
REMOTE_SECTIONS = ("remote-scan", "remote_scan")


# --------------------------------------------------------------------------- numbers


def fmt(v: float | None) -> str:
    """A number as the page shows it: 3 significant digits, thousands separated; a dash if none."""
    if v is None:
        return "\N{EN DASH}"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    digits = max(0, 2 - math.floor(math.log10(abs(v))))
    return f"{v:.{digits}f}"


def get(d: Any, *keys: str) -> Any:
    """d[k1][k2]... or None when any level is missing (a run may lack any section or system)."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


# --------------------------------------------------------------------------- page parts


class NoFigure(Exception):
    """The section is there but holds none of the figures a plot draws."""


@dataclass
class Plot:
    """One figure of the page: its PNG, the table of what it draws, and notes."""

    name: str  # file stem of the PNG
    title: str
    section: str  # the JSON section it comes from
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


@dataclass
class Run:
    """What every plot of one run shares: its JSON, the machine line, the command."""

    report: dict[str, Any]
    source: str

    @property
    def results(self) -> dict[str, Any]:
        r = self.report.get("results")
        return r if isinstance(r, dict) else {}

    @property
    def meta(self) -> dict[str, Any]:
        m = self.report.get("meta")
        return m if isinstance(m, dict) else {}

    def machine(self) -> str:
        """CPU model, cores, kernel: what a reader needs to weigh the figures."""
        m = get(self.meta, "machine") or {}
        cpu = m.get("cpu_model") or "CPU model not recorded"
        cores = m.get("cpus")
        kernel = m.get("kernel")
        return ", ".join(
            part
            for part in (
                str(cpu),
                f"{cores} cores" if cores else "",
                f"Linux {kernel}" if kernel else "",
            )
            if part
        )

    def date(self) -> str:
        started = self.meta.get("started")
        return str(started)[:10] if started else "date not recorded"

    def caption(self) -> str:
        return f"{self.machine()} · {self.date()}"

    def command(self) -> str:
        """The command that made the run, in backquotes: as recorded, or (a run from before
        bench.py recorded it) rebuilt from its settings, and said so."""
        cmd = self.meta.get("command")
        if isinstance(cmd, list) and cmd:
            return "`" + " ".join(_quote(str(a)) for a in cmd) + "`"
        s = get(self.meta, "settings") or {}
        args = ["python", "benchmarks/bench.py"]
        if s.get("quick"):
            args.append("--quick")
        if s.get("before"):
            args += ["--before", str(s["before"])]
        return "`" + " ".join(_quote(a) for a in args) + "` (rebuilt from the run's settings)"

    def section(self, name: str) -> tuple[dict[str, Any] | None, str]:
        """The section, or None and why not (absent, or failed with its error)."""
        sec = self.results.get(name)
        if not isinstance(sec, dict):
            return None, f"the run has no `{name}` section"
        if "error" in sec:
            return None, f"the `{name}` section failed in this run: {sec['error']}"
        return sec, ""


def _quote(a: str) -> str:
    return a if re.fullmatch(r"[\w@%+=:,./-]+", a) else "'" + a.replace("'", "'\\''") + "'"


def systems_in(sec: dict[str, Any]) -> list[str]:
    return [s for s in SYSTEMS if isinstance(sec.get(s), dict)]


def _style(ax: Axes, unit: str, better: str) -> None:
    ax.set_ylabel(f"{unit} ({better} is better)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _bars(
    ax: Axes, groups: list[str], values: dict[str, list[float | None]], unit: str, better: str
) -> None:
    """Grouped bars: one group per metric, one bar per system, each labelled with its value.
    A log axis when the bars span more than 30x (rclone's first listing against direct's
    cached one), so the short bars stay readable."""
    systems = [s for s in values if any(v is not None for v in values[s])]
    if not systems:
        raise NoFigure("the run's section for this plot holds none of the figures it draws")
    width = 0.8 / max(1, len(systems))
    present = [v for s in systems for v in values[s] if v is not None and v > 0]
    if present and max(present) / min(present) > 30:
        ax.set_yscale("log")
    for i, s in enumerate(systems):
        xs = [g + (i - (len(systems) - 1) / 2) * width for g in range(len(groups))]
        heights = [v if v is not None else 0.0 for v in values[s]]
        bars = ax.bar(xs, heights, width, label=LABEL[s], color=COLOR[s])
        labels = [fmt(v) if v is not None else "" for v in values[s]]
        ax.bar_label(bars, labels=labels, fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.margins(y=0.25)
    if ax.get_yscale() == "log":
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 4)  # room for the value labels above the tallest bar
    _style(ax, unit, better)


def _table(
    metrics: list[str], values: dict[str, list[float | None]], first: str = "metric"
) -> tuple[list[str], list[list[str]]]:
    """Rows of metrics, a column per system, and MusicFS ÷ the pyfuse3 floor last: the
    issue's targets are set against the floor measured in the same run."""
    systems = [s for s in values if any(v is not None for v in values[s])]
    header = [first, *(LABEL[s] for s in systems)]
    rows = [[m, *(fmt(values[s][i]) for s in systems)] for i, m in enumerate(metrics)]
    if "musicfs" in systems and "floor" in systems:
        header.append(RATIO)
        for i, row in enumerate(rows):
            mine, floor = values["musicfs"][i], values["floor"][i]
            row.append(fmt(mine / floor) if mine is not None and floor else fmt(None))
    return header, rows


def _legend_right(ax: Axes) -> None:
    """The legend beside the plot: the lines of mount time and RSS fill the plot area."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _save(fig: Any, run: Run, title: str, path: Path) -> None:
    fig.suptitle(f"{title}\n{run.caption()}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Title": title, "Description": run.caption()})
    plt.close(fig)


# --------------------------------------------------------------------------- plots
#
# Each returns the Plot it drew, or a string: why it drew nothing.


def plot_stat(run: Run, out: Path) -> Plot | str:
    sec, why = run.section("stat")
    if sec is None:
        return why
    n = sec.get("files")
    metrics = [
        ("first p50", ("first", "p50_us")),
        ("first p99", ("first", "p99_us")),
        ("again p50", ("again", "p50_us")),
        ("again p99", ("again", "p99_us")),
    ]
    values = {s: [num(get(sec, s, *k)) for _, k in metrics] for s in systems_in(sec)}
    title = f"stat latency, {n:,} files" if isinstance(n, int) else "stat latency"
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _bars(ax, [m for m, _ in metrics], values, "µs", "lower")
    ax.legend(fontsize=7, ncols=3)
    _save(fig, run, title, out / "stat.png")
    header, rows = _table([f"stat {m} (µs)" for m, _ in metrics], values)
    notes = ["first: the first `os.stat` of each file on a fresh mount (direct disk: after "
             "dropping caches); again: the kernel's attribute cache."]  # fmt: skip
    dropped = num(get(sec, "musicfs", "first_caches_dropped", "p50_us"))
    if dropped is not None:
        notes.append(
            f"MusicFS first p50 with every cache dropped (catalog cold): {fmt(dropped)} µs."
        )
    return Plot("stat", title, "stat", header, rows, notes)


def plot_readdir(run: Run, out: Path) -> Plot | str:
    sec, why = run.section("readdir")
    if sec is None:
        return why
    systems = systems_in(sec)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    metrics: list[str] = []
    values: dict[str, list[float | None]] = {s: [] for s in systems}
    for ax, size in zip(axes, ("big", "small"), strict=True):
        entries = sec.get(f"{size}_entries")
        what = f"{entries:,} entries" if isinstance(entries, int) else f"{size} directory"
        groups = ["first", "median"]
        vals = {s: [num(get(sec, s, size, f"{g}_ms")) for g in groups] for s in systems}
        _bars(ax, groups, vals, "ms", "lower")
        ax.set_title(f"listdir of {what}", fontsize=9)
        metrics += [f"listdir {what}, {g} (ms)" for g in groups]
        for s in systems:
            values[s] += vals[s]
    axes[0].legend(fontsize=7)
    title = "Directory listings"
    _save(fig, run, title, out / "readdir.png")
    header, rows = _table(metrics, values)
    notes = ["first: on a fresh mount (direct disk: after dropping caches); median: of the "
             "listings that follow."]  # fmt: skip
    return Plot("readdir", title, "readdir", header, rows, notes)


def plot_walk(run: Run, out: Path) -> Plot | str:
    sec, why = run.section("walk")
    if sec is None:
        return why
    n = sec.get("files")
    groups = ["first, fresh mount", "again"]
    values = {
        s: [num(get(sec, s, "first_s")), num(get(sec, s, "again_s"))] for s in systems_in(sec)
    }
    what = f"{n:,} files" if isinstance(n, int) else "the tree"
    title = f"os.walk + stat of {what}"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _bars(ax, groups, values, "s", "lower")
    ax.legend(fontsize=7, ncols=2)
    _save(fig, run, title, out / "walk.png")
    header, rows = _table([f"walk {g} (s)" for g in groups], values)
    return Plot("walk", title, "walk", header, rows)


def plot_read(run: Run, out: Path) -> Plot | str:
    sec, why = run.section("read")
    if sec is None:
        return why
    systems = systems_in(sec)
    size = num(sec.get("file_bytes"))
    what = f"{size / 2**20:,.0f} MiB file" if size else "big file"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    tput = {s: [num(get(sec, s, "cold_gb_s")), num(get(sec, s, "warm_gb_s"))] for s in systems}
    _bars(ax1, ["cold (caches dropped)", "2nd pass"], tput, "GB/s", "higher")
    ax1.set_title(f"sequential read of a {what}", fontsize=9)
    lat = {
        s: [
            num(get(sec, s, "random_4k", "warm", "p50_us")),
            num(get(sec, s, "random_4k", "repeat", "p50_us")),
        ]
        for s in systems
    }
    _bars(ax2, ["warm", "same offsets again"], lat, "µs", "lower")
    ax2.set_title("random 4 KiB pread, p50", fontsize=9)
    ax1.legend(fontsize=7)
    title = "Reads: throughput and latency"
    _save(fig, run, title, out / "read.png")
    metrics = [
        "sequential read cold (GB/s)",
        "sequential read 2nd pass (GB/s)",
        "random 4 KiB warm p50 (µs)",
        "random 4 KiB again p50 (µs)",
    ]
    header, rows = _table(metrics, {s: tput[s] + lat[s] for s in systems})
    notes = []
    paired = num(get(sec, "musicfs", "cold_vs_floor_paired"))
    if paired is not None:
        ahead = num(get(sec, "floor", "read_ahead_kb"))
        again = num(get(sec, "musicfs", "warm_vs_floor_paired"))
        spread = {
            key: sorted(get(sec, "musicfs", f"{key}_vs_floor_rounds") or [])
            for key in ("cold", "warm")
        }
        notes.append(
            f"MusicFS ÷ floor read side by side in the same round, the median of the rounds' "
            f"ratios (the table's column divides the medians): cold {fmt(paired)} "
            f"(rounds {', '.join(fmt(x) for x in spread['cold'])}), 2nd pass {fmt(again)} "
            f"(rounds {', '.join(fmt(x) for x in spread['warm'])}). The floor reads with "
            f"MusicFS's read-ahead" + (f" ({fmt(ahead)} KiB)." if ahead is not None else ".")
        )
    return Plot("read", title, "read", header, rows, notes)


SCAN_LABEL = {
    "daemon": "daemon, caches dropped",
    "before": "MusicFS before, daemon, caches dropped",
    "api_cold": "Scanner API, caches dropped",
    "api_warm": "Scanner API, warm cache",
    "api_rescan_unchanged": "rescan, nothing changed",
}


def _rates(d: Any, size: int | None, path: tuple[str, ...]) -> Iterator[tuple[int, str, float]]:
    """(catalog size, series, tracks/s) of every figure under *d*: a dict with a
    ``tracks_per_s`` is one point; its size is the nearest ``files`` (or ``tracks``) above
    it, or a key that is a number (sections keyed by size, like ``mount``)."""
    if not isinstance(d, dict):
        return
    for key in ("files", "tracks"):
        if isinstance(d.get(key), int):
            size = d[key]
    rate = num(d.get("tracks_per_s"))
    if rate is not None and size:
        yield size, "/".join(path) or "scan", rate
    for k, v in d.items():
        if k.isdigit():
            yield from _rates(v, int(k), path)
        elif isinstance(v, dict):
            yield from _rates(v, size, (*path, k))


def plot_scan_size(run: Run, out: Path) -> Plot | str:
    sec, why = run.section("scan")
    if sec is None:
        return why
    points = list(_rates(sec, None, ()))
    if not points:
        return "the `scan` section has no tracks/s figure"
    series: dict[str, dict[int, float]] = {}
    for size, name, rate in points:
        series.setdefault(name, {})[size] = rate
    sizes = sorted({p[0] for p in points})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, by_size in series.items():
        xs = sorted(by_size)
        ax.plot(xs, [by_size[x] for x in xs], marker="o", label=SCAN_LABEL.get(name, name))
        for x in xs:
            ax.annotate(fmt(by_size[x]), (x, by_size[x]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")  # fmt: skip
    ax.set_yscale("log")
    _size_axis(ax, sizes)
    ax.set_xlabel("tracks scanned")
    _style(ax, "tracks/s", "higher")
    ax.legend(fontsize=7)
    title = "Local scan rate against catalog size"
    _save(fig, run, title, out / "scan-size.png")
    header = ["tracks", *(SCAN_LABEL.get(n, n) + " (tracks/s)" for n in series)]
    rows = [[f"{x:,}", *(fmt(series[n].get(x)) for n in series)] for x in sizes]
    notes = []
    if len(sizes) == 1:
        notes.append(f"This run scanned one size ({sizes[0]:,} tracks, `--scan-files`).")
    workers = sec.get("workers")
    if workers:
        notes.append(f"{workers} scanner workers.")
    return Plot("scan-size", title, "scan", header, rows, notes)


RATIO_REMOTE = "MusicFS ÷ ceiling"
_RTT_KEY = re.compile(r"^(?:rtt[_-]?)?(\d+(?:\.\d+)?)(?:[_-]?ms)?$")
#: What the series of the remote-scan section are called on the page (others: their key).
REMOTE_LABEL = {
    "musicfs": "MusicFS scan",
    "beets": "beets import -A over an rclone mount",
    "ceiling": "server's ceiling, bare client",
    "ceiling_3x": "server's ceiling, bare client, 3x the concurrency",
    "musicfs_paramiko": "MusicFS scan with ssh_client = paramiko",
    "daemon": "musicfs mount --wait, default settings, connecting included",
    "ceiling_openssh": "server's ceiling, bare client over OpenSSH's ssh",
}
#: The ratios of the remote-scan section (table rows).
REMOTE_RATIOS = {
    "ratio": RATIO_REMOTE,
    "ratio_same_work": "MusicFS ÷ bare open + 64 KiB head + close",
    "ratio_openssh": "MusicFS ÷ ceiling over ssh",
    "ratio_openssh_same_work": "MusicFS ÷ bare open + head + close over ssh",
}


def _rtt_of(d: dict[str, Any], key: str) -> float | None:
    """The round-trip time a dict of the remote-scan section is measured at: its own
    ``rtt_ms`` figure, or its key (``20``, ``20ms``, ``rtt_20ms``, ``loopback``)."""
    for k in ("rtt_ms", "added_rtt_ms"):
        if num(d.get(k)) is not None:
            return num(d[k])
    m = _RTT_KEY.match(key)
    if m:
        return float(m.group(1))
    if key in ("loopback", "local", "lo"):
        return 0.0
    return None


@dataclass
class RemoteFigure:
    origin: str  # s3, sftp: one panel each
    series: str  # musicfs, ceiling, beets...
    what: str  # tracks/s, ranged gets/s, requests per track...
    rtt: float
    value: float
    rate: bool  # a *_per_s figure (plotted), else a per-track or ratio figure (table only)


def _remote_figures(d: Any, rtt: float | None, path: tuple[str, ...]) -> Iterator[RemoteFigure]:
    """Every figure under *d* whose RTT is known. The dict that states the RTT (by its key
    or a ``rtt_ms`` figure) is an RTT level: its key is not part of the names; the first
    other key above a figure is its origin, the rest its series. bench_scan_remote.py
    writes::

        "remote-scan": {"tracks": 500, "rtts_ms": [0, 20], ...,
                        "s3": {"0": {"musicfs": {"tracks_per_s": 97, "requests_per_track": 1.0,
                                                 "kib_per_track": 19.2, ...},
                                     "ceiling": {"ranged_gets_per_s": 812, "concurrency": 32},
                                     "beets": {"tracks_per_s": 12.5, ...}, "ratio": 0.12},
                               "20": {...}},
                        "sftp": {...} or {"skipped": "OpenSSH sshd is not installed"}}
    """
    if isinstance(d, list):
        for item in d:
            yield from _remote_figures(item, rtt, (*path, "#"))
        return
    if not isinstance(d, dict):
        return
    here = _rtt_of(d, path[-1] if path else "")
    if here is not None:
        rtt, path = here, path[:-1]
    names = [k for k in path if k != "#"]
    origin, series = (names[0] if names else ""), "/".join(names[1:]) or "musicfs"
    for k, v in d.items():
        value = num(v)
        if rtt is None or value is None:
            continue
        if k.endswith("_per_s"):
            what = "tracks/s" if k == "tracks_per_s" else k.removesuffix("_per_s") + "/s"
            yield RemoteFigure(origin, series, what.replace("_", " "), rtt, value, True)
        elif k.endswith("_per_track") or k in REMOTE_RATIOS:
            what = REMOTE_RATIOS.get(k) or k.replace("_", " ").replace("kib", "KiB")
            yield RemoteFigure(origin, series, what, rtt, value, False)
    for k, v in d.items():
        if isinstance(v, dict | list):
            yield from _remote_figures(v, rtt, (*path, k))


def _remote_skips(sec: dict[str, Any]) -> list[str]:
    """Origins the run could not measure (no moto_server, no sshd), as it said."""
    return [
        f"{name}: {d.get('skipped') or d.get('error')}"
        for name, d in sec.items()
        if isinstance(d, dict) and (d.get("skipped") or d.get("error"))
    ]


def plot_scan_rtt(run: Run, out: Path) -> Plot | str:
    sec = None
    why = "the run has no `remote-scan` section"
    for name in REMOTE_SECTIONS:
        if name in run.results:
            sec, why = run.section(name)
            break
    if sec is None:
        return why
    figures = list(_remote_figures(sec, None, ()))
    skips = _remote_skips(sec)
    if not any(f.rate for f in figures):
        return "the `remote-scan` section has no rate with a known round-trip time" + (
            " (" + "; ".join(skips) + ")" if skips else ""
        )
    rtts = sorted({f.rtt for f in figures})
    rows_of: dict[tuple[str, str, str], dict[float, float]] = {}
    for f in figures:
        rows_of.setdefault((f.origin, f.series, f.what), {})[f.rtt] = f.value
    origins = list(dict.fromkeys(f.origin for f in figures if f.rate))
    fig, axes = plt.subplots(1, len(origins), figsize=(6 * len(origins), 4.8), squeeze=False)
    for ax, origin in zip(axes[0], origins, strict=True):
        values = [v for (o, _, w), by in rows_of.items() if o == origin and w.endswith("/s")
                  for v in by.values() if v > 0]  # fmt: skip
        spread = max(values) / min(values) if values else 1.0
        for (f_origin, series, what), by_rtt in rows_of.items():
            if f_origin != origin or not what.endswith("/s"):
                continue
            xs = sorted(by_rtt)
            label = f"{REMOTE_LABEL.get(series, series)} ({what})"
            ax.plot(xs, [by_rtt[x] for x in xs], marker="o", label=label)
            for x in xs:
                ax.annotate(fmt(by_rtt[x]), (x, by_rtt[x]), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")  # fmt: skip
        ax.set_xticks(rtts, [f"{x:g} ms" for x in rtts])
        ax.set_xlabel("added round-trip time")
        ax.margins(x=0.15)
        _style(ax, "per second", "higher")
        if spread > 20:  # rates 20x apart: a linear axis flattens the low ones to a line
            ax.set_yscale("log")
            ax.set_ylabel("per second, log scale (higher is better)")
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(origin.upper() or "remote origin", fontsize=9)
        ax.legend(fontsize=7)
    tracks = sec.get("tracks")
    title = "Remote scan rate against round-trip time" + (
        f", {tracks:,} tracks" if isinstance(tracks, int) else ""
    )
    _save(fig, run, title, out / "scan-rtt.png")
    header = ["origin", "figure", *(f"{x:g} ms" for x in rtts)]

    def place(k: tuple[str, str, str]) -> tuple[int, bool, bool]:
        """Per origin: the rates plotted, then requests and bytes per track, then the ratio."""
        origin, _, what = k
        return (origins.index(origin) if origin in origins else len(origins),
                not what.endswith("/s"), what in ratios)  # fmt: skip

    ratios = set(REMOTE_RATIOS.values())

    def row_name(series: str, what: str) -> str:
        return what if what in ratios else f"{REMOTE_LABEL.get(series, series)} ({what})"

    rows = [
        [
            origin,
            row_name(series, what),
            *(fmt(rows_of[(origin, series, what)].get(x)) for x in rtts),
        ]
        for origin, series, what in sorted(rows_of, key=place)
    ]
    notes = [f"Not measured: {skip}." for skip in skips]
    for key in ("rtt_note", "concurrency", "mean_track_mib"):
        if sec.get(key) is not None:
            notes.append(f"{key.replace('_', ' ')}: {sec[key]}.")
    return Plot("scan-rtt", title, "remote-scan", header, rows, notes)


def _by_size(sec: dict[str, Any], system: str) -> dict[int, dict[str, Any]]:
    """A system's entries of the mount section by catalog size; RSS figures one level down
    (``after_walk_and_search``: RSS after a walk + stat of the whole tree and searches) are
    lifted beside the entry's own."""
    d = sec.get(system)
    if not isinstance(d, dict):
        return {}
    sizes: dict[int, dict[str, Any]] = {}
    for k, v in d.items():
        if not (k.isdigit() and isinstance(v, dict)):
            continue
        lifted = {
            key: value
            for sub in v.values()
            if isinstance(sub, dict)
            for key, value in sub.items()
            if key.startswith("rss_") and key not in v
        }
        sizes[int(k)] = {**v, **lifted}
    return sizes


def _peer_lines(ax: Axes, sec: dict[str, Any], key: str) -> dict[str, float]:
    """Peers mount the bench library whatever the catalog size: a dashed line each."""
    lines: dict[str, float] = {}
    for peer, d in (get(sec, "peers") or {}).items():
        v = num(get(d, key))
        if v is None or peer not in LABEL:
            continue
        lines[peer] = v
        ax.axhline(v, color=COLOR[peer], linestyle="--", linewidth=1,
                   label=f"{LABEL[peer]} ({fmt(v)}, bench library)")  # fmt: skip
    return lines


def _size_axis(ax: Axes, sizes: list[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{x:,}" for x in sizes])
    ax.minorticks_off()
    ax.set_xlim(min(sizes) / 2, max(sizes) * 2)
    ax.set_xlabel("tracks in the catalog")


#: What any CPython + pyfuse3 daemon pays before its root answers (mount.bounds).
BOUND_LABEL = {
    "floor_listable_s_median": "pyfuse3 floor on an empty folder, to a listable root",
    "import_trio_pyfuse3_s": "python -c 'import trio, pyfuse3'",
}


def plot_mount(run: Run, out: Path) -> Plot | str:
    sec, why = run.section("mount")
    if sec is None:
        return why
    mine, before = _by_size(sec, "musicfs"), _by_size(sec, "before")
    if not mine:
        return "the `mount` section has no MusicFS figure"
    sizes = sorted(mine)
    cols = [
        ("MusicFS, to a listable root (median)", mine, "listable_s_median", "musicfs", "-"),
        ("MusicFS, to a listable root, caches dropped", mine, "listable_s_cold", "musicfs", ":"),
        ("MusicFS, `musicfs mount` returns", mine, "command_s_median", "musicfs", "-."),
        ("MusicFS before, to a listable root", before, "listable_s_median", "before", "-"),
    ]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    used = []
    for label, data, key, system, style in cols:
        xs = [x for x in sizes if num(get(data.get(x), key)) is not None]
        if not xs:
            continue
        used.append((label, data, key))
        ys = [float(data[x][key]) for x in xs]
        ax.plot(xs, ys, marker="o", linestyle=style, color=COLOR[system], label=label)
    if not used:
        raise NoFigure("the `mount` section has no MusicFS mount time")
    peers = _peer_lines(ax, sec, "listable_s_median")
    bounds = [
        (BOUND_LABEL[k], v) for k in BOUND_LABEL if (v := num(get(sec, "bounds", k))) is not None
    ]
    for (label, v), style in zip(bounds, (":", "-."), strict=False):
        ax.axhline(v, color="black", linestyle=style, linewidth=1, label=f"{label} ({fmt(v)})")
    _size_axis(ax, sizes)
    ax.set_ylim(bottom=0)
    _style(ax, "s", "lower")
    _legend_right(ax)
    title = "Mount time against catalog size"
    _save(fig, run, title, out / "mount.png")
    header = ["tracks", *(f"{label} (s)" for label, _, _ in used)]
    rows = [[f"{x:,}", *(fmt(num(get(d.get(x), k))) for _, d, k in used)] for x in sizes]
    notes = [f"{LABEL[p]}: {fmt(v)} s to a listable root of the bench library (any size)."
             for p, v in peers.items()]  # fmt: skip
    notes += [f"Bound, {label}: {fmt(v)} s." for label, v in bounds]
    return Plot("mount", title, "mount", header, rows, notes)


def _rss_keys(data: dict[int, dict[str, Any]]) -> list[str]:
    """Every ``rss_…_mib`` figure per size (idle, after a listing, after a walk, peak...),
    not the parts of one (anon, file) nor the idle high-water mark."""
    keys: list[str] = []
    for entry in data.values():
        for k, v in entry.items():
            wanted = re.fullmatch(r"rss_\w+_mib", k) and not re.search(r"hwm|anon|file", k)
            if wanted and num(v) is not None and k not in keys:
                keys.append(k)
    return keys


def _rss_label(key: str) -> str:
    return key.removeprefix("rss_").removesuffix("_mib").replace("_", " ")


def plot_rss(run: Run, out: Path) -> Plot | str:
    sec, why = run.section("mount")
    if sec is None:
        return why
    mine, before = _by_size(sec, "musicfs"), _by_size(sec, "before")
    keys = _rss_keys(mine)
    if not keys:
        return "the `mount` section has no daemon RSS figure"
    sizes = sorted(mine)
    cols = [(f"MusicFS, {_rss_label(k)}", mine, k, "musicfs") for k in keys]
    cols += [(f"MusicFS before, {_rss_label(k)}", before, k, "before") for k in _rss_keys(before)]
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v", "P"]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    used = []
    for i, (label, data, key, system) in enumerate(cols):
        xs = [x for x in sizes if num(get(data.get(x), key)) is not None]
        if not xs:
            continue
        used.append((label, data, key))
        ax.plot(xs, [float(data[x][key]) for x in xs], marker=markers[i % len(markers)],
                color=COLOR[system], linestyle=styles[i % len(styles)], label=label)  # fmt: skip
    peers = _peer_lines(ax, sec, "rss_idle_mib")
    _size_axis(ax, sizes)
    ax.set_ylim(bottom=0)
    _style(ax, "MiB", "lower")
    _legend_right(ax)
    title = "Daemon memory (RSS) against catalog size"
    _save(fig, run, title, out / "rss.png")
    header = ["tracks", *(f"{label} (MiB)" for label, _, _ in used)]
    rows = [[f"{x:,}", *(fmt(num(get(d.get(x), k))) for _, d, k in used)] for x in sizes]
    notes = [f"{LABEL[p]}: {fmt(v)} MiB idle on the bench library (any size)."
             for p, v in peers.items()]  # fmt: skip
    return Plot("rss", title, "mount", header, rows, notes)


PLOTS: list[tuple[str, Callable[[Run, Path], Plot | str]]] = [
    ("Metadata: stat", plot_stat),
    ("Metadata: directory listings", plot_readdir),
    ("Metadata: walk", plot_walk),
    ("Reads", plot_read),
    ("Scan rate against catalog size", plot_scan_size),
    ("Scan rate against round-trip time", plot_scan_rtt),
    ("Mount time against catalog size", plot_mount),
    ("Memory against catalog size", plot_rss),
]


# --------------------------------------------------------------------------- the page


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]


def render(run: Run, out: Path) -> str:
    """Draw every plot into out/performance/ and return the page's Markdown."""
    png_dir = out / PNG_DIR
    png_dir.mkdir(parents=True, exist_ok=True)
    for stale in png_dir.glob("*.png"):  # a plot this run skips must not show an old one
        stale.unlink()
    meta = run.meta
    m = get(meta, "machine") or {}
    quick = bool(get(meta, "settings", "quick"))
    lines = [
        "# MusicFS performance",
        "",
        "<!-- Generated by benchmarks/bench_plots.py from a bench.py run: do not edit. -->",
        "",
        f"Figures of one run of `nox -s bench` (benchmarks/bench.py), drawn from its JSON "
        f"(`{run.source}`), which stays the source of truth; benchmarks/README.md says how "
        "each figure is measured. MusicFS is shown against direct disk, the pyfuse3 floor "
        "(the least any Python filesystem on pyfuse3 + trio costs here), mergerfs and rclone, "
        "all measured in the same run on the same files.",
        "",
        f"* Machine: {run.machine()}, {fmt(num(m.get('mem_total_mib')))} MiB RAM "
        f"(host `{m.get('host', '?')}`); Python {m.get('python', '?')}, "
        f"pyfuse3 {m.get('pyfuse3', '?')}, {m.get('mergerfs') or 'mergerfs not installed'}, "
        f"{m.get('rclone') or 'rclone not installed'}",
        f"* Date: {meta.get('started', 'not recorded')}; MusicFS commit "
        f"`{m.get('git_commit', '?')}`",
        f"* Command: {run.command()}",
    ]
    if quick:
        lines.append("* **A `--quick` run: small sizes, one round; a smoke test, not figures.**")
    if meta.get("drop_caches_ok") is False:
        lines.append('* **Caches could not be dropped: the "cold" figures are warm.**')
    busy = num(meta.get("cpu_busy_before"))
    if busy is not None and busy > 0.15:
        lines.append(f"* The CPU was {busy:.0%} busy before the run: figures are noisy.")
    for title, draw in PLOTS:
        lines += ["", f"## {title}", ""]
        try:
            result = draw(run, png_dir)
        except NoFigure as exc:
            plt.close("all")
            result = str(exc)
        except Exception as exc:  # a section of a shape this plotter does not know yet
            plt.close("all")
            result = f"drawing it failed on this run's data ({type(exc).__name__}: {exc})"
        if isinstance(result, str):
            lines.append(f"Not plotted: {result}.")
            continue
        lines += [f"![{result.title}]({PNG_DIR}/{result.name}.png)", ""]
        lines += _md_table(result.header, result.rows)
        lines.append("")
        for note in result.notes:  # each its own paragraph
            lines += [note, ""]
        lines.append(f"Section `{result.section}` of `{run.source}`, made by {run.command()}.")
    return "\n".join(lines) + "\n"


def write(json_path: Path, out: Path = DOCS) -> Path:
    """Write out/performance.md and out/performance/*.png from a run's JSON; return the page."""
    report = json.loads(json_path.read_text())
    if not isinstance(report, dict) or not isinstance(report.get("results"), dict):
        raise ValueError("not the JSON of a bench.py run (no `results`)")
    full = json_path.resolve()
    try:
        source = str(full.relative_to(HERE.parent))
    except ValueError:  # another checkout's results: name it as it is named there
        tail = full.parts[-3:]
        source = "/".join(tail) if tail[:2] == ("benchmarks", "results") else full.name
    page = out / "performance.md"
    out.mkdir(parents=True, exist_ok=True)
    page.write_text(render(Run(report, source), out))
    return page


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    p.add_argument("json", type=Path, help="a bench.py run (benchmarks/results/latest.json)")
    p.add_argument(
        "--out", type=Path, default=DOCS, help="folder for performance.md and performance/*.png"
    )
    a = p.parse_args(argv)
    try:
        page = write(a.json, a.out)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        print(f"bench_plots: cannot read {a.json}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {page} and {page.parent / PNG_DIR}/*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
