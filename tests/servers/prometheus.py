"""A real Prometheus server (apt ``prometheus``) on 127.0.0.1 that scrapes given targets.

`prometheus_server` writes a config that scrapes each ``HOST:PORT`` target's
``/metrics`` every second under job ``musicfs``, runs ``prometheus`` on a free
port with its TSDB in a temporary directory, waits until ``/-/ready`` answers,
and kills it on exit, even on failure. `PrometheusServer.query` and
`PrometheusServer.label_values` ask its HTTP API what Grafana would ask.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.servers import free_port

_START_TIMEOUT = 60.0


class PrometheusError(Exception):
    """The API answered with an error (a query that does not parse or evaluate)."""


class PrometheusServer:
    """Where one running Prometheus listens, and its HTTP API."""

    def __init__(self, port: int, log_file: Path) -> None:
        self.port = port
        self.log_file = log_file

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400/422: the error is in the JSON body
            body = json.loads(exc.read())
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (PrometheusError if *expr* is refused)."""
        data = self._get("/api/v1/query", [("query", expr)])
        if data["resultType"] != "vector":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        """Values of *label* on the series *match* selects (Grafana's ``label_values``)."""
        values: list[str] = self._get(f"/api/v1/label/{label}/values", [("match[]", match)])
        return values


@contextlib.contextmanager
def prometheus_server(targets: Sequence[str]) -> Iterator[PrometheusServer]:
    """Prometheus scraping *targets* (``HOST:PORT``) every second, until the block ends."""
    executable = shutil.which("prometheus")
    if executable is None:
        raise AssertionError(
            "prometheus is missing: apt-get install --no-install-recommends prometheus"
        )
    with tempfile.TemporaryDirectory(prefix="musicfs-prometheus-") as tmp:
        directory = Path(tmp)
        config = directory / "prometheus.yml"
        config.write_text(
            json.dumps(  # YAML is a superset of JSON
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {"job_name": "musicfs", "static_configs": [{"targets": list(targets)}]}
                    ],
                }
            )
        )
        server = PrometheusServer(free_port(), directory / "prometheus.log")
        with open(server.log_file, "wb") as log:
            process = subprocess.Popen(
                [
                    executable,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{server.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )
        try:
            deadline = time.monotonic() + _START_TIMEOUT
            while True:
                if process.poll() is not None:
                    raise AssertionError(
                        f"prometheus exited {process.returncode}:\n{server.log_file.read_text()}"
                    )
                try:
                    with urllib.request.urlopen(f"{server.url}/-/ready", timeout=5) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError):
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"prometheus did not get ready in {_START_TIMEOUT:.0f} s:\n"
                        f"{server.log_file.read_text()}"
                    )
                time.sleep(0.1)
            yield server
        finally:
            process.kill()
            process.wait(timeout=30)
