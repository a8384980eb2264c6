"""The guest ABI of WASM plugins: what a guest module must export, may import,
and returns, and the load-time checks of a module against it.

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

Boundaries: constants and checks of modules and values; running a guest is
`musicfs.plugins.wasm_guest`, loading one `musicfs.plugins.wasm`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from wasmtime import FuncType, MemoryType, Module, ValType

from musicfs.core.model import TrackTags
from musicfs.plugins.api import PluginError
from musicfs.plugins.version import API_VERSION, IncompatiblePlugin, check_api_version

#: The guest ABI version: the major of `API_VERSION`.
ABI_VERSION = int(API_VERSION.split(".")[0])

MIB = 1 << 20
#: How much of a file ``parse`` gets by default.
DEFAULT_MAX_INPUT_BYTES = 16 * MIB
#: The most ``max_input_bytes`` may be (lengths are i32 in the ABI).
MAX_INPUT_BYTES_LIMIT = 1 << 30
#: The largest result the host accepts from a guest.
MAX_RESULT_BYTES = 4 * MIB
#: ``musicfs.log``: longest message kept, and messages per call.
MAX_LOG_BYTES = 1024
MAX_LOGS_PER_CALL = 100
#: Table elements per store (8 bytes each) - bounds memory outside linear memory.
MAX_TABLE_ELEMENTS = 1 << 16

HOST_MODULE = "musicfs"
WASI_MODULE = "wasi_snapshot_preview1"

I32 = ValType.i32()
I64 = ValType.i64()
#: The host functions a guest may import from `HOST_MODULE`: name -> (params, results).
ALLOWED_HOST_IMPORTS: Mapping[str, tuple[tuple[ValType, ...], tuple[ValType, ...]]] = {
    "log": ((I32, I32), ()),
}
#: The guest's exports the host uses: name -> (params, results).
EXPORT_TYPES: Mapping[str, tuple[tuple[ValType, ...], tuple[ValType, ...]]] = {
    "alloc": ((I32,), (I32,)),
    "dealloc": ((I32, I32), ()),
    "manifest": ((), (I64,)),
    "init": ((I32, I32), (I64,)),
    "parse": ((I32, I32), (I64,)),
    "lookup": ((I32, I32), (I64,)),
}
KIND_EXPORTS = {"format": "parse", "metadata": "lookup"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclasses.dataclass(frozen=True, slots=True)
class Manifest:
    """Who a guest says it is (its ``manifest()``), checked."""

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


TAG_TYPES = _tag_types()


def check_value(value: Any, allowed: tuple[type, ...]) -> bool:
    """Whether the JSON *value* a guest returned fits a field of types *allowed*."""
    if value is None:
        return types.NoneType in allowed
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    if isinstance(value, float):
        return float in allowed
    return isinstance(value, str) and str in allowed


def check_imports(module: Module, where: str, allow_filesystem: bool) -> None:
    """Refuse (`PluginError`) a module importing anything the host does not give it."""
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
                raise PluginError(f"{where} imports {name}: WASM plugins have no network access")
            if not allow_filesystem:
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


def check_exports(module: Module, where: str) -> frozenset[str]:
    """The ABI exports *module* has, their types checked; `PluginError` if one
    is mistyped or a required one is missing."""
    found: set[str] = set()
    memory = False
    for exp in module.exports:
        ty = exp.type
        if exp.name == "memory":
            memory = isinstance(ty, MemoryType)
        elif exp.name is not None and exp.name in EXPORT_TYPES:
            want = EXPORT_TYPES[exp.name]
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


def parse_manifest(raw: bytes | None, where: str) -> Manifest:
    """The checked manifest a guest's ``manifest()`` returned (*raw*)."""
    try:
        value = json.loads((raw or b"").decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PluginError(f"{where}: manifest() returned invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PluginError(f"{where}: manifest() did not return a JSON object")
    name, version, api = value.get("name"), value.get("version"), value.get("api_version")
    kinds, extensions = value.get("kinds"), value.get("extensions", [])
    if not isinstance(name, str) or not NAME.match(name):
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
        or not set(kinds) <= set(KIND_EXPORTS)
        or len(set(kinds)) != len(kinds)
    ):
        raise PluginError(
            f"{where}: manifest kinds {kinds!r} must be a non-empty list of "
            + " and/or ".join(repr(k) for k in KIND_EXPORTS)
        )
    if not isinstance(extensions, list) or not all(
        isinstance(e, str) and e.strip(".") for e in extensions
    ):
        raise PluginError(f"{where}: manifest extensions {extensions!r} are not strings")
    if "format" in kinds and not extensions:
        raise PluginError(f"{where}: a format plugin must list its extensions")
    return Manifest(
        name=name,
        version=version,
        api_version=api,
        kinds=tuple(k for k in KIND_EXPORTS if k in kinds),
        extensions=tuple(e.lower().lstrip(".") for e in extensions),
    )


def gist(exc: BaseException) -> str:
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
