"""A small client for the control socket, used by the CLI and by tests."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from musicfs.control.v1 import control_pb2, control_pb2_grpc
from musicfs.core.errors import MusicFSError

_INT64_STATUS_FIELDS = (
    "pid", "tracks", "directories", "unreadable_files", "open_handles", "operations",
    "cached_files", "events_dropped", "event_subscribers",
)  # fmt: skip


class DaemonUnreachable(MusicFSError, ConnectionError):
    """No daemon answers on the socket."""


class ControlError(MusicFSError, RuntimeError):
    """The daemon answered with an error."""


class ControlClient:
    """Calls the control API of the daemon listening on *socket_path*."""

    def __init__(
        self, socket_path: str | Path, timeout: float = 10.0, wait_for_socket: float = 0.0
    ) -> None:
        """*wait_for_socket*: seconds to wait for a socket that is not there yet
        (a daemon starts its control server just after its mount is ready)."""
        self.socket_path = Path(socket_path)
        self.timeout = timeout
        self.wait_for_socket = wait_for_socket
        self._channel: grpc.Channel | None = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _stub(self) -> control_pb2_grpc.MusicFSStub:
        deadline = time.monotonic() + self.wait_for_socket
        while not self.socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.socket_path.exists():
            raise DaemonUnreachable(
                f"no daemon on {self.socket_path} (the socket does not exist) — is it mounted?"
            )
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"unix:{self.socket_path}")
        return control_pb2_grpc.MusicFSStub(self._channel)

    def _call(self, method: str, request: Any) -> Any:
        stub = self._stub()
        try:
            return getattr(stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._error(method, exc) from None

    def _error(self, method: str, exc: grpc.RpcError) -> Exception:
        code = exc.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return DaemonUnreachable(
                f"no daemon answers on {self.socket_path} ({code.name.lower()}) — is it mounted?"
            )
        return ControlError(f"{method} failed: {exc.details()} ({code.name})")

    def status(self) -> dict[str, Any]:
        """The daemon's status as plain data (the ``Status`` message's fields)."""
        message = self._call("GetStatus", control_pb2.GetStatusRequest())
        data = json_format.MessageToDict(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        data["state"] = data["state"].removeprefix("MOUNT_STATE_")
        for key in _INT64_STATUS_FIELDS:
            data[key] = int(data[key])  # JSON mapping of int64 is a string
        for entry in data.get("op_latency", []):
            entry["count"] = int(entry["count"])
        catalog = data.get("catalog", {})
        for key in ("applied_seq", "server_seq", "lag", "bootstrap_copied"):
            if key in catalog:
                catalog[key] = int(catalog[key])
        return data

    def shutdown(self, drain_timeout: float = 5.0) -> None:
        self._call("Shutdown", control_pb2.ShutdownRequest(drain_timeout_seconds=drain_timeout))

    def _plain(self, message: Any) -> dict[str, Any]:
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )

    # -- plugins -------------------------------------------------------------------------

    def plugins(self) -> dict[str, Any]:
        """{"plugins": [...], "failures": [...], "changed": [...]}"""
        return self._plain(self._call("ListPlugins", control_pb2.ListPluginsRequest()))

    def load_plugin(self, path: str) -> dict[str, Any]:
        return self._plain(self._call("LoadPlugin", control_pb2.LoadPluginRequest(path=path)))

    def unload_plugin(self, name: str) -> dict[str, Any]:
        request = control_pb2.UnloadPluginRequest(name=name)
        return self._plain(self._call("UnloadPlugin", request))

    def reload_plugin(self, name: str = "") -> dict[str, Any]:
        request = control_pb2.ReloadPluginRequest(name=name)
        return self._plain(self._call("ReloadPlugin", request))

    # -- the metadata overlay ------------------------------------------------------------

    def get_tags(self, path: str) -> dict[str, Any]:
        return self._plain(self._call("GetTags", control_pb2.GetTagsRequest(path=path)))

    def set_tags(
        self, path: str, values: dict[str, str], clear: Iterable[str] = (), source: str = ""
    ) -> dict[str, Any]:
        request = control_pb2.SetTagsRequest(
            path=path, set=values, clear=list(clear), source=source
        )
        return self._plain(self._call("SetTags", request))

    def lookup_tags(self, path: str, apply: bool = False) -> dict[str, Any]:
        request = control_pb2.LookupTagsRequest(path=path, apply=apply)
        return self._plain(self._call("LookupTags", request))

    def _stream(self, method: str, request: Any) -> Iterator[dict[str, Any]]:
        """A server stream's messages as plain data (int64 fields as ints)."""
        stream = getattr(self._stub(), method)(request)
        try:
            for message in stream:
                yield _with_ints(message, self._plain(message))
        except grpc.RpcError as exc:
            raise self._error(method, exc) from None
        finally:
            stream.cancel()

    def verify_content(self, origin: str = "") -> Iterator[dict[str, Any]]:
        """Progress of a content verification as plain data; the last has ``done``."""
        yield from self._stream("VerifyContent", control_pb2.VerifyContentRequest(origin=origin))

    # -- cache, origins, settings ---------------------------------------------------------

    def cache_stats(self) -> dict[str, Any]:
        message = self._call("GetCacheStats", control_pb2.GetCacheStatsRequest())
        stats = _with_ints(message, self._plain(message))
        stats["tiers"] = [_with_ints(t, self._plain(t)) for t in message.tiers]
        return stats

    def clear_cache(self, scope: str = "all", origin: str = "") -> dict[str, Any]:
        message = self._call(
            "ClearCache", control_pb2.ClearCacheRequest(scope=scope, origin=origin)
        )
        return _with_ints(message, self._plain(message))

    def prefetch(self, path: str = "") -> Iterator[dict[str, Any]]:
        """Progress of copying *path* (relative to the mountpoint) into the cache."""
        yield from self._stream("Prefetch", control_pb2.PrefetchRequest(path=path))

    def verify_cache(self) -> Iterator[dict[str, Any]]:
        """Progress of a cache verify in the daemon; the last has ``finished``."""
        yield from self._stream("VerifyCache", control_pb2.VerifyCacheRequest())

    def pin(
        self,
        paths: Iterable[str] = (),
        collections: Iterable[str] = (),
        searches: Iterable[str] = (),
        *,
        wait: bool = False,
        import_label: str = "",
    ) -> Iterator[dict[str, Any]]:
        """Pin tracks for offline: the pin (first message) and, with *wait*, the
        progress of copying them; the last has ``finished``."""
        request = control_pb2.PinTracksRequest(
            paths=list(paths), collections=list(collections), searches=list(searches),
            wait=wait, import_label=import_label,
        )  # fmt: skip
        yield from self._stream("PinTracks", request)

    def unpin(
        self,
        paths: Iterable[str] = (),
        collections: Iterable[str] = (),
        searches: Iterable[str] = (),
        *,
        everything: bool = False,
    ) -> dict[str, Any]:
        request = control_pb2.UnpinTracksRequest(
            paths=list(paths), collections=list(collections), searches=list(searches),
            all=everything,
        )  # fmt: skip
        message = self._call("UnpinTracks", request)
        return _with_ints(message, self._plain(message))

    def pins(self) -> dict[str, Any]:
        """{"pins": [{kind, value, tracks, bytes, present_tracks, present_bytes}], totals}"""
        message = self._call("ListPins", control_pb2.ListPinsRequest())
        listed = _with_ints(message, self._plain(message))
        listed["pins"] = [_with_ints(p, self._plain(p)) for p in message.pins]
        return listed

    def set_ratings(self, ratings: Iterable[tuple[str | int, int | None]], source: str = "") -> int:
        """Rate tracks (a path of the mount or a catalog id, 0-100 or None); how many were."""
        request = control_pb2.SetRatingsRequest(
            ratings=[
                control_pb2.Rating(
                    path=named if isinstance(named, str) else "",
                    file_id=named if isinstance(named, int) else 0,
                    value=-1 if value is None else value,
                )
                for named, value in ratings
            ],
            source=source,
        )
        return int(self._call("SetRatings", request).rated)

    def add_plays(
        self, plays: Iterable[tuple[int, int, float]], source: str = ""
    ) -> dict[int, int]:
        """Add (file id, count, last played) plays an import brought; with *source*,
        count is that program's running total. Returns the plays added, by file id."""
        request = control_pb2.AddPlaysRequest(
            plays=[
                control_pb2.PlayCount(file_id=f, count=n, last_played=last) for f, n, last in plays
            ],
            source=source,
        )
        return {int(k): int(v) for k, v in self._call("AddPlays", request).added.items()}

    def set_playlists(
        self, playlists: dict[str, list[tuple[int | None, str]]], source: str
    ) -> None:
        """Store playlists an import brought: name -> [(file id or None, text)]."""
        request = control_pb2.SetPlaylistsRequest(
            playlists=[
                control_pb2.Playlist(
                    name=name,
                    entries=[control_pb2.PlaylistEntry(file_id=f or 0, text=t) for f, t in entries],
                )
                for name, entries in playlists.items()
            ],
            source=source,
        )
        self._call("SetPlaylists", request)

    def collections(self) -> list[dict[str, Any]]:
        """[{name, source, rule}] of every collection the mount shows."""
        message = self._call("ListCollections", control_pb2.ListCollectionsRequest())
        return [self._plain(c) for c in message.collections]

    def set_collection(
        self, name: str, rule: dict[str, str] | None = None, *, remove: bool = False
    ) -> list[dict[str, Any]]:
        """Define (or remove) a collection in the shared catalog; the collections after."""
        request = control_pb2.SetCollectionRequest(name=name, rule=rule or {}, remove=remove)
        message = self._call("SetCollection", request)
        return [self._plain(c) for c in message.collections]

    def origins(self) -> list[dict[str, Any]]:
        message = self._call("ListOrigins", control_pb2.ListOriginsRequest())
        return [_with_ints(o, self._plain(o)) for o in message.origins]

    def origin_health(self, origin: str) -> dict[str, Any]:
        message = self._call("GetOriginHealth", control_pb2.GetOriginHealthRequest(origin=origin))
        return _with_ints(message, self._plain(message))

    def rescan(self, origin: str = "") -> Iterator[dict[str, Any]]:
        """Progress of a full rescan; a message with ``finished`` per origin."""
        yield from self._stream("RescanOrigin", control_pb2.RescanOriginRequest(origin=origin))

    def search(self, query: str, limit: int = 50) -> dict[str, Any]:
        """{"hits": [...], "seconds": ...}, best first."""
        return self._plain(
            self._call("Search", control_pb2.SearchRequest(query=query, limit=limit))
        )

    def search_stream(self, query: str, limit: int = 50) -> Iterator[dict[str, Any]]:
        yield from self._stream("SearchStream", control_pb2.SearchRequest(query=query, limit=limit))

    def get_config(self) -> dict[str, Any]:
        return self._plain(self._call("GetConfig", control_pb2.GetConfigRequest()))

    def set_config(self, key: str, value: str) -> dict[str, Any]:
        request = control_pb2.SetConfigRequest(key=key, value=value)
        return self._plain(self._call("SetConfig", request))

    def events(self, types: Iterable[str] = (), origin: str = "") -> Iterator[dict[str, Any]]:
        """Events as plain data, as they happen, until the daemon goes away.

        Ends (without an error) when the daemon shuts down; close the
        iterator to stop listening.
        """
        request = control_pb2.SubscribeEventsRequest(types=list(types), origin=origin)
        stream = self._stub().SubscribeEvents(request)
        try:
            for message in stream:
                event = json_format.MessageToDict(
                    message,
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                )
                # A protobuf Struct holds every number as a double: give counts back as ints.
                event["details"] = {
                    k: int(v) if isinstance(v, float) and v.is_integer() else v
                    for k, v in event.get("details", {}).items()
                }
                yield event
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            if exc.code() == grpc.StatusCode.UNAVAILABLE and _was_connected(exc):
                return  # the daemon shut down under an open stream
            raise self._error("SubscribeEvents", exc) from None
        finally:
            stream.cancel()


def _was_connected(exc: grpc.RpcError) -> bool:
    details = (exc.details() or "").lower()
    # "Cancelling all calls": what grpcio 1.85 reports when the server stops.
    return any(
        sign in details for sign in ("socket closed", "goaway", "shutdown", "cancelling all calls")
    )


def _with_ints(message: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The JSON mapping writes int64 fields as strings: make them ints again."""
    for field in message.DESCRIPTOR.fields:
        if field.type in (field.TYPE_INT64, field.TYPE_UINT64) and field.name in data:
            value = data[field.name]
            data[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
    return data
