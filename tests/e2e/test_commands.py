"""Naming a mount and the exit codes of every command (issue 12, point 7),
through real mounts: ``--mount MOUNTPOINT`` on every command that talks to a
mount, the mountpoints (not socket names) when several run and none is named,
the documented exit codes, and a refused ``mount`` that touches nothing of the
mount already running there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    EXIT_NO_DAEMON,
    MUSICFS,
    Mount,
    describe,
    mount_command,
    mounted,
    musicfs_env,
    run_musicfs,
    unmount,
    wait_until,
)
from tests.e2e.library import Library, make_origin, render_path
from tests.e2e.test_offline import JOGA, UNRAVEL

pytestmark = [pytest.mark.mount, pytest.mark.media]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def exits(code: int, *args: str | Path) -> subprocess.CompletedProcess[str]:
    result = run_musicfs(*args)
    assert result.returncode == code, describe(result)
    assert "Traceback" not in result.stderr
    return result


def test_every_command_names_its_mount_with_dash_dash_mount_and_exits_as_documented(
    library: Library, tmp_path: Path
) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL])
    joga = render_path(specs[JOGA])  # relative to the mount, as search --json prints it
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        mp = ("--mount", str(mount.mountpoint))
        events = subprocess.Popen(
            [MUSICFS, "events", *mp, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True, env=musicfs_env(),
        )  # fmt: skip
        try:
            wait_until(lambda: events.poll() is not None or mount.status()["event_subscribers"],
                       timeout=30, what="musicfs events to subscribe")  # fmt: skip
            assert events.poll() is None, events.communicate()
            assert json.loads(exits(EXIT_OK, "status", *mp, "--json").stdout)["state"] == "READY"
            exits(EXIT_OK, "status", "-m", mount.mountpoint)
            exits(EXIT_OK, "status", mount.mountpoint)  # the argument is still accepted
            exits(EXIT_USAGE, "status", tmp_path, *mp)  # two different mounts named
            exits(EXIT_OK, "verify", *mp)
            exits(EXIT_OK, "cache", "prefetch", Path(joga).parent, *mp)  # relative to the mount
            stats = json.loads(exits(EXIT_OK, "cache", "stats", *mp, "--json").stdout)
            assert [(t["tier"], t["name"]) for t in stats["tiers"]] == [
                ("l1", "metadata"), ("l2", "headers"), ("l3", "audio chunks"),
            ]  # fmt: skip
            exits(EXIT_OK, "cache", "clear", "--scope", "metadata", *mp)
            exits(EXIT_USAGE, "cache", "clear", "--scope", "origin", *mp)
            exits(EXIT_OK, "cache", "backup", tmp_path / "b.tar", *mp)
            exits(EXIT_USAGE, "cache", "restore", tmp_path / "b.tar", *mp)  # while mounted
            exits(EXIT_OK, "tag", "show", joga, *mp)
            exits(EXIT_OK, "tag", "set", joga, "genre=Jazz", *mp)
            exits(EXIT_USAGE, "tag", "set", joga, "mood=Calm", *mp)
            exits(EXIT_OK, "tag", "clear", joga, *mp)
            exits(EXIT_OK, "tag", "lookup", joga, *mp)
            exits(EXIT_OK, "tag", "rate", joga, "80", *mp)
            exits(EXIT_USAGE, "tag", "rate", joga, "120", *mp)
            assert (
                json.loads(exits(EXIT_OK, "tag", "show", joga, *mp, "--json").stdout)["rating"]
                == 80
            )
            listed = json.loads(exits(EXIT_OK, "collection", "list", *mp, "--json").stdout)
            assert {c["name"] for c in listed} == {"recently-added", "recently-played",
                                                    "most-played"}  # fmt: skip
            # Without a shared catalog, collections live in the config file only.
            refused = exits(EXIT_USAGE, "collection", "add", "mp3s", "format=mp3", *mp)
            assert "[[collections]]" in refused.stderr, describe(refused)
            exits(EXIT_OK, "plugin", "list", *mp)
            exits(EXIT_USAGE, "plugin", "unload", "nosuch", *mp)
            exits(EXIT_OK, "origin", "list", *mp)
            exits(EXIT_OK, "origin", "health", "music", *mp)
            exits(EXIT_USAGE, "origin", "health", "nosuch", *mp)
            exits(EXIT_OK, "origin", "rescan", *mp)
            exits(EXIT_OK, "config", "show", *mp)
            exits(EXIT_OK, "config", "set", "log_level", "debug", *mp)
            exits(EXIT_USAGE, "config", "set", "origins", "x", *mp)
            exits(EXIT_OK, "search", "joga", *mp)
            exits(EXIT_FAILED, "search", "zzzzzz", *mp)
            exits(EXIT_OK, "unmount", *mp)
            _out, err = events.communicate(timeout=30)
            assert events.returncode == EXIT_OK, err  # the stream ends with the daemon
        finally:
            if events.poll() is None:
                events.kill()
                events.wait()
        for args in (["status"], ["origin", "list"], ["search", "joga"], ["unmount"]):
            gone = exits(EXIT_NO_DAEMON, *args, *mp)
            assert "is it mounted?" in gone.stderr


def test_several_mounts_and_none_named_lists_the_mountpoints(
    library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A runtime dir of this test's own: the machine's may hold other mounts.
    run_dir = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # socket paths are short
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run_dir))
    try:
        _several_mounts(library, tmp_path)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _several_mounts(library: Library, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    make_origin(library, first, [JOGA])
    make_origin(library, second, [UNRAVEL])
    with (
        mounted([first], tmp_path / "mnt1", tmp_path / "cache1") as one,
        mounted([second], tmp_path / "mnt2", tmp_path / "cache2") as two,
    ):
        (run_dir_of(one) / "killed-by-kill-9.sock").touch()  # a dead daemon's socket file
        for args in (["status"], ["origin", "list"], ["search", "joga"]):
            result = exits(EXIT_USAGE, *args)
            assert "2 mounts are running" in result.stderr
            assert str(one.mountpoint) in result.stderr
            assert str(two.mountpoint) in result.stderr
            assert ".sock" not in result.stderr
            words = " ".join(args[: 2 if args[0] == "origin" else 1])
            assert f"name one with --mount MOUNTPOINT, e.g. musicfs {words} --mount " in (
                result.stderr
            )
        exits(EXIT_FAILED, "search", "joga", "--mount", two.mountpoint)  # Unravel only
        exits(EXIT_OK, "search", "joga", "--mount", one.mountpoint)


def run_dir_of(mount: Mount) -> Path:
    return Path(mount.ready_status["socket"]).parent


def _snapshot(cache: Path) -> dict[str, bytes]:
    """What is in a cache dir (by name), with the content of its logs."""
    files = {p.name: b"" for p in cache.iterdir()}
    for name in ("musicfs.log", "daemon.log"):
        if (cache / name).exists():
            files[name] = (cache / name).read_bytes()
    return files


def test_a_refused_mount_touches_nothing_of_the_running_mount(
    library: Library, tmp_path: Path
) -> None:
    origin, other = tmp_path / "music", tmp_path / "other"
    make_origin(library, origin, [JOGA])
    make_origin(library, other, [UNRAVEL])
    cache, xdg = tmp_path / "cache", tmp_path / "xdg-cache"
    with mounted([origin], tmp_path / "mnt", cache) as mount:
        files = mount.files()
        before = _snapshot(cache)
        second = tmp_path / "mnt2"
        second.mkdir()
        attempts = {
            "the same mountpoint and cache dir": mount_command([other], mount.mountpoint, cache),
            "the same mountpoint, the default cache dir": ["mount", str(mount.mountpoint),
                                                           "--origin", str(other)],
            "another mountpoint, the same cache dir": mount_command([other], second, cache),
        }  # fmt: skip
        try:
            for what, args in attempts.items():
                for foreground in ([], ["--foreground"]):
                    result = run_musicfs(*args, *foreground, env={"XDG_CACHE_HOME": str(xdg)})
                    assert result.returncode == EXIT_USAGE, f"{what}: {describe(result)}"
                    assert "Traceback" not in result.stderr
                    assert _snapshot(cache) == before, f"{what} changed the running mount's cache"
                    assert not xdg.exists(), f"{what} created a cache dir"
        finally:
            unmount(second)
        assert "already a mount point" in run_musicfs(*attempts[
            "the same mountpoint and cache dir"]).stderr  # fmt: skip
        assert f"cache directory {cache} is in use" in run_musicfs(*attempts[
            "another mountpoint, the same cache dir"]).stderr  # fmt: skip
        assert mount.status()["state"] == "READY"
        assert mount.files() == files
        assert b"ERROR" not in (cache / "musicfs.log").read_bytes()
    assert not os.path.ismount(second)
