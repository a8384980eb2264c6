"""The rounds: ``tree.changed`` events in, a debounced, retried request out.

Each ``[[notify]]`` entry gets a `Notifier`: a subscriber of the mount's
`EventBus` (its own bounded queue: publishing never waits for it; an event
that does not fit is dropped, counted, and the next round names the whole
library instead, since a folder may be missing) and one thread. The thread
gathers the folders of the events for ``debounce`` seconds from the first
(`collapse.Gather`), makes them few (`collapse.collapse`, at most
``max_paths``, else the whole library) and hands them to the entry's sender.
A round that fails is tried again ``retries`` times after ``backoff`` seconds,
doubling up to 60 s; folders that change meanwhile wait for the next round.
A server that stays away costs its own thread only: neither the FUSE thread
nor the event bus ever waits on a notifier.

At unmount, `Notifiers.stop` sends what is gathered (one attempt) within a
bounded time, then logs each entry's counters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from musicfs.control.notify.collapse import ROOT, Gather, collapse
from musicfs.control.notify.config import NotifyConfig, ServerType
from musicfs.control.notify.senders import Sender, SendFailed, make_sender
from musicfs.core.events import EventBus, EventType
from musicfs.core.secrets.credentials import CredentialError, Credentials, env_var_name

log = logging.getLogger(__name__)

#: ``tree.changed`` events an entry may have waiting; more are dropped (and counted).
QUEUE_SIZE = 10_000
#: How often an idle notifier looks whether it should stop (seconds).
POLL_INTERVAL = 0.25

Stats = dict[str, int | str]


class Notifier:
    """Tells one media server of changed folders, from a thread of its own.

    Subscribes on construction (nothing published from then on is missed);
    `start` with a sender, `stop` (bounded), `stats`.
    """

    def __init__(
        self,
        entry: NotifyConfig,
        events: EventBus,
        *,
        queue_size: int = QUEUE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.entry = entry
        self._subscription = events.subscribe([EventType.TREE_CHANGED], maxsize=queue_size)
        self._clock = clock
        self._gather = Gather(entry.debounce)
        self._dropped_seen = 0
        self._stopping = threading.Event()
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self._sender: Sender | None = None
        self._failing = False  # the last round was given up: say so once, not per round
        self.rounds = 0  # rounds the server took
        self.failed = 0  # rounds given up
        self.retried = 0  # attempts after the first
        self.folders = 0  # folders named in the rounds taken
        self.last_error = ""

    def start(self, sender: Sender) -> None:
        self._sender = sender
        self._thread = threading.Thread(
            target=self._run, name=f"notify {self.entry.id}", daemon=True
        )
        self._thread.start()

    def request_stop(self, timeout: float) -> None:
        """Take no more events; send what is gathered (one attempt) within *timeout* s."""
        self._deadline = self._clock() + timeout
        self._stopping.set()

    def join(self, timeout: float) -> bool:
        """Wait up to *timeout* s for the thread to end; True if it did (or never ran)."""
        if self._thread is not None:
            self._thread.join(max(timeout, 0.0))
            if self._thread.is_alive():
                return False
        self._subscription.close()
        return True

    def stop(self, timeout: float = 2.0) -> bool:
        self.request_stop(timeout)
        return self.join(timeout)

    def stats(self) -> Stats:
        return {
            "id": self.entry.id,
            "type": self.entry.type.value,
            "rounds": self.rounds,
            "folders": self.folders,
            "failed": self.failed,
            "retried": self.retried,
            "dropped": self._subscription.dropped,
            "last_error": self.last_error,
        }

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            self._take_events(POLL_INTERVAL if not stopping else 0.0)
            due = self._gather.due_in(self._clock())
            if stopping:
                if self._gather.paths and self._clock() < self._deadline:
                    self._round(self._gather.take(), last=True)
                return
            if due == 0:
                self._round(self._gather.take())

    def _take_events(self, wait: float) -> None:
        """Move waiting events into the round, waiting at most *wait* s (or until
        the round is due) for the first."""
        due = self._gather.due_in(self._clock())
        timeout = wait if due is None else min(wait, due)
        event = self._subscription.get(timeout=timeout)
        while event is not None:
            self._gather.add(event.path, self._clock())
            event = self._subscription.get(timeout=0)
        dropped = self._subscription.dropped
        if dropped != self._dropped_seen:  # a folder may be missing: name them all
            self._dropped_seen = dropped
            self._gather.add(ROOT, self._clock())

    def _round(self, paths: set[str], *, last: bool = False) -> None:
        folders = collapse(paths, self.entry.max_paths)
        attempt = 0
        while True:
            attempt += 1
            try:
                self._send(folders)
            except SendFailed as exc:
                self.last_error = str(exc)
                if exc.retryable and attempt <= self.entry.retries and not last:
                    delay = self.entry.delay(attempt)
                    log.debug("notify %s: attempt %d: %s; again in %.1f s", self.entry.id,
                              attempt, exc, delay)  # fmt: skip
                    if not self._stopping.wait(delay):
                        self.retried += 1
                        continue
                self._gave_up(folders, attempt, str(exc))
                return
            except Exception:  # a bug: say so, count the round as failed, go on
                self.failed += 1
                log.exception("notify %s: could not send a round", self.entry.id)
                return
            self.rounds += 1
            self.folders += len(folders)
            if self._failing:
                log.info("notify %s: the server takes rounds again", self.entry.id)
                self._failing = False
            log.debug("notify %s: told of %s", self.entry.id, folders)
            return

    def _send(self, folders: Sequence[str]) -> None:
        assert self._sender is not None
        self._sender.send(folders)

    def _gave_up(self, folders: Sequence[str], attempts: int, error: str) -> None:
        self.failed += 1
        if self._failing:
            log.debug("notify %s: gave up on %d folder(s) after %d attempt(s): %s",
                      self.entry.id, len(folders), attempts, error)  # fmt: skip
            return
        self._failing = True
        log.warning(
            "notify %s: gave up telling %s of %d changed folder(s) after %d attempt(s): %s; "
            "further failures are logged at debug level until a round succeeds",
            self.entry.id, self.entry.describe(), len(folders), attempts, error,
        )  # fmt: skip


class Notifiers:
    """Every ``[[notify]]`` entry of one mount: built before the mount is ready
    (so the changes from then on are gathered), started once it is (secrets
    from the credentials store), stopped at unmount."""

    def __init__(self, entries: Sequence[NotifyConfig], events: EventBus, mountpoint: str) -> None:
        self.mountpoint = mountpoint
        self.notifiers = [Notifier(entry, events) for entry in entries]
        self._started = False

    def start(self, credentials: Credentials | None = None) -> None:
        """Look up the secrets and start. Blocks on the keyring, if any: call it
        from a worker thread."""
        try:
            store = Credentials.load() if credentials is None else credentials
            secrets = [store.get(n.entry.id, n.entry.secret_key) for n in self.notifiers]
        except CredentialError as exc:
            log.error("media servers will not be told of changes: %s", exc)
            for notifier in self.notifiers:
                notifier.stop(0)
            return
        self._started = True
        for notifier, secret in zip(self.notifiers, secrets, strict=True):
            entry = notifier.entry
            notifier.start(make_sender(entry, secret, self.mountpoint))
            log.info("notify %s: telling %s at %s of changed folders", entry.id,
                     entry.type.value, entry.describe())  # fmt: skip
            if not secret and entry.type is not ServerType.MPD:  # MPD often has none
                log.warning(
                    "notify %s: no %s in the credentials store; %s will likely refuse the "
                    "requests: set the environment variable %s, or add it under [%s] in the "
                    "credentials file",
                    entry.id, entry.secret_key, entry.type.value,
                    env_var_name(entry.id, entry.secret_key), entry.id,
                )  # fmt: skip

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every notifier within *timeout* s together, then log their counters."""
        deadline = time.monotonic() + timeout
        for notifier in self.notifiers:
            notifier.request_stop(timeout)
        for notifier in self.notifiers:
            if not notifier.join(deadline - time.monotonic()):
                log.info("notify %s: still waiting for its server; not waiting longer",
                         notifier.entry.id)  # fmt: skip
            if self._started:
                s = notifier.stats()
                log.info("notify %s: rounds=%d folders=%d failed=%d retried=%d dropped=%d",
                         s["id"], s["rounds"], s["folders"], s["failed"], s["retried"],
                         s["dropped"])  # fmt: skip

    def stats(self) -> dict[str, Stats]:
        return {n.entry.id: n.stats() for n in self.notifiers}
