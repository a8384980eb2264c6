"""One sender per kind of media server: tell it which folders changed.

Each `Sender.send` gets the folders of one round (mount-relative, ``""`` = the
whole library), makes one attempt and raises `SendFailed` (saying whether a
retry may help) when the server did not take it. Nothing here retries, waits
or logs a secret; `musicfs.control.notify.notifier` does the rounds.

- MPD (protocol 0.23): ``update "ROOT/FOLDER"`` for each folder, in one
  command list, over TCP or its Unix socket; ``password`` first when the
  credentials store has one. A plain ``update`` for the whole library.
- Jellyfin: ``POST {url}/Library/Media/Updated`` with header ``X-Emby-Token``
  and ``{"Updates": [{"Path": "<path_prefix>/<folder>", "UpdateType":
  "Modified"}, ...]}`` (one request for all folders).
- Plex: ``GET {url}/library/sections/{section}/refresh?path=<path_prefix>/<folder>
  &X-Plex-Token=...`` per folder (a partial scan); without ``path`` for the
  whole section.
- Navidrome: Subsonic ``GET {url}/rest/startScan?u=&t=&s=&v=1.16.1&c=musicfs&f=json``
  (``t`` = md5(password + salt), a fresh salt each time). Navidrome cannot
  scan one folder: every round is a scan of its library (a quick scan, which
  only reads what changed).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import secrets
import socket
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Protocol

from musicfs.control.notify.collapse import ROOT
from musicfs.control.notify.config import NotifyConfig, ServerType
from musicfs.core.errors import MusicFSError
from musicfs.core.mount.facade import version
from musicfs.core.secrets.redact import redact

#: What is read of a server's answer (the rest is ignored).
MAX_RESPONSE = 64 * 1024
#: The Subsonic API version Navidrome is asked in.
SUBSONIC_VERSION = "1.16.1"


class SendFailed(MusicFSError):
    """The server did not take a round; *retryable*: trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(redact(message))
        self.retryable = retryable


class Sender(Protocol):
    def send(self, folders: Sequence[str]) -> None: ...


def make_sender(entry: NotifyConfig, secret: str | None, mountpoint: str) -> Sender:
    """The sender of *entry*; *secret* from the credentials store (None: none)."""
    prefix = entry.path_prefix or mountpoint
    if entry.type is ServerType.MPD:
        return MpdSender(entry, secret)
    if entry.type is ServerType.JELLYFIN:
        return JellyfinSender(entry, secret, prefix)
    if entry.type is ServerType.PLEX:
        return PlexSender(entry, secret, prefix)
    return NavidromeSender(entry, secret)


def server_path(prefix: str, folder: str) -> str:
    """*folder* (mount-relative) as the server sees it under *prefix*."""
    if not folder:
        return prefix
    separator = "\\" if "\\" in prefix and "/" not in prefix else "/"
    return prefix.rstrip("/\\") + separator + folder.replace("/", separator)


# -- MPD ----------------------------------------------------------------------------------


def mpd_quote(text: str) -> str:
    """An argument of an MPD command: in double quotes, with ``\\`` and ``"`` escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MpdSender:
    """Asks MPD to update the folders (relative to its music_directory)."""

    def __init__(self, entry: NotifyConfig, password: str | None) -> None:
        self.entry = entry
        self.password = password

    def mpd_path(self, folder: str) -> str:
        return "/".join(p for p in (self.entry.root, folder) if p)

    def commands(self, folders: Sequence[str]) -> list[str]:
        updates = []
        for folder in folders:
            path = self.mpd_path(folder)
            updates.append(f"update {mpd_quote(path)}" if path else "update")
        return ["command_list_begin", *updates, "command_list_end"]

    def send(self, folders: Sequence[str]) -> None:
        try:
            with self._connect() as sock, sock.makefile("rwb") as stream:
                greeting = stream.readline(MAX_RESPONSE).decode("utf-8", "replace")
                if not greeting.startswith("OK MPD "):
                    raise SendFailed(
                        f"{self.entry.describe()} is not MPD (it said {greeting.strip()!r})",
                        retryable=True,
                    )
                if self.password:
                    self._command(stream, [f"password {mpd_quote(self.password)}"], "password")
                self._command(stream, self.commands(folders), "update")
                stream.write(b"close\n")
                stream.flush()
        except OSError as exc:
            raise SendFailed(
                f"cannot talk to MPD at {self.entry.describe()}: {exc.strerror or exc}",
                retryable=True,
            ) from None

    def _connect(self) -> socket.socket:
        timeout = self.entry.timeout
        if self.entry.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(self.entry.socket)
            except BaseException:
                sock.close()
                raise
            return sock
        return socket.create_connection((self.entry.host, self.entry.port), timeout=timeout)

    def _command(self, stream: io.BufferedIOBase, lines: list[str], what: str) -> None:
        stream.write(("".join(line + "\n" for line in lines)).encode("utf-8"))
        stream.flush()
        while True:
            answer = stream.readline(MAX_RESPONSE).decode("utf-8", "replace").strip()
            if not answer:
                raise SendFailed(f"MPD at {self.entry.describe()} hung up", retryable=True)
            if answer == "OK":
                return
            if answer.startswith("ACK"):
                fix = "; check the password in the credentials store" if what == "password" else ""
                raise SendFailed(
                    f"MPD at {self.entry.describe()} refused the {what}: {answer}{fix}",
                    retryable=False,
                )


# -- HTTP servers -------------------------------------------------------------------------


def http_request(
    entry: NotifyConfig,
    method: str,
    target: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request to *entry*'s server (*target*: path and query under its URL);
    (status, the start of the body). Connection trouble is a retryable `SendFailed`."""
    url = urllib.parse.urlsplit(entry.url)
    connection: http.client.HTTPConnection
    if url.scheme == "https":
        connection = http.client.HTTPSConnection(
            url.hostname or "", url.port, timeout=entry.timeout
        )
    else:
        connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=entry.timeout)
    sent = {"User-Agent": f"musicfs/{version()}", **(headers or {})}
    try:
        connection.request(method, url.path.rstrip("/") + target, body=body, headers=sent)
        response = connection.getresponse()
        return response.status, response.read(MAX_RESPONSE)
    except (OSError, http.client.HTTPException) as exc:
        reason = str(exc) or type(exc).__name__
        raise SendFailed(
            f"cannot reach {entry.type.value} at {entry.describe()}: {reason}", retryable=True
        ) from None
    finally:
        connection.close()


def check_status(entry: NotifyConfig, status: int) -> None:
    """2xx is taken; 5xx and 429 may pass (retryable); anything else will not."""
    if 200 <= status < 300:
        return
    fix = ""
    if status in (401, 403):
        fix = f"; check the {entry.secret_key} of {entry.id!r} in the credentials store"
    raise SendFailed(
        f"{entry.type.value} at {entry.describe()} answered HTTP {status}{fix}",
        retryable=status >= 500 or status == 429,
    )


class JellyfinSender:
    """Reports the folders to Jellyfin's library monitor (``/Library/Media/Updated``)."""

    def __init__(self, entry: NotifyConfig, token: str | None, prefix: str) -> None:
        self.entry = entry
        self.token = token
        self.prefix = prefix

    def body(self, folders: Sequence[str]) -> bytes:
        updates = [
            {"Path": server_path(self.prefix, folder), "UpdateType": "Modified"}
            for folder in folders
        ]
        return json.dumps({"Updates": updates}).encode("utf-8")

    def send(self, folders: Sequence[str]) -> None:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["X-Emby-Token"] = self.token
        status, _ = http_request(
            self.entry, "POST", "/Library/Media/Updated", body=self.body(folders), headers=headers
        )
        check_status(self.entry, status)


class PlexSender:
    """A partial scan of each folder in one Plex library section."""

    def __init__(self, entry: NotifyConfig, token: str | None, prefix: str) -> None:
        self.entry = entry
        self.token = token
        self.prefix = prefix

    def target(self, folder: str) -> str:
        query = {}
        if folder != ROOT:
            query["path"] = server_path(self.prefix, folder)
        if self.token:
            query["X-Plex-Token"] = self.token
        encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        return f"/library/sections/{self.entry.section}/refresh" + (f"?{encoded}" if query else "")

    def send(self, folders: Sequence[str]) -> None:
        for folder in folders:
            status, _ = http_request(self.entry, "GET", self.target(folder))
            check_status(self.entry, status)


class NavidromeSender:
    """Subsonic ``startScan``: Navidrome scans its whole library (no per-folder scan)."""

    def __init__(self, entry: NotifyConfig, password: str | None) -> None:
        self.entry = entry
        self.password = password or ""

    def target(self, salt: str | None = None) -> str:
        salt = salt or secrets.token_hex(8)
        # md5: Subsonic's token scheme (what the server checks), not our choice.
        token = hashlib.md5((self.password + salt).encode("utf-8")).hexdigest()
        query = {"u": self.entry.user, "t": token, "s": salt, "v": SUBSONIC_VERSION,
                 "c": "musicfs", "f": "json"}  # fmt: skip
        return "/rest/startScan?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)

    def send(self, folders: Sequence[str]) -> None:
        status, body = http_request(self.entry, "GET", self.target())
        check_status(self.entry, status)
        try:
            answer = json.loads(body)["subsonic-response"]
            state = answer["status"]
        except (ValueError, KeyError, TypeError):
            raise SendFailed(
                f"navidrome at {self.entry.describe()} gave no Subsonic answer", retryable=True
            ) from None
        if state != "ok":
            error = answer.get("error") or {}
            message = error.get("message", "") if isinstance(error, dict) else ""
            raise SendFailed(
                f"navidrome at {self.entry.describe()} refused the scan: {message or state}; "
                f"check user {self.entry.user!r} and the password of {self.entry.id!r} in the "
                "credentials store",
                retryable=False,
            )
