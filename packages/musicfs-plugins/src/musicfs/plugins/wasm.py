"""The WASM plugin host: sandboxed format and metadata plugins run by wasmtime.

`WasmPluginHost(limits).load(path)` compiles a ``.wasm`` binary or a ``.wat``
text module, checks what it imports and exports, asks it who it is and returns
a `FormatPlugin` and/or `MetadataPlugin` object that the rest of MusicFS uses
like a native plugin. Every call into the guest runs under the host's
`ResourceLimits`; a guest that loops, exhausts its memory or traps raises
`PluginError` naming the plugin, and the plugin stays usable.

Guest ABI, version 1 (= the major of `API_VERSION`)
===================================================

The full text, with examples, is ``docs/plugins-wasm.md``. In short:

Versioning
    The ABI version is the major of `API_VERSION`; a guest states the full
    ``MAJOR.MINOR`` it was written for in its manifest. Within a major, later
    minors only add optional exports and imports; a guest needing one declares
    that minor, and older hosts refuse it by the version check.

Values
    Guests are wasm32 modules (no threads, shared memory or memory64). Byte
    buffers are ``(ptr, len)`` pairs in the guest's exported memory. A
    *result* is an ``i64`` packing ``ptr << 32 | len`` (the host masks it to
    64 unsigned bits, so ``ptr`` may use all 32 bits); ``len == 0`` means "no
    result". Results are UTF-8 JSON.
    A result belongs to the guest and only has to stay valid until the host
    calls into the guest again.

Required exports
    ``memory``
        the guest's linear memory (exactly one, 32-bit).
    ``alloc(len: i32) -> i32``
        a buffer of *len* bytes the host writes the input of the next call
        into; 0 if the guest cannot allocate it. The host calls it once before
        each ``parse``/``lookup``/``init`` and does not use the buffer after
        that call returns, so a guest may reuse one region for every call.
    ``manifest() -> i64``
        a JSON object: ``{"name": str ([A-Za-z0-9][A-Za-z0-9_.-]*, at most
        64), "version": str, "api_version":
        "MAJOR.MINOR", "kinds": ["format" and/or "metadata"], "extensions":
        [str, ...]}`` (``extensions``: for format plugins, lower case, no dot).
        ``api_version`` goes through `check_api_version`: same major as the
        host's `API_VERSION`, minor not newer.

Calls (each takes ``(ptr: i32, len: i32)`` of its input and returns a result)
    ``parse`` (kind ``format``)
        input: the file's first bytes, at most ``max_input_bytes`` (default
        16 MiB; a bigger file is cut there, so formats must keep their tags
        near the start). Result: a JSON object of `TrackTags` fields
        (``title``... strings, ``year``/``track``/``tracktotal``/``disc``/
        ``disctotal``/``bitrate``/``samplerate``/``channels`` integers,
        ``duration`` a number, ``compilation``/``has_art`` booleans; absent or
        null = unknown; unknown keys are ignored).
    ``lookup`` (kind ``metadata``)
        input: ``{"origin", "relpath", "format", "tags": {TrackTags fields}}``.
        Result: ``{"fields": {field: str}, "source": str, "confidence":
        0..1}`` (numbers in ``fields`` are turned into strings), or no result,
        ``null`` or empty ``fields`` when the guest knows nothing.
    ``init`` (optional)
        input: the plugin's ``[plugins.<name>]`` config table as JSON; result
        ignored unless it is an error. Replayed (result ignored) whenever the
        instance is rebuilt.
    ``dealloc(ptr: i32, len: i32)`` (optional)
        called with the input buffer after each call.

    Any call may return ``{"error": "message"}``: the host raises `PluginError`
    with the message (for ``parse``: "not a file of this format").

Input size
    ``parse`` input is capped by ``max_input_bytes`` (above); inputs must also
    fit the guest's memory limit, or ``alloc`` fails and the call raises
    `PluginError`. Results are capped at 4 MiB.

Imports a guest may have (anything else is refused at load)
    ``musicfs.log(ptr: i32, len: i32)``
        log a UTF-8 message (cut at 1 KiB; at most 100 per call).
    ``wasi_snapshot_preview1.*`` except ``sock_*``
        only with ``ResourceLimits.allow_filesystem``; the guest then gets no
        args, no environment, no stdio and only the host's ``preopen_dirs``,
        read-only. Without it a guest importing WASI is refused at load.

Limits, per call (``init``, ``parse``, ``lookup`` with their ``alloc`` and
``dealloc``; also instantiation with its start function, and ``manifest``)
    CPU
        epoch interruption: the call is interrupted once it has run for
        ``max_cpu_time_ms`` of wall-clock time (so it never gets more CPU than
        that); a `PluginError` names the plugin and the limit.
    Memory
        the guest's linear memory is capped at ``max_memory_mb`` (allocated by
        the host, `musicfs.plugins.wasm_memory`): ``memory.grow`` past it
        returns -1, and a trap in a call where that happened is reported as
        the memory limit exceeded; a module whose initial memory is larger
        fails to load.
    Filesystem
        see the imports above.
    Network
        never: wasmtime-py's WASI has no way to give a guest a socket, so
        ``allow_network`` grants nothing (the host logs a warning) and guests
        importing ``sock_*`` are refused.

After a trap (CPU limit, out-of-bounds access, ``unreachable``...) the host
drops the guest's store and instantiates the module afresh for the next call,
so a failed call never leaves half-updated guest state behind. Each plugin has
its own engine and store; calls into one plugin are serialised by a lock.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
import logging
import os
import re
import threading
import time
import types
import typing
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from wasmtime import (
    Caller,
    Config,
    Engine,
    ExitTrap,
    Func,
    FuncType,
    Instance,
    Linker,
    Memory,
    MemoryType,
    Module,
    Store,
    Trap,
    TrapCode,
    ValType,
    WasiConfig,
    WasmtimeError,
)

from musicfs.core.model import TrackTags
from musicfs.plugins.api import (
    AudioMeta,
    ExternalMetadata,
    FormatPlugin,
    MetadataPlugin,
    MetadataQuery,
    Plugin,
    PluginError,
    PluginInfo,
    ResourceLimits,
)
from musicfs.plugins.version import API_VERSION, IncompatiblePlugin, check_api_version
from musicfs.plugins.wasm_memory import MemoryCap, install_memory_creator

__all__ = [
    "ABI_VERSION",
    "ALLOWED_HOST_IMPORTS",
    "DEFAULT_MAX_INPUT_BYTES",
    "WasmFormatPlugin",
    "WasmMetadataPlugin",
    "WasmPlugin",
    "WasmPluginHost",
]

log = logging.getLogger(__name__)

#: The guest ABI version: the major of `API_VERSION`.
ABI_VERSION = int(API_VERSION.split(".")[0])

_MIB = 1 << 20
#: How much of a file ``parse`` gets by default.
DEFAULT_MAX_INPUT_BYTES = 16 * _MIB
#: The most ``max_input_bytes`` may be (lengths are i32 in the ABI).
MAX_INPUT_BYTES_LIMIT = 1 << 30
#: The largest result the host accepts from a guest.
MAX_RESULT_BYTES = 4 * _MIB
#: ``musicfs.log``: longest message kept, and messages per call.
MAX_LOG_BYTES = 1024
MAX_LOGS_PER_CALL = 100
#: Table elements per store (8 bytes each) - bounds memory outside linear memory.
MAX_TABLE_ELEMENTS = 1 << 16

HOST_MODULE = "musicfs"
WASI_MODULE = "wasi_snapshot_preview1"

_I32 = ValType.i32()
_I64 = ValType.i64()
#: The host functions a guest may import from `HOST_MODULE`: name -> (params, results).
ALLOWED_HOST_IMPORTS: Mapping[str, tuple[tuple[ValType, ...], tuple[ValType, ...]]] = {
    "log": ((_I32, _I32), ()),
}
#: The guest's exports the host uses: name -> (params, results).
_EXPORT_TYPES: Mapping[str, tuple[tuple[ValType, ...], tuple[ValType, ...]]] = {
    "alloc": ((_I32,), (_I32,)),
    "dealloc": ((_I32, _I32), ()),
    "manifest": ((), (_I64,)),
    "init": ((_I32, _I32), (_I64,)),
    "parse": ((_I32, _I32), (_I64,)),
    "lookup": ((_I32, _I32), (_I64,)),
}
_KIND_EXPORTS = {"format": "parse", "metadata": "lookup"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Watchdog:
    """One thread that bumps an engine's epoch when a call's time is up.

    Each plugin has its own engine and a store deadline of one tick, so a bump
    interrupts exactly the call that armed it. A bump that lands just after
    the call ended is harmless: the next call sets its deadline afresh.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Engine]] = []
        self._armed: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, engine: Engine, seconds: float) -> int:
        with self._cond:
            token = next(self._tokens)
            heapq.heappush(self._heap, (time.monotonic() + seconds, token, engine))
            self._armed.add(token)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="musicfs-wasm-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.discard(token)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token, engine = self._heap[0]
                now = time.monotonic()
                if deadline > now:
                    self._cond.wait(deadline - now)
                    continue
                heapq.heappop(self._heap)
                self._armed.discard(token)
                engine.increment_epoch()


_WATCHDOG = _Watchdog()


@dataclasses.dataclass(frozen=True, slots=True)
class _Manifest:
    name: str
    version: str
    api_version: str
    kinds: tuple[str, ...]
    extensions: tuple[str, ...]


def _tag_types() -> dict[str, tuple[type, ...]]:
    """TrackTags field -> the JSON value types it accepts (NoneType: may be null)."""
    hints = typing.get_type_hints(TrackTags)
    return {
        f.name: typing.get_args(hints[f.name]) or (hints[f.name],)
        for f in dataclasses.fields(TrackTags)
    }


_TAG_TYPES = _tag_types()


def _check_value(value: Any, allowed: tuple[type, ...]) -> bool:
    if value is None:
        return types.NoneType in allowed
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    if isinstance(value, float):
        return float in allowed
    return isinstance(value, str) and str in allowed


class _Guest:
    """One compiled guest module and its current instance, under the limits."""

    def __init__(
        self,
        host: WasmPluginHost,
        path: Path,
        *,
        engine: Engine,
        module: Module,
        linker: Linker,
        exports: frozenset[str],
        memory_cap: MemoryCap,
    ) -> None:
        self.host = host
        self.memory_cap = memory_cap
        self.path = path
        self.label = f"WASM plugin {str(path)!r}"  # becomes the name once known
        self.engine = engine
        self.module = module
        self.linker = linker
        self.module_exports = exports
        self.lock = threading.Lock()
        self.closed = False
        self.config_json: bytes | None = None
        self._store: Store | None = None
        self._exports: dict[str, Func] = {}
        self._memory: Memory | None = None
        self._logs = 0

    # -- instance lifecycle ------------------------------------------------

    def _instantiate(self) -> None:
        limits = self.host.limits
        store = Store(self.engine)
        # Linear memory is capped by the engine's memory creator (wasm_memory),
        # which records a refused memory.grow; a store limit would hide it.
        store.set_limits(
            table_elements=MAX_TABLE_ELEMENTS,
            instances=1,
            tables=4,
            memories=1,
        )
        if limits.allow_filesystem:
            wasi = WasiConfig()  # no args, env or stdio
            for guest_path, host_path in self.host.preopen_dirs.items():
                wasi.preopen_dir(str(host_path), guest_path, fs_mutable=False)
            store.set_wasi(wasi)
        self._store = store
        with self._limited("instantiation"):
            instance: Instance = self.linker.instantiate(store, self.module)
            exports = instance.exports(store)
            memory = exports["memory"]
            if not isinstance(memory, Memory):  # checked at load; keeps mypy honest
                raise PluginError(f"{self.label} exports no memory")
            self._memory = memory
            self._exports = {
                name: func for name in _EXPORT_TYPES if isinstance(func := exports.get(name), Func)
            }
            if self.config_json is not None and "init" in self._exports:
                self._call_json("init", self.config_json)  # replayed; result ignored

    def discard(self) -> None:
        """Forget the instance; the next call instantiates the module afresh."""
        self._store = None
        self._memory = None
        self._exports = {}

    def close(self) -> None:
        with self.lock:
            self.discard()
            self.closed = True

    # -- calls -------------------------------------------------------------

    def call(self, export: str, payload: bytes | None) -> bytes | None:
        """Call *export* with *payload* (None: no input) under the limits.

        Returns the result's bytes, or None for "no result"; raises
        `PluginError` for a guest error, a trap or a limit.
        """
        with self.lock:
            if self.closed:
                raise PluginError(f"{self.label} has been shut down")
            if self._store is None:
                try:
                    self._instantiate()
                except BaseException:
                    self.discard()
                    raise
            with self._limited(export):
                return self._call_json(export, payload)

    @contextmanager
    def _limited(self, what: str) -> Iterator[None]:
        """Run guest code for *what* under the CPU limit, translating its failures.

        A trap or a wasmtime error discards the instance (see `discard`).
        """
        store = self._store
        assert store is not None
        limits = self.host.limits
        self._logs = 0
        self.memory_cap.refused = None
        store.set_epoch_deadline(1)
        token = _WATCHDOG.arm(self.engine, limits.max_cpu_time_ms / 1000)
        try:
            yield
        except Trap as exc:
            note = self._memory_note()
            self.discard()
            if exc.trap_code == TrapCode.INTERRUPT:
                raise PluginError(
                    f"{self.label} exceeded its CPU time limit (max_cpu_time_ms="
                    f"{limits.max_cpu_time_ms}) in {what} and was stopped"
                ) from None
            if self.memory_cap.refused is not None:
                raise PluginError(self._over_memory(what, f"then trapped: {_gist(exc)}")) from None
            raise PluginError(f"{self.label} trapped in {what}: {_gist(exc)}{note}") from None
        except ExitTrap as exc:
            self.discard()
            raise PluginError(f"{self.label} exited in {what} (status {exc.code})") from None
        except WasmtimeError as exc:
            note = self._memory_note()
            self.discard()
            if self.memory_cap.refused is not None:
                raise PluginError(self._over_memory(what, f"then failed: {_gist(exc)}")) from None
            raise PluginError(f"{self.label} failed in {what}: {_gist(exc)}{note}") from None
        finally:
            _WATCHDOG.disarm(token)

    def _memory_note(self) -> str:
        if self._store is None or self._memory is None:
            return f" (memory limit max_memory_mb={self.host.limits.max_memory_mb})"
        return ""

    def _over_memory(self, what: str, then: str) -> str:
        """The error for a call during which the memory cap refused a growth."""
        wanted = self.memory_cap.refused or 0
        return (
            f"{self.label} exceeded its memory limit (max_memory_mb="
            f"{self.host.limits.max_memory_mb}) in {what}: its memory was refused growth "
            f"to {wanted / _MIB:.1f} MiB, and it {then}"
        )

    def _call_json(self, export: str, payload: bytes | None) -> bytes | None:
        store, memory = self._store, self._memory
        assert store is not None
        assert memory is not None
        func = self._exports[export]
        if payload is None:
            packed = func(store)
        else:
            ptr = self._alloc(store, memory, len(payload))
            if payload:
                memory.write(store, payload, ptr)
            packed = func(store, ptr, len(payload))
            if (dealloc := self._exports.get("dealloc")) is not None:
                dealloc(store, ptr, len(payload))
        packed = int(packed) & 0xFFFF_FFFF_FFFF_FFFF
        ptr, length = packed >> 32, packed & 0xFFFF_FFFF
        if length == 0:
            return None
        if length > MAX_RESULT_BYTES:
            raise PluginError(
                f"{self.label}: {export} returned {length} bytes, more than the "
                f"{MAX_RESULT_BYTES} a result may have"
            )
        if ptr + length > memory.data_len(store):
            raise PluginError(
                f"{self.label}: {export} returned a result outside its memory "
                f"(ptr={ptr}, len={length})"
            )
        return bytes(memory.read(store, ptr, ptr + length))

    def _alloc(self, store: Store, memory: Memory, length: int) -> int:
        ptr = int(self._exports["alloc"](store, length)) & 0xFFFF_FFFF
        if ptr == 0 or ptr + length > memory.data_len(store):
            raise PluginError(
                f"{self.label} could not allocate {length} bytes for its input "
                f"(memory limit max_memory_mb={self.host.limits.max_memory_mb})"
            )
        return ptr

    def host_log(self, caller: Caller, ptr: int, length: int) -> None:
        """``musicfs.log(ptr, len)``: log a message from the guest."""
        self._logs += 1
        if self._logs > MAX_LOGS_PER_CALL:
            return
        memory = caller.get("memory")
        if not isinstance(memory, Memory):
            return
        ptr &= 0xFFFF_FFFF
        length = min(length & 0xFFFF_FFFF, MAX_LOG_BYTES)
        data = memory.read(caller, ptr, min(ptr + length, memory.data_len(caller)))
        log.info("%s: %s", self.label, data.decode("utf-8", "replace"))


class WasmPlugin(Plugin):
    """What the WASM host's plugins share: the guest they call into."""

    #: The loaded module's kinds ("format", "metadata").
    kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, guest: _Guest) -> None:
        self._guest = guest

    @property
    def source(self) -> Path:
        """The ``.wasm``/``.wat`` file the plugin was loaded from."""
        return self._guest.path

    def info(self) -> PluginInfo:
        details = {"extensions": ",".join(getattr(self, "extensions", ()))}
        return PluginInfo(
            name=self.name,
            version=self.version,
            api_version=self.api_version,
            kinds=self.kinds,
            host="wasm",
            source=str(self.source),
            details={k: v for k, v in details.items() if v},
        )

    def init(self, config: Mapping[str, Any]) -> None:
        config_json = json.dumps(dict(config), default=str).encode()
        self._guest.config_json = config_json
        if "init" in self._guest.module_exports:
            self._result("init", config_json)

    def shutdown(self) -> None:
        self._guest.close()

    def _result(self, export: str, payload: bytes | None) -> Any:
        """The JSON result of *export* (None for no result); raises on ``{"error"}``."""
        raw = self._guest.call(export, payload)
        if raw is None:
            return None
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise PluginError(
                f"WASM plugin {self.name!r}: {export} returned invalid JSON: {exc}"
            ) from None
        if isinstance(value, dict) and "error" in value:
            raise PluginError(f"WASM plugin {self.name!r}: {export}: {value['error']}")
        return value


class WasmFormatPlugin(WasmPlugin, FormatPlugin):
    """A format plugin whose ``parse`` runs in a WASM guest."""

    def parse(self, reader: BinaryIO) -> AudioMeta:
        reader.seek(0)
        data = reader.read(self._guest.host.max_input_bytes)
        value = self._result("parse", bytes(data))
        if not isinstance(value, dict):
            raise PluginError(f"WASM plugin {self.name!r}: parse returned no tag object")
        tags: dict[str, Any] = {}
        for key, item in value.items():
            allowed = _TAG_TYPES.get(key)
            if allowed is None:
                continue  # a field from a newer API minor
            if not _check_value(item, allowed):
                raise PluginError(
                    f"WASM plugin {self.name!r}: parse returned {key}={item!r}, "
                    f"which is not a {'/'.join(t.__name__ for t in allowed)}"
                )
            tags[key] = float(item) if float in allowed and isinstance(item, int) else item
        return TrackTags(**tags)


class WasmMetadataPlugin(WasmPlugin, MetadataPlugin):
    """A metadata plugin whose ``lookup`` runs in a WASM guest."""

    def lookup(self, query: MetadataQuery) -> ExternalMetadata | None:
        payload = json.dumps(
            {
                "origin": query.origin,
                "relpath": query.relpath,
                "format": query.format,
                "tags": dataclasses.asdict(query.tags),
            }
        ).encode()
        value = self._result("lookup", payload)
        if value is None:
            return None
        bad = f"WASM plugin {self.name!r}: lookup returned"
        if not isinstance(value, dict) or not isinstance(value.get("fields", {}), dict):
            raise PluginError(f"{bad} {value!r}, not {{fields, source, confidence}}")
        fields: dict[str, str] = {}
        for key, item in value.get("fields", {}).items():
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise PluginError(f"{bad} field {key}={item!r}, not a string")
            fields[str(key)] = str(item)
        source = value.get("source", "")
        confidence = value.get("confidence", 1.0)
        if not isinstance(source, str):
            raise PluginError(f"{bad} source={source!r}, not a string")
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            raise PluginError(f"{bad} confidence={confidence!r}, not a number")
        if not fields:
            return None
        return ExternalMetadata(
            fields=fields, source=source, confidence=min(1.0, max(0.0, float(confidence)))
        )


class WasmFormatMetadataPlugin(WasmFormatPlugin, WasmMetadataPlugin):
    """A guest that declares both kinds."""


_BASES: Mapping[frozenset[str], type[WasmPlugin]] = {
    frozenset({"format"}): WasmFormatPlugin,
    frozenset({"metadata"}): WasmMetadataPlugin,
    frozenset({"format", "metadata"}): WasmFormatMetadataPlugin,
}


class WasmPluginHost:
    """Loads WASM plugins and runs them under *limits* (SPEC §8).

    *max_input_bytes*: how much of a file ``parse`` receives. *preopen_dirs*
    (guest path -> host directory) are the only directories a guest sees, read
    only, and only when ``limits.allow_filesystem`` is set.
    """

    def __init__(
        self,
        limits: ResourceLimits | None = None,
        *,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        preopen_dirs: Mapping[str, str | os.PathLike[str]] | None = None,
    ) -> None:
        self.limits = limits or ResourceLimits()
        if self.limits.max_cpu_time_ms <= 0 or self.limits.max_memory_mb <= 0:
            raise ValueError(f"resource limits must be positive: {self.limits}")
        if not 0 < max_input_bytes <= MAX_INPUT_BYTES_LIMIT:
            raise ValueError(f"max_input_bytes must be in 1..{MAX_INPUT_BYTES_LIMIT}")
        self.max_input_bytes = max_input_bytes
        self.preopen_dirs = dict(preopen_dirs or {})
        if self.preopen_dirs and not self.limits.allow_filesystem:
            raise ValueError("preopen_dirs needs ResourceLimits(allow_filesystem=True)")
        if self.limits.allow_network:
            log.warning("WASM plugins have no network API: allow_network grants nothing")

    def load(self, path: str | os.PathLike[str]) -> WasmPlugin:
        """Compile, check and instantiate the module at *path*; raise `PluginError`
        (naming the file) if it cannot be used."""
        path = Path(path)
        where = f"WASM plugin {str(path)!r}"
        memory_cap = MemoryCap(self.limits.max_memory_mb * _MIB)
        engine = Engine(self._config(memory_cap))
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise PluginError(f"{where}: cannot read it: {exc}") from None
        try:
            if path.suffix == ".wat":
                module = Module(engine, raw.decode("utf-8"))
            elif raw[:4] != b"\0asm":
                raise PluginError(f"{where} is not a WebAssembly binary (no \\0asm header)")
            else:
                module = Module(engine, raw)
        except (WasmtimeError, UnicodeDecodeError) as exc:
            raise PluginError(f"{where} is not a valid module: {_gist(exc)}") from None

        self._check_imports(module, where)
        exports = self._check_exports(module, where)
        linker = Linker(engine)
        guest = _Guest(
            self, path, engine=engine, module=module, linker=linker, exports=exports,
            memory_cap=memory_cap,
        )  # fmt: skip
        # wasmtime-py keeps host functions in a global table: hold the guest weakly,
        # or it and its engine would never be freed.
        guest_ref = weakref.ref(guest)

        def host_log(caller: Caller, ptr: int, length: int) -> None:
            if (alive := guest_ref()) is not None:
                alive.host_log(caller, ptr, length)

        linker.define_func(
            HOST_MODULE, "log", FuncType([_I32, _I32], []), host_log, access_caller=True
        )
        if self.limits.allow_filesystem:
            linker.define_wasi()

        manifest = self._manifest(guest, where)
        guest.label = f"WASM plugin {manifest.name!r}"
        for kind in manifest.kinds:
            if _KIND_EXPORTS[kind] not in exports:
                raise PluginError(
                    f"{guest.label} ({path}) declares kind {kind!r} but exports no "
                    f"{_KIND_EXPORTS[kind]!r} function"
                )
        attrs: dict[str, Any] = {
            "name": manifest.name,
            "version": manifest.version,
            "api_version": manifest.api_version,
            "kinds": manifest.kinds,
            "__module__": __name__,
            "__doc__": f"WASM plugin {manifest.name!r} from {path}.",
        }
        if "format" in manifest.kinds:
            attrs["extensions"] = manifest.extensions
        base = _BASES[frozenset(manifest.kinds)]
        cls = type("Wasm_" + re.sub(r"\W", "_", manifest.name), (base,), attrs)
        plugin: WasmPlugin = cls(guest)
        return plugin

    # -- load-time checks ----------------------------------------------------

    @staticmethod
    def _config(memory_cap: MemoryCap) -> Config:
        config = Config()
        install_memory_creator(config, memory_cap)
        config.epoch_interruption = True
        config.wasm_threads = False  # no shared memories: they escape store limits
        config.shared_memory = False
        config.wasm_memory64 = False
        config.parallel_compilation = False  # the daemon's other work keeps its cores
        return config

    def _check_imports(self, module: Module, where: str) -> None:
        for imp in module.imports:
            field = imp.name or ""
            name = f"{imp.module}.{field}"
            ty = imp.type
            if imp.module == HOST_MODULE and field in ALLOWED_HOST_IMPORTS:
                want = ALLOWED_HOST_IMPORTS[field]
                if not isinstance(ty, FuncType) or (tuple(ty.params), tuple(ty.results)) != want:
                    raise PluginError(f"{where} imports {name} with the wrong type")
                continue
            if imp.module == WASI_MODULE:
                if field.startswith("sock_"):
                    raise PluginError(
                        f"{where} imports {name}: WASM plugins have no network access"
                    )
                if not self.limits.allow_filesystem:
                    raise PluginError(
                        f"{where} imports WASI function {name}, but filesystem access "
                        f"is not allowed (ResourceLimits.allow_filesystem=False)"
                    )
                if not isinstance(ty, FuncType):
                    raise PluginError(f"{where} imports {name}, which is not a function")
                continue
            allowed = ", ".join(f"{HOST_MODULE}.{n}" for n in ALLOWED_HOST_IMPORTS)
            raise PluginError(
                f"{where} imports {name}, which the host does not provide "
                f"(allowed: {allowed}; {WASI_MODULE}.* with allow_filesystem)"
            )

    @staticmethod
    def _check_exports(module: Module, where: str) -> frozenset[str]:
        found: set[str] = set()
        memory = False
        for exp in module.exports:
            ty = exp.type
            if exp.name == "memory":
                memory = isinstance(ty, MemoryType)
            elif exp.name is not None and exp.name in _EXPORT_TYPES:
                want = _EXPORT_TYPES[exp.name]
                if not isinstance(ty, FuncType) or (tuple(ty.params), tuple(ty.results)) != want:
                    params = ", ".join(str(t) for t in want[0])
                    results = ", ".join(str(t) for t in want[1]) or "nothing"
                    raise PluginError(
                        f"{where} exports {exp.name!r} with the wrong type "
                        f"(ABI {ABI_VERSION}: ({params}) -> {results})"
                    )
                found.add(exp.name)
        missing = [n for n in ("alloc", "manifest") if n not in found]
        if not memory:
            missing.insert(0, "memory")
        if missing:
            raise PluginError(
                f"{where} is not a MusicFS plugin (ABI {ABI_VERSION}): it does not export "
                + ", ".join(repr(n) for n in missing)
            )
        return frozenset(found)

    @staticmethod
    def _manifest(guest: _Guest, where: str) -> _Manifest:
        raw = guest.call("manifest", None)
        try:
            value = json.loads((raw or b"").decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise PluginError(f"{where}: manifest() returned invalid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise PluginError(f"{where}: manifest() did not return a JSON object")
        name, version, api = value.get("name"), value.get("version"), value.get("api_version")
        kinds, extensions = value.get("kinds"), value.get("extensions", [])
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(f"{where}: manifest name {name!r} is not a plugin name")
        if not isinstance(version, str) or not isinstance(api, str):
            raise PluginError(f"{where}: manifest needs string 'version' and 'api_version'")
        try:
            check_api_version(api, name)
        except IncompatiblePlugin as exc:
            raise PluginError(f"{where}: {exc}") from None
        if (
            not isinstance(kinds, list)
            or not kinds
            or not set(kinds) <= set(_KIND_EXPORTS)
            or len(set(kinds)) != len(kinds)
        ):
            raise PluginError(
                f"{where}: manifest kinds {kinds!r} must be a non-empty list of "
                + " and/or ".join(repr(k) for k in _KIND_EXPORTS)
            )
        if not isinstance(extensions, list) or not all(
            isinstance(e, str) and e.strip(".") for e in extensions
        ):
            raise PluginError(f"{where}: manifest extensions {extensions!r} are not strings")
        if "format" in kinds and not extensions:
            raise PluginError(f"{where}: a format plugin must list its extensions")
        return _Manifest(
            name=name,
            version=version,
            api_version=api,
            kinds=tuple(k for k in _KIND_EXPORTS if k in kinds),
            extensions=tuple(e.lower().lstrip(".") for e in extensions),
        )


def _gist(exc: BaseException) -> str:
    """The gist of a wasmtime message: its "Caused by" lines, without the backtrace."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if "Caused by:" in lines:
        causes = lines[lines.index("Caused by:") + 1 :]
        return "; ".join(re.sub(r"^(\d+: )?(wasm trap: )?", "", c) for c in causes)
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and lines[1].startswith("-->"):  # a WAT syntax error: where
        return f"{lines[0]} (at {lines[1].removeprefix('-->').strip()})"
    return lines[0]
