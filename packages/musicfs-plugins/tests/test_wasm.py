"""The WASM plugin host: the shipped example, the ABI checks and the sandbox limits.

Test guests are small WAT modules written here; each failure case ends by
loading and using the shipped example plugin, to show the host carries on.
"""

from __future__ import annotations

import io
import json
import struct
import time
from pathlib import Path

import pytest

from musicfs.core.config.settings import ConfigError, load_config
from musicfs.core.model import TrackTags
from musicfs.plugins.api import (
    ExternalMetadata,
    FormatPlugin,
    MetadataPlugin,
    MetadataQuery,
    PluginError,
    ResourceLimits,
)
from musicfs.plugins.manager import PluginManager
from musicfs.plugins.version import API_VERSION
from musicfs.plugins.wasm import WasmPlugin, WasmPluginHost

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "plugins" / "examples" / "wasm-xyz-format" / "mfsx_format.wat"


# -- building MFSX files and test guests ---------------------------------------


def mfsx(*entries: tuple[str, str | int], payload: bytes = b"\x00" * 4096) -> bytes:
    """An MFSX file (see the example's README) holding *entries*."""
    out = bytearray(b"MFSX\x01" + bytes([len(entries)]))
    for key, value in entries:
        k = key.encode()
        if isinstance(value, int):
            out += b"i" + bytes([len(k)]) + k + struct.pack("<I", value)
        else:
            v = value.encode()
            out += b"s" + bytes([len(k)]) + k + struct.pack("<H", len(v)) + v
    return bytes(out + payload)


def wat_bytes(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


def guest(
    body: str,
    *,
    api_version: str = API_VERSION,
    kinds: tuple[str, ...] = ("format",),
    imports: str = "",
    memory_pages: int = 1,
    name: str = "test-guest",
) -> str:
    """A guest module: its manifest at 16, a fixed input buffer at 4096, *body*.

    *body* may use ``$result(ptr, len) -> i64`` and ``$const(ptr) -> i64`` (a
    NUL-terminated string) to build results.
    """
    manifest = json.dumps(
        {
            "name": name,
            "version": "0.1",
            "api_version": api_version,
            "kinds": list(kinds),
            "extensions": ["tst"],
        }
    ).encode()
    return f"""
    (module
      {imports}
      (memory (export "memory") {memory_pages})
      (data (i32.const 16) "{wat_bytes(manifest)}")
      (func $result (param $ptr i32) (param $len i32) (result i64)
        (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
                (i64.extend_i32_u (local.get $len))))
      (func $const (param $ptr i32) (result i64)
        (local $end i32)
        (local.set $end (local.get $ptr))
        (block $done (loop $scan
          (br_if $done (i32.eqz (i32.load8_u (local.get $end))))
          (local.set $end (i32.add (local.get $end) (i32.const 1)))
          (br $scan)))
        (call $result (local.get $ptr) (i32.sub (local.get $end) (local.get $ptr))))
      (func (export "alloc") (param i32) (result i32) (i32.const 4096))
      (func (export "manifest") (result i64)
        (call $result (i32.const 16) (i32.const {len(manifest)})))
      {body}
    )
    """


#: parse returns its input: the "file" is the JSON tags themselves.
ECHO_PARSE = '(func (export "parse") (param i32 i32) (result i64) '
ECHO_PARSE += "(call $result (local.get 0) (local.get 1)))"

#: parse loops forever when the file starts with "L", else echoes it.
LOOP_PARSE = """
  (func (export "parse") (param $p i32) (param $n i32) (result i64)
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 76))
      (then (loop $forever (br $forever))))
    (call $result (local.get $p) (local.get $n)))
"""


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


def assert_host_usable(host: WasmPluginHost) -> None:
    """The host still loads and runs a plugin (the shipped example)."""
    plugin = host.load(EXAMPLE)
    assert isinstance(plugin, FormatPlugin)
    tags = plugin.parse(io.BytesIO(mfsx(("title", "still here"))))
    assert tags.title == "still here"


@pytest.fixture
def host() -> WasmPluginHost:
    return WasmPluginHost(ResourceLimits(max_memory_mb=8, max_cpu_time_ms=300))


# -- the shipped example ---------------------------------------------------------


def test_example_plugin_is_a_format_plugin_and_parses_mfsx(host: WasmPluginHost) -> None:
    plugin = host.load(EXAMPLE)
    assert isinstance(plugin, FormatPlugin)
    assert isinstance(plugin, WasmPlugin)
    assert (plugin.name, plugin.version, plugin.api_version) == ("wasm-xyz-format", "1.0.0", "1.0")
    assert plugin.extensions == ("mfsx",)
    assert plugin.can_handle(".MFSX")
    assert plugin.info().host == "wasm"

    data = mfsx(
        ("title", 'Ça "va"\\ bien\n'),
        ("artist", "Ünïcødé Artist"),
        ("album", "LP"),
        ("year", 1999),
        ("track", 7),
        ("tracktotal", 12),
        ("samplerate", 44100),
        payload=bytes(range(256)) * 64,
    )
    tags = plugin.parse(io.BytesIO(data))
    assert tags == TrackTags(
        title='Ça "va"\\ bien\n',
        artist="Ünïcødé Artist",
        album="LP",
        year=1999,
        track=7,
        tracktotal=12,
        samplerate=44100,
    )
    # The plugin keeps working call after call (its allocator reuses the heap).
    for n in range(50):
        assert plugin.parse(io.BytesIO(mfsx(("track", n)))).track == n


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RIFF\x00\x00\x00\x00WAVE", "not an MFSX file"),
        (b"MFSX\x02\x00", "unsupported MFSX version"),
        (mfsx(("title", "x"), payload=b"")[:-1], "truncated"),
        (b"MFSX\x01\x01s\x05Title\x00\x00", "bad MFSX tag key"),
        (b"MFSX\x01\x01f\x04year\x00\x00\x00\x00", "bad MFSX entry type"),
    ],
)
def test_example_plugin_rejects_what_is_not_mfsx(
    host: WasmPluginHost, data: bytes, message: str
) -> None:
    plugin = host.load(EXAMPLE)
    assert isinstance(plugin, FormatPlugin)
    with pytest.raises(PluginError, match=message) as info:
        plugin.parse(io.BytesIO(data))
    assert "wasm-xyz-format" in str(info.value)


def test_example_plugin_loaded_from_a_wasm_binary(host: WasmPluginHost, tmp_path: Path) -> None:
    from wasmtime import wat2wasm

    binary = write(tmp_path, "mfsx.wasm", bytes(wat2wasm(EXAMPLE.read_text())))
    plugin = host.load(binary)
    assert isinstance(plugin, FormatPlugin)
    assert plugin.parse(io.BytesIO(mfsx(("genre", "Jazz")))).genre == "Jazz"


# -- ABI and versions --------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["2.0", "1.99", "0.9"])
def test_guest_for_another_api_version_is_refused_naming_both(
    host: WasmPluginHost, tmp_path: Path, api_version: str
) -> None:
    path = write(tmp_path, "future.wat", guest(ECHO_PARSE, api_version=api_version))
    with pytest.raises(PluginError) as info:
        host.load(path)
    message = str(info.value)
    assert f"plugin API {api_version}" in message
    assert f"provides API {API_VERSION}" in message
    assert "future.wat" in message
    assert_host_usable(host)


def test_guest_for_an_older_minor_is_accepted(host: WasmPluginHost, tmp_path: Path) -> None:
    path = write(tmp_path, "echo.wat", guest(ECHO_PARSE, api_version="1.0"))
    plugin = host.load(path)
    assert isinstance(plugin, FormatPlugin)
    tags = plugin.parse(io.BytesIO(b'{"title": "T", "year": 2001, "duration": 3, "x": 1}'))
    assert (tags.title, tags.year, tags.duration) == ("T", 2001, 3.0)


def test_parse_gets_at_most_max_input_bytes(tmp_path: Path) -> None:
    host = WasmPluginHost(ResourceLimits(), max_input_bytes=15)
    plugin = host.load(write(tmp_path, "echo.wat", guest(ECHO_PARSE)))
    assert isinstance(plugin, FormatPlugin)
    data = b'{"title":"abc"}' + b"\xff" * 50_000  # not JSON past the first 15 bytes
    assert plugin.parse(io.BytesIO(data)).title == "abc"


def test_wrongly_typed_tags_are_refused(host: WasmPluginHost, tmp_path: Path) -> None:
    plugin = host.load(write(tmp_path, "echo.wat", guest(ECHO_PARSE)))
    assert isinstance(plugin, FormatPlugin)
    with pytest.raises(PluginError, match=r"year='1999'"):
        plugin.parse(io.BytesIO(b'{"year": "1999"}'))
    with pytest.raises(PluginError, match="invalid JSON"):
        plugin.parse(io.BytesIO(b"{nope"))


def test_metadata_guest_is_a_metadata_plugin(host: WasmPluginHost, tmp_path: Path) -> None:
    answer = json.dumps({"fields": {"title": "Found", "year": 1970}, "source": "db"})
    body = f"""
      (data (i32.const 1024) "{wat_bytes(answer.encode())}\\00")
      ;; an answer only for a JSON query about a file whose relpath has "known"
      (func (export "lookup") (param $p i32) (param $n i32) (result i64)
        (local $i i32)
        (if (i32.ne (i32.load8_u (local.get $p)) (i32.const 123)) (then unreachable))
        (block $no (loop $scan
          (br_if $no (i32.ge_u (i32.add (local.get $i) (i32.const 5)) (local.get $n)))
          (if (i32.and (i32.eq (i32.load (i32.add (local.get $p) (local.get $i)))
                               (i32.const 0x776f6e6b))  ;; "know"
                       (i32.eq (i32.load8_u offset=4 (i32.add (local.get $p) (local.get $i)))
                               (i32.const 110)))        ;; "n"
            (then (return (call $const (i32.const 1024)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $scan)))
        (i64.const 0))
    """
    path = write(tmp_path, "meta.wat", guest(body, kinds=("metadata",), name="meta"))
    plugin = host.load(path)
    assert isinstance(plugin, MetadataPlugin)
    assert not isinstance(plugin, FormatPlugin)
    query = MetadataQuery("o", "a/known.flac", "flac", TrackTags(title="?"))
    assert plugin.lookup(query) == ExternalMetadata(
        fields={"title": "Found", "year": "1970"}, source="db", confidence=1.0
    )
    assert plugin.lookup(MetadataQuery("o", "a/other.flac", "flac", TrackTags())) is None


def test_guest_missing_the_abi_exports_is_refused(host: WasmPluginHost, tmp_path: Path) -> None:
    path = write(tmp_path, "bare.wat", '(module (memory (export "memory") 1))')
    with pytest.raises(PluginError, match=r"bare\.wat.*does not export 'alloc', 'manifest'"):
        host.load(path)
    no_parse = write(tmp_path, "noparse.wat", guest(""))
    with pytest.raises(PluginError, match="exports no 'parse'"):
        host.load(no_parse)
    assert_host_usable(host)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("junk.wasm", b"this is not wasm", "not a WebAssembly binary"),
        ("cut.wasm", b"\x00asm\x01\x00\x00\x00\x01\x05\x01", "not a valid module"),
        ("typo.wat", b"(module (func (export))", "not a valid module"),
        ("latin1.wat", b"(module) ;; \xe9", "not a valid module"),
    ],
)
def test_malformed_module_gives_an_error_naming_the_file(
    host: WasmPluginHost, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(PluginError, match=message) as info:
        host.load(path)
    assert str(path) in str(info.value)
    assert_host_usable(host)


def test_missing_file_gives_an_error_naming_it(host: WasmPluginHost, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=r"gone\.wasm.*cannot read"):
        host.load(tmp_path / "gone.wasm")


# -- CPU limit --------------------------------------------------------------------


def test_guest_that_loops_forever_is_stopped_within_its_cpu_budget(tmp_path: Path) -> None:
    budget_ms = 200
    host = WasmPluginHost(ResourceLimits(max_cpu_time_ms=budget_ms))
    plugin = host.load(write(tmp_path, "loop.wat", guest(LOOP_PARSE, name="looper")))
    assert isinstance(plugin, FormatPlugin)

    for _ in range(2):  # the second time too: the rebuilt instance is limited the same
        start = time.monotonic()
        with pytest.raises(PluginError) as info:
            plugin.parse(io.BytesIO(b"L" * 10))
        elapsed = time.monotonic() - start
        assert budget_ms / 1000 * 0.9 <= elapsed < budget_ms / 1000 + 2.0
        assert "'looper'" in str(info.value)
        assert f"max_cpu_time_ms={budget_ms}" in str(info.value)
        # The plugin itself is still usable.
        assert plugin.parse(io.BytesIO(b'{"title": "after"}')).title == "after"
    assert_host_usable(host)


def test_guest_that_loops_while_loading_is_refused(host: WasmPluginHost, tmp_path: Path) -> None:
    text = guest(ECHO_PARSE).replace(
        '(func (export "manifest") (result i64)',
        '(func (export "manifest") (result i64) (loop $l (br $l))',
    )
    start = time.monotonic()
    with pytest.raises(PluginError, match=r"CPU time limit.*manifest"):
        host.load(write(tmp_path, "slowstart.wat", text))
    assert time.monotonic() - start < 0.3 + 2.0
    assert_host_usable(host)


# -- memory limit -------------------------------------------------------------------

#: parse grows memory a page at a time until memory.grow fails, then traps or
#: reports it (first input byte "T" / "R").
GREEDY_PARSE = """
  (data (i32.const 1024) "{\\"error\\":\\"out of memory\\"}\\00")
  (func (export "parse") (param $p i32) (param $n i32) (result i64)
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 84)) (then unreachable))
    (call $const (i32.const 1024)))
"""


@pytest.mark.parametrize(("first", "message"), [(b"T", "unreachable"), (b"R", "out of memory")])
def test_guest_allocating_past_its_memory_cap_is_stopped(
    tmp_path: Path, first: bytes, message: str
) -> None:
    host = WasmPluginHost(ResourceLimits(max_memory_mb=4))
    plugin = host.load(write(tmp_path, "greedy.wat", guest(GREEDY_PARSE, name="greedy")))
    assert isinstance(plugin, FormatPlugin)
    with pytest.raises(PluginError, match=message) as info:
        plugin.parse(io.BytesIO(first))
    assert "'greedy'" in str(info.value)
    if first == b"T":
        assert "max_memory_mb=4" in str(info.value)
    assert_host_usable(host)


#: parse asks for one large block, as a Rust or C allocator does: first byte
#: "B" asks 16 MiB in one memory.grow, "S" 64 KiB; when memory.grow fails it
#: aborts (``unreachable``) or, on "R", reports "out of memory"; "U" traps
#: with no memory asked for; anything else stores a byte at the address the
#: next bytes name (little-endian i32), to probe what is mapped.
BLOCK_PARSE = """
  (data (i32.const 1024) "{\\"error\\":\\"out of memory\\"}\\00")
  (data (i32.const 1100) "{}\\00")
  (func (export "parse") (param $p i32) (param $n i32) (result i64)
    (local $first i32)
    (local.set $first (i32.load8_u (local.get $p)))
    (if (i32.eq (local.get $first) (i32.const 85)) (then unreachable))
    (if (i32.eq (local.get $first) (i32.const 80))
      (then (i32.store8 (i32.load (i32.add (local.get $p) (i32.const 1))) (i32.const 1))
            (return (call $const (i32.const 1100)))))
    (if (i32.eq
          (memory.grow (select (i32.const 1) (i32.const 256)
                               (i32.eq (local.get $first) (i32.const 83))))
          (i32.const -1))
      (then
        (if (i32.eq (local.get $first) (i32.const 82))
          (then (return (call $const (i32.const 1024)))))
        unreachable))
    (call $const (i32.const 1100)))
"""


def test_guest_aborting_when_its_large_allocation_is_refused_names_the_memory_limit(
    tmp_path: Path,
) -> None:
    """A real guest asks for a large block far below the limit, memory.grow
    fails and its allocator aborts with `unreachable`: the error names the
    memory limit, not only the instruction (issue 13.12)."""
    host = WasmPluginHost(ResourceLimits(max_memory_mb=4))
    plugin = host.load(write(tmp_path, "block.wat", guest(BLOCK_PARSE, name="block")))
    assert isinstance(plugin, FormatPlugin)
    with pytest.raises(PluginError) as info:
        plugin.parse(io.BytesIO(b"B"))  # 64 KiB used of 4 MiB; asks 16 MiB more
    message = str(info.value)
    assert message.startswith(
        "WASM plugin 'block' exceeded its memory limit (max_memory_mb=4) in parse: its "
        "memory was refused growth to 16.1 MiB, and it then trapped: "
    ), message
    assert "unreachable" in message
    # A trap that asked for no memory is not blamed on it, even after a refusal
    # the guest handled itself.
    with pytest.raises(PluginError, match="out of memory"):
        plugin.parse(io.BytesIO(b"R"))
    with pytest.raises(PluginError) as info:
        plugin.parse(io.BytesIO(b"U"))
    assert "memory" not in str(info.value)
    assert "unreachable" in str(info.value)
    assert plugin.parse(io.BytesIO(b"S")).title is None  # growth within the limit works
    assert_host_usable(host)


def test_guest_memory_is_mapped_only_up_to_its_size(tmp_path: Path) -> None:
    """The host allocates guests' linear memory itself: the last byte of the
    guest's memory can be written, the next one traps."""
    host = WasmPluginHost(ResourceLimits(max_memory_mb=4))
    plugin = host.load(write(tmp_path, "probe.wat", guest(BLOCK_PARSE, name="probe")))
    assert isinstance(plugin, FormatPlugin)
    last = (1 << 16) - 1  # memory is 1 page
    assert plugin.parse(io.BytesIO(b"P" + last.to_bytes(4, "little"))).title is None
    for address in (last + 1, (4 << 20) - 1, 1 << 31):
        with pytest.raises(PluginError, match="out of bounds"):
            plugin.parse(io.BytesIO(b"P" + address.to_bytes(4, "little")))


def test_guest_whose_initial_memory_exceeds_the_cap_is_refused(tmp_path: Path) -> None:
    host = WasmPluginHost(ResourceLimits(max_memory_mb=4))
    path = write(tmp_path, "big.wat", guest(ECHO_PARSE, memory_pages=128))  # 8 MiB
    with pytest.raises(PluginError, match=r"big\.wat.*max_memory_mb=4"):
        host.load(path)
    assert_host_usable(host)


def test_input_larger_than_the_memory_cap_is_reported(tmp_path: Path) -> None:
    host = WasmPluginHost(ResourceLimits(max_memory_mb=1))
    plugin = host.load(EXAMPLE)
    assert isinstance(plugin, FormatPlugin)
    with pytest.raises(PluginError, match=r"could not allocate .*max_memory_mb=1"):
        plugin.parse(io.BytesIO(mfsx(("title", "x"), payload=b"\0" * (2 << 20))))
    assert plugin.parse(io.BytesIO(mfsx(("title", "small")))).title == "small"


# -- imports: host functions, filesystem, network ----------------------------------

#: parse opens "secret.json" in the first preopened directory (fd 3), reads it
#: and returns what it read (the file holds JSON tags) - or an error.
WASI_IMPORTS = """
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
"""
WASI_PARSE = """
  (data (i32.const 1024) "secret.json")
  (data (i32.const 1100) "{\\"error\\":\\"cannot open secret.json\\"}\\00")
  (func (export "parse") (param i32 i32) (result i64)
    ;; path_open(fd 3, follow symlinks, path, len, no oflags, rights fd_read, 0, 0, &fd)
    (if (call $path_open (i32.const 3) (i32.const 1) (i32.const 1024) (i32.const 11)
                         (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0)
                         (i32.const 2000))
      (then (return (call $const (i32.const 1100)))))
    ;; one iovec {8192, 1024} at 2008, bytes read at 2016
    (i32.store (i32.const 2008) (i32.const 8192))
    (i32.store (i32.const 2012) (i32.const 1024))
    (if (call $fd_read (i32.load (i32.const 2000)) (i32.const 2008) (i32.const 1)
                       (i32.const 2016))
      (then (return (call $const (i32.const 1100)))))
    (call $result (i32.const 8192) (i32.load (i32.const 2016))))
"""


@pytest.fixture
def secret_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "secret.json").write_text('{"title": "the secret"}')
    return folder


def test_guest_importing_wasi_is_refused_without_filesystem_access(
    host: WasmPluginHost, tmp_path: Path, secret_dir: Path
) -> None:
    path = write(tmp_path, "reader.wat", guest(WASI_PARSE, imports=WASI_IMPORTS))
    with pytest.raises(PluginError) as info:
        host.load(path)
    message = str(info.value)
    assert "wasi_snapshot_preview1.path_open" in message
    assert "allow_filesystem=False" in message
    assert "reader.wat" in message
    assert_host_usable(host)


def test_guest_with_filesystem_access_sees_only_preopened_dirs(
    tmp_path: Path, secret_dir: Path
) -> None:
    path = write(tmp_path, "reader.wat", guest(WASI_PARSE, imports=WASI_IMPORTS, memory_pages=2))
    # Allowed, but nothing preopened: the guest cannot open the file.
    bare = WasmPluginHost(ResourceLimits(allow_filesystem=True))
    plugin = bare.load(path)
    assert isinstance(plugin, FormatPlugin)
    with pytest.raises(PluginError, match=r"cannot open secret\.json"):
        plugin.parse(io.BytesIO(b"x"))
    # The same guest given the folder (read only) reads it: the test above is not vacuous.
    opened = WasmPluginHost(
        ResourceLimits(allow_filesystem=True), preopen_dirs={"/data": secret_dir}
    )
    plugin = opened.load(path)
    assert isinstance(plugin, FormatPlugin)
    assert plugin.parse(io.BytesIO(b"x")).title == "the secret"
    assert_host_usable(bare)


def test_the_configured_wasm_dirs_are_what_guests_may_read(
    tmp_path: Path, secret_dir: Path
) -> None:
    path = write(tmp_path, "reader.wat", guest(WASI_PARSE, imports=WASI_IMPORTS, memory_pages=2))
    env = {
        "MUSICFS_CONFIG": str(write(tmp_path, "config.toml", "")),
        "MUSICFS_PLUGINS_PATHS": str(path),
        "MUSICFS_PLUGINS_WASM_FILESYSTEM": "true",
        "MUSICFS_PLUGINS_WASM_DIRS": str(secret_dir),
    }
    manager = PluginManager.from_config(load_config(env=env))
    plugin = manager.get("test-guest").plugin
    assert isinstance(plugin, FormatPlugin)
    assert plugin.parse(io.BytesIO(b"x")).title == "the secret"
    manager.close()


def test_wasm_dirs_without_filesystem_access_is_a_config_error(tmp_path: Path) -> None:
    env = {
        "MUSICFS_CONFIG": str(write(tmp_path, "config.toml", "")),
        "MUSICFS_PLUGINS_WASM_DIRS": str(tmp_path),
    }
    with pytest.raises(ConfigError, match="wasm_filesystem = true"):
        load_config(env=env)
    env["MUSICFS_PLUGINS_WASM_DIRS"] = ""
    env["MUSICFS_PLUGINS_WASM_CPU_MS"] = "0"
    with pytest.raises(ConfigError, match="from 1 to 600000 ms"):
        load_config(env=env)


def test_preopen_dirs_need_filesystem_access(secret_dir: Path) -> None:
    with pytest.raises(ValueError, match="allow_filesystem"):
        WasmPluginHost(ResourceLimits(), preopen_dirs={"/data": secret_dir})


@pytest.mark.parametrize(
    ("imports", "message"),
    [
        ('(import "env" "system" (func (param i32) (result i32)))', "env.system"),
        ('(import "musicfs" "exec" (func))', "musicfs.exec"),
        ('(import "musicfs" "log" (func (param i64)))', "musicfs.log with the wrong type"),
        ('(import "env" "table" (table 1 funcref))', "env.table"),
        (
            '(import "wasi_snapshot_preview1" "sock_send"'
            " (func (param i32 i32 i32 i32 i32) (result i32)))",
            "no network access",
        ),
    ],
)
def test_guest_importing_what_the_host_does_not_provide_is_refused(
    tmp_path: Path, imports: str, message: str
) -> None:
    # Even with every permission: these imports are never provided.
    host = WasmPluginHost(
        ResourceLimits(allow_filesystem=True, allow_network=True), max_input_bytes=1 << 20
    )
    path = write(tmp_path, "importer.wat", guest(ECHO_PARSE, imports=imports))
    with pytest.raises(PluginError, match=message) as info:
        host.load(path)
    assert "importer.wat" in str(info.value)
    assert_host_usable(host)


def test_guest_may_log_through_the_host(
    host: WasmPluginHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = """
      (data (i32.const 1024) "hello from the guest")
      (func (export "parse") (param i32 i32) (result i64)
        (call $log (i32.const 1024) (i32.const 20))
        (call $result (local.get 0) (local.get 1)))
    """
    imports = '(import "musicfs" "log" (func $log (param i32 i32)))'
    plugin = host.load(write(tmp_path, "logger.wat", guest(body, imports=imports, name="chatty")))
    assert isinstance(plugin, FormatPlugin)
    with caplog.at_level("INFO", logger="musicfs.plugins.wasm"):
        assert plugin.parse(io.BytesIO(b'{"title": "t"}')).title == "t"
    assert "hello from the guest" in caplog.text
    assert "chatty" in caplog.text


def test_shut_down_plugin_refuses_calls(host: WasmPluginHost) -> None:
    plugin = host.load(EXAMPLE)
    assert isinstance(plugin, FormatPlugin)
    plugin.init({"anything": 1})  # the example has no init export: nothing to do
    plugin.shutdown()
    with pytest.raises(PluginError, match="shut down"):
        plugin.parse(io.BytesIO(mfsx(("title", "x"))))


def test_config_from_init_survives_the_rebuild_after_a_trap(
    host: WasmPluginHost, tmp_path: Path
) -> None:
    body = """
      (global $cfg_len (mut i32) (i32.const 0))
      ;; init keeps the config JSON at 8192; parse answers with it (or loops on "L")
      (func (export "init") (param $p i32) (param $n i32) (result i64)
        (memory.copy (i32.const 8192) (local.get $p) (local.get $n))
        (global.set $cfg_len (local.get $n))
        (i64.const 0))
      (func (export "parse") (param $p i32) (param $n i32) (result i64)
        (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 76))
          (then (loop $forever (br $forever))))
        (call $result (i32.const 8192) (global.get $cfg_len)))
    """
    plugin = host.load(write(tmp_path, "configured.wat", guest(body)))
    assert isinstance(plugin, FormatPlugin)
    plugin.init({"title": "from config"})
    assert plugin.parse(io.BytesIO(b"x")).title == "from config"
    with pytest.raises(PluginError, match="CPU time limit"):
        plugin.parse(io.BytesIO(b"L"))
    # A fresh instance, given the config again.
    assert plugin.parse(io.BytesIO(b"x")).title == "from config"
