"""A real HTTP webhook receiver on 127.0.0.1 for the webhook tests.

`webhook_receiver` runs a threaded `http.server` on a free port. Each URL path
is one hook's endpoint; `WebhookReceiver.on` says how that path answers (a
status per request, possibly after a delay: a receiver that fails or is slow
on purpose) and which secret signs its requests. Every request is recorded as
a `Delivery` *before* it is answered, so a test sees the attempts a slow or
hanging receiver got. A request whose ``X-MusicFS-Signature`` is not the
HMAC-SHA256 of its body under the path's secret is answered 401 and recorded
with ``signature_ok = False``. On exit, every held request is let go and the
server stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: Answers one request: the status to send, given the request and how many
#: requests of the same delivery (attempts) came before it, this one included.
Behaviour = Callable[["Delivery", int], int]


@dataclass
class Delivery:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    received: float  # time.monotonic()
    signature_ok: bool | None = None  # None: the path has no secret to check with
    status: int | None = None  # what was answered (None while it is held)
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def event(self) -> str:
        return str(self.payload.get("event", ""))

    @property
    def delivery(self) -> str:
        return str(self.payload.get("delivery", ""))

    @property
    def attempt(self) -> int:
        return int(self.payload.get("attempt", 0))


def ok(_delivery: Delivery, _attempt: int) -> int:
    return 200


def expected_signature(secret: str, body: bytes) -> str:
    """What a correct ``X-MusicFS-Signature`` of *body* is."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookReceiver:
    """The server's state: how each path answers, and every request it got."""

    def __init__(self) -> None:
        self._behaviours: dict[str, tuple[Behaviour, str | None]] = {}
        self._deliveries: list[Delivery] = []
        self._changed = threading.Condition()
        self.released = threading.Event()  # set on exit: held requests are let go
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver._handle(self, self.rfile.read(length))

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str, behaviour: Behaviour = ok, secret: str | None = None) -> str:
        """Answer requests to *path* with *behaviour*, checking signatures with
        *secret* if given; returns the URL of *path*."""
        self._behaviours[path] = (behaviour, secret)
        return self.url(path)

    def hold(self, seconds: float) -> None:
        """Keep a request waiting *seconds* (less if the receiver is closing)."""
        self.released.wait(seconds)

    def deliveries(self, path: str) -> list[Delivery]:
        with self._changed:
            return [d for d in self._deliveries if d.path == path]

    def wait_for(
        self,
        path: str,
        wanted: Callable[[Delivery], bool] = lambda _d: True,
        *,
        count: int = 1,
        answered: bool = False,
        timeout: float = 30.0,
    ) -> Delivery:
        """The *count*-th request to *path* that is *wanted* (and, if *answered*,
        has been answered), waiting up to *timeout* s for it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matching = [
                    d
                    for d in self._deliveries
                    if d.path == path and wanted(d) and (d.status is not None or not answered)
                ]
                if len(matching) >= count:
                    return matching[count - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(d.event, d.attempt, d.status) for d in self._deliveries
                            if d.path == path]  # fmt: skip
                    raise AssertionError(
                        f"{path}: no {count} such request(s) within {timeout} s; got {seen}"
                    )
                self._changed.wait(left)

    def _handle(self, handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        path = handler.path
        behaviour, secret = self._behaviours.get(path, (ok, None))
        delivery = Delivery(path, dict(handler.headers.items()), body, time.monotonic())
        with contextlib.suppress(ValueError):
            delivery.payload = json.loads(body)
        if secret is not None:
            given = handler.headers.get("X-MusicFS-Signature", "")
            delivery.signature_ok = hmac.compare_digest(given, expected_signature(secret, body))
        with self._changed:
            attempt = 1 + sum(
                1 for d in self._deliveries if d.path == path and d.delivery == delivery.delivery
            )
            self._deliveries.append(delivery)
            self._changed.notify_all()
        status = 401 if delivery.signature_ok is False else behaviour(delivery, attempt)
        reply = b"{}"
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(reply)))
            handler.end_headers()
            handler.wfile.write(reply)
        except OSError:
            pass  # the sender gave up waiting (its timeout): nothing to answer
        with self._changed:
            delivery.status = status
            self._changed.notify_all()

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


@contextlib.contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A `WebhookReceiver` listening on 127.0.0.1 until the block ends."""
    with WebhookReceiver() as receiver:
        yield receiver
