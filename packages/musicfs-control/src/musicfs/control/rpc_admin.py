"""The control RPCs that operate a mount: cache, origins, rescans, settings (FR-17).

A mixin of `musicfs.control.server.ControlServicer`; the work is done by the
mount's facade (`musicfs.core.mount.facade.MountControl`) in the gRPC thread.
`AdminError`s become status codes: not_found → NOT_FOUND, busy →
FAILED_PRECONDITION, else INVALID_ARGUMENT.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from musicfs.control.v1 import control_pb2
from musicfs.core.mount.facade import (
    SETTABLE,
    AdminError,
    CacheVerifyProgress,
    MountControl,
    PinProgress,
    PrefetchProgress,
    ScanReport,
)

T = TypeVar("T")

_CODES = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "busy": grpc.StatusCode.FAILED_PRECONDITION,
}


def _abort(context: grpc.ServicerContext, exc: AdminError) -> NoReturn:
    context.abort(_CODES.get(exc.kind, grpc.StatusCode.INVALID_ARGUMENT), str(exc))
    raise AssertionError("unreachable")  # context.abort raises


def _rescan_message(report: ScanReport, finished: bool) -> control_pb2.RescanProgress:
    return control_pb2.RescanProgress(
        origin=report.origin, seen=report.seen, added=report.added, changed=report.changed,
        removed=report.removed, unreadable=report.unreadable, finished=finished,
        complete=report.complete and finished, error=report.errors[0] if report.errors else "",
        forwarded=report.forwarded,
    )  # fmt: skip


def _prefetch_message(progress: PrefetchProgress) -> control_pb2.PrefetchProgress:
    return control_pb2.PrefetchProgress(
        files=progress.files, done=progress.done, bytes=progress.bytes,
        already_cached=progress.already_cached, failed=list(progress.failed),
        current=progress.current, finished=progress.finished,
    )  # fmt: skip


def _verify_cache_message(progress: CacheVerifyProgress) -> control_pb2.VerifyCacheProgress:
    return control_pb2.VerifyCacheProgress(
        chunks=progress.chunks, checked=progress.checked, bytes=progress.bytes,
        damaged_chunks=list(progress.damaged_chunks), damaged_files=list(progress.damaged_files),
        refetched=list(progress.refetched), not_refetched=list(progress.not_refetched),
        incomplete_dropped=progress.incomplete_dropped, catalog=progress.catalog,
        current=progress.current, finished=progress.finished, stopped=progress.stopped,
    )  # fmt: skip


def _pin_message(progress: PinProgress) -> control_pb2.PinProgress:
    return control_pb2.PinProgress(
        tracks=progress.tracks, bytes=progress.bytes, pinned_tracks=progress.pinned_tracks,
        pinned_bytes=progress.pinned_bytes, pin_limit=progress.pin_limit, files=progress.files,
        done=progress.done, copied_bytes=progress.copied_bytes,
        already_cached=progress.already_cached, failed=list(progress.failed),
        current=progress.current, finished=progress.finished,
    )  # fmt: skip


def _collections_message(listed: list[dict[str, Any]]) -> control_pb2.CollectionList:
    return control_pb2.CollectionList(collections=[control_pb2.CollectionInfo(**c) for c in listed])


class AdminRPCs:
    """GetCacheStats, ClearCache, Prefetch, VerifyCache, ListOrigins,
    GetOriginHealth, RescanOrigin, GetConfig, SetConfig, Search, SearchStream,
    PinTracks, UnpinTracks, ListPins, SetRatings, AddPlays, SetPlaylists,
    ListCollections, SetCollection."""

    fs: MountControl

    def _do(self, context: grpc.ServicerContext, call: Callable[[], T]) -> T:
        try:
            return call()
        except AdminError as exc:
            _abort(context, exc)

    def GetCacheStats(
        self, request: control_pb2.GetCacheStatsRequest, context: grpc.ServicerContext
    ) -> control_pb2.CacheStats:
        stats = self.fs.cache_stats()
        tiers = [control_pb2.TierStats(**tier) for tier in stats.pop("tiers")]
        return control_pb2.CacheStats(tiers=tiers, **stats)

    def ClearCache(
        self, request: control_pb2.ClearCacheRequest, context: grpc.ServicerContext
    ) -> control_pb2.ClearCacheResponse:
        scope = request.scope or "all"
        result = self._do(context, lambda: self.fs.clear_cache(scope, request.origin))
        return control_pb2.ClearCacheResponse(**result)

    def Prefetch(
        self, request: control_pb2.PrefetchRequest, context: grpc.ServicerContext
    ) -> Iterator[control_pb2.PrefetchProgress]:
        def work(put: Callable[[control_pb2.PrefetchProgress], None]) -> None:
            final = self.fs.prefetch(request.path, lambda p: put(_prefetch_message(p)))
            put(_prefetch_message(final))

        return _streamed(context, "prefetch", work)

    def VerifyCache(
        self, request: control_pb2.VerifyCacheRequest, context: grpc.ServicerContext
    ) -> Iterator[control_pb2.VerifyCacheProgress]:
        # (A damaged chunk found is dropped either way; its file is still re-fetched.)
        def work(put: Callable[[control_pb2.VerifyCacheProgress], None]) -> None:
            final = self.fs.verify_cache(lambda p: put(_verify_cache_message(p)))
            put(_verify_cache_message(final))

        return _streamed(context, "cache verify", work)

    def PinTracks(
        self, request: control_pb2.PinTracksRequest, context: grpc.ServicerContext
    ) -> Iterator[control_pb2.PinProgress]:
        def work(put: Callable[[control_pb2.PinProgress], None]) -> None:
            final = self.fs.pin(
                list(request.paths), list(request.collections), list(request.searches),
                wait=request.wait, import_label=request.import_label,
                progress=lambda p: put(_pin_message(p)),
            )  # fmt: skip
            put(_pin_message(final))

        return _streamed(context, "pin", work)

    def UnpinTracks(
        self, request: control_pb2.UnpinTracksRequest, context: grpc.ServicerContext
    ) -> control_pb2.UnpinTracksResponse:
        result = self._do(context, lambda: self.fs.unpin(
            list(request.paths), list(request.collections), list(request.searches),
            everything=request.all,
        ))  # fmt: skip
        return control_pb2.UnpinTracksResponse(**result)

    def ListPins(
        self, request: control_pb2.ListPinsRequest, context: grpc.ServicerContext
    ) -> control_pb2.PinList:
        listed = self.fs.pins()
        pins = [control_pb2.Pin(**pin) for pin in listed.pop("pins")]
        return control_pb2.PinList(pins=pins, **listed)

    def SetRatings(
        self, request: control_pb2.SetRatingsRequest, context: grpc.ServicerContext
    ) -> control_pb2.SetRatingsResponse:
        ratings: list[tuple[str | int, int | None]] = [
            (r.path or int(r.file_id), None if r.value < 0 else int(r.value))
            for r in request.ratings
        ]
        rated = self._do(context, lambda: self.fs.set_ratings(ratings, request.source or "user"))
        return control_pb2.SetRatingsResponse(rated=rated)

    def AddPlays(
        self, request: control_pb2.AddPlaysRequest, context: grpc.ServicerContext
    ) -> control_pb2.AddPlaysResponse:
        plays = [(int(p.file_id), int(p.count), float(p.last_played)) for p in request.plays]
        added = self._do(context, lambda: self.fs.add_plays(plays, request.source))
        return control_pb2.AddPlaysResponse(added=added)

    def SetPlaylists(
        self, request: control_pb2.SetPlaylistsRequest, context: grpc.ServicerContext
    ) -> control_pb2.SetPlaylistsResponse:
        playlists = {
            p.name: [(int(e.file_id) or None, e.text) for e in p.entries] for p in request.playlists
        }
        self._do(context, lambda: self.fs.set_playlists(playlists, request.source or "import"))
        return control_pb2.SetPlaylistsResponse()

    def ListCollections(
        self, request: control_pb2.ListCollectionsRequest, context: grpc.ServicerContext
    ) -> control_pb2.CollectionList:
        return _collections_message(self.fs.collections())

    def SetCollection(
        self, request: control_pb2.SetCollectionRequest, context: grpc.ServicerContext
    ) -> control_pb2.CollectionList:
        listed = self._do(
            context,
            lambda: self.fs.set_collection(request.name, dict(request.rule), remove=request.remove),
        )
        return _collections_message(listed)

    def ListOrigins(
        self, request: control_pb2.ListOriginsRequest, context: grpc.ServicerContext
    ) -> control_pb2.OriginList:
        origins = [control_pb2.OriginInfo(**o) for o in self.fs.origins()]
        return control_pb2.OriginList(origins=origins)

    def GetOriginHealth(
        self, request: control_pb2.GetOriginHealthRequest, context: grpc.ServicerContext
    ) -> control_pb2.OriginHealth:
        health = self._do(context, lambda: self.fs.origin_health(request.origin))
        return control_pb2.OriginHealth(**health)

    def RescanOrigin(
        self, request: control_pb2.RescanOriginRequest, context: grpc.ServicerContext
    ) -> Iterator[control_pb2.RescanProgress]:
        progress = self._do(context, lambda: iter(self.fs.rescan(request.origin)))
        try:
            first = next(progress)
        except AdminError as exc:
            _abort(context, exc)
        except StopIteration:
            return
        yield _rescan_message(*first)
        for report, finished in progress:
            if not context.is_active():
                return  # the rescan goes on; nobody is listening
            yield _rescan_message(report, finished)

    def GetConfig(
        self, request: control_pb2.GetConfigRequest, context: grpc.ServicerContext
    ) -> control_pb2.ConfigValues:
        return control_pb2.ConfigValues(values=self.fs.settings(), settable=list(SETTABLE))

    def SetConfig(
        self, request: control_pb2.SetConfigRequest, context: grpc.ServicerContext
    ) -> control_pb2.ConfigValues:
        values: dict[str, Any] = self._do(
            context, lambda: self.fs.set_setting(request.key, request.value)
        )
        return control_pb2.ConfigValues(values=values, settable=list(SETTABLE))

    def Search(
        self, request: control_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> control_pb2.SearchResponse:
        started = time.monotonic()
        hits = self._do(context, lambda: self.fs.search(request.query, request.limit or 50))
        return control_pb2.SearchResponse(
            hits=[control_pb2.SearchHit(**hit) for hit in hits],
            seconds=time.monotonic() - started,
        )

    def SearchStream(
        self, request: control_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> Iterator[control_pb2.SearchHit]:
        hits = self._do(context, lambda: self.fs.search(request.query, request.limit or 50))
        for hit in hits:
            if not context.is_active():
                return
            yield control_pb2.SearchHit(**hit)


Message = TypeVar("Message")


def _streamed(
    context: grpc.ServicerContext, what: str, work: Callable[[Callable[[Message], None]], None]
) -> Iterator[Message]:
    """The progress messages *work* puts, streamed as it runs. It runs in a worker
    thread, so a client that goes away does not stop it half way."""
    updates: queue.Queue[Message | Exception | None] = queue.Queue()

    def run() -> None:
        try:
            work(updates.put)
        except Exception as exc:
            updates.put(exc)
        finally:
            updates.put(None)

    threading.Thread(target=run, name=f"musicfs-{what.replace(' ', '-')}", daemon=True).start()
    while (update := updates.get()) is not None:
        if isinstance(update, AdminError):
            _abort(context, update)
        if isinstance(update, Exception):
            context.abort(grpc.StatusCode.INTERNAL, f"{what} failed: {update}")
        yield update
