from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MountState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MOUNT_STATE_UNSPECIFIED: _ClassVar[MountState]
    MOUNT_STATE_MOUNTING: _ClassVar[MountState]
    MOUNT_STATE_READY: _ClassVar[MountState]
    MOUNT_STATE_SYNCING: _ClassVar[MountState]
    MOUNT_STATE_DEGRADED: _ClassVar[MountState]
    MOUNT_STATE_UNMOUNTING: _ClassVar[MountState]
MOUNT_STATE_UNSPECIFIED: MountState
MOUNT_STATE_MOUNTING: MountState
MOUNT_STATE_READY: MountState
MOUNT_STATE_SYNCING: MountState
MOUNT_STATE_DEGRADED: MountState
MOUNT_STATE_UNMOUNTING: MountState

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OriginStatus(_message.Message):
    __slots__ = ("id", "type", "location", "online", "last_scan")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SCAN_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    location: str
    online: bool
    last_scan: str
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., location: _Optional[str] = ..., online: _Optional[bool] = ..., last_scan: _Optional[str] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("version", "pid", "state", "mountpoint", "cache_dir", "uptime_seconds", "tracks", "directories", "unreadable_files", "open_handles", "operations", "scanning", "origins", "socket", "cached_files", "events_dropped", "event_subscribers", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "op_latency", "loops", "catalog")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MOUNTPOINT_FIELD_NUMBER: _ClassVar[int]
    CACHE_DIR_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    DIRECTORIES_FIELD_NUMBER: _ClassVar[int]
    UNREADABLE_FILES_FIELD_NUMBER: _ClassVar[int]
    OPEN_HANDLES_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    SCANNING_FIELD_NUMBER: _ClassVar[int]
    ORIGINS_FIELD_NUMBER: _ClassVar[int]
    SOCKET_FIELD_NUMBER: _ClassVar[int]
    CACHED_FILES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    EVENT_SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    OP_LATENCY_FIELD_NUMBER: _ClassVar[int]
    LOOPS_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    version: str
    pid: int
    state: MountState
    mountpoint: str
    cache_dir: str
    uptime_seconds: float
    tracks: int
    directories: int
    unreadable_files: int
    open_handles: int
    operations: int
    scanning: bool
    origins: _containers.RepeatedCompositeFieldContainer[OriginStatus]
    socket: str
    cached_files: int
    events_dropped: int
    event_subscribers: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    op_latency: _containers.RepeatedCompositeFieldContainer[OpLatency]
    loops: _containers.RepeatedCompositeFieldContainer[LoopStatus]
    catalog: CatalogStatus
    def __init__(self, version: _Optional[str] = ..., pid: _Optional[int] = ..., state: _Optional[_Union[MountState, str]] = ..., mountpoint: _Optional[str] = ..., cache_dir: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., tracks: _Optional[int] = ..., directories: _Optional[int] = ..., unreadable_files: _Optional[int] = ..., open_handles: _Optional[int] = ..., operations: _Optional[int] = ..., scanning: _Optional[bool] = ..., origins: _Optional[_Iterable[_Union[OriginStatus, _Mapping]]] = ..., socket: _Optional[str] = ..., cached_files: _Optional[int] = ..., events_dropped: _Optional[int] = ..., event_subscribers: _Optional[int] = ..., latency_p50_ms: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., op_latency: _Optional[_Iterable[_Union[OpLatency, _Mapping]]] = ..., loops: _Optional[_Iterable[_Union[LoopStatus, _Mapping]]] = ..., catalog: _Optional[_Union[CatalogStatus, _Mapping]] = ...) -> None: ...

class CatalogStatus(_message.Message):
    __slots__ = ("shared", "server", "online", "applied_seq", "server_seq", "lag", "bootstrapping", "bootstrap_copied", "error", "scanning_origins")
    SHARED_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    SERVER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAPPING_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_COPIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SCANNING_ORIGINS_FIELD_NUMBER: _ClassVar[int]
    shared: bool
    server: str
    online: bool
    applied_seq: int
    server_seq: int
    lag: int
    bootstrapping: bool
    bootstrap_copied: int
    error: str
    scanning_origins: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, shared: _Optional[bool] = ..., server: _Optional[str] = ..., online: _Optional[bool] = ..., applied_seq: _Optional[int] = ..., server_seq: _Optional[int] = ..., lag: _Optional[int] = ..., bootstrapping: _Optional[bool] = ..., bootstrap_copied: _Optional[int] = ..., error: _Optional[str] = ..., scanning_origins: _Optional[_Iterable[str]] = ...) -> None: ...

class LoopStatus(_message.Message):
    __slots__ = ("name", "failures", "last_error", "last_failure", "failing")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_FIELD_NUMBER: _ClassVar[int]
    FAILING_FIELD_NUMBER: _ClassVar[int]
    name: str
    failures: int
    last_error: str
    last_failure: float
    failing: bool
    def __init__(self, name: _Optional[str] = ..., failures: _Optional[int] = ..., last_error: _Optional[str] = ..., last_failure: _Optional[float] = ..., failing: _Optional[bool] = ...) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ("drain_timeout_seconds",)
    DRAIN_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    drain_timeout_seconds: float
    def __init__(self, drain_timeout_seconds: _Optional[float] = ...) -> None: ...

class ShutdownResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SubscribeEventsRequest(_message.Message):
    __slots__ = ("types", "origin")
    TYPES_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedScalarFieldContainer[str]
    origin: str
    def __init__(self, types: _Optional[_Iterable[str]] = ..., origin: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "time", "origin", "path", "details")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    type: str
    time: float
    origin: str
    path: str
    details: _struct_pb2.Struct
    def __init__(self, type: _Optional[str] = ..., time: _Optional[float] = ..., origin: _Optional[str] = ..., path: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class VerifyContentRequest(_message.Message):
    __slots__ = ("origin",)
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    origin: str
    def __init__(self, origin: _Optional[str] = ...) -> None: ...

class VerifyProgress(_message.Message):
    __slots__ = ("files", "checked", "bytes", "recorded", "changed", "failed", "current", "done")
    FILES_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    files: int
    checked: int
    bytes: int
    recorded: int
    changed: _containers.RepeatedScalarFieldContainer[str]
    failed: _containers.RepeatedScalarFieldContainer[str]
    current: str
    done: bool
    def __init__(self, files: _Optional[int] = ..., checked: _Optional[int] = ..., bytes: _Optional[int] = ..., recorded: _Optional[int] = ..., changed: _Optional[_Iterable[str]] = ..., failed: _Optional[_Iterable[str]] = ..., current: _Optional[str] = ..., done: _Optional[bool] = ...) -> None: ...

class PluginInfo(_message.Message):
    __slots__ = ("name", "version", "api_version", "kinds", "host", "source", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    api_version: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    host: str
    source: str
    details: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., api_version: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., host: _Optional[str] = ..., source: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PluginFailure(_message.Message):
    __slots__ = ("source", "host", "error")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    source: str
    host: str
    error: str
    def __init__(self, source: _Optional[str] = ..., host: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class PluginList(_message.Message):
    __slots__ = ("plugins", "failures", "changed")
    PLUGINS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    plugins: _containers.RepeatedCompositeFieldContainer[PluginInfo]
    failures: _containers.RepeatedCompositeFieldContainer[PluginFailure]
    changed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, plugins: _Optional[_Iterable[_Union[PluginInfo, _Mapping]]] = ..., failures: _Optional[_Iterable[_Union[PluginFailure, _Mapping]]] = ..., changed: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPluginsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadPluginRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class UnloadPluginRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ReloadPluginRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetTagsRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class SetTagsRequest(_message.Message):
    __slots__ = ("path", "set", "clear", "source")
    class SetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PATH_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    CLEAR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    path: str
    set: _containers.ScalarMap[str, str]
    clear: _containers.RepeatedScalarFieldContainer[str]
    source: str
    def __init__(self, path: _Optional[str] = ..., set: _Optional[_Mapping[str, str]] = ..., clear: _Optional[_Iterable[str]] = ..., source: _Optional[str] = ...) -> None: ...

class TagInfo(_message.Message):
    __slots__ = ("path", "origin", "relpath", "format", "own", "overrides", "effective", "overlaid", "audio_id", "plays", "last_played", "moved_from", "sources", "rating")
    class OwnEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class OverridesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EffectiveEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PATH_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    RELPATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    OWN_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    OVERLAID_FIELD_NUMBER: _ClassVar[int]
    AUDIO_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYS_FIELD_NUMBER: _ClassVar[int]
    LAST_PLAYED_FIELD_NUMBER: _ClassVar[int]
    MOVED_FROM_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    path: str
    origin: str
    relpath: str
    format: str
    own: _containers.ScalarMap[str, str]
    overrides: _containers.ScalarMap[str, str]
    effective: _containers.ScalarMap[str, str]
    overlaid: bool
    audio_id: str
    plays: int
    last_played: float
    moved_from: _containers.RepeatedScalarFieldContainer[str]
    sources: _containers.ScalarMap[str, str]
    rating: int
    def __init__(self, path: _Optional[str] = ..., origin: _Optional[str] = ..., relpath: _Optional[str] = ..., format: _Optional[str] = ..., own: _Optional[_Mapping[str, str]] = ..., overrides: _Optional[_Mapping[str, str]] = ..., effective: _Optional[_Mapping[str, str]] = ..., overlaid: _Optional[bool] = ..., audio_id: _Optional[str] = ..., plays: _Optional[int] = ..., last_played: _Optional[float] = ..., moved_from: _Optional[_Iterable[str]] = ..., sources: _Optional[_Mapping[str, str]] = ..., rating: _Optional[int] = ...) -> None: ...

class LookupTagsRequest(_message.Message):
    __slots__ = ("path", "apply")
    PATH_FIELD_NUMBER: _ClassVar[int]
    APPLY_FIELD_NUMBER: _ClassVar[int]
    path: str
    apply: bool
    def __init__(self, path: _Optional[str] = ..., apply: _Optional[bool] = ...) -> None: ...

class MetadataProposal(_message.Message):
    __slots__ = ("plugin", "fields", "source", "confidence")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    plugin: str
    fields: _containers.ScalarMap[str, str]
    source: str
    confidence: float
    def __init__(self, plugin: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ..., source: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class LookupTagsResponse(_message.Message):
    __slots__ = ("proposals", "tags", "errors")
    PROPOSALS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    proposals: _containers.RepeatedCompositeFieldContainer[MetadataProposal]
    tags: TagInfo
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, proposals: _Optional[_Iterable[_Union[MetadataProposal, _Mapping]]] = ..., tags: _Optional[_Union[TagInfo, _Mapping]] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...

class GetCacheStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TierStats(_message.Message):
    __slots__ = ("tier", "entries", "bytes", "hits", "misses", "evictions", "corrupt", "hit_ratio")
    TIER_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    CORRUPT_FIELD_NUMBER: _ClassVar[int]
    HIT_RATIO_FIELD_NUMBER: _ClassVar[int]
    tier: str
    entries: int
    bytes: int
    hits: int
    misses: int
    evictions: int
    corrupt: int
    hit_ratio: float
    def __init__(self, tier: _Optional[str] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., evictions: _Optional[int] = ..., corrupt: _Optional[int] = ..., hit_ratio: _Optional[float] = ...) -> None: ...

class CacheStats(_message.Message):
    __slots__ = ("tiers", "mode", "limit_bytes", "dedup_ratio", "origin_bytes", "cached_files")
    TIERS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEDUP_RATIO_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_BYTES_FIELD_NUMBER: _ClassVar[int]
    CACHED_FILES_FIELD_NUMBER: _ClassVar[int]
    tiers: _containers.RepeatedCompositeFieldContainer[TierStats]
    mode: str
    limit_bytes: int
    dedup_ratio: float
    origin_bytes: int
    cached_files: int
    def __init__(self, tiers: _Optional[_Iterable[_Union[TierStats, _Mapping]]] = ..., mode: _Optional[str] = ..., limit_bytes: _Optional[int] = ..., dedup_ratio: _Optional[float] = ..., origin_bytes: _Optional[int] = ..., cached_files: _Optional[int] = ...) -> None: ...

class ClearCacheRequest(_message.Message):
    __slots__ = ("scope", "origin")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    scope: str
    origin: str
    def __init__(self, scope: _Optional[str] = ..., origin: _Optional[str] = ...) -> None: ...

class ClearCacheResponse(_message.Message):
    __slots__ = ("files_dropped", "bytes_freed", "entries_dropped")
    FILES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    files_dropped: int
    bytes_freed: int
    entries_dropped: int
    def __init__(self, files_dropped: _Optional[int] = ..., bytes_freed: _Optional[int] = ..., entries_dropped: _Optional[int] = ...) -> None: ...

class PrefetchRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class PrefetchProgress(_message.Message):
    __slots__ = ("files", "done", "bytes", "already_cached", "failed", "current", "finished")
    FILES_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    ALREADY_CACHED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    files: int
    done: int
    bytes: int
    already_cached: int
    failed: _containers.RepeatedScalarFieldContainer[str]
    current: str
    finished: bool
    def __init__(self, files: _Optional[int] = ..., done: _Optional[int] = ..., bytes: _Optional[int] = ..., already_cached: _Optional[int] = ..., failed: _Optional[_Iterable[str]] = ..., current: _Optional[str] = ..., finished: _Optional[bool] = ...) -> None: ...

class VerifyCacheRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerifyCacheProgress(_message.Message):
    __slots__ = ("chunks", "checked", "bytes", "damaged_chunks", "damaged_files", "refetched", "not_refetched", "incomplete_dropped", "catalog", "current", "finished", "stopped")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_FILES_FIELD_NUMBER: _ClassVar[int]
    REFETCHED_FIELD_NUMBER: _ClassVar[int]
    NOT_REFETCHED_FIELD_NUMBER: _ClassVar[int]
    INCOMPLETE_DROPPED_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    chunks: int
    checked: int
    bytes: int
    damaged_chunks: _containers.RepeatedScalarFieldContainer[str]
    damaged_files: _containers.RepeatedScalarFieldContainer[str]
    refetched: _containers.RepeatedScalarFieldContainer[str]
    not_refetched: _containers.RepeatedScalarFieldContainer[str]
    incomplete_dropped: int
    catalog: str
    current: str
    finished: bool
    stopped: bool
    def __init__(self, chunks: _Optional[int] = ..., checked: _Optional[int] = ..., bytes: _Optional[int] = ..., damaged_chunks: _Optional[_Iterable[str]] = ..., damaged_files: _Optional[_Iterable[str]] = ..., refetched: _Optional[_Iterable[str]] = ..., not_refetched: _Optional[_Iterable[str]] = ..., incomplete_dropped: _Optional[int] = ..., catalog: _Optional[str] = ..., current: _Optional[str] = ..., finished: _Optional[bool] = ..., stopped: _Optional[bool] = ...) -> None: ...

class ListOriginsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OriginInfo(_message.Message):
    __slots__ = ("id", "type", "location", "priority", "max_requests", "bandwidth", "timeout_seconds", "online", "tracks")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    location: str
    priority: int
    max_requests: int
    bandwidth: int
    timeout_seconds: float
    online: bool
    tracks: int
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., location: _Optional[str] = ..., priority: _Optional[int] = ..., max_requests: _Optional[int] = ..., bandwidth: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., online: _Optional[bool] = ..., tracks: _Optional[int] = ...) -> None: ...

class OriginList(_message.Message):
    __slots__ = ("origins",)
    ORIGINS_FIELD_NUMBER: _ClassVar[int]
    origins: _containers.RepeatedCompositeFieldContainer[OriginInfo]
    def __init__(self, origins: _Optional[_Iterable[_Union[OriginInfo, _Mapping]]] = ...) -> None: ...

class GetOriginHealthRequest(_message.Message):
    __slots__ = ("origin",)
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    origin: str
    def __init__(self, origin: _Optional[str] = ...) -> None: ...

class OriginHealth(_message.Message):
    __slots__ = ("origin", "online", "failures", "last_error", "changed_at", "latency_ms", "next_check_in", "last_scan")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CHECK_IN_FIELD_NUMBER: _ClassVar[int]
    LAST_SCAN_FIELD_NUMBER: _ClassVar[int]
    origin: str
    online: bool
    failures: int
    last_error: str
    changed_at: float
    latency_ms: float
    next_check_in: float
    last_scan: str
    def __init__(self, origin: _Optional[str] = ..., online: _Optional[bool] = ..., failures: _Optional[int] = ..., last_error: _Optional[str] = ..., changed_at: _Optional[float] = ..., latency_ms: _Optional[float] = ..., next_check_in: _Optional[float] = ..., last_scan: _Optional[str] = ...) -> None: ...

class RescanOriginRequest(_message.Message):
    __slots__ = ("origin",)
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    origin: str
    def __init__(self, origin: _Optional[str] = ...) -> None: ...

class RescanProgress(_message.Message):
    __slots__ = ("origin", "seen", "added", "changed", "removed", "unreadable", "finished", "complete", "error", "forwarded")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SEEN_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    UNREADABLE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FIELD_NUMBER: _ClassVar[int]
    origin: str
    seen: int
    added: int
    changed: int
    removed: int
    unreadable: int
    finished: bool
    complete: bool
    error: str
    forwarded: str
    def __init__(self, origin: _Optional[str] = ..., seen: _Optional[int] = ..., added: _Optional[int] = ..., changed: _Optional[int] = ..., removed: _Optional[int] = ..., unreadable: _Optional[int] = ..., finished: _Optional[bool] = ..., complete: _Optional[bool] = ..., error: _Optional[str] = ..., forwarded: _Optional[str] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetConfigRequest(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ConfigValues(_message.Message):
    __slots__ = ("values", "settable")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SETTABLE_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, str]
    settable: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Mapping[str, str]] = ..., settable: _Optional[_Iterable[str]] = ...) -> None: ...

class OpLatency(_message.Message):
    __slots__ = ("op", "count", "p50_ms", "p95_ms", "p99_ms")
    OP_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    op: str
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    def __init__(self, op: _Optional[str] = ..., count: _Optional[int] = ..., p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query", "limit")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    query: str
    limit: int
    def __init__(self, query: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("path", "origin", "relpath", "artist", "album", "title", "score")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    RELPATH_FIELD_NUMBER: _ClassVar[int]
    ARTIST_FIELD_NUMBER: _ClassVar[int]
    ALBUM_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    path: str
    origin: str
    relpath: str
    artist: str
    album: str
    title: str
    score: float
    def __init__(self, path: _Optional[str] = ..., origin: _Optional[str] = ..., relpath: _Optional[str] = ..., artist: _Optional[str] = ..., album: _Optional[str] = ..., title: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "seconds")
    HITS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    seconds: float
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., seconds: _Optional[float] = ...) -> None: ...

class PinTracksRequest(_message.Message):
    __slots__ = ("paths", "collections", "searches", "wait", "import_label")
    PATHS_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    IMPORT_LABEL_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[str]
    collections: _containers.RepeatedScalarFieldContainer[str]
    searches: _containers.RepeatedScalarFieldContainer[str]
    wait: bool
    import_label: str
    def __init__(self, paths: _Optional[_Iterable[str]] = ..., collections: _Optional[_Iterable[str]] = ..., searches: _Optional[_Iterable[str]] = ..., wait: _Optional[bool] = ..., import_label: _Optional[str] = ...) -> None: ...

class PinProgress(_message.Message):
    __slots__ = ("tracks", "bytes", "pinned_tracks", "pinned_bytes", "pin_limit", "files", "done", "copied_bytes", "already_cached", "failed", "current", "finished")
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    PINNED_TRACKS_FIELD_NUMBER: _ClassVar[int]
    PINNED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PIN_LIMIT_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    COPIED_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALREADY_CACHED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    tracks: int
    bytes: int
    pinned_tracks: int
    pinned_bytes: int
    pin_limit: int
    files: int
    done: int
    copied_bytes: int
    already_cached: int
    failed: _containers.RepeatedScalarFieldContainer[str]
    current: str
    finished: bool
    def __init__(self, tracks: _Optional[int] = ..., bytes: _Optional[int] = ..., pinned_tracks: _Optional[int] = ..., pinned_bytes: _Optional[int] = ..., pin_limit: _Optional[int] = ..., files: _Optional[int] = ..., done: _Optional[int] = ..., copied_bytes: _Optional[int] = ..., already_cached: _Optional[int] = ..., failed: _Optional[_Iterable[str]] = ..., current: _Optional[str] = ..., finished: _Optional[bool] = ...) -> None: ...

class UnpinTracksRequest(_message.Message):
    __slots__ = ("paths", "collections", "searches", "all")
    PATHS_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[str]
    collections: _containers.RepeatedScalarFieldContainer[str]
    searches: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, paths: _Optional[_Iterable[str]] = ..., collections: _Optional[_Iterable[str]] = ..., searches: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ...) -> None: ...

class UnpinTracksResponse(_message.Message):
    __slots__ = ("requests", "tracks_unpinned", "pinned_tracks")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TRACKS_UNPINNED_FIELD_NUMBER: _ClassVar[int]
    PINNED_TRACKS_FIELD_NUMBER: _ClassVar[int]
    requests: int
    tracks_unpinned: int
    pinned_tracks: int
    def __init__(self, requests: _Optional[int] = ..., tracks_unpinned: _Optional[int] = ..., pinned_tracks: _Optional[int] = ...) -> None: ...

class ListPinsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Pin(_message.Message):
    __slots__ = ("kind", "value", "pinned_at", "tracks", "bytes", "present_tracks", "present_bytes")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PINNED_AT_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    PRESENT_TRACKS_FIELD_NUMBER: _ClassVar[int]
    PRESENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    kind: str
    value: str
    pinned_at: float
    tracks: int
    bytes: int
    present_tracks: int
    present_bytes: int
    def __init__(self, kind: _Optional[str] = ..., value: _Optional[str] = ..., pinned_at: _Optional[float] = ..., tracks: _Optional[int] = ..., bytes: _Optional[int] = ..., present_tracks: _Optional[int] = ..., present_bytes: _Optional[int] = ...) -> None: ...

class PinList(_message.Message):
    __slots__ = ("pins", "tracks", "bytes", "present_tracks", "present_bytes", "pin_limit")
    PINS_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    PRESENT_TRACKS_FIELD_NUMBER: _ClassVar[int]
    PRESENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    PIN_LIMIT_FIELD_NUMBER: _ClassVar[int]
    pins: _containers.RepeatedCompositeFieldContainer[Pin]
    tracks: int
    bytes: int
    present_tracks: int
    present_bytes: int
    pin_limit: int
    def __init__(self, pins: _Optional[_Iterable[_Union[Pin, _Mapping]]] = ..., tracks: _Optional[int] = ..., bytes: _Optional[int] = ..., present_tracks: _Optional[int] = ..., present_bytes: _Optional[int] = ..., pin_limit: _Optional[int] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetCollectionRequest(_message.Message):
    __slots__ = ("name", "rule", "remove")
    class RuleEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    rule: _containers.ScalarMap[str, str]
    remove: bool
    def __init__(self, name: _Optional[str] = ..., rule: _Optional[_Mapping[str, str]] = ..., remove: _Optional[bool] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "source", "rule")
    class RuleEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: str
    rule: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., source: _Optional[str] = ..., rule: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CollectionList(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class Rating(_message.Message):
    __slots__ = ("path", "file_id", "value")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    path: str
    file_id: int
    value: int
    def __init__(self, path: _Optional[str] = ..., file_id: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...

class SetRatingsRequest(_message.Message):
    __slots__ = ("ratings", "source")
    RATINGS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ratings: _containers.RepeatedCompositeFieldContainer[Rating]
    source: str
    def __init__(self, ratings: _Optional[_Iterable[_Union[Rating, _Mapping]]] = ..., source: _Optional[str] = ...) -> None: ...

class SetRatingsResponse(_message.Message):
    __slots__ = ("rated",)
    RATED_FIELD_NUMBER: _ClassVar[int]
    rated: int
    def __init__(self, rated: _Optional[int] = ...) -> None: ...

class PlayCount(_message.Message):
    __slots__ = ("file_id", "count", "last_played")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_PLAYED_FIELD_NUMBER: _ClassVar[int]
    file_id: int
    count: int
    last_played: float
    def __init__(self, file_id: _Optional[int] = ..., count: _Optional[int] = ..., last_played: _Optional[float] = ...) -> None: ...

class AddPlaysRequest(_message.Message):
    __slots__ = ("plays", "source")
    PLAYS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    plays: _containers.RepeatedCompositeFieldContainer[PlayCount]
    source: str
    def __init__(self, plays: _Optional[_Iterable[_Union[PlayCount, _Mapping]]] = ..., source: _Optional[str] = ...) -> None: ...

class AddPlaysResponse(_message.Message):
    __slots__ = ("added",)
    class AddedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    ADDED_FIELD_NUMBER: _ClassVar[int]
    added: _containers.ScalarMap[int, int]
    def __init__(self, added: _Optional[_Mapping[int, int]] = ...) -> None: ...

class PlaylistEntry(_message.Message):
    __slots__ = ("file_id", "text")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    file_id: int
    text: str
    def __init__(self, file_id: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class Playlist(_message.Message):
    __slots__ = ("name", "entries")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    entries: _containers.RepeatedCompositeFieldContainer[PlaylistEntry]
    def __init__(self, name: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[PlaylistEntry, _Mapping]]] = ...) -> None: ...

class SetPlaylistsRequest(_message.Message):
    __slots__ = ("playlists", "source")
    PLAYLISTS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    playlists: _containers.RepeatedCompositeFieldContainer[Playlist]
    source: str
    def __init__(self, playlists: _Optional[_Iterable[_Union[Playlist, _Mapping]]] = ..., source: _Optional[str] = ...) -> None: ...

class SetPlaylistsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
