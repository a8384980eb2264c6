"""The shipped example config (packaging/config.example.toml) cannot drift from the code.

Every setting `describe_settings([METRICS])` knows (core's and control's
sections), and every key of the ``[[origins]]``, ``[[webhooks]]``,
``[[collections]]`` and ``[[notify]]`` tables, must be in the example, set or
commented out; every key in it must be a real one; with every commented-out example switched on it
must still be a valid config; and its active values are the defaults. (These are
control's tests, as control adds ``[metrics]`` and ``[[webhooks]]``.)
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from musicfs.control.config import METRICS, NOTIFY, SECTIONS, WEBHOOKS
from musicfs.control.notify.config import TABLE_KEYS as NOTIFY_KEYS
from musicfs.control.webhookconfig import TABLE_KEYS as WEBHOOK_KEYS
from musicfs.core.config.collections import Collection
from musicfs.core.config.origins import describe_origin_keys
from musicfs.core.config.settings import ConfigError, describe_settings, load_config

EXAMPLE = Path(__file__).resolve().parents[3] / "packaging" / "config.example.toml"

# The lists of tables a config may have, and the keys each table may have.
TABLES: dict[str, set[str]] = {
    "origins": set(describe_origin_keys()),
    "webhooks": set(WEBHOOK_KEYS),
    "notify": set(NOTIFY_KEYS),
    "collections": set(Collection.__dataclass_fields__),
}

# A commented-out setting: "# key = value", "# [section]" or "# [[origins]]".
_COMMENTED = re.compile(r"^# ?((?:\[\[?[a-z_.]+\]\]?|[a-z_]+ *=).*)$")


def switched_on(text: str) -> str:
    """*text* with every commented-out setting uncommented."""
    lines = []
    for line in text.splitlines():
        match = _COMMENTED.match(line)
        lines.append(match.group(1) if match else line)
    return "\n".join(lines) + "\n"


def setting_keys(data: dict[str, Any]) -> set[str]:
    """``key`` and ``section.key`` of a parsed config, as `describe_settings` names them."""
    keys = set()
    for key, value in data.items():
        if key in TABLES:
            continue
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                if not (key == "plugins" and isinstance(subvalue, dict)):  # [plugins.<name>]
                    keys.add(f"{key}.{sub}")
        else:
            keys.add(key)
    return keys


@pytest.fixture(scope="module")
def full() -> dict[str, Any]:
    return tomllib.loads(switched_on(EXAMPLE.read_text()))


def test_every_setting_is_in_the_example_and_every_key_there_is_a_setting(
    full: dict[str, Any],
) -> None:
    known = {key for key, _env, _doc, _default in describe_settings([METRICS])}
    listed = setting_keys(full)
    assert sorted(known - listed) == [], "settings missing from the example"
    assert sorted(listed - known) == [], "keys in the example that are no settings"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_key_of_each_list_of_tables_is_in_the_example(
    full: dict[str, Any], table: str
) -> None:
    listed = {key for entry in full[table] for key in entry}
    assert sorted(TABLES[table] ^ listed) == []


def test_the_example_has_no_other_list_of_tables(full: dict[str, Any]) -> None:
    lists = {key for key, value in full.items() if isinstance(value, list)}
    assert lists == set(TABLES)


def test_the_example_with_everything_switched_on_is_a_valid_config(tmp_path: Path) -> None:
    path = tmp_path / "full.toml"
    path.write_text(switched_on(EXAMPLE.read_text()))
    config = load_config(path, env={}, sections=SECTIONS)
    assert len(config.origins) >= 5
    assert config.cache_dir is not None
    assert config.plugins.paths
    assert "shout" in config.plugins.settings
    assert config.section(METRICS).listen
    assert config.tables(WEBHOOKS)
    assert {entry.type.value for entry in config.tables(NOTIFY)} == {
        "mpd", "jellyfin", "plex", "navidrome",
    }  # fmt: skip
    assert config.collections


def test_a_key_that_is_no_setting_would_be_caught(tmp_path: Path) -> None:
    """The checks above see commented-out keys: a typo in one is found."""
    text = switched_on(EXAMPLE.read_text()).replace("read_ahead_kb", "readahead_kb")
    assert "mount.readahead_kb" in setting_keys(tomllib.loads(text))
    path = tmp_path / "typo.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="readahead_kb"):
        load_config(path, env={}, sections=SECTIONS)


def test_the_shipped_example_config_loads_and_matches_the_defaults() -> None:
    config = load_config(EXAMPLE, env={}, sections=SECTIONS)
    assert config == load_config(env={"XDG_CONFIG_HOME": "/nonexistent"}, sections=SECTIONS)
    assert config.section(METRICS) == METRICS.default()
