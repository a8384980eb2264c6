"""``[[webhooks]]`` tables: defaults, validation, and errors that name the file, hook and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicfs.control.config import SECTIONS, WEBHOOKS
from musicfs.control.webhookconfig import BACKOFF_CAP, WebhookConfig
from musicfs.core.config.settings import Config, ConfigError, load_config
from musicfs.core.events import EventType


def load(path: Path | None = None, *, env: dict[str, str]) -> Config:
    """A daemon's config: core's sections and control's ([[webhooks]] among them)."""
    return load_config(path, env=env, sections=SECTIONS)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_no_webhooks_by_default(tmp_path: Path) -> None:
    assert load(env={"XDG_CONFIG_HOME": str(tmp_path)}).tables(WEBHOOKS) == ()


def test_webhooks_from_the_file_with_their_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[webhooks]]\nid = "hass"\nurl = "https://hass.local:8123/api/webhook/musicfs"\n'
        'events = ["file.opened", "origin.health", "file.opened"]\norigin = "nas"\n'
        "timeout = 2.5\nretries = 3\nbackoff = 0.5\n"
        '[[webhooks]]\nid = "log"\nurl = "http://127.0.0.1:9000/"\n',
    )
    first, second = load(path, env={}).tables(WEBHOOKS)
    assert first == WebhookConfig(
        id="hass",
        url="https://hass.local:8123/api/webhook/musicfs",
        events=(EventType.FILE_OPENED, EventType.ORIGIN_HEALTH),  # duplicates dropped
        origin="nas",
        timeout=2.5,
        retries=3,
        backoff=0.5,
    )
    assert second == WebhookConfig("log", "http://127.0.0.1:9000/")
    assert (second.events, second.origin) == ((), "")  # every event, any origin
    assert (second.timeout, second.retries, second.backoff) == (5.0, 5, 1.0)


def test_webhooks_live_beside_origins_and_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'log_level = "debug"\n[[origins]]\npath = "/srv/music"\n'
        '[[webhooks]]\nid = "a"\nurl = "http://localhost/hook"\nevents = "sync.completed"\n',
    )
    config = load(path, env={})
    assert config.log_level == "debug"
    assert [o.id for o in config.origins] == ["music"]
    assert config.tables(WEBHOOKS)[0].events == (EventType.SYNC_COMPLETED,)


def test_backoff_doubles_up_to_a_cap() -> None:
    hook = WebhookConfig("a", "http://h/", backoff=1.0)
    assert [hook.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert hook.delay(30) == BACKOFF_CAP


HOOK = '[[webhooks]]\nid = "hook"\nurl = "http://127.0.0.1/x"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[webhooks]]\nurl = "http://h/"', r"\[\[webhooks\]\] #1: 'id' is missing"),
        ('[[webhooks]]\nid = "a"', r"\[\[webhooks\]\] #1: 'url' is missing"),
        ('[[webhooks]]\nid = "a b"\nurl = "http://h/"', "id 'a b' must be 1-64 letters"),
        ('[[webhooks]]\nid = "a"\nurl = "ftp://h/x"', r"url: expected an http:// or https://"),
        ('[[webhooks]]\nid = "a"\nurl = "hook.example"', "url: expected an http://"),
        ('[[webhooks]]\nid = "a"\nurl = "http:///x"', "url: the host is missing"),
        ('[[webhooks]]\nid = "a"\nurl = "http://h:99999/"', "url: the port of"),
        ('[[webhooks]]\nid = "a"\nurl = "http://me:pw@h/"', "url: the URL has a password"),
        ('[[webhooks]]\nid = "a"\nurl = 5', "url: expected a string"),
        (HOOK + 'events = ["file.open"]', r"events: unknown event type 'file.open'.*file.opened"),
        (HOOK + "events = [1]", "events: expected a list of event types"),
        (HOOK + "timeout = 0", "timeout: expected a number of seconds above 0"),
        (HOOK + 'timeout = "soon"', "timeout: expected a number of seconds"),
        (HOOK + "retries = -1", "retries: expected a whole number >= 0"),
        (HOOK + "retries = 1000", "retries: expected at most 60 retries"),
        (HOOK + "backoff = -2", "backoff: expected seconds between 0 and 86400"),
        (HOOK + 'origin = "no/such"', "origin: expected an origin id"),
        (HOOK + 'method = "PUT"', r"unknown key\(s\) \['method'\]; use id, url, events"),
        (HOOK + HOOK, r"webhook id\(s\) \['hook'\] are used more than once"),
        ('webhooks = "http://h/"', "'webhooks' must be a list of \\[\\[webhooks\\]\\] tables"),
        ("[webhooks]\nurl = 'http://h/'", "'webhooks' must be a list"),
    ],
)
def test_bad_webhooks_name_the_file_the_hook_and_the_reason(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load(path, env={})
    assert str(path) in str(info.value)


@pytest.mark.parametrize("key", ["secret", "signing_secret", "token", "password"])
def test_a_secret_in_the_config_file_is_refused_with_where_to_put_it(
    tmp_path: Path, key: str
) -> None:
    path = write(tmp_path, '[[webhooks]]\nid = "home-hub"\nurl = "http://h/"\n'
                           f'{key} = "hunter2-hunter2"\n')  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    message = str(info.value)
    assert f"[[webhooks]] #1: ['{key}'] cannot be set in the config file" in message
    assert "MUSICFS_SECRET_HOME_HUB_SECRET" in message
    assert "credentials file" in message
    assert "hunter2" not in message


def test_an_unknown_top_level_key_mentions_webhooks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[\[webhooks\]\]"):
        load(write(tmp_path, "webhook = 1\n"), env={})
