"""Reaching the shared catalog's server: its URL, its secrets, its errors.

The URL names the server and nothing secret: ``postgresql://user@host:port/db``.
The password and TLS settings come from the credentials store
(`musicfs.core.secrets.credentials`) under the id ``catalog``: the environment
(``MUSICFS_SECRET_CATALOG_PASSWORD``...), ``[catalog]`` in credentials.toml, or
the keyring, so they are never on a command line or in the config file. A URL
with a password in it is refused.

Every connection gets a short connect timeout and TCP keepalives, so a server
that is down or gone silent makes a call fail in seconds instead of hanging;
every failure becomes `SharedCatalogUnavailable`, naming the server (no
password: the message is redacted as well) and the fix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from musicfs.core.secrets.credentials import Credentials, env_var_name
from musicfs.core.secrets.redact import redact
from musicfs.core.shared.errors import SharedCatalogError, SharedCatalogUnavailable

log = logging.getLogger(__name__)

#: The credentials id of the shared catalog: ``[catalog]`` in credentials.toml.
CREDENTIALS_ID = "catalog"
#: What the credentials store may hold for it (libpq's names).
SECRET_KEYS: tuple[str, ...] = (
    "password", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword",
)  # fmt: skip
#: Seconds to wait for a connection (libpq's minimum is 2).
CONNECT_TIMEOUT = 3
#: Dead peers found in about 20 s even on an idle (listening) connection: the
#: server by us (libpq's keepalives)...
_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 2,
    "tcp_user_timeout": 20_000,
}  # fmt: skip
#: ...and we by the server (its own, per session), so that the origin locks of a
#: machine that vanished are freed for another one in seconds, not hours.
_SERVER_KEEPALIVES = (
    "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=2"
)


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """A checked shared-catalog URL and how to name it in messages."""

    url: str
    name: str  # user@host:port/database: what messages call the server

    def __str__(self) -> str:
        return self.name


def parse_url(url: str) -> ServerAddress:
    """Check a ``postgresql://`` URL; raise `SharedCatalogError` saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise SharedCatalogError(
            f"the shared catalog must be a postgresql:// URL "
            f"(postgresql://user@host:port/database), not {parts.scheme or 'no'} scheme"
        )
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise SharedCatalogError(
            f"the shared catalog URL is not valid: {redact(str(exc))}"
        ) from None
    if parts.password is not None or "password" in params or "sslpassword" in params:
        raise SharedCatalogError(
            "the shared catalog URL holds a password; take it out and put it in the "
            f"credentials store: the environment variable "
            f'{env_var_name(CREDENTIALS_ID, "password")}, or password = "..." under '
            f"[{CREDENTIALS_ID}] in credentials.toml (chmod 600)"
        )
    if not params.get("dbname"):
        raise SharedCatalogError(
            "the shared catalog URL names no database: postgresql://user@host:port/database"
        )
    user = str(params.get("user") or "")
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    name = f"{user + '@' if user else ''}{host}:{port}/{params['dbname']}"
    return ServerAddress(url, name)


def connect(
    address: ServerAddress,
    credentials: Credentials | None = None,
    *,
    autocommit: bool = False,
    timeout: float = CONNECT_TIMEOUT,
) -> psycopg.Connection[Any]:
    """A new connection to the shared catalog's server, with its secrets."""
    secrets: dict[str, Any] = {}
    if credentials is not None:
        for key in SECRET_KEYS:
            value = credentials.get(CREDENTIALS_ID, key)
            if value is not None:
                secrets[key] = value
    given = str(conninfo_to_dict(address.url).get("options") or "")
    try:
        return psycopg.connect(
            address.url,
            autocommit=autocommit,
            connect_timeout=max(2, round(timeout)),
            application_name="musicfs",
            options=f"{given} {_SERVER_KEEPALIVES}".strip(),
            **_KEEPALIVES,
            **secrets,
        )
    except psycopg.Error as exc:
        raise unavailable(address, exc) from None


def unavailable(address: ServerAddress, exc: BaseException) -> SharedCatalogUnavailable:
    """The error to raise for *exc* (a psycopg error) from *address*: the
    server, the reason (first line, redacted) and the fix."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = redact(lines[0] if lines else type(exc).__name__)
    if "password" in reason or "authentication" in reason:
        fix = (
            f"check the password in the credentials store (the environment variable "
            f"{env_var_name(CREDENTIALS_ID, 'password')}, or [{CREDENTIALS_ID}] password in "
            "credentials.toml)"
        )
    else:
        fix = (
            "check that PostgreSQL runs there and lets this machine in (listen_addresses, "
            "pg_hba.conf); mounts keep serving from their replica meanwhile"
        )
    log.debug("shared catalog %s: %s", address, reason)
    return SharedCatalogUnavailable(f"shared catalog {address} is unavailable: {reason}; {fix}")


def interrupt(conn: psycopg.Connection[Any] | None) -> None:
    """Shut *conn*'s socket down (from any thread): a call waiting on it for a
    server gone silent (its host down, its process stopped: the TCP timeouts
    take 20 s, a stopped process forever) ends at once with an error, and the
    server ends the session (releasing its locks) as soon as it reads again."""
    if conn is None or conn.closed:
        return
    try:
        fd = os.dup(conn.pgconn.socket)
    except (OSError, psycopg.Error):
        return  # closed meanwhile
    with socket.socket(fileno=fd) as sock, contextlib.suppress(OSError):  # not connected
        sock.shutdown(socket.SHUT_RDWR)
