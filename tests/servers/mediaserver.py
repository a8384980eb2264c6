"""Stand-ins for Jellyfin, Plex and Navidrome on 127.0.0.1: they record every
request, so the notify tests can check its documented shape.

`media_receiver` runs a threaded `http.server` on a free port. Every request
(method, path, query, headers, body) is recorded as a `Request` before it is
answered. `MediaReceiver.on` says how requests whose path starts with a prefix
are answered: a status per attempt (a server that fails a few times on
purpose), or held until `release` (a server that hangs). Answers to Subsonic
calls (``/rest/``) carry ``{"subsonic-response": {"status": "ok"}}``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Request:
    method: str
    path: str  # without the query
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int | None = None  # what was answered (None while held)
    n: int = 0  # how many requests the receiver got before this one

    def json(self) -> Any:
        return json.loads(self.body)


#: The status to answer, given how many requests to the same prefix came before (1-based).
Behaviour = Callable[[int], int]


class MediaReceiver:
    def __init__(self) -> None:
        self._behaviours: dict[str, tuple[Behaviour, bool]] = {}
        self.requests: list[Request] = []
        self._changed = threading.Condition()
        self.released = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver._handle(self, self.rfile.read(length) if length else b"")

            do_GET = do_POST = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def url(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.port}{prefix}"

    def on(self, prefix: str, behaviour: Behaviour, *, hold: bool = False) -> None:
        """Answer requests under *prefix* with *behaviour*; with *hold*, only once
        `release` is called."""
        self._behaviours[prefix] = (behaviour, hold)

    def release(self) -> None:
        self.released.set()

    def under(self, prefix: str) -> list[Request]:
        with self._changed:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def wait_for(
        self, prefix: str, wanted: Callable[[Request], bool] = lambda _r: True,
        *, count: int = 1, timeout: float = 30.0,
    ) -> list[Request]:  # fmt: skip
        """The first *count* requests under *prefix* that are *wanted*, waiting for them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [r for r in self.requests if r.path.startswith(prefix) and wanted(r)]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r.method, r.path, r.query, r.body) for r in self.requests
                            if r.path.startswith(prefix)]  # fmt: skip
                    raise AssertionError(f"{prefix}: not {count} such request(s) in {timeout} s; "
                                         f"got {seen}")  # fmt: skip
                self._changed.wait(left)

    def _handle(self, handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        url = urllib.parse.urlsplit(handler.path)
        request = Request(
            handler.command,
            urllib.parse.unquote(url.path),
            dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True)),
            dict(handler.headers.items()),
            body,
        )
        prefix = next((p for p in self._behaviours if request.path.startswith(p)), None)
        behaviour, hold = self._behaviours.get(prefix or "", (lambda _n: 200, False))
        with self._changed:
            nth = 1 + sum(1 for r in self.requests if prefix and r.path.startswith(prefix))
            request.n = len(self.requests)
            self.requests.append(request)
            self._changed.notify_all()
        if hold:
            self.released.wait(60)
        status = behaviour(nth)
        reply = b""
        if "/rest/" in request.path:
            reply = json.dumps(
                {"subsonic-response": {"status": "ok", "version": "1.16.1"}}
            ).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(reply)))
            handler.end_headers()
            handler.wfile.write(reply)
        except OSError:
            pass
        with self._changed:
            request.status = status
            self._changed.notify_all()

    def __enter__(self) -> MediaReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


@contextlib.contextmanager
def media_receiver() -> Iterator[MediaReceiver]:
    with MediaReceiver() as receiver:
        yield receiver
