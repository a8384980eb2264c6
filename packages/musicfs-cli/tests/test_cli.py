"""The musicfs command: usage errors, exit codes and messages that say what to do.

Mounting itself is tested end to end in tests/e2e; these cases fail before a mount.
"""

from __future__ import annotations

import argparse
import os
import plistlib
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from musicfs.cli.common import EXIT_NO_DAEMON, EXIT_USAGE
from musicfs.cli.main import main


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "musicfs.cli", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}, check=False,
    )  # fmt: skip


def test_version_and_help() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("musicfs ")
    assert "mount" in run("--help").stdout


def test_mount_without_origin_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mount", str(tmp_path), "--config", os.devnull]) == EXIT_USAGE
    assert "no origin given: pass --origin DIR" in capsys.readouterr().err


def test_bad_config_names_file_key_and_reason(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[mount]\nattr_timeout = "soon"\n')
    result = run("mount", str(tmp_path), "--origin", str(tmp_path), "--config", str(config))
    assert result.returncode == EXIT_USAGE
    assert str(config) in result.stderr
    assert "mount.attr_timeout" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_template_flag_names_the_variable(tmp_path: Path) -> None:
    result = run("mount", str(tmp_path), "--origin", str(tmp_path), "--template", "$bogus/$title")
    assert result.returncode == EXIT_USAGE
    assert "$bogus" in result.stderr


def test_missing_mountpoint_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    for foreground in ([], ["--foreground"]):
        result = run("mount", str(missing), "--origin", str(tmp_path),
                     "--cache-dir", str(tmp_path / "cache"), *foreground)  # fmt: skip
        fails_cleanly(result, EXIT_USAGE, f"mountpoint {missing} does not exist", "mkdir -p")
        assert not (tmp_path / "cache").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = run("mount", str(afile), "--origin", str(tmp_path),
                 "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    fails_cleanly(result, EXIT_USAGE, f"mountpoint {afile} is not a directory")
    assert not (tmp_path / "cache").exists()


def test_missing_origin_is_refused_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    for foreground in ([], ["--foreground"]):  # the daemon refuses it, in both modes
        result = run("mount", str(tmp_path / "mnt"), "--origin", str(tmp_path / "nomusic"),
                     "--cache-dir", str(tmp_path / "cache"), *foreground)  # fmt: skip
        assert result.returncode == EXIT_USAGE, result.stderr
        assert str(tmp_path / "nomusic") in result.stderr
        assert "--origin" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_cache_dir_another_daemon_holds_is_refused_before_anything_is_opened(
    tmp_path: Path,
) -> None:
    from musicfs.core.config.paths import CacheDirLock

    cache = tmp_path / "cache"
    lock = CacheDirLock(cache)
    lock.acquire()  # as a running daemon holds it
    try:
        before = sorted(p.name for p in cache.iterdir())
        (tmp_path / "mnt").mkdir()
        (tmp_path / "music").mkdir()
        result = run("mount", str(tmp_path / "mnt"), "--origin", str(tmp_path / "music"),
                     "--cache-dir", str(cache))  # fmt: skip
        fails_cleanly(
            result, EXIT_USAGE, f"cache directory {cache} is in use", f"pid {os.getpid()}"
        )
        assert sorted(p.name for p in cache.iterdir()) == before  # no daemon.log, no musicfs.log
    finally:
        lock.release()


def test_status_without_a_daemon_exits_3(tmp_path: Path) -> None:
    result = run("status", str(tmp_path), env={"XDG_RUNTIME_DIR": str(tmp_path)})
    assert result.returncode == EXIT_NO_DAEMON
    assert "is it mounted?" in result.stderr


def test_unmount_of_something_not_mounted_exits_3(tmp_path: Path) -> None:
    result = run("unmount", str(tmp_path), env={"XDG_RUNTIME_DIR": str(tmp_path)})
    assert result.returncode == EXIT_NO_DAEMON
    assert "is it mounted?" in result.stderr


def test_cache_verify_needs_to_know_which_cache(tmp_path: Path) -> None:
    result = run("cache", "verify", "--config", os.devnull)
    assert result.returncode == EXIT_USAGE
    assert "--cache-dir" in result.stderr
    empty = run("cache", "verify", "--cache-dir", str(tmp_path / "nothing"))
    assert empty.returncode == 1
    assert "no MusicFS cache in" in empty.stderr


# -- bad input: a one-line error naming the thing and the fix, never a traceback --------


def fails_cleanly(result: subprocess.CompletedProcess[str], code: int, *expected: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("musicfs: error: ")
    for text in expected:
        assert text in result.stderr


def cache_dir_with_catalog(path: Path) -> Path:
    from musicfs.core.catalog.store import Catalog

    path.mkdir()
    Catalog.open(path / "catalog.sqlite3").close()
    return path


def test_mount_refuses_a_mountpoint_that_is_not_empty(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (mnt / "notes.txt").write_text("mine")
    result = run("mount", str(mnt), "--origin", str(tmp_path / "music"),
                 "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    fails_cleanly(result, EXIT_USAGE, f"mountpoint {mnt} is not empty", "'notes.txt'",
                  "empty directory")  # fmt: skip
    assert (mnt / "notes.txt").read_text() == "mine"


def test_mount_refuses_a_mountpoint_inside_an_origin_and_an_origin_inside_it(
    tmp_path: Path,
) -> None:
    music = tmp_path / "music"
    (music / "mnt").mkdir(parents=True)
    inside = run("mount", str(music / "mnt"), "--origin", str(music),
                 "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    fails_cleanly(inside, EXIT_USAGE, f"mountpoint {music / 'mnt'} is inside origin",
                  "would list its own files")  # fmt: skip
    hidden = run("mount", str(music), "--origin", str(music / "mnt"),
                 "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    fails_cleanly(hidden, EXIT_USAGE, f"({music / 'mnt'}) is inside mountpoint {music}",
                  "would hide it")  # fmt: skip


def test_mount_with_a_cache_dir_that_is_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    (tmp_path / "music").mkdir()
    afile = tmp_path / "afile"
    afile.write_text("x")
    for foreground in ([], ["--foreground"]):
        result = run("mount", str(tmp_path / "mnt"), "--origin", str(tmp_path / "music"),
                     "--cache-dir", str(afile), *foreground)  # fmt: skip
        fails_cleanly(result, EXIT_USAGE, f"cache dir {afile} is a file", "--cache-dir DIR")
    below = run("mount", str(tmp_path / "mnt"), "--origin", str(tmp_path / "music"),
                "--cache-dir", str(afile / "cache"))  # fmt: skip
    fails_cleanly(below, EXIT_USAGE, f"cannot create cache dir {afile / 'cache'}")


def test_unmount_timeout_must_be_positive(tmp_path: Path) -> None:
    result = run("unmount", str(tmp_path), "--timeout", "-1")
    assert result.returncode == EXIT_USAGE
    assert "expected a number of seconds above 0, got '-1'" in result.stderr


def test_cache_verify_reports_a_damaged_catalog_instead_of_crashing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "catalog.sqlite3").write_bytes(b"garbage" * 1000)
    result = run("cache", "verify", "--cache-dir", str(cache))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "catalog: damaged" in result.stdout
    assert "move it away" in result.stdout


def test_cache_verify_with_a_damaged_content_database_says_what_to_move(tmp_path: Path) -> None:
    cache = cache_dir_with_catalog(tmp_path / "cache")
    (cache / "content").mkdir()
    (cache / "content" / "manifests.sqlite3").write_bytes(b"garbage" * 1000)
    result = run("cache", "verify", "--cache-dir", str(cache))
    fails_cleanly(result, 1, f"move {cache / 'content'} away")


def test_cache_backup_of_a_damaged_catalog_fails_cleanly_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "catalog.sqlite3").write_bytes(b"garbage" * 1000)
    result = run("cache", "backup", str(tmp_path / "b.tar"), "--cache-dir", str(cache))
    fails_cleanly(result, 1, "backup failed", "musicfs cache verify")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no .b.tar.partial


def test_cache_backup_never_overwrites_what_is_not_a_backup(tmp_path: Path) -> None:
    cache = cache_dir_with_catalog(tmp_path / "cache")
    song = tmp_path / "song.flac"
    song.write_bytes(b"fLaC precious")
    result = run("cache", "backup", str(song), "--cache-dir", str(cache))
    fails_cleanly(result, EXIT_USAGE, f"{song} exists and is not a MusicFS backup")
    assert song.read_bytes() == b"fLaC precious"
    folder = run("cache", "backup", str(tmp_path), "--cache-dir", str(cache))
    fails_cleanly(folder, EXIT_USAGE, f"{tmp_path} is a directory", "musicfs-backup.tar")
    missing = run("cache", "backup", str(tmp_path / "no" / "b.tar"), "--cache-dir", str(cache))
    fails_cleanly(missing, EXIT_USAGE, f"folder {tmp_path / 'no'} does not exist", "mkdir -p")
    backup = tmp_path / "b.tar"
    for _ in range(2):  # an old backup is replaced, as a nightly job expects
        made = run("cache", "backup", str(backup), "--cache-dir", str(cache))
        assert made.returncode == 0, made.stderr


def test_cache_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    song = tmp_path / "song.flac"
    song.write_bytes(b"fLaC" + bytes(2000))
    target = ["--cache-dir", str(tmp_path / "cache")]
    result = run("cache", "restore", str(song), *target)
    fails_cleanly(result, EXIT_USAGE, f"{song} is not a MusicFS backup", "musicfs cache backup")
    assert len(result.stderr.splitlines()) == 1
    folder = run("cache", "restore", str(tmp_path), *target)
    fails_cleanly(folder, EXIT_USAGE, f"{tmp_path} is a directory, not a backup file")
    assert not (tmp_path / "cache").exists()


def test_cache_restore_never_replaces_a_folder_that_is_not_a_cache(tmp_path: Path) -> None:
    cache = cache_dir_with_catalog(tmp_path / "cache")
    backup = tmp_path / "b.tar"
    assert run("cache", "backup", str(backup), "--cache-dir", str(cache)).returncode == 0
    music = tmp_path / "Music"
    music.mkdir()
    (music / "song.flac").write_bytes(b"precious")
    result = run("cache", "restore", str(backup), "--cache-dir", str(music))
    fails_cleanly(result, EXIT_USAGE, f"{music} is not a MusicFS cache dir", "'song.flac'")
    assert (music / "song.flac").read_bytes() == b"precious"
    afile = tmp_path / "afile"
    afile.write_text("x")
    onto_file = run("cache", "restore", str(backup), "--cache-dir", str(afile))
    fails_cleanly(onto_file, EXIT_USAGE, f"cache dir {afile} is a file")
    fresh = run("cache", "restore", str(backup), "--cache-dir", str(tmp_path / "new"))
    assert fresh.returncode == 0, fresh.stderr
    again = run("cache", "restore", str(backup), "--cache-dir", str(cache))
    assert again.returncode == 0, again.stderr


def test_cache_clear_origin_without_scope_clears_only_that_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = []

    class Client:
        def clear_cache(self, scope: str, origin: str) -> dict[str, int]:
            calls.append((scope, origin))
            return {"files_dropped": 0, "bytes_freed": 0, "entries_dropped": 0}

    import contextlib

    from musicfs.cli import cache

    monkeypatch.setattr(cache, "daemon_client", lambda args: contextlib.nullcontext(Client()))
    assert main(["cache", "clear", "--origin", "nas", "--config", os.devnull]) == 0
    assert calls == [("origin", "nas")]
    both = run("cache", "clear", "--origin", "nas", "--scope", "chunks")
    fails_cleanly(both, EXIT_USAGE, "--origin nas", "--scope chunks", "drop one")
    assert calls == [("origin", "nas")]


def test_search_with_an_empty_query_is_a_usage_error() -> None:
    for query in ("", "   "):
        result = run("search", query)
        fails_cleanly(result, EXIT_USAGE, "the query is empty", "musicfs search")


def test_tag_clear_of_an_unknown_field_is_an_error(tmp_path: Path) -> None:
    result = run("tag", "clear", str(tmp_path / "x.flac"), "bogus")
    fails_cleanly(result, EXIT_USAGE, "'bogus' is not a tag field", "title, artist")


def test_a_path_inside_a_mount_where_its_mountpoint_is_meant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from musicfs.cli import common

    mnt = tmp_path / "mnt"
    monkeypatch.setattr(common, "musicfs_mounts", lambda: {mnt})
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    for argv in (["status", str(mnt / "Artist")], ["unmount", str(mnt / "Artist")],
                 ["cache", "stats", str(mnt / "Artist")],
                 ["mount", str(mnt / "Artist"), "--origin", str(tmp_path / "music")]):  # fmt: skip
        assert main([*argv, "--config", os.devnull]) == EXIT_USAGE
        assert f"inside the MusicFS mount {mnt}, not its mountpoint" in capsys.readouterr().err
    assert main(["tag", "show", str(mnt), "--config", os.devnull]) == EXIT_USAGE
    assert f"{mnt} is the mount itself; name a file inside it" in capsys.readouterr().err


# -- exit codes: one table, shown by --help and the README ---------------------------


def test_help_and_readme_show_the_exit_code_table() -> None:
    from musicfs.core.exitcodes import EXIT_CODES

    shown = " ".join(run("--help").stdout.split())
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    for code, meaning in EXIT_CODES.items():
        assert f"{int(code)} {meaning}" in shown
        assert f"| {int(code)} |" in readme, f"README has no row for exit code {int(code)}"


def test_help_names_tag_fields_cache_tiers_and_origin_urls() -> None:
    from musicfs.core.model import OVERRIDABLE_FIELDS

    tag_set = run("tag", "set", "--help").stdout
    for name in OVERRIDABLE_FIELDS:
        assert name in tag_set
    stats = " ".join(run("cache", "stats", "--help").stdout.split())
    for tier in ("l1 metadata", "l2 headers", "l3 audio chunks"):
        assert tier in stats
    mount = run("mount", "--help").stdout
    for scheme in ("nfs://", "smb://", "s3://", "sftp://"):
        assert scheme in mount


def test_cache_stats_names_each_tier_and_keeps_the_json_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import contextlib
    import json

    from musicfs.cli import cache

    tier = {"entries": 1, "bytes": 2, "hits": 3, "misses": 4, "hit_ratio": 0.4,
            "evictions": 0, "corrupt": 0}  # fmt: skip

    class Client:
        def cache_stats(self) -> dict[str, object]:
            return {"tiers": [{"tier": t, **tier} for t in ("l1", "l2", "l3")], "mode": "full",
                    "limit_bytes": 10, "dedup_ratio": 1.0, "origin_bytes": 0,
                    "cached_files": 1}  # fmt: skip

    monkeypatch.setattr(cache, "daemon_client", lambda args: contextlib.nullcontext(Client()))
    assert main(["cache", "stats", "--json", "--config", os.devnull]) == 0
    tiers = json.loads(capsys.readouterr().out)["tiers"]
    assert [(t["tier"], t["name"]) for t in tiers] == [
        ("l1", "metadata"), ("l2", "headers"), ("l3", "audio chunks")
    ]  # fmt: skip
    assert all(t["hits"] == 3 for t in tiers)
    assert main(["cache", "stats", "--config", os.devnull]) == 0
    table = capsys.readouterr().out
    for name in ("l1 metadata", "l2 headers", "l3 audio chunks"):
        assert name in table


# -- naming the mount: --mount on every command that talks to one ----------------------

GROUPS = ("cache", "catalog", "tag", "plugin", "origin", "config", "import", "collection")

#: Every command that talks to a mount, with what it needs besides the mount.
MOUNT_COMMANDS: list[list[str]] = [
    ["status"], ["unmount"], ["shutdown"], ["events"], ["verify"],
    ["cache", "stats"], ["cache", "clear"], ["cache", "verify"],
    ["cache", "backup", "b.tar"], ["cache", "restore", "b.tar"],
    ["cache", "prefetch", "Artist/Album"], ["cache", "pin", "Artist/Album"],
    ["cache", "unpin", "--all"], ["cache", "pins"],
    ["tag", "show", "A/B/01.flac"], ["tag", "set", "A/B/01.flac", "genre=Jazz"],
    ["tag", "clear", "A/B/01.flac"], ["tag", "lookup", "A/B/01.flac"],
    ["tag", "rate", "A/B/01.flac", "80"], ["collection", "list"],
    ["collection", "add", "mp3s", "format=mp3"], ["collection", "remove", "mp3s"],
    ["plugin", "list"], ["plugin", "load", "p.py"], ["plugin", "unload", "p"],
    ["plugin", "reload"], ["origin", "list"], ["origin", "health", "music"],
    ["origin", "rescan"], ["config", "show"], ["config", "set", "log_level", "debug"],
    ["search", "metallica"], ["export"], ["import", "musicfs", "x.json"],
    ["import", "beets", "lib.db"], ["import", "itunes", "Library.xml"],
    ["catalog", "status"], ["catalog", "migrate", "--to", "postgresql://me@127.0.0.1:1/music"],
]  # fmt: skip


def _commands(parser: argparse.ArgumentParser) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every (sub)command of *parser* and its parser, e.g. ("cache", "stats")."""
    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                inner = _commands(sub)
                found.update({(name, *k): p for k, p in inner.items()} if inner else {(name,): sub})
    return found


def test_every_command_that_talks_to_a_mount_takes_dash_dash_mount() -> None:
    from musicfs.cli.main import build_parser

    commands = _commands(build_parser())
    talking = {key: p for key, p in commands.items() if key not in {("mount",), ("completion",)}}
    assert set(talking) == {tuple(c[: 2 if c[0] in GROUPS else 1]) for c in MOUNT_COMMANDS}
    for key, sub in talking.items():
        options = {o for a in sub._actions for o in a.option_strings}
        assert {"--mount", "-m"} <= options, key


@pytest.mark.parametrize("command", MOUNT_COMMANDS, ids=" ".join)
def test_each_command_exits_as_documented_when_no_daemon_answers(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """--mount names the mount for every command: with nothing mounted there,
    it is 3 (no daemon), or 2 where the command needs the mount itself to read
    (a path inside it, a cache dir of it)."""
    from musicfs.cli import common

    mnt = tmp_path / "mnt"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "p.py").write_text("")
    (tmp_path / "x.json").write_text('{"musicfs_export": 1, "tracks": []}')
    with sqlite3.connect(tmp_path / "lib.db") as beets:  # a beets library with no items
        beets.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, path BLOB, title TEXT)")
    beets.close()
    (tmp_path / "Library.xml").write_bytes(plistlib.dumps({"Tracks": {}, "Playlists": []}))
    needs_cache = command[:2] in (["cache", "verify"], ["cache", "backup"], ["cache", "restore"])
    if needs_cache:  # works on the cache dir: nothing there is "no cache", a failure
        expected = {"verify": 1, "backup": 1, "restore": 2}[command[1]]
    elif command[0] == "catalog":  # reads the mount's cache dir: none there, named so
        expected = EXIT_USAGE
    elif command[0] == "tag" or command[:2] in (["cache", "prefetch"], ["cache", "pin"]):
        monkeypatch.setattr(common, "musicfs_mounts", lambda: {mnt})  # the path is in a mount
        expected = EXIT_NO_DAEMON
    else:
        expected = EXIT_NO_DAEMON
    code = main([*command, "--mount", str(mnt), "--config", os.devnull])
    err = capsys.readouterr().err
    assert code == expected, err
    assert "Traceback" not in err
    if expected == EXIT_NO_DAEMON:
        assert "is it mounted?" in err


def test_several_mounts_running_and_none_named_lists_the_mountpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    from musicfs.cli import common
    from musicfs.core.config.paths import socket_path_for
    from musicfs.core.config.settings import Config

    music, books = tmp_path / "mnt" / "music", tmp_path / "mnt" / "books"
    run_dir = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # socket paths are short
    request.addfinalizer(lambda: shutil.rmtree(run_dir, ignore_errors=True))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run_dir))
    monkeypatch.setattr(common, "musicfs_mounts", lambda: {music, books})
    for mount in (music, books):  # two daemons listening
        listening = socket.socket(socket.AF_UNIX)
        request.addfinalizer(listening.close)
        path = socket_path_for(Config(), mount)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # as a daemon makes it
        listening.bind(str(path))
        listening.listen()
    # A daemon killed with -9 leaves its socket file: not a running mount.
    socket_path_for(Config(), tmp_path / "mnt" / "killed").touch()
    for command in (["status"], ["origin", "list"], ["search", "x"]):
        assert main([*command, "--config", os.devnull]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert f"2 mounts are running: {books}, {music}" in err
        assert ".sock" not in err
        words = " ".join(command[: 2 if command[0] in GROUPS else 1])
        assert f"name one with --mount MOUNTPOINT, e.g. musicfs {words} --mount {books}" in err
    for mount in (music, books):
        socket_path_for(Config(), mount).unlink()  # both gone: the killed one is no daemon
    assert main(["status", "--config", os.devnull]) == EXIT_NO_DAEMON
    assert "no MusicFS daemon is running" in capsys.readouterr().err


def test_mount_option_and_argument_are_one_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from musicfs.cli import common

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    mnt = tmp_path / "mnt"
    both = ["status", str(mnt), "--mount", str(tmp_path / "other"), "--config", os.devnull]
    assert main(both) == EXIT_USAGE
    assert "two mounts named" in capsys.readouterr().err
    same = ["status", str(mnt), "-m", str(mnt), "--config", os.devnull]
    assert main(same) == EXIT_NO_DAEMON
    monkeypatch.setattr(common, "musicfs_mounts", lambda: {mnt, tmp_path / "other"})
    elsewhere = ["tag", "show", str(tmp_path / "other" / "a.flac"), "--mount", str(mnt)]
    assert main([*elsewhere, "--config", os.devnull]) == EXIT_USAGE
    assert f"is inside the MusicFS mount {tmp_path / 'other'}, not --mount {mnt}" in (
        capsys.readouterr().err
    )


# -- the control socket's folder and who may use it (issue 13.9, 13.11) --------------


def test_commands_refuse_a_runtime_dir_another_user_could_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without XDG_RUNTIME_DIR that folder is /tmp/musicfs-<uid>: whoever made it
    first (mode 0777, or their own) would receive the commands."""
    from musicfs.core.config.paths import runtime_dir

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = runtime_dir()
    folder.mkdir()
    for spoil in (lambda: folder.chmod(0o777), lambda: os.chown(folder, 65534, 65534)):
        spoil()
        for args in (["status"], ["status", "--mount", str(tmp_path / "mnt")]):
            assert main([*args, "--config", os.devnull]) == EXIT_USAGE
            err = capsys.readouterr().err
            assert f"musicfs: error: the control socket folder {folder} " in err
            assert f"Remove it (rm -r {folder}" in err
            assert "Traceback" not in err


def _as_nobody(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``musicfs ARGS`` run by uid 65534 (nobody). The test venv's interpreter is
    under /root, closed to nobody: the system's Python 3.11 runs it, with the
    venv's packages."""
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    code = (
        f"import runpy, site, sys; site.addsitedir({site_packages!r}); sys.argv[0] = 'musicfs'; "
        "runpy.run_module('musicfs.cli', run_name='__main__')"
    )
    return subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
         "/usr/bin/python3.11", "-c", code, *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "XDG_CONFIG_HOME": "/nonexistent",
             **(env or {})},
    )  # fmt: skip


@pytest.mark.skipif(
    os.getuid() != 0 or not Path("/usr/bin/python3.11").exists(),
    reason="needs root (to switch to uid 65534) and /usr/bin/python3.11",
)
def test_a_user_who_cannot_reach_the_socket_is_told_whose_it_is(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's socket (mode 0600 in a 0700 folder, as a daemon makes them):
    one line naming the socket and what to do, never a PermissionError traceback."""
    from musicfs.core.config.paths import socket_path_for
    from musicfs.core.config.settings import Config

    run_dir = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # socket paths are short
    request.addfinalizer(lambda: shutil.rmtree(run_dir, ignore_errors=True))
    run_dir.chmod(0o755)
    mnt = run_dir / "mnt"
    env = {"XDG_RUNTIME_DIR": str(run_dir)}
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run_dir))  # where nobody looks, with env
    path = socket_path_for(Config(), mnt)
    path.parent.mkdir(mode=0o700)
    listening = socket.socket(socket.AF_UNIX)
    request.addfinalizer(listening.close)
    listening.bind(str(path))
    listening.listen()
    path.chmod(0o600)
    for folder_mode in (0o700, 0o755):  # the folder closed, or only the socket
        path.parent.chmod(folder_mode)
        for args in (["status", "--socket", str(path)], ["status", "--mount", str(mnt)]):
            result = _as_nobody(*args, "--config", os.devnull, env=env)
            assert result.returncode == EXIT_USAGE, result.stderr
            assert result.stderr == (
                f"musicfs: error: permission denied on the control socket {path} (it belongs "
                "to root (uid 0)); run the command as the user who mounted it, or as root\n"
            )
