"""The native host and the plugin manager: loading, refusing, unloading, hot
reload, failures that do not stop the others, precedence, entry points."""

from __future__ import annotations

import io
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from musicfs.core.events import EventBus, EventType
from musicfs.core.model import TrackTags
from musicfs.plugins.api import PluginError
from musicfs.plugins.manager import PluginManager

EXAMPLES = Path(__file__).resolve().parents[3] / "plugins" / "examples"


def format_plugin(name: str, ext: str, title: str, api: str = "1.0", extra: str = "") -> str:
    """The source of a one-class format plugin module; *extra* is appended as is."""
    return (
        textwrap.dedent(f'''
        from musicfs.core.model import TrackTags
        from musicfs.plugins.api import FormatPlugin

        class P(FormatPlugin):
            name = "{name}"
            api_version = "{api}"
            extensions = ("{ext}",)

            def parse(self, reader):
                return TrackTags(title="{title}")
    ''')
        + extra
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def events() -> EventBus:
    return EventBus()


@pytest.fixture
def manager(events: EventBus) -> Iterator[PluginManager]:
    manager = PluginManager(events=events)
    yield manager
    manager.close()


def parse_with(manager: PluginManager, ext: str) -> str | None:
    parser = manager.extensions().tag_parser(ext)
    assert parser is not None, f"no plugin reads .{ext}"
    return parser.parse(io.BytesIO(b"")).title


def test_a_plugin_file_loads_lists_and_unloads(
    tmp_path: Path, manager: PluginManager, events: EventBus
) -> None:
    seen = events.subscribe([EventType.PLUGIN_LOADED, EventType.PLUGIN_UNLOADED])
    infos = manager.load_path(write(tmp_path / "one.py", format_plugin("one", "xa", "A")))
    assert [(i.name, i.kinds, i.host, i.details["extensions"]) for i in infos] == [
        ("one", ("format",), "native", "xa"),
    ]  # fmt: skip
    assert parse_with(manager, "xa") == "A"
    assert manager.extensions().extra_extensions() == {"xa"}
    manager.unload("one")
    assert manager.extensions().tag_parser("xa") is None
    told = [(e.type, e.path) for e in iter(lambda: seen.get(timeout=0), None)]
    assert told == [(EventType.PLUGIN_LOADED, "one"), (EventType.PLUGIN_UNLOADED, "one")]
    with pytest.raises(PluginError, match="no plugin named 'one'"):
        manager.unload("one")


@pytest.mark.parametrize("api", ["2.0", "1.1", "0.9"])
def test_another_major_or_a_newer_minor_is_refused_naming_both_versions(
    tmp_path: Path, manager: PluginManager, api: str
) -> None:
    path = write(tmp_path / "future.py", format_plugin("future", "xf", "F", api=api))
    with pytest.raises(PluginError) as refused:
        manager.load_path(path)
    assert f"targets plugin API {api}" in str(refused.value)
    assert "provides API 1.0" in str(refused.value)
    assert manager.infos() == []


def test_hot_reload_takes_the_new_code(tmp_path: Path, manager: PluginManager) -> None:
    path = write(tmp_path / "live.py", format_plugin("live", "xl", "before"))
    manager.load_path(path)
    assert parse_with(manager, "xl") == "before"
    write(path, format_plugin("live", "xl", "after"))
    manager.reload("live")
    assert parse_with(manager, "xl") == "after"


def test_a_reload_that_fails_keeps_the_loaded_version(
    tmp_path: Path, manager: PluginManager, events: EventBus
) -> None:
    path = write(tmp_path / "live.py", format_plugin("live", "xl", "good"))
    manager.load_path(path)
    failed = events.subscribe([EventType.PLUGIN_FAILED])
    path.write_text("this is not python(")
    with pytest.raises(PluginError, match="SyntaxError"):
        manager.reload("live")
    assert parse_with(manager, "xl") == "good"
    event = failed.get(timeout=0)
    assert event is not None
    assert "the loaded version stays" in str(event.details["error"])


def test_broken_plugins_are_reported_and_skipped_the_others_load(
    tmp_path: Path, manager: PluginManager, events: EventBus
) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    write(folder / "a_raises.py", "raise RuntimeError('boom at import')\n")
    write(folder / "b_init.py", format_plugin("badinit", "xb", "B", extra=textwrap.dedent('''
        def _init(self, config):
            raise ValueError("no key given")
        P.init = _init
    ''')))  # fmt: skip
    write(folder / "c_good.py", format_plugin("good", "xc", "C"))
    write(folder / "d_empty.py", "x = 1\n")
    seen = events.subscribe()
    manager.load_path(folder, keep_going=True)
    assert [i.name for i in manager.infos()] == ["good"]
    errors = {Path(f.source).name: f.error for f in manager.failures}
    assert "boom at import" in errors["a_raises.py"]
    assert "failed in init: ValueError: no key given" in errors["b_init.py"]
    assert "defines no plugin" in errors["d_empty.py"]
    kinds = [e.type for e in iter(lambda: seen.get(timeout=0), None)]
    assert kinds.count(EventType.PLUGIN_FAILED) == 3
    assert kinds.count(EventType.PLUGIN_LOADED) == 1


def test_init_gets_the_plugins_config_table(tmp_path: Path, events: EventBus) -> None:
    manager = PluginManager({"cfg": {"greeting": "hello"}}, events=events)
    extra = textwrap.dedent("""
        def _init(self, config):
            type(self).seen = dict(config)
        P.init = _init
    """)
    manager.load_path(write(tmp_path / "cfg.py", format_plugin("cfg", "xg", "G", extra=extra)))
    assert type(manager.get("cfg").plugin).seen == {"greeting": "hello"}  # type: ignore[attr-defined]


def test_two_plugins_of_one_name_are_not_both_loaded(
    tmp_path: Path, manager: PluginManager
) -> None:
    manager.load_path(write(tmp_path / "a.py", format_plugin("same", "x1", "1")))
    with pytest.raises(PluginError, match="'same' is loaded already"):
        manager.load_path(write(tmp_path / "b.py", format_plugin("same", "x2", "2")))
    assert parse_with(manager, "x1") == "1"


def test_builtin_plugins_come_before_native_ones(tmp_path: Path, manager: PluginManager) -> None:
    manager.load_path(write(tmp_path / "flac2.py", format_plugin("my-flac", "flac", "mine")))
    manager.load_builtin()
    writer = manager.extensions().header_writer("flac")
    assert writer is not None
    assert writer.name != "my-flac"  # the built-in FLAC overlay wins
    assert [p.host for p in manager.plugins][-1] == "native"


def test_installed_plugins_load_from_their_entry_point(
    tmp_path: Path, manager: PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "demo_mfs_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "demo_mfs_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: demo-mfs-plugin\nVersion: 1.0\n"
    )
    (site / "demo_mfs_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[musicfs.plugins]\ndemo = demo_mfs_plugin:P\n"
    )
    write(site / "demo_mfs_plugin.py", format_plugin("demo", "xd", "from an entry point"))
    monkeypatch.syspath_prepend(str(site))
    try:
        manager.load_entry_points()
        assert parse_with(manager, "xd") == "from an entry point"
        assert manager.get("demo").source == "entry point demo"
        write(site / "demo_mfs_plugin.py", format_plugin("demo", "xd", "reloaded"))
        manager.reload("demo")
        assert parse_with(manager, "xd") == "reloaded"
    finally:
        sys.modules.pop("demo_mfs_plugin", None)


# -- the shipped examples ------------------------------------------------------------


def test_the_example_format_plugin_reads_and_rewrites_mtr_files(manager: PluginManager) -> None:
    manager.load_path(EXAMPLES / "mtr_format.py")
    mtr = sys.modules[manager.get("mtr-format").native.module]  # type: ignore[union-attr]
    data = mtr.encode({"title": "Song", "artist": "Ann", "track": "3/12"}, b"PAYLOAD")
    parser = manager.extensions().tag_parser("mtr")
    assert parser is not None
    assert parser.parse(io.BytesIO(data)) == TrackTags(title="Song", artist="Ann", track=3)
    writer = manager.extensions().header_writer("mtr")
    assert writer is not None
    length = writer.header_length(lambda o, n: data[o : o + n], len(data))
    assert data[length:] == b"PAYLOAD"
    meta = TrackTags(title="New", artist=None, track=3)
    served = writer.synthesize_header(meta, data[:length]) + data[length:]
    assert parser.parse(io.BytesIO(served)) == TrackTags(title="New", track=3)
    assert b"track=3/12" in served  # an unchanged field is kept as written


def test_the_example_origin_plugin_serves_a_zip_archive(
    tmp_path: Path, manager: PluginManager
) -> None:
    archive = tmp_path / "album.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Album/01.flac", b"A" * 5000, compress_type=zipfile.ZIP_STORED)
        zf.writestr("Album/cover.jpg", b"jpg")
        zf.writestr("notes.txt", b"txt")
    manager.load_path(EXAMPLES / "zip_origin.py")
    maker = manager.extensions().origin_maker("zip")
    assert maker is not None
    origin = maker.create("dl", {"path": str(archive)})
    origin.check()
    assert origin.list_dir("", ["flac"]).subdirs == ["Album"]
    listing = origin.list_dir("Album", ["flac"])
    assert [name for name, _ in listing.files] == ["01.flac"]
    with origin.open("Album/01.flac") as member:
        assert member.read(4990, 100) == b"A" * 10
    with pytest.raises(FileNotFoundError):
        origin.stat("Album/02.flac")
    origin.close()
