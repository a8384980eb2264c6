"""The plugin manager: which plugins are loaded, in which order, and their lifecycle.

`PluginManager.from_config` loads, in order of precedence, the built-in format
plugins (FLAC, MP3 overlay), then native plugins (``[plugins] paths`` and
installed entry points), then WASM plugins (``.wasm``/``.wat`` files in those
paths). When two plugins handle the same extension or origin type, the earlier
wins. Each plugin's API version is checked (`check_api_version`) and its
``init`` is called with its ``[plugins.<name>]`` table; a plugin that fails to
import, is refused, or raises in ``init`` is reported (log, `plugin.failed`
event, `failures`) and skipped: the daemon carries on without it.

`load`, `unload`, `reload` and `reload_all` work while mounted. The core sees
plugins only through `PluginExtensions` (a `musicfs.core.extensions.Extensions`),
which looks them up at each call, so a reloaded plugin takes effect at once.
Thread-safe: the registry is replaced, never changed in place, under a lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from musicfs.core.config.settings import Config
from musicfs.core.events import EventBus, EventType
from musicfs.core.extensions import Extensions, HeaderWriter, OriginMaker, TagParser
from musicfs.plugins.api import (
    FormatPlugin,
    MetadataPlugin,
    OriginPlugin,
    Plugin,
    PluginError,
    PluginInfo,
    ResourceLimits,
)
from musicfs.plugins.native import NativeHost, NativeSource, entry_points
from musicfs.plugins.version import IncompatiblePlugin, check_api_version

log = logging.getLogger(__name__)

HOSTS = ("builtin", "native", "wasm")  # order of precedence
WASM_SUFFIXES = (".wasm", ".wat")


@dataclass(frozen=True, slots=True)
class Loaded:
    """One loaded plugin: the instance, where it came from, and how to reload it."""

    plugin: Plugin
    host: str
    source: str
    native: NativeSource | None = None  # to import it again
    order: int = 0

    @property
    def name(self) -> str:
        return self.plugin.name

    def info(self) -> PluginInfo:
        plugin, details = self.plugin, {}
        kinds = []
        if isinstance(plugin, OriginPlugin):
            kinds.append("origin")
            details["origin_type"] = plugin.origin_type
        if isinstance(plugin, MetadataPlugin):
            kinds.append("metadata")
        if isinstance(plugin, FormatPlugin):
            kinds.append("format")
            details["extensions"] = ",".join(plugin.extensions)
        return PluginInfo(plugin.name, plugin.version, plugin.api_version, tuple(kinds),
                          self.host, self.source, details)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Failure:
    """A plugin that could not be loaded, and why."""

    source: str
    host: str
    error: str


@dataclass
class _Registry:
    plugins: tuple[Loaded, ...] = ()
    failures: tuple[Failure, ...] = field(default_factory=tuple)


class PluginManager:
    """Loads plugins into three hosts and keeps them in precedence order."""

    def __init__(
        self,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        limits: ResourceLimits | None = None,
        events: EventBus | None = None,
        *,
        wasm_dirs: Sequence[str] = (),
    ) -> None:
        self.settings = dict(settings or {})
        self.limits = limits or ResourceLimits()
        # Folders WASM guests may read (allow_filesystem), at the same path inside.
        self.wasm_dirs = tuple(wasm_dirs)
        self.events = events
        self.native = NativeHost()
        self._wasm: Any = None  # WasmPluginHost, created when a WASM plugin is loaded
        self._registry = _Registry()
        self._lock = threading.RLock()
        self._order = 0

    @classmethod
    def from_config(
        cls, config: Config, events: EventBus | None = None, *, load: bool = True
    ) -> PluginManager:
        """A manager with *config*'s limits; with *load*, its plugins loaded
        (`load_configured`), else none yet."""
        limits = ResourceLimits(
            max_memory_mb=config.plugins.wasm_memory_mb,
            max_cpu_time_ms=config.plugins.wasm_cpu_ms,
            allow_network=False,
            allow_filesystem=config.plugins.wasm_filesystem,
        )
        manager = cls(config.plugins.settings, limits, events, wasm_dirs=config.plugins.wasm_dirs)
        if load:
            manager.load_configured(config)
        return manager

    def load_configured(self, config: Config) -> None:
        """The built-in plugins, then *config*'s paths and entry points, in that
        order of precedence; a plugin that fails is reported and skipped."""
        self.load_builtin()
        for path in config.plugins.paths:
            self.load_path(path, keep_going=True)
        if config.plugins.entry_points:
            self.load_entry_points()

    # -- what is loaded ------------------------------------------------------------

    @property
    def plugins(self) -> tuple[Loaded, ...]:
        """Loaded plugins in order of precedence (built-in, native, WASM; then load order)."""
        return self._registry.plugins

    @property
    def failures(self) -> tuple[Failure, ...]:
        return self._registry.failures

    def infos(self) -> list[PluginInfo]:
        return [loaded.info() for loaded in self.plugins]

    def origin_plugins(self) -> list[OriginPlugin]:
        return [p.plugin for p in self.plugins if isinstance(p.plugin, OriginPlugin)]

    def format_plugins(self) -> list[FormatPlugin]:
        return [p.plugin for p in self.plugins if isinstance(p.plugin, FormatPlugin)]

    def metadata_plugins(self) -> list[MetadataPlugin]:
        return [p.plugin for p in self.plugins if isinstance(p.plugin, MetadataPlugin)]

    def get(self, name: str) -> Loaded:
        for loaded in self.plugins:
            if loaded.name == name:
                return loaded
        known = ", ".join(p.name for p in self.plugins) or "none"
        raise PluginError(f"no plugin named {name!r} is loaded (loaded: {known})")

    def extensions(self) -> PluginExtensions:
        return PluginExtensions(self)

    # -- loading ---------------------------------------------------------------------

    def load_builtin(self) -> None:
        from musicfs.plugins.builtin import BUILTIN_FORMATS

        for cls in BUILTIN_FORMATS:
            self._admit(lambda c=cls: [c], "builtin", f"musicfs.plugins.builtin:{cls.__name__}")

    def load_path(self, path: str | Path, *, keep_going: bool = False) -> list[PluginInfo]:
        """Load the plugin(s) at *path*: a .py file, a package, a .wasm/.wat file,
        or a folder of those. Raises `PluginError` unless *keep_going*."""
        path = Path(path)
        if path.is_dir() and not (path / "__init__.py").is_file():
            found: list[PluginInfo] = []
            for entry in sorted(path.iterdir()):
                if entry.name.startswith((".", "_")):
                    continue
                if entry.suffix in (".py", *WASM_SUFFIXES) or (entry / "__init__.py").is_file():
                    found += self.load_path(entry, keep_going=keep_going)
            return found
        if not path.exists():
            return self._failed(str(path), "native", f"{path} does not exist", keep_going)
        if path.suffix in WASM_SUFFIXES:
            return self._admit(lambda: [self._wasm_host().load(path)], "wasm", str(path),
                               keep_going=keep_going)  # fmt: skip
        holder: dict[str, NativeSource] = {}

        def import_it() -> list[type[Plugin]]:
            source, classes = self.native.import_path(path)
            holder["source"] = source
            return classes

        return self._admit(import_it, "native", str(path), holder=holder, keep_going=keep_going)

    def load_entry_points(self) -> None:
        for entry in entry_points():
            holder: dict[str, NativeSource] = {}

            def import_it(entry: Any = entry, holder: dict[str, NativeSource] = holder) -> Any:
                source, classes = self.native.import_entry_point(entry)
                holder["source"] = source
                return classes

            where = f"entry point {entry.name}"
            self._admit(import_it, "native", where, holder=holder, keep_going=True)

    def unload(self, name: str) -> PluginInfo:
        with self._lock:
            loaded = self.get(name)
            others = tuple(p for p in self.plugins if p is not loaded)
            self._registry = replace(self._registry, plugins=others)
        self._shutdown(loaded)
        if loaded.native is not None and not any(p.native == loaded.native for p in others):
            self.native.discard(loaded.native)
        self._publish(EventType.PLUGIN_UNLOADED, loaded.name, host=loaded.host)
        log.info("plugin %s unloaded", loaded.name)
        return loaded.info()

    def reload(self, name: str) -> list[PluginInfo]:
        """Load a plugin's code again (with every plugin from the same source). The
        new code is imported first: if that fails, the old plugins stay loaded."""
        with self._lock:
            loaded = self.get(name)
            holder: dict[str, NativeSource] = {}
            try:
                made = self._import_again(loaded, holder)
            except Exception as exc:
                error = f"reload failed, the loaded version stays: {type(exc).__name__}: {exc}"
                self._failed(loaded.source, loaded.host, error, keep_going=True)
                raise PluginError(f"reloading {name!r} failed: {exc}") from exc
            for sibling in [p for p in self.plugins if p.source == loaded.source]:
                self.unload(sibling.name)
            return self._admit(lambda: made, loaded.host, loaded.source, holder=holder)

    def _import_again(self, loaded: Loaded, holder: dict[str, NativeSource]) -> list[Any]:
        if loaded.host == "builtin":
            from musicfs.plugins.builtin import BUILTIN_FORMATS

            return [c for c in BUILTIN_FORMATS if f"musicfs.plugins.builtin:{c.__name__}"
                    == loaded.source]  # fmt: skip
        if loaded.host == "wasm":
            return [self._wasm_host().load(Path(loaded.source))]
        assert loaded.native is not None
        source, classes = self.native.reimport(loaded.native)
        holder["source"] = source
        return list(classes)

    def reload_all(self) -> list[PluginInfo]:
        done: set[str] = set()
        result: list[PluginInfo] = []
        for loaded in list(self.plugins):
            if loaded.source in done:
                continue
            done.add(loaded.source)
            try:
                result += self.reload(loaded.name)
            except PluginError as exc:
                log.warning("reloading %s failed: %s", loaded.name, exc)
        return result

    def close(self) -> None:
        for loaded in reversed(self.plugins):
            self._shutdown(loaded)
        self._registry = _Registry()

    # -- internals ---------------------------------------------------------------------

    def _admit(
        self,
        make: Any,
        host: str,
        source: str,
        *,
        holder: dict[str, NativeSource] | None = None,
        keep_going: bool = False,
    ) -> list[PluginInfo]:
        """Create, check and init the plugins *make* gives; register them."""
        try:
            made = make()
            instances = [item() if isinstance(item, type) else item for item in made]
            for plugin in instances:
                _check(plugin, source)
            with self._lock:
                taken = {p.name for p in self.plugins}
                clash = [p.name for p in instances if p.name in taken]
                if clash:
                    raise PluginError(
                        f"{source}: a plugin named {clash[0]!r} is loaded already "
                        f"(from {self.get(clash[0]).source}); unload it first or reload it"
                    )
                for plugin in instances:
                    try:
                        plugin.init(dict(self.settings.get(plugin.name, {})))
                    except Exception as exc:
                        raise PluginError(
                            f"plugin {plugin.name!r} ({source}) failed in init: "
                            f"{type(exc).__name__}: {exc}"
                        ) from exc
                native = holder.get("source") if holder else None
                new = []
                for plugin in instances:
                    self._order += 1
                    new.append(Loaded(plugin, host, source, native, self._order))
                merged = sorted((*self.plugins, *new), key=lambda p: (HOSTS.index(p.host), p.order))
                self._registry = replace(self._registry, plugins=tuple(merged))
        except (PluginError, IncompatiblePlugin) as exc:
            return self._failed(source, host, str(exc), keep_going)
        except Exception as exc:  # plugin code: never take the daemon down
            return self._failed(source, host, f"{type(exc).__name__}: {exc}", keep_going)
        for loaded in new:
            log.info("plugin %s %s loaded (%s, %s)", loaded.name, loaded.plugin.version, host,
                     source)  # fmt: skip
            self._publish(EventType.PLUGIN_LOADED, loaded.name, host=host, source=source)
        return [loaded.info() for loaded in new]

    def _failed(self, source: str, host: str, error: str, keep_going: bool) -> list[PluginInfo]:
        log.error("plugin %s not loaded: %s", source, error)
        with self._lock:
            failures = (*self._registry.failures, Failure(source, host, error))
            self._registry = replace(self._registry, failures=failures)
        self._publish(EventType.PLUGIN_FAILED, "", host=host, source=source, error=error)
        if not keep_going:
            raise PluginError(error)
        return []

    def _shutdown(self, loaded: Loaded) -> None:
        try:
            loaded.plugin.shutdown()
        except Exception as exc:
            log.warning("plugin %s failed in shutdown: %s", loaded.name, exc)

    def _wasm_host(self) -> Any:
        if self._wasm is None:
            from musicfs.plugins.wasm import WasmPluginHost

            dirs = {path: path for path in self.wasm_dirs}
            self._wasm = WasmPluginHost(self.limits, preopen_dirs=dirs)
        return self._wasm

    def _publish(self, kind: EventType, name: str, **details: str) -> None:
        if self.events is not None:
            self.events.publish(kind, path=name, **details)


def _check(plugin: Plugin, source: str) -> None:
    if not isinstance(plugin, Plugin):
        raise PluginError(f"{source}: {plugin!r} is not a Plugin")
    name = getattr(plugin, "name", "")
    if not isinstance(name, str) or not name:
        raise PluginError(f"{source}: {type(plugin).__name__} has no name")
    check_api_version(str(getattr(plugin, "api_version", "")), name)
    if isinstance(plugin, FormatPlugin) and not plugin.extensions:
        raise PluginError(f"{source}: format plugin {name!r} lists no extensions")
    if isinstance(plugin, OriginPlugin) and not getattr(plugin, "origin_type", ""):
        raise PluginError(f"{source}: origin plugin {name!r} has no origin_type")


class PluginExtensions(Extensions):
    """The core's view of the loaded plugins, looked up at each call."""

    def __init__(self, manager: PluginManager) -> None:
        self.manager = manager

    def origin_maker(self, origin_type: str) -> OriginMaker | None:
        for plugin in self.manager.origin_plugins():
            if plugin.origin_type == origin_type:
                return plugin
        return None

    def tag_parser(self, extension: str) -> TagParser | None:
        return _first_format(self.manager.format_plugins(), extension)

    def header_writer(self, fmt: str) -> HeaderWriter | None:
        return _first_format(self.manager.format_plugins(), fmt)

    def extra_extensions(self) -> frozenset[str]:
        return frozenset(e for p in self.manager.format_plugins() for e in p.extensions)


def _first_format(plugins: Iterable[FormatPlugin], extension: str) -> FormatPlugin | None:
    for plugin in plugins:
        if plugin.can_handle(extension):
            return plugin
    return None
