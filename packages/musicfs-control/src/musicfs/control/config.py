"""The config file's sections that only the control side reads: ``[metrics]``,
``[[webhooks]]`` and ``[[notify]]``.

Core parses the sections it uses itself; these are handed to
`musicfs.core.config.settings.load_config` (``sections=SECTIONS``) by whoever
loads the config for a daemon (the CLI), and read back typed with
``config.section(METRICS)``, ``config.tables(WEBHOOKS)`` and ``config.tables(NOTIFY)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from musicfs.control.notify.config import NotifyConfig, file_notify
from musicfs.control.webhookconfig import WebhookConfig, file_webhooks
from musicfs.core.config.sections import Section, TableList
from musicfs.core.values import Setting, parse_str

__all__ = ["METRICS", "NOTIFY", "SECTIONS", "WEBHOOKS", "MetricsSettings"]


@dataclass(frozen=True)
class MetricsSettings:
    """``[metrics]``: the Prometheus endpoint."""

    listen: str = ""  # "host:port"; "" = none


def parse_listen(value: Any) -> str:
    """``host:port`` (``[::1]:port`` for IPv6) to serve HTTP on; "" for nowhere."""
    text = parse_str(value).strip()
    if not text:
        return ""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9464), got {value!r}")
    if not host.strip("[]"):
        raise ValueError(f"name the address to listen on (e.g. 127.0.0.1:{port}), got {value!r}")
    return text


METRICS = Section(
    "metrics",
    MetricsSettings,
    {
        "listen": Setting(
            "listen", parse_listen, "HOST:PORT of the Prometheus metrics endpoint, empty = off"
        )
    },
)
WEBHOOKS: TableList[WebhookConfig] = TableList("webhooks", file_webhooks)
NOTIFY: TableList[NotifyConfig] = TableList("notify", file_notify)
#: What `load_config(sections=...)` needs for a daemon's config.
SECTIONS = (METRICS, WEBHOOKS, NOTIFY)
