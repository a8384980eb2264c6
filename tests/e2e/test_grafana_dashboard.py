"""The Grafana dashboard shipped in packaging/grafana/ (issue 15, point 6).

Grafana itself is not installable here (not in Debian, no downloads), so what
Grafana needs of the file is checked piece by piece:

- its shape: the keys Grafana's dashboard model reads (uid, title,
  schemaVersion, templating with a ``datasource`` variable of type
  datasource/prometheus and the ``instance`` variable), each panel with a
  unique id, a title, a known type, a place within the 24-column grid, and
  queries on ``${datasource}`` restricted to ``$instance``;
- every PromQL expression parses: each one, with Grafana's variables filled in,
  becomes a recording rule in a rules file for ``promtool check rules``;
- against a real daemon: every metric name an expression uses is a series the
  daemon's ``/metrics`` really serves (webhooks configured, so their series
  are there too), and a real Prometheus scraping that daemon evaluates every
  expression to at least one series, and finds the mount for the ``instance``
  variable's ``label_values`` query.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import (
    describe,
    mounted,
    sha256_of,
    toml_value,
    wait_until,
    write_config,
)
from tests.e2e.library import Library, make_origin, render_path
from tests.e2e.test_metrics import TRACKS, scrape, wait_for_endpoint
from tests.servers import free_port
from tests.servers.prometheus import PrometheusError, PrometheusServer, prometheus_server
from tests.servers.webhook import webhook_receiver

DASHBOARD = Path(__file__).resolve().parents[2] / "packaging" / "grafana" / "musicfs-dashboard.json"

PANEL_TYPES = {"row", "stat", "gauge", "timeseries"}

#: Grafana's own variables the expressions may use, and a value Prometheus takes
#: for each (Grafana puts at least four scrape intervals in $__rate_interval).
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}

#: PromQL words that look like metric names but are not.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless", "inf", "nan"}  # fmt: skip


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def queried_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The panels that query (rows only group them), nested rows' panels included."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title and refId, PromQL) of every query of every panel."""
    return [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in queried_panels(dashboard)
        for target in panel["targets"]
    ]


def render(expr: str, instance: str) -> str:
    """*expr* as Grafana sends it to Prometheus, for mount *instance*."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    expr = expr.replace("${instance}", instance).replace("$instance", instance)
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names *expr* selects: identifiers left once strings, label
    matchers, ranges and grouping clauses are gone, that are neither a function
    or aggregation (followed by "(") nor a PromQL keyword."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def test_metric_names_reads_promql_as_prometheus_does() -> None:
    """The name finder the checks below rely on: what is a metric and what is not."""
    expr = (
        "histogram_quantile(0.99, sum by (op, le) (rate(musicfs_fuse_latency_seconds_bucket"
        '{instance=~"$instance", op!="read"}[5m]))) / on (instance) group_left '
        "max without (tier) (musicfs_cache_limit_bytes offset 1h) > bool 0 or vector(1)"
    )
    assert metric_names(expr) == {
        "musicfs_fuse_latency_seconds_bucket",
        "musicfs_cache_limit_bytes",
    }


def test_the_dashboard_has_the_shape_grafana_reads() -> None:
    dashboard = load()
    assert dashboard["uid"] == "musicfs-overview"
    assert dashboard["title"] == "MusicFS"
    assert dashboard.get("id") is None  # Grafana assigns it on import
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36  # Grafana 9 and later
    assert "musicfs" in dashboard["tags"]

    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert instance["query"]["query"] == instance["definition"]
    assert instance["definition"] == "label_values(musicfs_build_info, instance)"

    ids = [panel["id"] for panel in dashboard["panels"]]
    ids += [p["id"] for row in dashboard["panels"] if row["type"] == "row" for p in row["panels"]]
    assert len(ids) == len(set(ids)), f"panel ids used twice: {sorted(ids)}"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    for panel in [*dashboard["panels"], *queried_panels(dashboard)]:
        where = f"panel {panel['id']} {panel.get('title')!r}"
        assert panel["title"].strip(), where
        assert panel["type"] in PANEL_TYPES, where
        grid = panel["gridPos"]
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= 24, where  # within the 24 columns
        assert grid["h"] > 0, where
        assert grid["y"] >= 0, where
    panels = list(queried_panels(dashboard))
    assert len(panels) >= 10
    for panel in panels:
        where = f"panel {panel['id']} {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel["targets"], where
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], where
            assert target["expr"].strip(), where
            # Each query shows the chosen mount only.
            assert 'instance=~"$instance"' in target["expr"], (where, target["expr"])


def test_every_expression_parses(tmp_path: Path) -> None:
    """Each query as a recording rule: ``promtool check rules`` parses every expression."""
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: apt-get install --no-install-recommends prometheus")
    found = expressions(load())
    rules = [
        {"record": f"musicfs:dashboard_query_{n}", "expr": render(expr, "127.0.0.1:9464")}
        for n, (_where, expr) in enumerate(found)
    ]
    rules_file = tmp_path / "dashboard.rules.yml"
    # YAML is a superset of JSON.
    rules_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, describe(result)
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, describe(result)


def exported_names(text: str) -> set[str]:
    """The sample names a scrape holds: what PromQL selects (``_bucket``, ``_total``…)."""
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def without_data(
    server: PrometheusServer, found: list[tuple[str, str]], instance: str
) -> list[str]:
    """The expressions that give no series yet (one Prometheus refuses fails at once)."""
    empty = []
    for where, expr in found:
        try:
            if not server.query(render(expr, instance)):
                empty.append(f"{where}: {expr}")
        except PrometheusError as exc:
            raise AssertionError(f"Prometheus refuses {where}: {expr}\n{exc}") from exc
    return empty


@pytest.mark.mount
@pytest.mark.media
def test_every_metric_is_one_the_daemon_serves_and_every_panel_has_data(
    library: Library, tmp_path: Path
) -> None:
    dashboard = load()
    found = expressions(dashboard)
    origin = tmp_path / "music"
    specs = make_origin(library, origin, TRACKS)
    port = free_port()
    instance = f"127.0.0.1:{port}"
    with webhook_receiver() as receiver:
        config = write_config(tmp_path / "config.toml", [],
                              {"metrics": {"listen": instance}})  # fmt: skip
        with config.open("a") as out:
            out.write(f'[[webhooks]]\nid = "player"\nurl = {toml_value(receiver.on("/hook"))}\n')
        with mounted([origin], tmp_path / "mnt", tmp_path / "cache",
                     "--config", str(config)) as mount:  # fmt: skip
            wait_for_endpoint(port)
            for track in TRACKS:
                sha256_of(mount.mountpoint / render_path(specs[track]))
            receiver.wait_for("/hook", lambda d: d.event == "file.opened", answered=True)

            exported = exported_names(scrape(port))
            for where, expr in found:
                names = metric_names(expr)
                assert names, f"{where} selects no metric: {expr}"
                missing = names - exported
                assert not missing, (
                    f"{where} uses {sorted(missing)}, which the daemon does not export: {expr}"
                )

            with prometheus_server([instance]) as server:
                variable = next(v for v in dashboard["templating"]["list"]
                                if v["name"] == "instance")  # fmt: skip
                match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
                assert match is not None, variable["definition"]
                wait_until(lambda: instance in server.label_values(match[2], match[1]),
                           timeout=60, what=f"Prometheus to scrape {instance}")  # fmt: skip
                # Rates need two scrapes in their window: wait for them, not a fixed time.
                empty: list[str] = []

                def all_have_data() -> bool:
                    empty[:] = without_data(server, found, instance)
                    return not empty

                try:
                    wait_until(all_have_data, timeout=90, interval=1,
                               what="every dashboard query to give a series")  # fmt: skip
                except AssertionError:
                    pytest.fail("no series in Prometheus for:\n" + "\n".join(empty))
