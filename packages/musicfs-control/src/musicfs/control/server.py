"""The gRPC control service, served on a Unix socket next to a running mount.

gRPC runs its own thread pool (``grpc.aio`` is asyncio-only). Handlers never
touch core objects directly: each one hops into the trio loop that owns the
mount with ``trio.from_thread`` and the loop's token (DESIGN §3).
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

from musicfs.control.socketfile import claim_socket_path
from musicfs.control.v1 import control_pb2, control_pb2_grpc
from musicfs.core.events import Event, event_type
from musicfs.core.model import OVERRIDABLE_FIELDS, TrackTags
from musicfs.core.overlay import TagError, TagView
from musicfs.core.service import MusicFS
from musicfs.core.verify import VerifyReport
from musicfs.plugins.api import MetadataQuery, PluginError, PluginInfo
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
    fields["state"] = control_pb2.MountState.Value(_STATE_PREFIX + fields["state"])
    return control_pb2.Status(origins=origins, **fields)


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


def tag_message(shown: TagView) -> control_pb2.TagInfo:
    return control_pb2.TagInfo(
        path=shown.path,
        origin=shown.origin,
        relpath=shown.relpath,
        format=shown.format,
        own=_tag_strings(shown.own),
        overrides={k: v or "" for k, v in shown.overrides.items()},
        effective=_tag_strings(shown.effective),
        overlaid=shown.overlaid,
    )


def _tag_strings(tags: TrackTags) -> dict[str, str]:
    values = {name: getattr(tags, name) for name in OVERRIDABLE_FIELDS}
    values["compilation"] = values["compilation"] or None
    return {
        k: str(int(v) if isinstance(v, bool) else v) for k, v in values.items() if v is not None
    }


class ControlServicer(control_pb2_grpc.MusicFSServicer):
    """Answers control RPCs for one `MusicFS` mount."""

    def __init__(
        self,
        fs: MusicFS,
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

    # -- plugins -----------------------------------------------------------------------

    def ListPlugins(
        self, request: control_pb2.ListPluginsRequest, context: grpc.ServicerContext
    ) -> control_pb2.PluginList:
        return self._plugin_list([])

    def LoadPlugin(
        self, request: control_pb2.LoadPluginRequest, context: grpc.ServicerContext
    ) -> control_pb2.PluginList:
        if not request.path:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name the plugin file or folder")
        infos = self._plugin_call(context, lambda m: m.load_path(request.path))
        return self._plugin_list(infos)

    def UnloadPlugin(
        self, request: control_pb2.UnloadPluginRequest, context: grpc.ServicerContext
    ) -> control_pb2.PluginList:
        infos = self._plugin_call(context, lambda m: [m.unload(request.name)])
        return self._plugin_list(infos)

    def ReloadPlugin(
        self, request: control_pb2.ReloadPluginRequest, context: grpc.ServicerContext
    ) -> control_pb2.PluginList:
        if request.name:
            infos = self._plugin_call(context, lambda m: m.reload(request.name))
        else:
            infos = self._plugin_call(context, lambda m: m.reload_all())
        return self._plugin_list(infos)

    def _plugin_call(self, context: grpc.ServicerContext, call: Any) -> list[PluginInfo]:
        """Run a plugin manager change; then let the mount catch up with it."""
        if self.plugins is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this daemon runs without plugins")
        try:
            infos: list[PluginInfo] = call(self.plugins)
        except PluginError as exc:
            code = grpc.StatusCode.NOT_FOUND if "no plugin named" in str(exc) else (
                grpc.StatusCode.INVALID_ARGUMENT)  # fmt: skip
            context.abort(code, str(exc))
        formats = {e for i in infos for e in i.details.get("extensions", "").split(",") if e}
        self.fs.formats_changed(formats)
        for origin_type in {i.details["origin_type"] for i in infos if "origin_type" in i.details}:
            self.fs.rebuild_origins(origin_type)
        return infos

    def _plugin_list(self, changed: list[PluginInfo]) -> control_pb2.PluginList:
        manager = self.plugins
        infos = manager.infos() if manager is not None else []
        failures = manager.failures if manager is not None else ()
        return control_pb2.PluginList(
            plugins=[
                control_pb2.PluginInfo(
                    name=i.name,
                    version=i.version,
                    api_version=i.api_version,
                    kinds=list(i.kinds),
                    host=i.host,
                    source=i.source,
                    details=dict(i.details),
                )
                for i in infos
            ],
            failures=[
                control_pb2.PluginFailure(source=f.source, host=f.host, error=f.error)
                for f in failures
            ],
            changed=[i.name for i in changed],
        )

    # -- the metadata overlay -------------------------------------------------------------

    def GetTags(
        self, request: control_pb2.GetTagsRequest, context: grpc.ServicerContext
    ) -> control_pb2.TagInfo:
        try:
            return tag_message(self.fs.tag_view(request.path))
        except TagError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))

    def SetTags(
        self, request: control_pb2.SetTagsRequest, context: grpc.ServicerContext
    ) -> control_pb2.TagInfo:
        if not request.set and not request.clear:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "give FIELD=VALUE pairs or fields to clear"
            )
        assignments = {k: (v or None) for k, v in request.set.items()}
        try:
            return tag_message(self.fs.set_tags(request.path, assignments, list(request.clear)))
        except TagError as exc:
            code = grpc.StatusCode.NOT_FOUND if "no such file" in str(exc) else (
                grpc.StatusCode.INVALID_ARGUMENT)  # fmt: skip
            context.abort(code, str(exc))

    def LookupTags(
        self, request: control_pb2.LookupTagsRequest, context: grpc.ServicerContext
    ) -> control_pb2.LookupTagsResponse:
        try:
            shown = self.fs.tag_view(request.path)
        except TagError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        query = MetadataQuery(shown.origin, shown.relpath, shown.format, shown.own)
        response = control_pb2.LookupTagsResponse()
        answers: list[tuple[str, dict[str, str]]] = []
        for plugin in self.plugins.metadata_plugins() if self.plugins is not None else []:
            try:
                found = plugin.lookup(query)
            except Exception as exc:  # plugin code
                response.errors.append(f"{plugin.name}: {type(exc).__name__}: {exc}")
                continue
            fields = {k: str(v) for k, v in (found.fields if found else {}).items()
                      if k in OVERRIDABLE_FIELDS}  # fmt: skip
            if found is None or not fields:
                continue
            answers.append((plugin.name, fields))
            response.proposals.append(control_pb2.MetadataProposal(
                plugin=plugin.name, fields=fields, source=found.source,
                confidence=found.confidence,
            ))  # fmt: skip
        if request.apply and answers:
            name, fields = answers[0]
            try:
                applied = self.fs.set_tags(request.path, dict(fields), source=name)
            except TagError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {exc}")
            response.tags.CopyFrom(tag_message(applied))
        return response

    def _check_origin(self, origin: str, context: grpc.ServicerContext) -> None:
        if origin and origin not in self.fs.origins:
            known = ", ".join(sorted(self.fs.origins))
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no origin {origin!r} in this mount; its origins are: {known}",
            )

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
        self, fs: MusicFS, socket_path: Path, plugins: PluginManager | None = None
    ) -> None:
        self.fs = fs
        self.socket_path = socket_path
        self.plugins = plugins
        self._server: grpc.Server | None = None

    def start(self, token: trio.lowlevel.TrioToken) -> None:
        claim_socket_path(self.socket_path)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="grpc")
        )
        control_pb2_grpc.add_MusicFSServicer_to_server(
            ControlServicer(self.fs, token, self.socket_path, self.plugins), server
        )
        old_umask = os.umask(0o177)  # the socket is born 0600: no window for others
        try:
            server.add_insecure_port(f"unix:{self.socket_path}")
            server.start()
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)
        self._server = server
        log.info("control socket: %s", self.socket_path)

    async def stop(self) -> None:
        if self._server is None:
            return
        done = self._server.stop(grace=1)
        await trio.to_thread.run_sync(done.wait)
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
