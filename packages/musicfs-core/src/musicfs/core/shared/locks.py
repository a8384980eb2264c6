"""One scanner per origin: a PostgreSQL advisory lock per origin id.

The mount that holds an origin's lock scans and watches it; the others follow
the change feed. The lock belongs to a session (`OriginLocks` keeps one
connection for as long as it holds locks): it is released by `release`, by
`close`, and by the server itself when that session ends, so a mount that dies
or loses its network hands the origin over (another mount's
`try_lock_origin` then succeeds).

The holder of an origin's lock is the mount to rescan it: `ask_rescan` (any
other mount) notifies ``musicfs_rescan`` with the origin id; every lock session
listens, and `rescans_asked` (the holder, now and then) returns the origins it
holds that were asked for.

Lock keys are two 32-bit numbers, a fixed namespace and ``hashtext(origin id)``,
so MusicFS's locks never meet another application's.
"""

from __future__ import annotations

import logging
import select
import time
from typing import Any

import psycopg

from musicfs.core.secrets.credentials import Credentials
from musicfs.core.shared.connect import (
    CONNECT_TIMEOUT,
    ServerAddress,
    connect,
    interrupt,
    unavailable,
)

log = logging.getLogger(__name__)

#: The first half of every origin lock's key.
_NAMESPACE = "musicfs.origin"
#: The channel a mount asks the holder of an origin's lock to rescan it on.
RESCAN_CHANNEL = "musicfs_rescan"
#: Seconds `OriginLocks.close` waits for the server to release the locks: a
#: server gone silent would keep an unmount waiting (20 s of TCP timeouts, or
#: forever for a stopped process); it releases them itself once it notices the
#: session gone.
CLOSE_WAIT = 1.0


class OriginLocks:
    """The origin locks one mount holds, on one session of its own."""

    def __init__(
        self,
        address: ServerAddress,
        credentials: Credentials | None = None,
        *,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.address = address
        self.credentials = credentials
        self.timeout = timeout
        self.held: set[str] = set()
        self._conn: psycopg.Connection[Any] | None = None

    def _session(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()  # a new session holds none of the old one's locks
            conn = connect(self.address, self.credentials, autocommit=True, timeout=self.timeout)
            try:
                conn.execute(f"LISTEN {RESCAN_CHANNEL}".encode())
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                conn.close()
                raise unavailable(self.address, exc) from None
            except psycopg.Error as exc:  # refused (a standby): the locks work without it
                log.debug("shared catalog %s: no rescan requests (%s)", self.address, exc)
            self._conn = conn
        return self._conn

    def _call(self, function: str, origin_id: str) -> bool:
        conn = self._session()
        try:
            row = conn.execute(
                f"SELECT {function}(hashtext(%s), hashtext(%s))".encode(), (_NAMESPACE, origin_id)
            ).fetchone()
        except psycopg.Error as exc:
            self.close()
            raise unavailable(self.address, exc) from None
        return bool(row and row[0])

    def try_lock_origin(self, origin_id: str) -> bool:
        """Take the lock of *origin_id* if no other session holds it (never waits)."""
        if origin_id in self.held and self.alive():
            return True
        if self._call("pg_try_advisory_lock", origin_id):
            self.held.add(origin_id)
            return True
        return False

    def release(self, origin_id: str) -> None:
        if origin_id in self.held:
            self.held.discard(origin_id)
            self._call("pg_advisory_unlock", origin_id)

    def ask_rescan(self, origin_id: str) -> None:
        """Ask the mount holding *origin_id*'s lock to rescan it (`rescans_asked`)."""
        conn = self._session()
        try:
            conn.execute("SELECT pg_notify(%s, %s)", (RESCAN_CHANNEL, origin_id))
        except psycopg.Error as exc:
            self.close()
            raise unavailable(self.address, exc) from None

    def rescans_asked(self) -> set[str]:
        """The origins this session holds that another mount asked to rescan
        since the last call (never waits)."""
        if self._conn is None:
            return set()
        try:
            asked = {n.payload for n in self._conn.notifies(timeout=0)}
        except psycopg.Error:
            self.close()
            return set()
        return asked & self.held

    def alive(self) -> bool:
        """Whether the session (and so every lock in `held`) is still there;
        when it is not, `held` is emptied."""
        if self._conn is None:
            self.held.clear()
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            self.close()
            return False
        return True

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """End the session, its locks released first: the server would release
        them too, but only once it notices the session gone (a moment later),
        and another mount taking over should not have to wait for that. Takes
        at most about *wait* seconds, whatever the server does."""
        conn, self._conn = self._conn, None
        self.held.clear()
        if conn is None:
            return
        deadline = time.monotonic() + wait
        # Another thread may be in a call on it (the locks loop, abandoned at
        # unmount): wait for it a moment, then cut the socket under it.
        if not conn.lock.acquire(timeout=wait):
            interrupt(conn)
            if not conn.lock.acquire(timeout=wait):
                return  # still in use: the process ends it
        try:
            if not conn.closed and not conn.broken:
                _unlock_all(conn, deadline)
            conn.close()
        finally:
            conn.lock.release()

    def __enter__(self) -> OriginLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unlock_all(conn: psycopg.Connection[Any], deadline: float) -> None:
    """``pg_advisory_unlock_all()`` on *conn* (its lock held), waiting for the
    answer until *deadline* at most (`time.monotonic`)."""
    pgconn = conn.pgconn
    try:
        pgconn.send_query(b"SELECT pg_advisory_unlock_all()")
        while True:
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
            left = deadline - time.monotonic()
            if left <= 0:
                return  # silent: closing the connection is all there is to do
            select.select([pgconn.socket], [], [], left)
        while pgconn.get_result() is not None:
            pass
    except psycopg.Error:
        pass  # gone already: so are its locks
