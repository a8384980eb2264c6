"""Scan progress: a live rich line on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from musicfs.core.sync.progress import LogScanProgress, RichScanProgress, progress_for
from musicfs.core.sync.scanner import ScanReport


def test_plain_streams_get_log_lines() -> None:
    assert isinstance(progress_for(io.StringIO()), LogScanProgress)


def test_terminal_shows_counts() -> None:
    out = io.StringIO()
    progress = RichScanProgress(Console(file=out, force_terminal=True, width=120))
    progress.update(ScanReport("music", seen=1234, added=1200, changed=3, unreadable=7))
    progress.close()
    text = out.getvalue()
    assert "scanning" in text
    assert "music" in text
    assert "1234 files" in text
    assert "7 unreadable" in text


def test_log_lines_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    progress = LogScanProgress(interval=0.0)
    with caplog.at_level(logging.INFO):
        progress.update(ScanReport("music", seen=5, added=5))
    assert "scanning music: 5 files seen, 5 added" in caplog.text
    quiet = LogScanProgress(interval=3600)
    caplog.clear()
    quiet.update(ScanReport("music", seen=6))
    assert caplog.text == ""
