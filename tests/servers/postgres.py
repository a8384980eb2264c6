"""A real PostgreSQL server on 127.0.0.1 for the shared catalog's tests (issue 16).

`postgres_server` runs the installed PostgreSQL (``initdb`` and ``pg_ctl`` from
``/usr/lib/postgresql/<version>/bin``) in a temporary directory: listening on
127.0.0.1 on a free port, its socket in that directory, ``trust`` for every
user but one (`PASSWORD_USER`, which must give a password: scram-sha-256), with
durability off (a test server). PostgreSQL refuses to run as root: run as root,
the directory is given to the ``postgres`` user the package creates and every
command runs as that user (``runuser -u postgres --``).

The yielded `PostgresServer` can be stopped (``fast`` or ``immediate``: a
crash) and started again on the same port and data, to play a server that goes
away and comes back, or made `silent` for a while (a host that froze);
`create_database` gives each test a fresh database.

Fixtures for any test folder (import them into its conftest.py):
``postgres`` (one server per session; skips when PostgreSQL is not installed)
and ``postgres_url`` (a fresh database on it per test, the server started again
if a test stopped it).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port

#: Where Debian's postgresql package puts the server programs of each version.
PG_ROOT = Path("/usr/lib/postgresql")
#: The one role that must give a password (scram-sha-256); every other is trusted.
PASSWORD_USER = "musicfs_pw"
_START_TIMEOUT = 30


def pg_bin_dir() -> Path | None:
    """The ``bin`` directory of the newest installed PostgreSQL, or None."""
    found = [d / "bin" for d in PG_ROOT.glob("*") if (d / "bin" / "pg_ctl").is_file()]
    if not found:
        return None
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


class PostgresServer:
    """One PostgreSQL cluster: where it listens, and how to stop and start it."""

    def __init__(self, directory: Path, bin_dir: Path) -> None:
        self.directory = directory
        self.bin_dir = bin_dir
        self.data = directory / "data"
        self.log_file = directory / "postgres.log"
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = "postgres"
        self._databases = itertools.count(1)
        # PostgreSQL refuses to run as root: then it runs as the package's user.
        self._as: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(directory, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        os.chmod(directory, 0o700)
        self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '{self.host}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{directory}'\n"
                # Commits reach the OS before they return (an immediate stop, as a
                # crash, keeps them); nothing waits for the disk.
                "fsync = off\nfull_page_writes = off\n"
                "max_connections = 100\n"
            )
        hba = self.data / "pg_hba.conf"
        # The first line that matches wins: the password user before the trust lines.
        hba.write_text(
            f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
        )

    def __repr__(self) -> str:
        return f"PostgresServer({self.host}:{self.port}, data={self.data})"

    def _run(self, program: str, *args: str) -> str:
        done = subprocess.run(
            [*self._as, str(self.bin_dir / program), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.directory,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}\n{self.log()}"
            )
        return done.stdout

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def start(self) -> None:
        """Start the server (again) and wait until it accepts connections."""
        if self.running:
            return
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-w",
            "-t", str(_START_TIMEOUT), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clients disconnected, a clean shutdown) or
        ``immediate`` (as after a crash: recovery at the next start)."""
        if not self.running:
            return
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def _processes(self) -> list[int]:
        """The postmaster and every process it started (backends, workers)."""
        master = int((self.data / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return [master, *map(int, children)]

    @contextlib.contextmanager
    def silent(self) -> Iterator[None]:
        """The server gone silent in the block, as a host that froze: every one
        of its processes stopped (SIGSTOP). Its kernel still takes the
        connections' bytes, so clients wait for answers that do not come
        (no reset, no TCP timeout). Continued at the end, even on failure."""
        stopped = self._processes()
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def url(self, database: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@{self.host}:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> None:
        """Run one statement as the superuser, outside a transaction."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement.encode())

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"musicfs_test_{next(self._databases)}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def log(self, tail: int = 4000) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return text[-tail:] if tail else text


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL in a temporary directory; stopped and removed on exit,
    even on failure. Raises `FileNotFoundError` when PostgreSQL is not installed."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError(
            f"PostgreSQL is not installed (no {PG_ROOT}/<version>/bin/pg_ctl): "
            "apt-get install postgresql"
        )
    directory = Path(tempfile.mkdtemp(prefix="musicfs-pg-"))
    try:
        server = PostgresServer(directory, bin_dir)
        try:
            server.start()
            yield server
        finally:
            with contextlib.suppress(RuntimeError):
                server.stop("immediate")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the test session."""
    try:
        with postgres_server() as server:
            yield server
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """The URL of a fresh, empty database for this test (the server running)."""
    postgres.start()  # a test before may have stopped it
    return postgres.create_database()
