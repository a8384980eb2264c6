"""Webhooks (SPEC FR-18.2): the mount's events, POSTed as JSON to HTTP receivers.

Each ``[[webhooks]]`` table (`musicfs.control.webhookconfig.WebhookConfig`) gets a
`WebhookSender`: a subscriber of the mount's `EventBus` with a bounded queue of
its own, drained by one thread that sends the events in order, one at a time.
Publishing an event only puts it on that queue (or drops it, counted, when the
queue is full), so a receiver that is slow, hangs or is gone never slows a
read: it only delays and, at worst, loses its own events.

One delivery is one POST of ::

    {"event": "file.opened", "time": "2025-01-02T03:04:05.678Z", "timestamp": 1735787045.678,
     "origin": "nas", "path": "Björk/Homogenic (1997) [FLAC]/01 - Hunter.flac",
     "details": {...}, "delivery": "<uuid4>", "attempt": 1, "webhook": "<hook id>"}

with ``Content-Type: application/json``, ``User-Agent: musicfs/<version>``,
``X-MusicFS-Event: <type>``, ``X-MusicFS-Delivery: <uuid>`` and, when the hook
has a secret, ``X-MusicFS-Signature: sha256=<hex HMAC-SHA256 of the raw body>``.
``time``/``timestamp`` are when the event happened; the body (and so the
signature) covers them, so a receiver can refuse old replays. ``delivery``
stays the same across the attempts of one event; ``attempt`` counts them.

A 2xx answer is a delivery. A connection error, a timeout, a 5xx or a 429 is
retried ``retries`` times, after ``backoff`` seconds, doubling each time up to
60 s (a longer ``Retry-After`` in a 429 or 5xx answer is honoured, up to that cap); any
other answer (3xx, 4xx) fails at once. `WebhookSender.stats` counts
deliveries, failures (events given up), retries and drops (queue full).

The secret comes from the credentials store (key ``secret`` of the hook's id)
and is registered for redaction there; it is never logged, nor is the body,
nor the URL's path and query (where many receivers put a token: `shown_url`).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import json
import logging
import threading
import time
import urllib.parse
import uuid
from collections.abc import Sequence

from musicfs.control.webhookconfig import BACKOFF_CAP, SECRET_KEY, WebhookConfig
from musicfs.core.events import Event, EventBus
from musicfs.core.mount.facade import version
from musicfs.core.secrets.credentials import CredentialError, Credentials
from musicfs.core.secrets.redact import redact

log = logging.getLogger(__name__)

#: Events a hook may have waiting; more are dropped (and counted).
QUEUE_SIZE = 1000
#: How often an idle sender looks whether it should stop (seconds).
POLL_INTERVAL = 0.25
#: What is read of a receiver's answer (the rest is ignored).
MAX_RESPONSE = 64 * 1024

Stats = dict[str, int | str | bool]


class WebhookSender:
    """Sends the events one hook wants, in order, from a thread of its own.

    Subscribes on construction (so nothing published from then on is missed);
    `start` starts sending, `stop` stops (waiting a bounded time), `stats` says
    how it went.
    """

    def __init__(
        self,
        hook: WebhookConfig,
        events: EventBus,
        secret: str | None = None,
        *,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.hook = hook
        self._url = urllib.parse.urlsplit(hook.url)
        self._shown_url = shown_url(hook.url)
        self._secret = secret.encode() if secret else None
        self._subscription = events.subscribe(hook.events, hook.origin or None, queue_size)
        self._user_agent = f"musicfs/{version()}"
        self._stopping = threading.Event()
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self._failing = False  # the last event was given up: say so once, not per event
        self.delivered = 0
        self.failed = 0
        self.retried = 0
        self.last_error = ""

    @property
    def signed(self) -> bool:
        return self._secret is not None

    def set_secret(self, secret: str | None) -> None:
        """Sign from now on with *secret* (None or "": send unsigned). Before `start`."""
        self._secret = secret.encode() if secret else None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"webhook {self.hook.id}", daemon=True
        )
        self._thread.start()
        log.info(
            "webhook %s: sending %s%s to %s (%s)",
            self.hook.id,
            ", ".join(self.hook.events) or "every event",
            f" of origin {self.hook.origin}" if self.hook.origin else "",
            self._shown_url,
            "signed" if self.signed else "unsigned: no secret in the credentials store",
        )

    def request_stop(self, timeout: float) -> None:
        """Take no more events; send what is queued, one attempt each, for *timeout* s."""
        self._deadline = time.monotonic() + timeout
        self._subscription.close()
        self._stopping.set()

    def join(self, timeout: float) -> bool:
        """Wait up to *timeout* s for the thread to end; True if it did (or never ran)."""
        if self._thread is None:
            return True
        self._thread.join(max(timeout, 0.0))
        return not self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> bool:
        """`request_stop` and `join`: True if the sender ended within *timeout* s."""
        self.request_stop(timeout)
        return self.join(timeout)

    def stats(self) -> Stats:
        """Counters of this hook: events delivered, failed (given up), retried
        (attempts after the first), dropped (found the queue full)."""
        return {
            "id": self.hook.id,
            "url": self._shown_url,
            "signed": self.signed,
            "delivered": self.delivered,
            "failed": self.failed,
            "retried": self.retried,
            "dropped": self._subscription.dropped,
            "last_error": self.last_error,
        }

    # -- the sender thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            if stopping and time.monotonic() >= self._deadline:
                return
            event = self._subscription.get(timeout=0 if stopping else POLL_INTERVAL)
            if event is None:
                if stopping:
                    return
                continue
            try:
                self._deliver(event)
            except Exception:  # a bug: say so, count the event as failed, go on
                self.failed += 1
                log.exception("webhook %s: could not send a %s event", self.hook.id,
                              event.type.value)  # fmt: skip

    def _deliver(self, event: Event) -> None:
        delivery = str(uuid.uuid4())
        attempt = 0
        while True:
            attempt += 1
            body = self.body(event, delivery, attempt)
            error, retryable, retry_after = self._attempt(event, delivery, body)
            if error is None:
                self.delivered += 1
                if self._failing:
                    log.info("webhook %s: delivering again", self.hook.id)
                    self._failing = False
                return
            self.last_error = error
            if retryable and attempt <= self.hook.retries and not self._stopping.is_set():
                delay = self.hook.delay(attempt)
                if retry_after is not None:
                    delay = max(delay, min(retry_after, BACKOFF_CAP))
                log.debug("webhook %s: %s event, attempt %d: %s; again in %.1f s", self.hook.id,
                          event.type.value, attempt, error, delay)  # fmt: skip
                if not self._stopping.wait(delay):
                    self.retried += 1
                    continue
            self.failed += 1
            self._gave_up(event, attempt, error)
            return

    def _gave_up(self, event: Event, attempts: int, error: str) -> None:
        if self._failing:
            log.debug("webhook %s: gave up on a %s event after %d attempt(s): %s",
                      self.hook.id, event.type.value, attempts, error)  # fmt: skip
            return
        self._failing = True
        log.warning(
            "webhook %s (%s): gave up on a %s event after %d attempt(s): %s; "
            "further failures are logged at debug level until a delivery succeeds",
            self.hook.id, self._shown_url, event.type.value, attempts, error,
        )  # fmt: skip

    def body(self, event: Event, delivery: str, attempt: int) -> bytes:
        """The JSON body of one attempt (ASCII: any name is escaped, never mangled)."""
        when = datetime.datetime.fromtimestamp(event.time, datetime.UTC)
        payload = {
            "event": event.type.value,
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "timestamp": event.time,
            "origin": event.origin,
            "path": event.path,
            "details": event.details,
            "delivery": delivery,
            "attempt": attempt,
            "webhook": self.hook.id,
        }
        return json.dumps(payload, separators=(",", ":")).encode("ascii")

    def signature(self, body: bytes) -> str | None:
        """The ``X-MusicFS-Signature`` of *body*, or None without a secret."""
        if self._secret is None:
            return None
        return "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()

    def _attempt(
        self, event: Event, delivery: str, body: bytes
    ) -> tuple[str | None, bool, float | None]:
        """POST *body* once: (None, ...) when delivered, else (what went wrong,
        whether to retry, the receiver's Retry-After in seconds if it gave one)."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            "X-MusicFS-Event": event.type.value,
            "X-MusicFS-Delivery": delivery,
        }
        signature = self.signature(body)
        if signature is not None:
            headers["X-MusicFS-Signature"] = signature
        try:
            status, retry_after = self._post(body, headers)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, ...
            reason = str(exc) or "no answer"
            return redact(f"{type(exc).__name__}: {reason}"), True, None
        if 200 <= status < 300:
            return None, False, None
        retryable = status >= 500 or status == 429
        return f"the receiver answered HTTP {status}", retryable, retry_after

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, float | None]:
        url = self._url
        started = time.monotonic()
        timeout = self.hook.timeout
        connection: http.client.HTTPConnection
        if url.scheme == "https":
            connection = http.client.HTTPSConnection(url.hostname or "", url.port, timeout=timeout)
        else:
            connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=timeout)
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        try:
            connection.request("POST", target, body=body, headers=headers)
            # The timeout bounds the whole request, not each wait on the socket.
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                raise TimeoutError("timed out")
            if connection.sock is not None:
                connection.sock.settimeout(left)
            response = connection.getresponse()
            response.read(MAX_RESPONSE)
            return response.status, _retry_after(response.getheader("Retry-After"))
        finally:
            connection.close()


def shown_url(url: str) -> str:
    """*url* as logs and counters show it: scheme, host and port only. Many receivers
    (chat services, home automation) put a token in the path or query."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    rest = "/…" if parts.path.strip("/") or parts.query else "/"
    return redact(f"{parts.scheme}://{host}{rest}")


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` of a number of seconds (an HTTP date is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class Webhooks:
    """Every configured hook of one mount: built before the mount is ready (so
    events from then on queue up), started once it is, stopped at shutdown."""

    def __init__(self, hooks: Sequence[WebhookConfig], events: EventBus) -> None:
        self.senders = [WebhookSender(hook, events) for hook in hooks]
        self._started = False

    def start(self, credentials: Credentials | None = None) -> None:
        """Look up the hooks' secrets (*credentials*, default the user's store) and
        start sending. Blocks on the keyring, if any: call it from a worker thread."""
        try:
            store = Credentials.load() if credentials is None else credentials
            for sender in self.senders:
                sender.set_secret(store.get(sender.hook.id, SECRET_KEY))
        except CredentialError as exc:
            log.error("webhooks are off: %s", exc)
            for sender in self.senders:
                sender.stop(0)
            return
        self._started = True
        for sender in self.senders:
            sender.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every sender, giving them *timeout* seconds together to send what is
        queued (one attempt each), then log their counters."""
        deadline = time.monotonic() + timeout
        for sender in self.senders:
            sender.request_stop(timeout)
        for sender in self.senders:
            if not sender.join(deadline - time.monotonic()):
                log.info("webhook %s: still waiting for its receiver; not waiting longer",
                         sender.hook.id)  # fmt: skip
            if self._started:
                stats = sender.stats()
                log.info(
                    "webhook %s: delivered=%d failed=%d retried=%d dropped=%d",
                    sender.hook.id, stats["delivered"], stats["failed"], stats["retried"],
                    stats["dropped"],
                )  # fmt: skip

    def stats(self) -> dict[str, Stats]:
        """`WebhookSender.stats` of every hook, by hook id."""
        return {sender.hook.id: sender.stats() for sender in self.senders}
