"""The native host: plugins written in Python, from files, folders and packages.

A plugin module offers its plugin classes either by listing them in
``MUSICFS_PLUGINS = [MyFormat, ...]`` or simply by defining them at module level
(every concrete subclass of the API classes defined in the module is taken).
Sources:

- a ``.py`` file, or a package folder (one with ``__init__.py``);
- an installed distribution's entry point in the group ``musicfs.plugins``,
  naming a module or a plugin class (``name = "pkg.module:MyPlugin"``).

Each file or package is imported under a private module name
(``musicfs_plugin_<name>``), so two plugins never clash with each other or with
installed modules, and `NativeHost.reload` can import the file again from
scratch: the new code takes effect without restarting the daemon. Native
plugins run with the daemon's rights, like any Python package; untrusted code
belongs in the WASM host (`musicfs.plugins.wasm`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from musicfs.plugins.api import FormatPlugin, MetadataPlugin, OriginPlugin, Plugin, PluginError

if TYPE_CHECKING:  # importlib.metadata: ~20 ms, imported when entry points are read
    from importlib import metadata

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "musicfs.plugins"
_API_CLASSES = (Plugin, OriginPlugin, MetadataPlugin, FormatPlugin)


@dataclass(frozen=True, slots=True)
class NativeSource:
    """Where plugin classes came from, so they can be imported again."""

    kind: str  # "file", "package" or "entry_point"
    location: str  # the path, or "name = value" of the entry point
    module: str  # the module name it was imported as


class NativeHost:
    """Imports plugin modules and hands out their plugin classes."""

    def __init__(self) -> None:
        self._counter = 0

    def import_path(self, path: str | Path) -> tuple[NativeSource, list[type[Plugin]]]:
        """Import a ``.py`` file or a package folder; return its plugin classes."""
        path = Path(path)
        if path.is_dir():
            init = path / "__init__.py"
            if not init.is_file():
                raise PluginError(f"{path}: a plugin folder needs an __init__.py")
            kind, file, search = "package", init, [str(path)]
        elif path.suffix == ".py" and path.is_file():
            kind, file, search = "file", path, None
        else:
            raise PluginError(f"{path}: not a .py file or a package folder")
        name = self._module_name(path.stem if kind == "file" else path.name)
        spec = importlib.util.spec_from_file_location(name, file, submodule_search_locations=search)
        if spec is None or spec.loader is None:
            raise PluginError(f"{path}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:
            _forget_module(name)
            raise PluginError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from exc
        return NativeSource(kind, str(path), name), plugin_classes(module, str(path))

    def import_entry_point(
        self, entry: metadata.EntryPoint
    ) -> tuple[NativeSource, list[type[Plugin]]]:
        where = f"entry point {entry.name} = {entry.value}"
        try:
            loaded = entry.load()
        except BaseException as exc:
            raise PluginError(f"{where}: loading it failed: {type(exc).__name__}: {exc}") from exc
        source = NativeSource("entry_point", where, entry.module)
        if isinstance(loaded, ModuleType):
            return source, plugin_classes(loaded, where)
        if inspect.isclass(loaded) and issubclass(loaded, Plugin):
            return source, [loaded]
        raise PluginError(f"{where}: names neither a module nor a Plugin class")

    def reimport(self, source: NativeSource) -> tuple[NativeSource, list[type[Plugin]]]:
        """Import *source* again from scratch (hot reload)."""
        if source.kind == "entry_point":
            for name in [m for m in sys.modules if m == source.module or
                         m.startswith(source.module + ".")]:  # fmt: skip
                del sys.modules[name]
            importlib.invalidate_caches()
            module = importlib.import_module(source.module)
            return source, plugin_classes(module, source.location)
        _forget_module(source.module)
        return self.import_path(source.location)

    def discard(self, source: NativeSource) -> None:
        """Forget a file or package plugin's modules (after it is unloaded)."""
        if source.kind != "entry_point":
            _forget_module(source.module)

    def _module_name(self, stem: str) -> str:
        self._counter += 1
        safe = re.sub(r"\W", "_", stem)
        return f"musicfs_plugin_{safe}_{self._counter}"


def entry_points() -> list[metadata.EntryPoint]:
    from importlib import metadata

    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def plugin_classes(module: ModuleType, where: str) -> list[type[Plugin]]:
    """The plugin classes a module offers (see the module docstring)."""
    listed = getattr(module, "MUSICFS_PLUGINS", None)
    if listed is not None:
        classes = list(listed)
        bad = [c for c in classes if not (inspect.isclass(c) and issubclass(c, Plugin))]
        if bad:
            raise PluginError(f"{where}: MUSICFS_PLUGINS holds non-plugins: {bad}")
    else:
        classes = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, Plugin)
            and obj not in _API_CLASSES
            and obj.__module__ == module.__name__
            and not inspect.isabstract(obj)
        ]
    if not classes:
        raise PluginError(
            f"{where}: defines no plugin (a subclass of OriginPlugin, MetadataPlugin or "
            "FormatPlugin, or a MUSICFS_PLUGINS list)"
        )
    return classes


def _forget_module(name: str) -> None:
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[loaded]
