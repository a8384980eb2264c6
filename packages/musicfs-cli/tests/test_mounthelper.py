"""mount.musicfs: mount(8)'s call and options become the right ``musicfs mount`` flags.

The calls are the ones mount(8) of util-linux makes (checked with a stand-in
helper: ``mount -t fuse.musicfs SRC MNT`` passes ``-o rw``, an fstab line with
``defaults,_netdev`` passes ``-o rw,_netdev``, ``x-systemd.*`` and ``noauto``
are not passed at all). The real mount is tests/e2e/test_mount_helper.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from musicfs.cli.mounthelper import (
    MOUNT_OK,
    MOUNT_USAGE,
    HelperError,
    main,
    split_options,
    translate,
)


def test_plain_mount_call_mounts_the_source_as_origin() -> None:
    # What `mount -t fuse.musicfs /srv/music /mnt/music` runs: mount(8) adds "rw".
    assert translate("/srv/music", "/mnt/music", ["rw"]).argv == [
        "mount", "/mnt/music", "--origin", "/srv/music",
    ]  # fmt: skip


def test_every_option_maps_to_its_flag() -> None:
    options = split_options(
        "ro,allow_other,wait,config=/etc/musicfs/music.toml,cache_dir=/var/cache/m,"
        "template=$artist/$title.$format,log_level=debug,socket=/run/m.sock,origin=/srv/more"
    )
    assert translate("sftp://nas/music", "/mnt/m", options).argv == [
        "mount", "/mnt/m", "--origin", "sftp://nas/music",
        "--allow-other", "--wait",
        "--config", "/etc/musicfs/music.toml",
        "--cache-dir", "/var/cache/m",
        "--template", "$artist/$title.$format",
        "--log-level", "debug",
        "--socket", "/run/m.sock",
        "--origin", "/srv/more",
    ]  # fmt: skip


def test_dashed_spelling_is_the_same_option() -> None:
    assert translate("/a", "/m", ["cache-dir=/c", "log-level=info"]).argv[4:] == [
        "--cache-dir", "/c", "--log-level", "info",
    ]  # fmt: skip


@pytest.mark.parametrize("source", ["none", "musicfs"])
def test_source_none_leaves_the_origins_to_the_config(source: str) -> None:
    assert translate(source, "/m", ["config=/etc/musicfs/m.toml"]).argv == [
        "mount", "/m", "--config", "/etc/musicfs/m.toml",
    ]  # fmt: skip


def test_origin_option_may_repeat() -> None:
    argv = translate("/a", "/m", ["origin=/b", "origin=s3://bucket/c"]).argv
    assert argv == ["mount", "/m", "--origin", "/a", "--origin", "/b", "--origin", "s3://bucket/c"]


def test_options_for_mount_and_systemd_are_ignored() -> None:
    options = [
        "rw", "ro", "defaults", "_netdev", "nofail", "noauto", "auto", "user", "users",
        "noexec", "nosuid", "nodev", "noatime", "x-systemd.automount",
        "x-systemd.idle-timeout=10min", "x-systemd.requires=network-online.target",
        "X-mount.mkdir", "comment=systemd.automount",
    ]  # fmt: skip
    translation = translate("/a", "/m", options)
    assert translation.argv == ["mount", "/m", "--origin", "/a"]
    assert translation.ignored == options


def test_unknown_option_is_an_error_naming_it() -> None:
    with pytest.raises(HelperError, match=r"unknown mount option 'uid'.*allow_other.*template="):
        translate("/a", "/m", ["allow_other", "uid=1000"])


def test_sloppy_mount_drops_unknown_options() -> None:
    translation = translate("/a", "/m", ["uid=1000", "allow_other"], sloppy=True)
    assert translation.argv == ["mount", "/m", "--origin", "/a", "--allow-other"]
    assert translation.dropped == ["uid=1000"]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("template", "'template' needs a value: template=..."),
        ("template=", "'template' needs a value"),
        ("allow_other=yes", "'allow_other' takes no value"),
    ],
)
def test_option_values_are_checked(option: str, message: str) -> None:
    with pytest.raises(HelperError, match=message):
        translate("/a", "/m", [option])


def test_an_option_given_twice_is_an_error() -> None:
    with pytest.raises(HelperError, match="'config' is given twice"):
        translate("/a", "/m", ["config=/a.toml", "config=/b.toml"])


def test_quoted_values_may_hold_commas() -> None:
    assert split_options('ro,template="$artist, $album/$title.$format",allow_other') == [
        "ro", "template=$artist, $album/$title.$format", "allow_other",
    ]  # fmt: skip
    with pytest.raises(HelperError, match="unbalanced double quote"):
        split_options('template="$artist')


def test_fake_mount_prints_the_command_and_mounts_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # mount -f: "do everything except the mount"; the helper then has nothing to do.
    status = main(["/srv/music", "/nonexistent/mnt", "-f", "-o", "rw,allow_other,_netdev"])
    assert status == MOUNT_OK
    err = capsys.readouterr().err
    assert "musicfs mount /nonexistent/mnt --origin /srv/music --allow-other" in err


def test_bad_calls_exit_with_mounts_usage_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["/a", "/m", "-o", "bogus"]) == MOUNT_USAGE
    assert "mount.musicfs: error: unknown mount option 'bogus'" in capsys.readouterr().err
    assert main(["/a", "/m", "-N", "/proc/1/ns/mnt"]) == MOUNT_USAGE
    assert "-N /proc/1/ns/mnt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["/a"])
    assert exited.value.code == MOUNT_USAGE


def test_refused_mount_is_a_usage_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # musicfs mount's own refusal (a missing mountpoint) comes back as mount(8)'s 1.
    missing = tmp_path / "mnt"
    assert main([str(tmp_path), str(missing), "-o", "config=/dev/null"]) == MOUNT_USAGE
    assert "does not exist" in capsys.readouterr().err
