"""The WASM plugin host: sandboxed format and metadata plugins run by wasmtime.

`WasmPluginHost(limits).load(path)` compiles a ``.wasm`` binary or a ``.wat``
text module, checks what it imports and exports, asks it who it is and returns
a `FormatPlugin` and/or `MetadataPlugin` object that the rest of MusicFS uses
like a native plugin. Every call into the guest runs under the host's
`ResourceLimits`; a guest that loops, exhausts its memory or traps raises
`PluginError` naming the plugin, and the plugin stays usable.

The guest ABI (version 1 = the major of `API_VERSION`) and the load-time checks
are `musicfs.plugins.wasm_abi` (full text with examples: ``docs/plugins-wasm.md``);
running a guest under the limits is `musicfs.plugins.wasm_guest`. This module
loads a module and turns its calls' JSON into the plugin API's values. Each
plugin has its own engine and store; calls into one plugin are serialised.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from wasmtime import Caller, Config, Engine, FuncType, Linker, Module, WasmtimeError

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
from musicfs.plugins.wasm_abi import (
    DEFAULT_MAX_INPUT_BYTES,
    HOST_MODULE,
    I32,
    KIND_EXPORTS,
    MAX_INPUT_BYTES_LIMIT,
    MIB,
    TAG_TYPES,
    check_exports,
    check_imports,
    check_value,
    gist,
    parse_manifest,
)
from musicfs.plugins.wasm_guest import Guest
from musicfs.plugins.wasm_memory import MemoryCap, install_memory_creator

__all__ = [
    "WasmFormatPlugin",
    "WasmMetadataPlugin",
    "WasmPlugin",
    "WasmPluginHost",
]

log = logging.getLogger(__name__)


class WasmPlugin(Plugin):
    """What the WASM host's plugins share: the guest they call into."""

    #: The loaded module's kinds ("format", "metadata").
    kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, guest: Guest) -> None:
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
        data = reader.read(self._guest.max_input_bytes)
        value = self._result("parse", bytes(data))
        if not isinstance(value, dict):
            raise PluginError(f"WASM plugin {self.name!r}: parse returned no tag object")
        tags: dict[str, Any] = {}
        for key, item in value.items():
            allowed = TAG_TYPES.get(key)
            if allowed is None:
                continue  # a field from a newer API minor
            if not check_value(item, allowed):
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
        memory_cap = MemoryCap(self.limits.max_memory_mb * MIB)
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
            raise PluginError(f"{where} is not a valid module: {gist(exc)}") from None

        check_imports(module, where, self.limits.allow_filesystem)
        exports = check_exports(module, where)
        linker = Linker(engine)
        guest = Guest(
            path, limits=self.limits, preopen_dirs=self.preopen_dirs,
            max_input_bytes=self.max_input_bytes, engine=engine, module=module, linker=linker,
            exports=exports, memory_cap=memory_cap,
        )  # fmt: skip
        # wasmtime-py keeps host functions in a global table: hold the guest weakly,
        # or it and its engine would never be freed.
        guest_ref = weakref.ref(guest)

        def host_log(caller: Caller, ptr: int, length: int) -> None:
            if (alive := guest_ref()) is not None:
                alive.host_log(caller, ptr, length)

        linker.define_func(
            HOST_MODULE, "log", FuncType([I32, I32], []), host_log, access_caller=True
        )
        if self.limits.allow_filesystem:
            linker.define_wasi()

        manifest = parse_manifest(guest.call("manifest", None), where)
        guest.label = f"WASM plugin {manifest.name!r}"
        for kind in manifest.kinds:
            if KIND_EXPORTS[kind] not in exports:
                raise PluginError(
                    f"{guest.label} ({path}) declares kind {kind!r} but exports no "
                    f"{KIND_EXPORTS[kind]!r} function"
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

    # -- load-time setup ----------------------------------------------------

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
