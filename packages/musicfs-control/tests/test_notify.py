"""[[notify]]: config checks, the debounce window and collapsing, the rounds
(retries, drops, stop), and the shape of each server's request."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import pytest

from musicfs.control.config import NOTIFY, SECTIONS
from musicfs.control.notify.collapse import Gather, collapse, outermost
from musicfs.control.notify.config import NotifyConfig, ServerType
from musicfs.control.notify.notifier import Notifier
from musicfs.control.notify.senders import (
    JellyfinSender,
    MpdSender,
    NavidromeSender,
    PlexSender,
    SendFailed,
)
from musicfs.core.config.settings import ConfigError, load_config
from musicfs.core.events import EventBus, EventType

# -- collapsing and the debounce window ---------------------------------------------------


def test_a_folder_swallows_what_is_inside_it_and_only_that() -> None:
    paths = ["a/x", "a", "a b", "a/x/y", "c/d", "c/e"]
    assert outermost(paths) == ["a", "a b", "c/d", "c/e"]
    assert outermost(["x", ""]) == [""]


def test_too_many_folders_climb_to_their_parents_then_to_the_root() -> None:
    albums = [f"Artist/Album {i}" for i in range(30)]
    assert collapse(albums, 20) == ["Artist"]
    assert collapse(albums[:3], 20) == albums[:3]
    artists = [f"Artist {i}/Album" for i in range(30)]
    assert collapse(artists, 20) == [""]  # the whole library
    assert collapse(["a/b/c", "a/b/d", "e"], 2) == ["a/b", "e"]


def test_a_round_is_due_debounce_seconds_after_its_first_folder() -> None:
    gather = Gather(2.0)
    assert gather.due_in(100.0) is None
    gather.add("a", 100.0)
    gather.add("b", 101.5)  # joins the round, does not delay it
    assert gather.due_in(101.5) == pytest.approx(0.5)
    assert gather.due_in(102.5) == 0
    assert gather.take() == {"a", "b"}
    assert gather.due_in(103.0) is None


# -- config --------------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> tuple[NotifyConfig, ...]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path, env={}, sections=SECTIONS).tables(NOTIFY)


def test_entries_load_with_their_defaults(tmp_path: Path) -> None:
    entries = load(tmp_path, """
[[notify]]
type = "mpd"
[[notify]]
type = "plex"
url = "http://plex.local:32400/"
section = 3
path_prefix = "/data/music/"
[[notify]]
type = "navidrome"
id = "nd"
url = "https://nd.local"
user = "alice"
debounce = 0.5
""")  # fmt: skip
    mpd, plex, nd = entries
    assert (mpd.type, mpd.id, mpd.host, mpd.port, mpd.root, mpd.debounce) == (
        ServerType.MPD, "mpd", "localhost", 6600, "", 2.0,
    )  # fmt: skip
    assert (plex.url, plex.section, plex.path_prefix) == (
        "http://plex.local:32400",
        3,
        "/data/music",
    )
    assert (nd.id, nd.user, nd.debounce, nd.secret_key) == ("nd", "alice", 0.5, "password")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('type = "kodi"', r"type: expected one of mpd, jellyfin, plex, navidrome"),
        ('url = "http://x"', r"'type' is missing; set type = one of mpd"),
        ('type = "jellyfin"', r"\(jellyfin\): 'url' is missing"),
        ('type = "plex"\nurl = "http://x"', r"'section' is missing \(plex: the library section"),
        ('type = "navidrome"\nurl = "http://x"', r"'user' is missing"),
        ('type = "jellyfin"\nurl = "http://x"\ntoken = "t"', r"\['token'\] cannot be set in the "
         r"config file.*MUSICFS_SECRET_JELLYFIN_TOKEN"),
        ('type = "mpd"\npassword = "p"', r"MUSICFS_SECRET_MPD_PASSWORD"),
        ('type = "jellyfin"\nurl = "http://u:p@x"', r"url: the URL has a user or password"),
        ('type = "jellyfin"\nurl = "ftp://x"', r"expected an http:// or https:// URL"),
        ('type = "mpd"\nsocket = "/run/mpd.sock"\nport = 6601', r"either socket or host/port"),
        ('type = "mpd"\nurl = "http://x"', r"unknown key\(s\) \['url'\]; a mpd entry takes"),
        ('type = "mpd"\nroot = "../up"', r"root: expected a folder inside MPD's music_directory"),
        ('type = "jellyfin"\nurl = "http://x"\npath_prefix = "media"', r"absolute path"),
        ('type = "mpd"\nmax_paths = 0', r"max_paths: expected a whole number from 1 to 1000"),
    ],
)  # fmt: skip
def test_a_bad_entry_is_refused_naming_it_and_the_fix(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=r"\[\[notify\]\] #1.*" + message):
        load(tmp_path, "[[notify]]\n" + text + "\n")


def test_two_entries_need_two_ids(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"id\(s\) \['mpd'\] are used more than once"):
        load(tmp_path, '[[notify]]\ntype = "mpd"\n[[notify]]\ntype = "mpd"\nport = 6601\n')


# -- the rounds ------------------------------------------------------------------------------


class Recorder:
    """A sender that records its rounds and fails as told."""

    def __init__(self, failures: Sequence[SendFailed] = ()) -> None:
        self.rounds: list[list[str]] = []
        self.failures = list(failures)
        self.called = threading.Condition()

    def send(self, folders: Sequence[str]) -> None:
        with self.called:
            self.rounds.append(list(folders))
            self.called.notify_all()
        if self.failures:
            raise self.failures.pop(0)

    def wait(self, count: int, timeout: float = 10.0) -> list[list[str]]:
        with self.called:
            assert self.called.wait_for(lambda: len(self.rounds) >= count, timeout), self.rounds
            return list(self.rounds)


def entry(**values: object) -> NotifyConfig:
    return NotifyConfig(ServerType.JELLYFIN, "jf", url="http://x", **values)  # type: ignore[arg-type]


def test_a_burst_of_changes_is_one_round_naming_the_outermost_folders() -> None:
    bus = EventBus()
    notifier = Notifier(entry(debounce=0.3), bus)
    sender = Recorder()
    notifier.start(sender)
    try:
        for i in range(50):
            bus.publish(EventType.TREE_CHANGED, path=f"Artist/Album/CD{i % 2}")
        bus.publish(EventType.TREE_CHANGED, path="Artist/Album")
        bus.publish(EventType.TREE_CHANGED, path="Other/Album")
        assert sender.wait(1) == [["Artist/Album", "Other/Album"]]
        bus.publish(EventType.TREE_CHANGED, path="Third/One")
        assert sender.wait(2)[1] == ["Third/One"]
    finally:
        assert notifier.stop()
    assert notifier.stats()["rounds"] == 2
    assert notifier.stats()["folders"] == 3


def test_a_failed_round_is_retried_and_one_that_cannot_pass_is_given_up() -> None:
    bus = EventBus()
    notifier = Notifier(entry(debounce=0.05, backoff=0.05, retries=3), bus)
    sender = Recorder([SendFailed("503", retryable=True), SendFailed("503", retryable=True)])
    notifier.start(sender)
    try:
        bus.publish(EventType.TREE_CHANGED, path="A")
        assert sender.wait(3) == [["A"], ["A"], ["A"]]
        sender.failures = [SendFailed("401", retryable=False)]
        bus.publish(EventType.TREE_CHANGED, path="B")
        sender.wait(4)
        deadline = time.monotonic() + 10
        while notifier.stats()["failed"] != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        notifier.stop()
    stats = notifier.stats()
    assert (stats["rounds"], stats["retried"], stats["failed"]) == (1, 2, 1)
    assert stats["last_error"] == "401"
    assert len(sender.rounds) == 4  # the refused round was not tried again


def test_dropped_events_make_the_next_round_the_whole_library() -> None:
    bus = EventBus()
    notifier = Notifier(entry(debounce=0.05), bus, queue_size=2)
    for name in "abc":  # before start: the third finds the queue full
        bus.publish(EventType.TREE_CHANGED, path=name)
    sender = Recorder()
    notifier.start(sender)
    try:
        assert sender.wait(1) == [[""]]
    finally:
        notifier.stop()
    assert notifier.stats()["dropped"] == 1


def test_what_is_gathered_at_stop_is_sent_once_and_publishing_never_waits() -> None:
    bus = EventBus()
    notifier = Notifier(entry(debounce=60, retries=5, backoff=60), bus)
    sender = Recorder([SendFailed("down", retryable=True)])
    notifier.start(sender)
    bus.publish(EventType.TREE_CHANGED, path="A")  # a 60 s window: not due before stop
    assert notifier.stop(5)
    assert sender.rounds == [["A"]]  # one attempt at stop, no retry
    assert notifier.stats()["failed"] == 1


# -- requests --------------------------------------------------------------------------------


def test_mpd_gets_one_command_list_of_quoted_paths_under_its_root() -> None:
    sender = MpdSender(NotifyConfig(ServerType.MPD, "mpd", root="musicfs"), None)
    assert sender.commands(['AC"DC/Back\\Black', ""]) == [
        "command_list_begin",
        'update "musicfs/AC\\"DC/Back\\\\Black"',
        'update "musicfs"',
        "command_list_end",
    ]
    plain = MpdSender(NotifyConfig(ServerType.MPD, "mpd"), None)
    assert plain.commands([""])[1] == "update"


def test_jellyfin_plex_and_navidrome_requests_follow_their_apis() -> None:
    jf = JellyfinSender(entry(), "tok", "/media/music")
    assert json.loads(jf.body(["Björk/Post", ""])) == {
        "Updates": [
            {"Path": "/media/music/Björk/Post", "UpdateType": "Modified"},
            {"Path": "/media/music", "UpdateType": "Modified"},
        ]
    }
    plex = PlexSender(NotifyConfig(ServerType.PLEX, "plex", url="http://p", section=3), "t&k", "/m")
    target = urllib.parse.urlsplit(plex.target("A & B/C"))
    assert target.path == "/library/sections/3/refresh"
    assert urllib.parse.parse_qs(target.query) == {"path": ["/m/A & B/C"], "X-Plex-Token": ["t&k"]}
    assert plex.target("") == "/library/sections/3/refresh?X-Plex-Token=t%26k"
    nd = NavidromeSender(
        NotifyConfig(ServerType.NAVIDROME, "nd", url="http://n", user="al ice"), "pw"
    )
    target = urllib.parse.urlsplit(nd.target("c19b2d"))
    query = dict(urllib.parse.parse_qsl(target.query))
    assert target.path == "/rest/startScan"
    assert query == {
        "u": "al ice", "s": "c19b2d", "v": "1.16.1", "c": "musicfs", "f": "json",
        "t": hashlib.md5(b"pwc19b2d").hexdigest(),
    }  # fmt: skip
    assert nd.target() != nd.target()  # a fresh salt each time
