"""The daemon: one process serving one mount, with its control socket.

`run_daemon` assembles the parts — logging, the mount (through its facade,
`musicfs.core.mount.facade.MountControl`), the gRPC control server, the
webhook senders, the media servers' notifiers (``[[notify]]``) — and reports
readiness to whoever started it: a line on the *ready_fd* pipe (``READY``,
``REFUSED <message>`` when what it was given cannot be mounted, or ``ERROR
<message>``) for ``musicfs mount``, and ``READY=1`` on ``$NOTIFY_SOCKET`` for
systemd. It returns the exit status
(`musicfs.core.exitcodes`).

With *wait_scan* (``musicfs mount --wait``) ready means "the first scan has
finished": until then the pipe carries ``SCAN <json>`` lines (the scan's
progress per origin, at most ten a second, then each origin's final report with
``"finished": true``) and systemd hears nothing.

Mount time is dominated by imports (SPEC FR-1 wants the caller back within
500 ms), so gRPC is imported and the control server started only once the
mountpoint answers; `musicfs.control.client` waits for the socket briefly when
the mount is up but the socket is not yet. The Prometheus endpoint
(``[metrics] listen``, `musicfs.control.metrics`) starts after it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import resource
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from musicfs.control.config import METRICS, NOTIFY, WEBHOOKS
from musicfs.control.socketfile import SocketInUse, claim_socket_path
from musicfs.core.config.paths import (
    CacheDirLocked,
    UnsafeSocketDir,
    cache_dir_for,
    socket_path_for,
)
from musicfs.core.config.settings import Config
from musicfs.core.errors import MusicFSError
from musicfs.core.events import EventBus
from musicfs.core.exitcodes import ExitCode
from musicfs.core.mount.facade import (
    MountControl,
    ScanProgress,
    ScanReport,
    StartupError,
    scan_progress,
)
from musicfs.core.secrets.redact import install_redaction, redact
from musicfs.plugins.manager import PluginManager

if TYPE_CHECKING:
    from musicfs.control.notify.notifier import Notifiers
    from musicfs.control.webhooks import Webhooks

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Libraries that log every request at INFO, and at DEBUG their wire traffic:
# pyspnego logs authentication tokens (an NTLM exchange, from which a password
# can be cracked offline), smbprotocol every message with the file data in hex.
# Only their warnings reach the log, whatever the level.
QUIET_LIBRARIES = ("smbprotocol", "smbclient", "spnego", "paramiko", "botocore", "boto3",
                   "urllib3", "s3transfer")  # fmt: skip

#: Seconds the webhook senders get at shutdown to send what they have queued.
WEBHOOK_STOP_TIMEOUT = 2.0
#: Seconds the media servers' notifiers get at shutdown to send what they gathered.
NOTIFY_STOP_TIMEOUT = 2.0


def setup_logging(level: str, log_file: Path | None, to_stderr: bool) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = logging.Formatter(LOG_FORMAT)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=10 * 1024 * 1024, backupCount=3
        )
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        root.addHandler(stream)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    install_redaction()  # no secret in any log line (NFR-13)


def _notify_systemd(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError as exc:
            log.warning("could not notify systemd (%s): %s", address, exc)


class _Readiness:
    """Tells the parent process (and systemd) once whether the mount came up."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self._lock = threading.Lock()  # scan progress comes from the scanner's thread

    def _send(self, line: str, *, last: bool = True) -> None:
        with self._lock:
            if self.fd is None:
                return
            try:
                os.write(self.fd, (line.replace("\n", " ") + "\n").encode())
            except OSError:
                last = True  # the parent gave up waiting; nothing more to tell
            if last:
                with contextlib.suppress(OSError):
                    os.close(self.fd)
                self.fd = None

    def scan(self, report: ScanReport, finished: bool = False) -> None:
        """A line of scan progress for ``musicfs mount --wait``."""
        fields = {
            "origin": report.origin,
            "seen": report.seen,
            "added": report.added,
            "changed": report.changed,
            "removed": report.removed,
            "unreadable": report.unreadable,
            "complete": report.complete,
            "error": report.errors[0] if report.errors else "",
            "finished": finished,
        }
        self._send("SCAN " + json.dumps(fields), last=False)

    def ready(self) -> None:
        self._send("READY")
        _notify_systemd("READY=1\nSTATUS=serving")

    def failed(self, message: str) -> None:
        self._send("ERROR " + redact(message))

    def refused(self, message: str) -> None:
        """What it was given cannot be mounted (the message says what to change)."""
        self._send("REFUSED " + redact(message))


class _ReportedProgress(ScanProgress):
    """Shows the first scan's progress as *shown* does, and sends it up the pipe
    (at most ten lines a second: the scanner reports every folder)."""

    def __init__(self, shown: ScanProgress, readiness: _Readiness) -> None:
        self.shown = shown
        self.readiness = readiness
        self._last = 0.0

    def update(self, report: ScanReport) -> None:
        self.shown.update(report)
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            self.readiness.scan(report)

    def close(self) -> None:
        self.shown.close()


def raise_open_file_limit() -> int:
    """Lift the soft limit on open files to the hard one; return the limit now.

    Every file open through the mount holds a descriptor here (of its origin
    file, or of the cache's pack files): a media server scanning the tree, or
    many players, would otherwise run into EMFILE at the usual 1,024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return int(soft)


def run_daemon(
    config: Config,
    mountpoint: str | Path,
    *,
    foreground: bool,
    ready_fd: int | None = None,
    wait_scan: bool = False,
) -> int:
    """Mount and serve until unmounted. Returns the process exit status.

    With *wait_scan*, readiness is told once the first scan has finished."""
    readiness = _Readiness(ready_fd)
    mountpoint = Path(os.path.abspath(mountpoint))
    cache_dir = cache_dir_for(config, mountpoint)
    setup_logging(config.log_level, cache_dir / "musicfs.log", to_stderr=foreground)
    log.debug("open-file limit: %d", raise_open_file_limit())
    socket_path = socket_path_for(config, mountpoint)
    events = EventBus()  # before the mount: plugins and webhooks subscribe to it first
    webhooks: Webhooks | None = None
    if config.tables(WEBHOOKS):  # subscribed now, so the plugins' events are sent too
        from musicfs.control.webhooks import Webhooks

        webhooks = Webhooks(config.tables(WEBHOOKS), events)
    notifiers: Notifiers | None = None
    if config.tables(NOTIFY):  # subscribed now: the first scan's changes are told too
        from musicfs.control.notify.notifier import Notifiers

        notifiers = Notifiers(config.tables(NOTIFY), events, str(mountpoint))
    # A plugin that fails is reported and skipped (PluginManager), never a failed
    # mount. Loading them costs ~0.1 s (the built-in ones import mutagen; entry
    # points read every installed package's metadata), so they are loaded once
    # the mount answers, before anything that uses them starts (scans, tag edits,
    # the control server); only origins of plugin types need them before the
    # mount (prepare() builds the origins).
    plugins_later = not any(origin.from_plugin for origin in config.origins)
    plugins = PluginManager.from_config(config, events, load=not plugins_later)
    fs = MountControl.create(config, mountpoint, extensions=plugins.extensions(), events=events)
    try:
        fs.prepare()
    except MusicFSError as exc:  # expected (refused, locked, damaged): no traceback
        log.error("%s", exc)
        plugins.close()
        if webhooks is not None:
            webhooks.stop(0)
        if notifiers is not None:
            notifiers.stop(0)
        return _not_started(readiness, exc)
    try:
        claim_socket_path(socket_path)  # before READY: clients must not find a dead socket
    except (SocketInUse, UnsafeSocketDir, OSError) as exc:
        fs.close()
        plugins.close()
        if webhooks is not None:
            webhooks.stop(0)
        if notifiers is not None:
            notifiers.stop(0)
        log.error("%s", exc)
        return _not_started(readiness, exc)

    async def main() -> None:
        server: Any = None
        metrics: Any = None
        token = trio.lowlevel.current_trio_token()

        def start_control() -> tuple[Any, ScanProgress]:
            # In a worker thread: importing gRPC and rich takes a few hundred ms,
            # and the trio thread must keep answering FUSE requests meanwhile.
            from musicfs.control.server import ControlServer

            progress = scan_progress(live=foreground)
            control = ControlServer(fs, socket_path, plugins)
            try:
                control.start(token)
            except SocketInUse as exc:
                log.error("%s; running without a control socket", exc)
                return None, progress
            return control, progress

        def start_metrics() -> Any:
            from musicfs.control.metrics import MetricsServer  # prometheus-client: after READY

            exporter = MetricsServer(
                fs,
                config.section(METRICS).listen,
                webhooks.stats if webhooks is not None else None,
                notifiers.stats if notifiers is not None else None,
            )
            try:
                exporter.start()
            except (OSError, ValueError) as exc:
                log.error("cannot serve metrics on %s: %s; running without them",
                          config.section(METRICS).listen, exc)  # fmt: skip
                return None
            return exporter

        async def on_ready() -> None:
            nonlocal server, metrics
            if not wait_scan:
                readiness.ready()
            # Mounted now: what fails from here on is logged and shown by status
            # (issue 13.5), never the end of the daemon.
            await fs.first_requests_served()
            if plugins_later:
                try:
                    await trio.to_thread.run_sync(plugins.load_configured, config)
                except Exception as exc:
                    fs.failed("plugins", exc)
            try:
                server, progress = await trio.to_thread.run_sync(start_control)
                fs.show_scan_progress(
                    _ReportedProgress(progress, readiness) if wait_scan else progress
                )
            except Exception as exc:
                fs.failed("control server", exc)
            if config.section(METRICS).listen:
                try:
                    metrics = await trio.to_thread.run_sync(start_metrics)
                except Exception as exc:
                    fs.failed("metrics", exc)
            if webhooks is not None:  # in a thread: secrets may come from the keyring
                try:
                    await trio.to_thread.run_sync(webhooks.start)
                except Exception as exc:
                    fs.failed("webhooks", exc)
            if notifiers is not None:  # in a thread: secrets may come from the keyring
                try:
                    await trio.to_thread.run_sync(notifiers.start)
                except Exception as exc:
                    fs.failed("notify", exc)

        async def on_scanned() -> None:
            for report in fs.scan_reports().values():
                readiness.scan(report, finished=True)
            readiness.ready()

        try:
            await fs.serve(on_ready=on_ready, on_scanned=on_scanned if wait_scan else None)
        finally:
            _notify_systemd("STOPPING=1")
            if server is not None:
                await server.stop()
            if metrics is not None:
                await trio.to_thread.run_sync(metrics.stop)
            plugins.close()
            if webhooks is not None:  # after the plugins: their unload events go out too
                await trio.to_thread.run_sync(webhooks.stop, WEBHOOK_STOP_TIMEOUT)
            if notifiers is not None:
                await trio.to_thread.run_sync(notifiers.stop, NOTIFY_STOP_TIMEOUT)

    try:
        trio.run(main)
    except StartupError as exc:
        log.error("%s", exc)
        return _not_started(readiness, exc)
    except Exception as exc:
        if isinstance(exc, MusicFSError):
            log.error("the daemon failed: %s", exc)  # expected: its message says what to do
        else:
            log.exception("the daemon failed")  # a bug: its traceback goes to the log
        readiness.failed(f"the daemon failed: {exc} (see {fs.cache_dir / 'musicfs.log'})")
        return ExitCode.FAILED
    return ExitCode.OK


def _not_started(readiness: _Readiness, exc: Exception) -> int:
    """Report why the mount did not start; its exit status. Refused (exit 2):
    what it was given (mountpoint, origins, config, a cache dir or socket another
    daemon holds); failed (exit 1): anything else, e.g. a damaged catalog."""
    refused = isinstance(exc, (CacheDirLocked, SocketInUse, UnsafeSocketDir)) or (
        isinstance(exc, StartupError) and exc.refused
    )
    if refused:
        readiness.refused(str(exc))
        return ExitCode.USAGE
    readiness.failed(str(exc))
    return ExitCode.FAILED
