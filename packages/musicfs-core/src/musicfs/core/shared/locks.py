"""One scanner per origin: a PostgreSQL advisory lock per origin id.

The mount that holds an origin's lock scans and watches it; the others follow
the change feed. The lock belongs to a session (`OriginLocks` keeps one
connection for as long as it holds locks): it is released by `release`, by
`close`, and by the server itself when that session ends, so a mount that dies
or loses its network hands the origin over (another mount's
`try_lock_origin` then succeeds).

Lock keys are two 32-bit numbers, a fixed namespace and ``hashtext(origin id)``,
so MusicFS's locks never meet another application's.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from musicfs.core.secrets.credentials import Credentials
from musicfs.core.shared.connect import CONNECT_TIMEOUT, ServerAddress, connect, unavailable

#: The first half of every origin lock's key.
_NAMESPACE = "musicfs.origin"


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
            self._conn = connect(self.address, self.credentials, autocommit=True,
                                 timeout=self.timeout)  # fmt: skip
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

    def close(self) -> None:
        """End the session, its locks released first: the server would release
        them too, but only once it notices the session gone (a moment later),
        and another mount taking over should not have to wait for that."""
        conn, self._conn = self._conn, None
        self.held.clear()
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                if not conn.closed and not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock_all()")
            conn.close()

    def __enter__(self) -> OriginLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
