"""Plugins through a real daemon and mount (issue 5, SPEC §8).

A format plugin loaded while mounted makes its files appear; reloaded with new
code, the tree follows the new code without unmounting; unloaded, its files
leave. Plugins that fail (an import error, another API version) are reported by
``musicfs plugin list`` and the mount carries on. The example origin plugin
serves a ZIP archive as an origin, bytes identical.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.e2e.helpers import (
    Mount,
    describe,
    mounted,
    run_musicfs,
    sha256_of,
    wait_until,
    walk_files,
    write_config,
)
from tests.e2e.library import Library, make_origin, render_path
from tests.e2e.test_offline import JOGA

pytestmark = [pytest.mark.mount, pytest.mark.media]

EXAMPLES = Path(__file__).resolve().parents[2] / "plugins" / "examples"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plugin_cli(mount: Mount, *args: str) -> dict[str, Any]:
    result = run_musicfs("plugin", *args, "--mount", mount.mountpoint, "--json")
    assert result.returncode == 0, describe(result)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def mount_plugins(tmp_path: Path, origins: list[dict[str, object]], paths: list[str]) -> Any:
    config = write_config(tmp_path / "config.toml", origins,
                          {"plugins": {"paths": paths, "entry_points": False}})  # fmt: skip
    return mounted([], tmp_path / "mnt", tmp_path / "cache", "--config", str(config))


def test_a_format_plugin_loaded_reloaded_and_unloaded_while_mounted(
    library: Library, tmp_path: Path
) -> None:
    mtr = example("mtr_format")
    origin = tmp_path / "music"
    make_origin(library, origin, [JOGA])
    payload = (origin / JOGA).read_bytes()
    (origin / "odd.mtr").write_bytes(
        mtr.encode({"title": "One", "artist": "Ann", "album": "Raw"}, payload)
    )
    plugin = tmp_path / "mine" / "mtr_format.py"  # a copy we can change
    plugin.parent.mkdir()
    shutil.copy(EXAMPLES / "mtr_format.py", plugin)
    with mount_plugins(tmp_path, [{"id": "music", "path": str(origin)}], []) as mount:
        assert not any(p.endswith(".mtr") for p in mount.files())
        listed = plugin_cli(mount, "list")
        assert {"flac", "mp3"} <= {p["name"] for p in listed["plugins"] if p["host"] == "builtin"}

        loaded = plugin_cli(mount, "load", str(plugin))
        assert loaded["changed"] == ["mtr-format"]
        shown = mount.mountpoint / "Ann" / "Raw (0000) [MTR]" / "00 - One.mtr"
        wait_until(shown.exists, timeout=30, what="the .mtr file in the tree")
        assert shown.read_bytes() == (origin / "odd.mtr").read_bytes()

        plugin.write_text(plugin.read_text().replace(
            "return _meta(_tag_lines(block))",
            "meta = _meta(_tag_lines(block))\n"
            "        return meta.replace(title=(meta.title or '').upper())",
        ))  # fmt: skip
        reloaded = plugin_cli(mount, "reload", "mtr-format")
        assert reloaded["changed"] == ["mtr-format"]
        upper = shown.with_name("00 - ONE.mtr")
        wait_until(upper.exists, timeout=30, what="the tree to follow the reloaded code")
        assert not shown.exists()

        plugin_cli(mount, "unload", "mtr-format")
        wait_until(lambda: not upper.exists(), timeout=30, what="the .mtr file to leave")
        assert (mount.mountpoint / render_path(library.find(JOGA).spec)).exists()


def test_plugins_that_fail_are_listed_and_the_mount_carries_on(
    library: Library, tmp_path: Path
) -> None:
    origin = tmp_path / "music"
    make_origin(library, origin, [JOGA])
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "broken.py").write_text("import not_a_module_anywhere\n")
    future = (
        (EXAMPLES / "mtr_format.py")
        .read_text()
        .replace('api_version = "1.0"', 'api_version = "2.0"')
    )
    (folder / "future.py").write_text(future)
    with mount_plugins(tmp_path, [{"id": "music", "path": str(origin)}], [str(folder)]) as mount:
        assert sha256_of(mount.mountpoint / render_path(library.find(JOGA).spec))
        failures = {
            Path(f["source"]).name: f["error"] for f in plugin_cli(mount, "list")["failures"]
        }
        assert "not_a_module_anywhere" in failures["broken.py"]
        assert "targets plugin API 2.0" in failures["future.py"]
        assert "provides API 1.0" in failures["future.py"]
        unknown = run_musicfs("plugin", "unload", "nothing-here", "--mount", mount.mountpoint)
        assert unknown.returncode == 2, describe(unknown)
        assert "no plugin named 'nothing-here'" in unknown.stderr


def test_the_example_origin_plugin_serves_a_zip_archive(library: Library, tmp_path: Path) -> None:
    archive = tmp_path / "album.zip"
    track = library.find(JOGA)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(track.path, JOGA, compress_type=zipfile.ZIP_STORED)
    origins: list[dict[str, object]] = [{"id": "dl", "type": "zip", "path": str(archive)}]
    with mount_plugins(tmp_path, origins, [str(EXAMPLES / "zip_origin.py")]) as mount:
        assert walk_files(mount.mountpoint) == {render_path(track.spec)}
        assert sha256_of(mount.mountpoint / render_path(track.spec)) == track.sha256
        status = mount.status()
        assert [(o["id"], o["type"]) for o in status["origins"]] == [("dl", "zip")]


def test_an_origin_type_no_plugin_provides_fails_the_mount_clearly(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", [{"id": "x", "type": "nope", "path": "/"}],
                          {"plugins": {"entry_points": False}})  # fmt: skip
    (tmp_path / "mnt").mkdir()
    result = run_musicfs("mount", tmp_path / "mnt", "--config", config,
                         "--cache-dir", tmp_path / "cache")  # fmt: skip
    assert result.returncode == 2, describe(result)
    assert "no plugin provides origin type 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def mfsx(tags: dict[str, str | int], payload: bytes) -> bytes:
    """A file of the WASM example's container (plugins/examples/wasm-xyz-format)."""
    out = bytearray(b"MFSX\x01" + bytes([len(tags)]))
    for key, value in tags.items():
        k = key.encode()
        if isinstance(value, int):
            out += b"i" + bytes([len(k)]) + k + struct.pack("<I", value)
        else:
            v = value.encode()
            out += b"s" + bytes([len(k)]) + k + struct.pack("<H", len(v)) + v
    return bytes(out) + payload


def test_the_wasm_example_plugin_reads_its_files_in_a_mount(tmp_path: Path) -> None:
    origin = tmp_path / "music"
    origin.mkdir()
    data = mfsx({"title": "Sandboxed", "artist": "Wasm", "album": "Guest", "year": 2024,
                 "track": 7}, b"\x00" * 4096)  # fmt: skip
    (origin / "song.mfsx").write_bytes(data)
    wat = EXAMPLES / "wasm-xyz-format" / "mfsx_format.wat"
    with mount_plugins(tmp_path, [{"id": "music", "path": str(origin)}], [str(wat)]) as mount:
        shown = mount.mountpoint / "Wasm" / "Guest (2024) [MFSX]" / "07 - Sandboxed.mfsx"
        assert walk_files(mount.mountpoint) == {str(shown.relative_to(mount.mountpoint))}
        assert shown.read_bytes() == data
        wasm = [p for p in plugin_cli(mount, "list")["plugins"] if p["host"] == "wasm"]
        assert [p["details"]["extensions"] for p in wasm] == ["mfsx"]


METADATA_PLUGIN = """
from musicfs.plugins.api import ExternalMetadata, MetadataPlugin


class Fixer(MetadataPlugin):
    name = "fixer"
    api_version = "1.0"

    def lookup(self, query):
        if query.tags.title != "Jóga":
            return None
        return ExternalMetadata({"title": "Jóga (Remastered)", "bitrate": "9"}, "a test table")


class Broken(MetadataPlugin):
    name = "broken-lookup"
    api_version = "1.0"

    def lookup(self, query):
        raise RuntimeError("service down")
"""


def test_metadata_plugins_propose_tags_that_become_overrides(
    library: Library, tmp_path: Path
) -> None:
    origin = tmp_path / "music"
    make_origin(library, origin, [JOGA])
    plugin = tmp_path / "fixer.py"
    plugin.write_text(METADATA_PLUGIN)
    with mount_plugins(tmp_path, [{"id": "music", "path": str(origin)}], [str(plugin)]) as mount:
        file = mount.mountpoint / render_path(library.find(JOGA).spec)
        asked = run_musicfs("tag", "lookup", file, "--json")
        assert asked.returncode == 0, describe(asked)
        answer = json.loads(asked.stdout)
        assert [p["plugin"] for p in answer["proposals"]] == ["fixer"]
        assert answer["proposals"][0]["fields"] == {"title": "Jóga (Remastered)"}
        assert answer["errors"] == ["broken-lookup: RuntimeError: service down"]
        assert file.exists(), "a lookup without --apply changes nothing"
        applied = run_musicfs("tag", "lookup", file, "--apply", "--json")
        assert applied.returncode == 0, describe(applied)
        tags = json.loads(applied.stdout)["tags"]
        assert tags["overrides"] == {"title": "Jóga (Remastered)"}
        assert (mount.mountpoint / tags["path"]).name == "01 - Jóga (Remastered).flac"
        assert tags["overlaid"] is True


def looping_guest() -> str:
    """A WASM format plugin for .tst files whose parse never returns."""
    manifest = json.dumps({"name": "looper", "version": "0.1", "api_version": "1.0",
                           "kinds": ["format"], "extensions": ["tst"]}).encode()  # fmt: skip
    data = "".join(f"\\{b:02x}" for b in manifest)
    return f"""
    (module
      (memory (export "memory") 1)
      (data (i32.const 16) "{data}")
      (func (export "alloc") (param i32) (result i32) (i32.const 4096))
      (func (export "manifest") (result i64)
        (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const {len(manifest)})))
      (func (export "parse") (param i32 i32) (result i64)
        (loop $forever (br $forever))
        (i64.const 0)))
    """


def test_a_wasm_plugin_that_loops_is_stopped_and_the_scan_carries_on(
    library: Library, tmp_path: Path
) -> None:
    origin = tmp_path / "music"
    make_origin(library, origin, [JOGA])
    (origin / "spin.tst").write_bytes(b"anything")
    guest = tmp_path / "looper.wat"
    guest.write_text(looping_guest())
    config = write_config(tmp_path / "config.toml", [{"id": "music", "path": str(origin)}],
                          {"plugins": {"paths": [str(guest)], "entry_points": False,
                                       "wasm_cpu_ms": 200}})  # fmt: skip
    with mounted([], tmp_path / "mnt", tmp_path / "cache", "--config", str(config)) as mount:
        assert mount.ready_status["unreadable_files"] == 1
        assert sha256_of(mount.mountpoint / render_path(library.find(JOGA).spec))
        fallback = mount.mountpoint / "Unknown Artist" / "Unknown Album (0000) [TST]"
        assert (fallback / "00 - spin.tst").exists()
        log = (mount.cache_dir / "musicfs.log").read_text()
        assert "max_cpu_time_ms=200" in log
