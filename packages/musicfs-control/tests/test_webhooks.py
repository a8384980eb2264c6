"""WebhookSender in-process: an EventBus, a real HTTP server on 127.0.0.1, the counters.

The end-to-end tests (tests/e2e/test_webhooks.py) drive webhooks through a
mount; these check what is awkward to reach from there: drops on a full
queue, Retry-After, which statuses are retried, a bounded stop while the
receiver hangs, and where the secret comes from.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from musicfs.control.webhookconfig import WebhookConfig
from musicfs.control.webhooks import Webhooks, WebhookSender, shown_url
from musicfs.core.events import EventBus, EventType
from musicfs.core.secrets.credentials import Credentials

#: (status, extra headers) for the n-th request (1-based) the server gets.
Answer = Callable[[int], tuple[int, dict[str, str]]]


class Server:
    """A threaded HTTP server that records each POST (time, headers, body)."""

    def __init__(self, answer: Answer) -> None:
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self.changed = threading.Condition()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with server.changed:
                    server.requests.append((time.monotonic(), dict(self.headers), body))
                    n = len(server.requests)
                status, headers = answer(n)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with server.changed:
                    server.changed.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def wait_requests(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"got {len(self.requests)} of {count} requests in {timeout} s"
                self.changed.wait(left)


@contextlib.contextmanager
def serving(answer: Answer) -> Iterator[Server]:
    server = Server(answer)
    thread = threading.Thread(target=server.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def wait_for(probe: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def hook(url: str, **kwargs: Any) -> WebhookConfig:
    return WebhookConfig("hook", url, **kwargs)


def test_the_body_is_signed_json_with_a_timestamp() -> None:
    bus = EventBus()
    sender = WebhookSender(hook("http://127.0.0.1:1/"), bus, secret="s3cret-key")
    event = bus.publish(EventType.FILE_OPENED, origin="nas", path="jp/光.opus", source="origin")
    body = sender.body(event, "d-1", 2)
    assert body.isascii()  # names are escaped, so no encoding can mangle them
    payload = json.loads(body)
    assert payload["event"] == "file.opened"
    assert payload["path"] == "jp/光.opus"
    assert payload["timestamp"] == event.time
    assert payload["time"].endswith("Z")
    assert (payload["delivery"], payload["attempt"], payload["webhook"]) == ("d-1", 2, "hook")
    assert payload["details"] == {"source": "origin"}
    digest = hmac.new(b"s3cret-key", body, hashlib.sha256).hexdigest()
    assert sender.signature(body) == f"sha256={digest}"
    assert WebhookSender(hook("http://h/"), bus).signature(body) is None
    sender.stop(0)


def test_a_full_queue_drops_and_counts_and_publishing_never_waits() -> None:
    bus = EventBus()
    with serving(lambda _n: (204, {})) as server:
        sender = WebhookSender(hook(server.url), bus, queue_size=2)  # not started yet
        began = time.monotonic()
        for _ in range(5):
            bus.publish(EventType.SYNC_STARTED, origin="a")
        assert time.monotonic() - began < 0.1
        assert sender.stats()["dropped"] == 3
        sender.start()
        server.wait_requests(2)
        wait_for(lambda: sender.stats()["delivered"] == 2)
        assert sender.stop(5)
    assert sender.stats() == {
        "id": "hook", "url": server.url.removesuffix("hook") + "…", "signed": False,
        "last_error": "", "delivered": 2, "failed": 0, "retried": 0, "dropped": 3,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("status", "retried"),
    [(500, True), (502, True), (503, True), (429, True), (400, False), (404, False),
     (301, False)],
)  # fmt: skip
def test_which_answers_are_retried(status: int, retried: bool) -> None:
    bus = EventBus()
    with serving(lambda _n: (status, {})) as server:
        sender = WebhookSender(hook(server.url, retries=2, backoff=0.01), bus)
        sender.start()
        bus.publish(EventType.FILE_OPENED, path="a")
        wait_for(lambda: sender.stats()["failed"] == 1)
        sender.stop(5)
        stats = sender.stats()
    assert len(server.requests) == (3 if retried else 1)
    assert stats["retried"] == (2 if retried else 0)
    assert stats["last_error"] == f"the receiver answered HTTP {status}"
    attempts = [json.loads(body)["attempt"] for _t, _h, body in server.requests]
    assert attempts == list(range(1, len(server.requests) + 1))


def test_retry_after_is_honoured() -> None:
    bus = EventBus()
    answers = {1: (429, {"Retry-After": "1"})}
    with serving(lambda n: answers.get(n, (200, {}))) as server:
        sender = WebhookSender(hook(server.url, backoff=0.01), bus)
        sender.start()
        bus.publish(EventType.FILE_OPENED, path="a")
        server.wait_requests(2)
        wait_for(lambda: sender.stats()["delivered"] == 1)
        sender.stop(5)
    (first, _, _), (second, _, _) = server.requests
    assert second - first >= 0.95


def test_stop_is_bounded_while_the_receiver_hangs() -> None:
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        bus = EventBus()
        sender = WebhookSender(hook(url, timeout=30), bus)
        sender.start()
        bus.publish(EventType.FILE_OPENED, path="a")
        listener.settimeout(5)
        connection, _ = listener.accept()  # the request came, and is never answered
        with connection:
            began = time.monotonic()
            assert not sender.stop(0.3)  # still waiting for an answer: not joined
            assert time.monotonic() - began < 1.0
            assert bus.subscribers == 0  # no more events are taken


def test_an_unreachable_receiver_is_retried_and_given_up(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    bus = EventBus()
    config = WebhookConfig("unreachable", url, retries=2, backoff=0.01)
    sender = WebhookSender(config, bus, secret="do-not-log-me")
    caplog.set_level(logging.DEBUG, logger="musicfs.control.webhooks")
    sender.start()
    bus.publish(EventType.FILE_OPENED, path="a")
    bus.publish(EventType.FILE_OPENED, path="b")
    wait_for(lambda: sender.stats()["failed"] == 2)
    sender.stop(5)
    stats = sender.stats()
    assert (stats["delivered"], stats["failed"], stats["retried"]) == (0, 2, 4)
    assert "ConnectionRefusedError" in str(stats["last_error"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and r.getMessage().startswith("webhook unreachable ")]  # fmt: skip
    assert len(warnings) == 1  # once, not per event
    assert "gave up on a file.opened event after 3 attempt(s)" in warnings[0].getMessage()
    assert "do-not-log-me" not in caplog.text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/services/T0/B0/XXXX", "https://hooks.example.com/…"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/"),
        ("http://h:1?token=abc", "http://h:1/…"),
        ("http://[::1]:9000/x", "http://[::1]:9000/…"),
    ],
)
def test_logs_and_counters_show_no_path_or_query(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    sender = WebhookSender(hook(url), EventBus())
    assert sender.stats()["url"] == shown
    sender.stop(0)


def test_secrets_come_from_the_credentials_store(tmp_path: Path) -> None:
    bus = EventBus()
    hooks = [hook("http://127.0.0.1:1/"), WebhookConfig("other", "http://127.0.0.1:1/")]
    webhooks = Webhooks(hooks, bus)
    credentials = Credentials(environ={"MUSICFS_SECRET_HOOK_SECRET": "from-env"},
                              use_keyring=False)  # fmt: skip
    webhooks.start(credentials)
    try:
        stats = webhooks.stats()
        assert stats["hook"]["signed"] is True
        assert stats["other"]["signed"] is False
    finally:
        webhooks.stop(1)
    assert bus.subscribers == 0


def test_a_bad_credentials_file_turns_webhooks_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "musicfs" / "credentials.toml"
    path.parent.mkdir()
    path.write_text('[hook]\nsecret = "x-x-x-x"\n')
    path.chmod(0o644)  # readable by others: refused
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    bus = EventBus()
    webhooks = Webhooks([hook("http://127.0.0.1:1/")], bus)
    webhooks.start()
    assert "webhooks are off" in caplog.text
    assert "chmod 600" in caplog.text
    assert bus.subscribers == 0
    webhooks.stop(0)
