"""The gRPC control service, served on a Unix socket next to a running mount.

gRPC runs its own thread pool (``grpc.aio`` is asyncio-only). Handlers run in
those threads and reach the mount only through its facade, `MountControl`,
whose methods are safe from any thread; what must run in the trio loop that
owns the mount (the status snapshot) hops there with ``trio.from_thread`` and
the loop's token (DESIGN §3).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import trio
from google.protobuf import struct_pb2

from musicfs.control.probes import MountHealth, add_probes
from musicfs.control.rpc_admin import AdminRPCs
from musicfs.control.rpc_plugins import PluginRPCs
from musicfs.control.socketfile import claim_socket_path
from musicfs.control.v1 import control_pb2, control_pb2_grpc
from musicfs.core.events import Event, event_type
from musicfs.core.mount.facade import MountControl, VerifyReport
from musicfs.plugins.manager import PluginManager

log = logging.getLogger(__name__)

_STATE_PREFIX = "MOUNT_STATE_"
_MAX_STREAMS = 8  # each open stream holds one of the server's threads
_WORKERS = _MAX_STREAMS + 4  # so unary calls always find a free thread
_STREAM_POLL = 0.25  # seconds: how soon a stream notices its client went away
_PROGRESS_EVERY = 0.5  # seconds between progress messages


def status_message(status: dict[str, Any]) -> control_pb2.Status:
    """The core's status snapshot as a protobuf message."""
    fields = dict(status)
    origins = [control_pb2.OriginStatus(**o) for o in fields.pop("origins", [])]
    op_latency = [control_pb2.OpLatency(**o) for o in fields.pop("op_latency", [])]
    loops = [control_pb2.LoopStatus(**o) for o in fields.pop("loops", [])]
    catalog = control_pb2.CatalogStatus(**fields.pop("catalog", {}))
    fields["state"] = control_pb2.MountState.Value(_STATE_PREFIX + fields["state"])
    return control_pb2.Status(
        origins=origins, op_latency=op_latency, loops=loops, catalog=catalog, **fields
    )


def event_message(event: Event) -> control_pb2.Event:
    details = struct_pb2.Struct()
    details.update(event.details)
    return control_pb2.Event(
        type=event.type.value,
        time=event.time,
        origin=event.origin,
        path=event.path,
        details=details,
    )


def verify_message(report: VerifyReport, done: bool = False) -> control_pb2.VerifyProgress:
    return control_pb2.VerifyProgress(
        files=report.files,
        checked=report.checked,
        bytes=report.bytes,
        recorded=report.recorded,
        changed=[f"{t.origin}/{t.relpath}" for t in report.changed],
        failed=report.failed,
        current=report.current,
        done=done,
    )


class ControlServicer(PluginRPCs, AdminRPCs, control_pb2_grpc.MusicFSServicer):
    """Answers control RPCs for one mount, through its facade."""

    def __init__(
        self,
        fs: MountControl,
        token: trio.lowlevel.TrioToken,
        socket_path: Path,
        plugins: PluginManager | None = None,
    ) -> None:
        self.fs = fs
        self.plugins = plugins
        self.token = token
        self.socket_path = socket_path
        self._streams = threading.BoundedSemaphore(_MAX_STREAMS)

    def GetStatus(
        self, request: control_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> control_pb2.Status:
        # File-system I/O here, in the gRPC thread; only the cheap part in trio.
        online = self.fs.origins_online()
        status = trio.from_thread.run_sync(self.fs.status, online, trio_token=self.token)
        status.update(self.fs.counts())
        status.update(self.fs.latency())  # a snapshot, outside trio too
        status["socket"] = str(self.socket_path)
        return status_message(status)

    def Shutdown(
        self, request: control_pb2.ShutdownRequest, context: grpc.ServicerContext
    ) -> control_pb2.ShutdownResponse:
        drain = request.drain_timeout_seconds or 5.0
        if not 0 < drain <= 3600:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"drain_timeout_seconds must be between 0 and 3600, got {drain}",
            )

        def start() -> None:
            trio.lowlevel.spawn_system_task(self.fs.shutdown, drain)

        log.info("shutdown requested over the control socket")
        trio.from_thread.run_sync(start, trio_token=self.token)
        return control_pb2.ShutdownResponse()

    def VerifyContent(
        self, request: control_pb2.VerifyContentRequest, context: grpc.ServicerContext
    ) -> Iterator[control_pb2.VerifyProgress]:
        self._check_origin(request.origin, context)
        # Unbounded, but filled at most every _PROGRESS_EVERY. A client that goes
        # away leaves the verification to finish: its findings are kept anyway.
        updates: queue.Queue[control_pb2.VerifyProgress | None] = queue.Queue()
        last_sent = 0.0

        def progress(report: VerifyReport) -> None:
            nonlocal last_sent
            now = time.monotonic()
            if now - last_sent >= _PROGRESS_EVERY:
                last_sent = now
                updates.put(verify_message(report))

        result: list[control_pb2.VerifyProgress] = []

        def run() -> None:
            try:
                report = self.fs.verify_content(request.origin or None, progress)
                result.append(verify_message(report, done=True))
            finally:
                updates.put(None)

        worker = threading.Thread(target=run, name="musicfs-verify", daemon=True)
        worker.start()
        while (update := updates.get()) is not None:
            yield update
        worker.join()
        if not result:
            context.abort(grpc.StatusCode.INTERNAL, "the verification failed; see the daemon log")
        yield result[0]

    def _check_origin(self, origin: str, context: grpc.ServicerContext) -> None:
        unknown = self.fs.unknown_origin(origin)
        if unknown is not None:
            context.abort(grpc.StatusCode.NOT_FOUND, unknown)

    def SubscribeEvents(
        self, request: control_pb2.SubscribeEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[control_pb2.Event]:
        try:
            types = [event_type(name) for name in request.types]
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self._check_origin(request.origin, context)
        if not self._streams.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{_MAX_STREAMS} event streams are open already; close one and retry",
            )
        try:
            with self.fs.events.subscribe(types, request.origin or None) as subscription:
                while context.is_active():
                    event = subscription.get(timeout=_STREAM_POLL)
                    if event is not None:
                        yield event_message(event)
        finally:
            self._streams.release()


class ControlServer:
    """Owns the gRPC server and its socket file."""

    def __init__(
        self, fs: MountControl, socket_path: Path, plugins: PluginManager | None = None
    ) -> None:
        self.fs = fs
        self.socket_path = socket_path
        self.plugins = plugins
        self._server: grpc.Server | None = None
        self._health: MountHealth | None = None

    def start(self, token: trio.lowlevel.TrioToken) -> None:
        claim_socket_path(self.socket_path)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="grpc")
        )
        control_pb2_grpc.add_MusicFSServicer_to_server(
            ControlServicer(self.fs, token, self.socket_path, self.plugins), server
        )
        # grpc.health.v1 and reflection: probes and grpcurl need no control.proto.
        health = add_probes(self.fs, server)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window for others
        try:
            server.add_insecure_port(f"unix:{self.socket_path}")
            server.start()
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)
        health.start()
        self._server, self._health = server, health
        log.info("control socket: %s", self.socket_path)

    async def stop(self) -> None:
        if self._server is None:
            return
        if self._health is not None:  # probes hear NOT_SERVING before the socket goes
            await trio.to_thread.run_sync(self._health.stop)
            self._health = None
        done = self._server.stop(grace=1)
        await trio.to_thread.run_sync(done.wait)
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
