"""The musicfs command: usage errors, exit codes and messages that say what to do.

Mounting itself is tested end to end in tests/e2e; these cases fail before a mount.
"""

from __future__ import annotations

import os
import subprocess
import sys
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


def test_missing_mountpoint_fails_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    result = run("mount", str(missing), "--origin", str(tmp_path),
                 "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert result.returncode == 1
    assert f"mountpoint {missing} does not exist" in result.stderr
    assert "mkdir -p" in result.stderr


def test_missing_origin_fails_naming_it(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    result = run("mount", str(tmp_path / "mnt"), "--origin", str(tmp_path / "nomusic"),
                 "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert result.returncode == 1
    assert str(tmp_path / "nomusic") in result.stderr
    assert "--origin" in result.stderr


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
    from musicfs.core.catalog import Catalog

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
