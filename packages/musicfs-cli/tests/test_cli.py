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
