"""docs/performance.md as `nox -s bench` writes it: benchmarks/bench_plots.py run on the JSON
of a real bench.py run (bench-run.json: a full run of 2026-12-06, its per-round lists
trimmed). What a reader of the page relies on: every plot is a PNG that opens, the tables
carry the run's own numbers, every plot states the machine and the date, and a section the
run lacks is said to be missing rather than drawn from an older run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

ROOT = Path(__file__).resolve().parents[2]
PLOTTER = ROOT / "benchmarks" / "bench_plots.py"
FIXTURE = Path(__file__).parent / "bench-run.json"
RUN: dict[str, Any] = json.loads(FIXTURE.read_text())
SYSTEM_COLUMNS = {
    "MusicFS": "musicfs",
    "MusicFS before": "before",
    "pyfuse3 floor": "floor",
    "direct disk": "direct",
    "mergerfs": "mergerfs",
    "rclone": "rclone",
}


def plot(run: dict[str, Any], tmp: Path) -> tuple[str, Path]:
    """The page written for *run* (as the command line writes it) and its folder."""
    src = tmp / "run.json"
    src.write_text(json.dumps(run))
    out = tmp / "docs"
    proc = subprocess.run(
        [sys.executable, str(PLOTTER), str(src), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return (out / "performance.md").read_text(), out


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The page of the whole run (drawn once: matplotlib takes seconds)."""
    return plot(RUN, tmp_path_factory.mktemp("full"))


def sections(page: str) -> dict[str, str]:
    """The page's `## ` sections by heading."""
    parts = re.split(r"^## (.+)$", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def table(text: str) -> list[dict[str, str]]:
    """The first Markdown table of *text*, one dict per row, keyed by the header cells."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len(lines) >= 3, text
    cells = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
    return [dict(zip(cells[0], row, strict=True)) for row in cells[2:]]


def close(cell: str, value: float) -> bool:
    """The page rounds to 3 significant digits (at most to units)."""
    shown = float(cell.replace(",", ""))
    return abs(shown - value) <= max(0.5, abs(value) * 0.006)


def check_systems(text: str, rows: dict[str, Any], where: str) -> int:
    """Every system cell of the table in *text* against RUN["results"][where], and the
    MusicFS ÷ floor column; *rows* maps a row's metric to the keys of its figure under each
    system. Returns the cells checked."""

    def figure(system: str, keys: tuple[str, ...]) -> float:
        value: Any = RUN["results"][where][system]
        for k in keys:
            value = value[k]
        return float(value)

    checked = 0
    by_metric = {r["metric"]: r for r in table(text)}
    assert set(rows) <= set(by_metric), by_metric.keys()
    for metric, keys in rows.items():
        for column, cell in by_metric[metric].items():
            if column == "metric":
                continue
            if column == "MusicFS ÷ floor":  # the ratio the targets are set in
                value = figure("musicfs", keys) / figure("floor", keys)
            else:
                value = figure(SYSTEM_COLUMNS[column], keys)
            assert close(cell, value), (metric, column, cell, value)
            checked += 1
    return checked


def test_page_has_a_valid_png_per_plot_each_stating_machine_and_date(
    full: tuple[str, Path],
) -> None:
    page, out = full
    links = re.findall(r"!\[[^\]]*\]\((performance/[\w-]+\.png)\)", page)
    assert {Path(link).stem for link in links} == {
        "stat", "readdir", "walk", "read", "scan-size", "mount", "rss",
    }  # fmt: skip
    assert sorted(p.name for p in (out / "performance").iterdir()) == sorted(
        Path(link).name for link in links
    )
    machine = RUN["meta"]["machine"]
    for link in links:
        with Image.open(out / link) as img:
            img.verify()  # a whole, readable PNG
        with Image.open(out / link) as img:
            assert isinstance(img, PngImagePlugin.PngImageFile)
            assert img.width >= 600
            assert img.height >= 400
            caption = img.text["Description"]  # the caption drawn under the title
        assert f"{machine['cpus']} cores" in caption, caption
        assert f"Linux {machine['kernel']}" in caption, caption
        assert RUN["meta"]["started"][:10] in caption, caption
    # The page states the machine, the date and the command of the run too.
    head = page.split("\n## ", 1)[0]
    assert f"Linux {machine['kernel']}" in head
    assert RUN["meta"]["started"] in head
    assert "`python benchmarks/bench.py --before /work/before/.venv/bin/musicfs`" in head
    # A run without its section is said to be missing; nothing is drawn for it.
    assert "Not plotted: the run has no `remote-scan` section." in page


def test_page_tables_carry_the_runs_numbers(full: tuple[str, Path]) -> None:
    page, _ = full
    sec = sections(page)
    checked = check_systems(
        sec["Metadata: stat"],
        {
            "stat first p50 (µs)": ("first", "p50_us"),
            "stat first p99 (µs)": ("first", "p99_us"),
            "stat again p50 (µs)": ("again", "p50_us"),
        },
        "stat",
    )
    checked += check_systems(
        sec["Metadata: directory listings"],
        {
            "listdir 100,000 entries, first (ms)": ("big", "first_ms"),
            "listdir 100,000 entries, median (ms)": ("big", "median_ms"),
            "listdir 1,000 entries, median (ms)": ("small", "median_ms"),
        },
        "readdir",
    )
    checked += check_systems(
        sec["Metadata: walk"],
        {"walk first, fresh mount (s)": ("first_s",), "walk again (s)": ("again_s",)},
        "walk",
    )
    checked += check_systems(
        sec["Reads"],
        {
            "sequential read cold (GB/s)": ("cold_gb_s",),
            "sequential read 2nd pass (GB/s)": ("warm_gb_s",),
            "random 4 KiB warm p50 (µs)": ("random_4k", "warm", "p50_us"),
        },
        "read",
    )
    assert checked == (3 + 3 + 2 + 3) * 7  # every row: the run's six systems and the ratio

    mount = RUN["results"]["mount"]
    rows = {r["tracks"]: r for r in table(sec["Mount time against catalog size"])}
    assert set(rows) == {"10,000", "100,000", "1,000,000"}
    for n in ("10000", "100000", "1000000"):
        row = rows[f"{int(n):,}"]
        mine = mount["musicfs"][n]
        assert close(row["MusicFS, to a listable root (median) (s)"], mine["listable_s_median"])
        assert close(
            row["MusicFS, to a listable root, caches dropped (s)"], mine["listable_s_cold"]
        )
        assert close(row["MusicFS before, to a listable root (s)"],
                     mount["before"][n]["listable_s_median"])  # fmt: skip
    rclone = mount["peers"]["rclone"]["listable_s_median"]
    assert f"rclone: {rclone} s to a listable root" in sec["Mount time against catalog size"]

    rows = {r["tracks"]: r for r in table(sec["Memory against catalog size"])}
    for n in ("10000", "100000", "1000000"):
        assert close(
            rows[f"{int(n):,}"]["MusicFS, idle (MiB)"], mount["musicfs"][n]["rss_idle_mib"]
        )

    scan = RUN["results"]["scan"]
    (row,) = table(sec["Scan rate against catalog size"])
    assert row["tracks"] == f"{scan['files']:,}"
    assert close(row["daemon, caches dropped (tracks/s)"], scan["daemon"]["tracks_per_s"])
    assert close(row["Scanner API, warm cache (tracks/s)"], scan["api_warm"]["tracks_per_s"])


def test_a_missing_or_failed_section_is_said_so_and_its_old_plot_removed(
    tmp_path: Path,
) -> None:
    _, out = plot(RUN, tmp_path)
    assert (out / "performance" / "read.png").exists()
    results = {k: v for k, v in RUN["results"].items() if k not in ("read", "mount")}
    results["scan"] = {"error": "CalledProcessError: ffmpeg failed"}
    results["walk"] = {"files": 20000, "section_seconds": 0.1}  # there, but no figure in it
    page, out = plot({**RUN, "results": results}, tmp_path)
    sec = sections(page)
    assert sec["Reads"].strip() == "Not plotted: the run has no `read` section."
    assert "Not plotted: the run has no `mount` section." in sec["Mount time against catalog size"]
    assert "Not plotted: the run has no `mount` section." in sec["Memory against catalog size"]
    assert (
        "failed in this run: CalledProcessError: ffmpeg failed"
        in sec["Scan rate against catalog size"]
    )
    assert sec["Metadata: walk"].strip() == (
        "Not plotted: the run's section for this plot holds none of the figures it draws."
    )
    # The plots of the earlier page are gone, not left to look current.
    assert sorted(p.stem for p in (out / "performance").iterdir()) == ["readdir", "stat"]


#: The remote-scan section as benchmarks/bench_scan_remote.py writes it (figures of issue 17).
REMOTE_SCAN = {
    "tracks": 500,
    "concurrency": 32,
    "rtts_ms": [0, 20],
    "s3": {
        "0": {
            "musicfs": {"tracks_per_s": 97.0, "requests_per_track": 1.0, "kib_per_track": 19.2},
            "ceiling": {"ranged_gets_per_s": 812.0, "concurrency": 32},
            "ratio": 0.119,
        },
        "20": {
            "musicfs": {"tracks_per_s": 40.0, "requests_per_track": 1.0, "kib_per_track": 19.2},
            "ceiling": {"ranged_gets_per_s": 343.0, "concurrency": 32},
            "ratio": 0.117,
        },
    },
    "sftp": {"skipped": "OpenSSH sshd is not installed"},
}


def test_remote_scan_rate_is_plotted_against_rtt(tmp_path: Path) -> None:
    run = {**RUN, "results": {**RUN["results"], "remote-scan": REMOTE_SCAN}}
    page, out = plot(run, tmp_path)
    text = sections(page)["Scan rate against round-trip time"]
    assert "](performance/scan-rtt.png)" in text
    with Image.open(out / "performance" / "scan-rtt.png") as img:
        img.verify()
    rows = [list(r.values()) for r in table(text)]
    assert rows == [
        ["s3", "MusicFS scan (tracks/s)", "97.0", "40.0"],
        ["s3", "server's ceiling, bare client (ranged gets/s)", "812", "343"],
        ["s3", "MusicFS scan (requests per track)", "1.00", "1.00"],
        ["s3", "MusicFS scan (KiB per track)", "19.2", "19.2"],
        ["s3", "MusicFS ÷ ceiling", "0.119", "0.117"],
    ]
    assert list(table(text)[0]) == ["origin", "figure", "0 ms", "20 ms"]
    assert "Not measured: sftp: OpenSSH sshd is not installed." in text


def test_remote_scan_rtt_may_be_a_figure_beside_the_rates(tmp_path: Path) -> None:
    """Another shape of the section: a list of runs, each with its ``rtt_ms``."""
    section = {
        "s3": [
            {"rtt_ms": 0, "tracks_per_s": 97.0, "gets_per_s": 812.0},
            {"rtt_ms": 20, "tracks_per_s": 40.0, "gets_per_s": 343.0},
        ]
    }
    page, _ = plot({**RUN, "results": {**RUN["results"], "remote-scan": section}}, tmp_path)
    rows = [list(r.values()) for r in table(sections(page)["Scan rate against round-trip time"])]
    assert rows == [
        ["s3", "MusicFS scan (tracks/s)", "97.0", "40.0"],
        ["s3", "MusicFS scan (gets/s)", "812", "343"],
    ]


def test_memory_after_a_walk_and_the_mount_bound_are_shown(tmp_path: Path) -> None:
    """The mount section with RSS after a walk + searches per size and the CPython +
    pyfuse3 bound (the shape bench.py's mount section writes for issue 17)."""
    mount = json.loads(json.dumps(RUN["results"]["mount"]))
    for i, n in enumerate(("10000", "100000", "1000000")):
        mount["musicfs"][n]["after_walk_and_search"] = {
            "walk_s": 1.0 + i,
            "rss_after_walk_mib": 61.0 + i,
            "rss_after_search_mib": 70.5 + i,
            "rss_peak_mib": 80.0 + i,
            "rss_anon_mib": 30.0,
            "rss_file_mib": 20.0,
        }
    mount["bounds"] = {"import_trio_pyfuse3_s": 0.121, "floor_listable_s_median": 0.183}
    page, out = plot({**RUN, "results": {**RUN["results"], "mount": mount}}, tmp_path)
    sec = sections(page)
    rows = {r["tracks"]: r for r in table(sec["Memory against catalog size"])}
    assert rows["1,000,000"]["MusicFS, after walk (MiB)"] == "63.0"
    assert rows["1,000,000"]["MusicFS, after search (MiB)"] == "72.5"
    assert rows["10,000"]["MusicFS, peak (MiB)"] == "80.0"
    assert not any("anon" in column for column in rows["10,000"])
    text = sec["Mount time against catalog size"]
    assert "Bound, pyfuse3 floor on an empty folder, to a listable root: 0.183 s." in text
    assert "Bound, python -c 'import trio, pyfuse3': 0.121 s." in text
    with Image.open(out / "performance" / "rss.png") as img:
        img.verify()
