"""Configuration: defaults, TOML, MUSICFS_* variables and flags, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicfs.core.catalog.templates import DEFAULT_TEMPLATE
from musicfs.core.config.settings import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_need_no_file(tmp_path: Path) -> None:
    config = load_config(env={"XDG_CONFIG_HOME": str(tmp_path)}, origins=["~/Music"])
    assert config.template == DEFAULT_TEMPLATE
    assert config.scan.on_start
    assert config.log_level == "info"
    assert config.origins[0].path.endswith("/Music")
    assert config.origins[0].type == "local"


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, 'log_level = "debug"\ntemplate = "$artist/$title.$format"\n'
                           "[mount]\nattr_timeout = 5\n")  # fmt: skip
    config = load_config(
        path,
        env={"MUSICFS_LOG_LEVEL": "warning", "MUSICFS_MOUNT_ENTRY_TIMEOUT": "2.5"},
        overrides={"log_level": "error"},
    )
    assert config.template == "$artist/$title.$format"
    assert config.mount.attr_timeout == 5.0
    assert config.mount.entry_timeout == 2.5
    assert config.log_level == "error"


def test_origins_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[[origins]]\nid = "nas"\npath = "nfs:///mnt/nas"\npriority = 2\n'
                           '[[origins]]\npath = "/srv/music"\n')  # fmt: skip
    config = load_config(path, env={})
    assert [(o.id, o.type, o.path, o.priority) for o in config.origins] == [
        ("nas", "nfs", "/mnt/nas", 2),
        ("music", "local", "/srv/music", 0),
    ]


def test_an_sftp_origin_names_its_ssh_client(tmp_path: Path) -> None:
    table = '[[origins]]\npath = "sftp://me@nas/music"\n'
    default = load_config(write(tmp_path, table), env={})
    assert default.origins[0].ssh_client == "auto"
    chosen = load_config(write(tmp_path, table + 'ssh_client = "Paramiko"\n'), env={})
    assert chosen.origins[0].ssh_client == "paramiko"
    refused = r"ssh_client.*one of auto, openssh, paramiko, got 'putty'"
    with pytest.raises(ConfigError, match=refused):
        load_config(write(tmp_path, table + 'ssh_client = "putty"\n'), env={})


def test_servers_keep_more_requests_in_flight_than_mounted_folders(tmp_path: Path) -> None:
    # A first scan over the network is bound by latency: more files in flight.
    flags = load_config(env={}, origins=["sftp://me@nas/music", "s3://bucket/x", "/srv/music"])
    assert [o.max_requests for o in flags.origins] == [32, 32, 8]
    table = '[[origins]]\npath = "sftp://me@nas/music"\nmax_requests = 4\n'
    assert load_config(write(tmp_path, table), env={}).origins[0].max_requests == 4


def test_origin_flags_get_distinct_ids() -> None:
    config = load_config(env={}, origins=["/a/music", "/b/music"])
    assert [o.id for o in config.origins] == ["music", "music-2"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("log_level = 3", "key 'log_level': expected a string"),
        ('log_level = "loud"', "expected one of debug, info, warning, error"),
        ("[mount]\nattr_timeout = -1", "key 'mount.attr_timeout': expected seconds"),
        ('template = "$artist/$nope"', r"key 'template': .*\$nope"),
        ("tempalte = 1", "unknown key 'tempalte'"),
        ("[scan]\nworkers = 1.5", "key 'scan.workers'"),
        ("[[origins]]\nid = 'x'", "'path' is missing"),
        ("[[origins]]\npath = 'ftp://host/music'", "ftp:// is not supported"),
        ("[[origins]]\npath = 'sftp://me:hunter2@host/music'", "password in it"),
        ("[[origins]]\npath = '/m'\npassword = 'x'", "credentials file"),
        (
            '[[origins]]\npath = "/a"\nid = "x"\n[[origins]]\npath = "/b"\nid = "x"',
            "more than once",
        ),
        ("this is = not toml =", "not valid TOML"),
    ],
)
def test_bad_values_name_the_file_the_key_and_the_reason(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path, env={})
    assert str(path) in str(info.value)


def test_bad_environment_values_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="MUSICFS_SCAN_WORKERS: expected a whole number"):
        load_config(env={"MUSICFS_SCAN_WORKERS": "many"})
    with pytest.raises(ConfigError, match="MUSICFS_TEMPLAT is not a MusicFS setting"):
        load_config(env={"MUSICFS_TEMPLAT": "x"})


def test_a_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_bad_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"--template: .*\$bad"):
        load_config(env={}, overrides={"template": "$bad/$title"})


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", b'template = "\xe9"\n'])
def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="is not UTF-8 text") as info:
        load_config(path, env={})
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[scan]\nworkers = 1000000000", "'scan.workers': expected a whole number from 0 to 256"),
        ("[mount]\nread_ahead_kb = 99999999", "'mount.read_ahead_kb': .* from 0 to 65536 KiB"),
        ("[prefetch]\nahead = 100000", "'prefetch.ahead': .* from 0 to 1000"),
        ("[plugins]\nwasm_memory_mb = 1048576", "'plugins.wasm_memory_mb': .* 1 to 4096 MiB"),
        ("[plugins]\nwasm_cpu_ms = 86400000", "'plugins.wasm_cpu_ms': .* 1 to 600000 ms"),
        ('[cache]\nlimit = "99999999TiB"', "'cache.limit': expected a size of at most 1 EiB"),
        ("[cache]\nlimit = 99999999999999999999", "'cache.limit'"),
        ('[[origins]]\npath = "/m"\nport = 70000', "from 0 to 65535"),
        ('[[origins]]\npath = "/m"\nmax_requests = 100000', "from 0 to 1024"),
    ],
)
def test_numbers_out_of_a_sane_range_are_refused_naming_the_setting(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text), env={})


def test_an_environment_number_out_of_range_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="MUSICFS_SCAN_WORKERS: expected a whole number from 0"):
        load_config(env={"MUSICFS_SCAN_WORKERS": "1000000000"})


def test_include_hidden_is_a_scan_setting_off_by_default(tmp_path: Path) -> None:
    assert load_config(env={}).scan.include_hidden is False
    path = tmp_path / "c.toml"
    path.write_text("[scan]\ninclude_hidden = true\n")
    assert load_config(path, env={}).scan.include_hidden is True
    assert load_config(env={"MUSICFS_SCAN_INCLUDE_HIDDEN": "true"}).scan.include_hidden is True
    assert (
        load_config(path, env={"MUSICFS_SCAN_INCLUDE_HIDDEN": "false"}).scan.include_hidden is False
    )


def test_pin_limit_is_half_the_cache_by_default_and_never_more_than_it(tmp_path: Path) -> None:
    assert load_config(env={"MUSICFS_CACHE_LIMIT": "10GiB"}).cache.pin_bytes == 5 * 1024**3
    path = write(tmp_path, '[cache]\nlimit = "1GiB"\npin_limit = "300MiB"')
    assert load_config(path, env={}).cache.pin_bytes == 300 * 1024**2
    too_much = write(tmp_path, '[cache]\nlimit = "1GiB"\npin_limit = "2GiB"')
    with pytest.raises(ConfigError, match=r"\[cache\] pin_limit .* is more than \[cache\] limit"):
        load_config(too_much, env={})
