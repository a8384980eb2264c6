"""``musicfs events --json`` as a test fixture: collect a mount's events, wait for one."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from tests.e2e.helpers import MUSICFS, Mount, musicfs_env, wait_until

Event = dict[str, Any]


class EventListener:
    """``musicfs events --json`` in a subprocess, its lines collected by a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.seen: list[Event] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(
        self, wanted: Callable[[Event], bool], timeout: float = 30.0, count: int = 1
    ) -> Event:
        """The *count*-th *wanted* event, seen already or arriving within *timeout*."""
        matching = [event for event in self.seen if wanted(event)]
        deadline = time.monotonic() + timeout
        while len(matching) < count:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(left, 0))
            except queue.Empty:
                raise AssertionError(f"no such event within {timeout} s; saw {self.seen}") from None
            if line is None:
                raise AssertionError(f"musicfs events ended; saw {self.seen}")
            event = json.loads(line)
            self.seen.append(event)
            if wanted(event):
                matching.append(event)
        return matching[count - 1]


@contextlib.contextmanager
def listening(mount: Mount, *args: str) -> Iterator[EventListener]:
    """Run ``musicfs events --json *args`` on *mount* until the block ends;
    yields once the daemon counts the new subscriber."""
    before = mount.status()["event_subscribers"]
    process = subprocess.Popen(
        [MUSICFS, "events", str(mount.mountpoint), "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=musicfs_env(),
    )
    try:
        wait_until(
            lambda: process.poll() is not None or mount.status()["event_subscribers"] > before,
            timeout=30,
            what="the event stream to be subscribed",
        )
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        yield EventListener(process)
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C would
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def about(kind: str, path: str = "", **details: object) -> Callable[[Event], bool]:
    def matches(event: Event) -> bool:
        if event["type"] != kind or (path and event["path"] != path):
            return False
        return all(event["details"].get(k) == v for k, v in details.items())

    return matches
