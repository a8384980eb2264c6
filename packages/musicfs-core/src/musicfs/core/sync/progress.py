"""Scan progress for people: a rich progress line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from musicfs.core.sync.scanner import ScanProgress, ScanReport

log = logging.getLogger(__name__)


def progress_for(stream: TextIO | None = None) -> ScanProgress:
    """A rich progress display if *stream* (default stderr) is a terminal, else log lines."""
    stream = stream or sys.stderr
    if stream.isatty():
        return RichScanProgress(Console(file=stream))
    return LogScanProgress()


class RichScanProgress(ScanProgress):
    """A live line: files seen, added, changed, unreadable, and the rate."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]scanning[/] {task.fields[origin]}"),
            TextColumn("{task.completed} files"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._progress.start()

    def update(self, report: ScanReport) -> None:
        task = self._tasks.get(report.origin)
        detail = (
            f"+{report.added} ~{report.changed} -{report.removed}  {report.unreadable} unreadable"
        )
        if task is None:
            task = self._progress.add_task("scan", total=None, origin=report.origin, detail="")
            self._tasks[report.origin] = task
        self._progress.update(task, completed=report.seen, detail=detail)

    def close(self) -> None:
        self._progress.stop()


class LogScanProgress(ScanProgress):
    """One log line every *interval* seconds while a scan runs."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._last = time.monotonic()

    def update(self, report: ScanReport) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            log.info(
                "scanning %s: %d files seen, %d added, %d changed, %d unreadable",
                report.origin,
                report.seen,
                report.added,
                report.changed,
                report.unreadable,
            )
