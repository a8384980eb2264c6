"""Many files in flight on one SFTP connection (issue 17, target 1), against a real
OpenSSH sshd on 127.0.0.1 (`tests.servers.sshd`).

A first scan opens, reads and closes many files at once, more than there are
connections: threads sharing a session must have their requests in flight
together (not one file per round trip), each must get the bytes of its own
file, an error answered for one file goes to that file's caller only, a
connection killed with requests in flight fails every caller at once, a server
that stops answering fails them all within one timeout (the next call
reconnects after either), and the session's synchronous calls (stat, listing)
still work among the scans.

"In flight together" is seen at the server: it is frozen (SIGSTOP), the
threads start, and the test waits until its socket holds the first request of
every one of them, unread; then it thaws.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from musicfs.core.model import FileStat
from musicfs.core.origins import OriginUnavailable
from musicfs.core.origins.sftp import SFTPOrigin
from tests.e2e.helpers import wait_until
from tests.servers.sshd import SSHD, SSHServer, sshd_server

pytestmark = pytest.mark.skipif(
    not (os.path.exists(SSHD) and shutil.which("ssh-keygen")) or os.geteuid() != 0,
    reason="needs openssh-server and root (sshd)",
)

FILES = 12  # more than a session would serve one at a time
EXTENSIONS = frozenset({".flac"})
# Names of one length: every thread's first request (an open) is as long.
MISSING = "Many/mi.flac"
DENIED = "Many/dn.flac"
# Opening a write-only sysfs file for reading is refused even to root (the
# server runs as root here, so a chmod would not refuse anything).
WRITE_ONLY = Path("/sys/bus/cpu/uevent")


def _refused_to_root() -> bool:
    try:
        with WRITE_ONLY.open("rb"):
            return False
    except PermissionError:
        return True
    except OSError:
        return False


class Library:
    def __init__(self, root: Path, files: dict[str, bytes] | None = None, client: str = "auto"):
        self.root = root
        self.files: dict[str, bytes] = {} if files is None else files
        self.client = client  # the SSH client of the origins made of it


@pytest.fixture(scope="module", params=["openssh", "paramiko"])
def library(request: pytest.FixtureRequest, files: Library) -> Library:
    return Library(files.root, files.files, request.param)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Library:
    lib = Library(tmp_path_factory.mktemp("sftp-many"))
    (lib.root / "Many").mkdir()
    rnd = random.Random(17)
    for i in range(FILES):
        relpath = f"Many/{i:02d}.flac"
        # Distinct bytes of distinct sizes: a reply handed to the wrong file shows.
        data = rnd.randbytes(100_000 + 7_919 * i)
        (lib.root / relpath).write_bytes(data)
        lib.files[relpath] = data
    if _refused_to_root():
        (lib.root / DENIED).symlink_to(WRITE_ONLY)
    return lib


@pytest.fixture(scope="module")
def server(library: Library) -> Iterator[SSHServer]:
    with sshd_server(library.root) as running:
        yield running


def make_origin(server: SSHServer, library: Library, timeout: float) -> SFTPOrigin:
    made = SFTPOrigin(
        "music",
        server.host,
        str(library.root),
        port=server.port,
        user=server.user,
        key_file=server.key_file,
        known_hosts=server.known_hosts,
        timeout=timeout,
        max_connections=1,  # every thread shares the one session
        ssh_client=library.client,
    )
    made.check()  # the connection is made before the server freezes
    return made


@pytest.fixture
def origin(server: SSHServer, library: Library) -> Iterator[SFTPOrigin]:
    # The server is frozen on purpose: no timeout meanwhile.
    made = make_origin(server, library, timeout=30.0)
    yield made
    made.close()


def unread(port: int) -> int:
    """Bytes sent to 127.0.0.1:*port* that the server has not read yet (the
    receive queues of its established sockets)."""
    total = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state == "01" and int(local.rpartition(":")[2], 16) == port:
                total += int(queues.partition(":")[2], 16)
    return total


def scan_file(origin: SFTPOrigin, relpath: str, size: int) -> list[bytes]:
    """What a scan does with a listed file: open (no stat), read its head and
    tail in one batch, close without waiting."""
    with origin.open_listed(relpath, FileStat(size, 0)) as opened:
        return opened.read_ranges([(0, 65536), (max(0, size - 40_000), 40_000)])


def expected_ranges(data: bytes) -> list[bytes]:
    size = len(data)
    return [data[:65536], data[max(0, size - 40_000) : max(0, size - 40_000) + 40_000]]


def requests_sent(origin: SFTPOrigin) -> int:
    """SFTP requests *origin*'s sessions have sent so far."""
    return sum(pooled.session.sftp.request_number for pooled in origin._pool.sessions())


def start_in_flight(
    server: SSHServer, threads: list[threading.Thread], base: int, origin: SFTPOrigin
) -> None:
    """Start *threads* while the server is frozen; return once its socket holds
    the first request of each (all of one length; *base*: bytes unread before)."""
    sent = requests_sent(origin)
    threads[0].start()
    one = wait_until(lambda: unread(server.port) - base, timeout=10, what="the first request")
    for thread in threads[1:]:
        thread.start()
    # paramiko sends each request in an SSH packet of its own; ssh may put
    # several that come at once in one packet (less than one packet's overhead
    # each, which is less than a request's own bytes): hence half as many bytes.
    least = len(threads) * one if origin.client == "paramiko" else len(threads) * one // 2
    wait_until(
        lambda: (
            requests_sent(origin) - sent >= len(threads) and unread(server.port) - base >= least
        ),
        timeout=10,
        what=f"{len(threads)} requests in flight at once on one connection",
    )


def run_in_flight(
    server: SSHServer,
    origin: SFTPOrigin,
    jobs: list[Callable[[], object]],
    *,
    thaw: bool = True,
) -> list[object | BaseException]:
    """Run each job in a thread of its own, all with their first request in
    flight at once: the server is frozen until its socket holds the first
    request of every job (all of one length); without *thaw*, until every job
    is done. The results, or the errors."""
    results: list[object | BaseException] = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    base = unread(server.port)
    server.freeze()
    try:
        start_in_flight(server, threads, base, origin)
        if not thaw:
            for thread in threads:
                thread.join(timeout=60)
    finally:
        server.thaw()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a caller hangs"
    return results


def test_threads_sharing_a_session_have_requests_in_flight_and_get_their_own_bytes(
    server: SSHServer, origin: SFTPOrigin, library: Library
) -> None:
    relpaths = sorted(library.files)
    closed = {r: len(server.bytes_read(library.root / r)) for r in relpaths}
    jobs: list[Callable[[], object]] = [
        functools.partial(scan_file, origin, r, len(library.files[r])) for r in relpaths
    ]
    results = run_in_flight(server, origin, jobs)
    for relpath, result in zip(relpaths, results, strict=True):
        assert result == expected_ranges(library.files[relpath]), relpath
    assert origin.connections == 1
    # Each file was read once, only its head and tail (the server's own count).
    for relpath in relpaths:
        read: list[int] = wait_until(
            functools.partial(lambda r: server.bytes_read(library.root / r)[closed[r] :], relpath),
            timeout=10,
            what=f"the server closing {relpath}",
        )
        assert read == [65536 + 40_000], (relpath, read)


def test_an_error_goes_to_its_own_caller_only(
    server: SSHServer, origin: SFTPOrigin, library: Library
) -> None:
    relpaths = sorted(library.files)[:6]
    odd = [MISSING] + ([DENIED] if (library.root / DENIED).is_symlink() else [])
    order = relpaths[:3] + odd + relpaths[3:]
    jobs: list[Callable[[], object]] = [
        functools.partial(scan_file, origin, r, len(library.files.get(r, b"x" * 4096)))
        for r in order
    ]
    results = dict(zip(order, run_in_flight(server, origin, jobs), strict=True))
    assert isinstance(results[MISSING], FileNotFoundError), results[MISSING]
    if DENIED in results:
        assert isinstance(results[DENIED], PermissionError), results[DENIED]
    for relpath in relpaths:
        assert results[relpath] == expected_ranges(library.files[relpath]), relpath
    # The session is still good: the next scan uses it, no new connection.
    first = relpaths[0]
    assert scan_file(origin, first, len(library.files[first])) == expected_ranges(
        library.files[first]
    )
    assert origin.connections == 1


def test_a_connection_killed_in_flight_fails_every_caller_then_reconnects(
    server: SSHServer, origin: SFTPOrigin, library: Library
) -> None:
    relpaths = sorted(library.files)[:8]
    results: list[object | BaseException] = [None] * len(relpaths)
    base = unread(server.port)

    def run(i: int) -> None:
        relpath = relpaths[i]
        try:
            results[i] = scan_file(origin, relpath, len(library.files[relpath]))
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(relpaths))]
    server.freeze()
    try:
        start_in_flight(server, threads, base, origin)
        started = time.monotonic()
        server.stop()  # kills the connection with every request unanswered
        for thread in threads:
            thread.join(timeout=20)
        assert not any(thread.is_alive() for thread in threads), "a caller hangs"
        # Far less than the origin's 30 s timeout: nobody waited for a reply.
        assert time.monotonic() - started < 15
    finally:
        server.thaw()
        server.start()
    for result in results:
        assert isinstance(result, OriginUnavailable), result
        assert origin.location in str(result)
    # The next call makes a new connection and works.
    for relpath in relpaths[:3]:
        data = library.files[relpath]
        assert scan_file(origin, relpath, len(data)) == expected_ranges(data)
    assert origin.connections == 1


def test_a_server_that_stops_answering_fails_every_caller_within_one_timeout(
    server: SSHServer, library: Library
) -> None:
    timeout = 2.0
    hanging = make_origin(server, library, timeout)
    try:
        relpaths = sorted(library.files)[:8]
        jobs: list[Callable[[], object]] = [
            functools.partial(scan_file, hanging, r, len(library.files[r])) for r in relpaths
        ]
        started = time.monotonic()
        results = run_in_flight(server, hanging, jobs, thaw=False)
        elapsed = time.monotonic() - started
        for result in results:
            assert isinstance(result, OriginUnavailable), result
            assert "no answer" in str(result)
        # One timeout for all of them, not one each (nor a reconnect's more).
        assert elapsed < timeout * 1.5 + 0.5, f"took {elapsed:.1f}s"
        # Answering again, the server gets a new connection.
        data = library.files[relpaths[0]]
        assert scan_file(hanging, relpaths[0], len(data)) == expected_ranges(data)
    finally:
        hanging.close()


def test_stats_and_listings_among_scans_on_one_session(
    origin: SFTPOrigin, library: Library
) -> None:
    relpaths = sorted(library.files)
    errors: list[BaseException] = []

    def scanner(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(30):
                relpath = rnd.choice(relpaths)
                data = library.files[relpath]
                assert scan_file(origin, relpath, len(data)) == expected_ranges(data)
        except BaseException as exc:
            errors.append(exc)

    def looker(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(30):
                relpath = rnd.choice(relpaths)
                if rnd.random() < 0.7:
                    assert origin.stat(relpath).size == len(library.files[relpath])
                else:
                    listed = dict(origin.list_dir("Many", EXTENSIONS).files)
                    assert listed[relpath.rpartition("/")[2]].size == len(library.files[relpath])
                with origin.open(relpath) as opened:  # open with stat: a sync call
                    assert opened.read(1000, 5000) == library.files[relpath][1000:6000]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=scanner, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=looker, args=(100 + i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a caller hangs"
    assert not errors, errors
    assert origin.connections == 1
