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

The same holds for a batch of files read by one thread (`SFTPOrigin.read_heads`,
how a scan reads them): every file's open is sent before any is answered, each
file gets the head of its own file (all of a shorter one), an error goes to
its own file, a folder gone from the server fails the batch as the origin
being unavailable (never as files gone), a connection killed mid-batch fails
it at once, and a server that answers reads with fewer bytes than asked still
gives whole heads.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from musicfs.core.model import FileStat
from musicfs.core.origins import OriginUnavailable
from musicfs.core.origins.sftp import SFTPOrigin
from tests.e2e.helpers import wait_until
from tests.servers.sshd import SSHD, WRITE_ONLY, SSHServer, refused_to_root, sshd_server

pytestmark = pytest.mark.skipif(
    not (os.path.exists(SSHD) and shutil.which("ssh-keygen")) or os.geteuid() != 0,
    reason="needs openssh-server and root (sshd)",
)

FILES = 12  # more than a session would serve one at a time
EXTENSIONS = frozenset({".flac"})
# Names of one length: every thread's first request (an open) is as long.
MISSING = "Many/mi.flac"
DENIED = "Many/dn.flac"
SHORT = "Many/sh.flac"  # shorter than a head
EMPTY = "Many/em.flac"
HEAD = 64 * 1024


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
    (lib.root / SHORT).write_bytes(rnd.randbytes(5_000))
    (lib.root / EMPTY).write_bytes(b"")
    if refused_to_root():
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
    assert_read_once(server, library, closed, 65536 + 40_000)


def assert_read_once(
    server: SSHServer, library: Library, closed: dict[str, int], size: int
) -> None:
    """Each file of *closed* (relpath: its closes before) was opened once since,
    read *size* bytes and closed, as sftp-server's log tells."""
    for relpath in closed:
        read: list[int] = wait_until(
            functools.partial(lambda r: server.bytes_read(library.root / r)[closed[r] :], relpath),
            timeout=10,
            what=f"the server closing {relpath}",
        )
        assert read == [size], (relpath, read)


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


# -- batches of heads on one thread (read_heads) ---------------------------------------------


def listed(library: Library, relpaths: list[str]) -> list[tuple[str, FileStat, int]]:
    """*relpaths* as a listing gives them to a scan, each with the head to read."""
    sizes = {r: (library.root / r).stat().st_size for r in relpaths if (library.root / r).is_file()}
    return [(r, FileStat(sizes.get(r, 4096), 0), HEAD) for r in relpaths]


def heads(library: Library, relpaths: list[str]) -> list[bytes]:
    return [(library.root / r).read_bytes()[:HEAD] for r in relpaths]


def batch_while_frozen(
    server: SSHServer, origin: SFTPOrigin, files: list[tuple[str, FileStat, int]]
) -> tuple[threading.Thread, list[object]]:
    """Start `read_heads` of *files* in a thread while the server is frozen;
    return once every file's open is sent (none can have been answered)."""
    result: list[object] = []
    sent = requests_sent(origin)

    def run() -> None:
        try:
            result.append(origin.read_heads(files))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run)
    server.freeze()
    thread.start()
    try:
        wait_until(
            lambda: requests_sent(origin) - sent >= len(files),
            timeout=10,
            what=f"{len(files)} opens sent at once by one thread",
        )
    except BaseException:
        server.thaw()  # the next tests share the server
        thread.join(timeout=30)
        raise
    return thread, result


def test_a_batch_has_every_file_in_flight_and_each_gets_its_own_head(
    server: SSHServer, origin: SFTPOrigin, library: Library
) -> None:
    relpaths = sorted(library.files)
    closed = {r: len(server.bytes_read(library.root / r)) for r in relpaths}
    thread, result = batch_while_frozen(server, origin, listed(library, relpaths))
    server.thaw()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the batch hangs"
    assert result == [heads(library, relpaths)]
    assert origin.connections == 1
    # Each file was opened once, read only its head, and closed (the server's own log).
    assert_read_once(server, library, closed, HEAD)


def test_in_a_batch_an_error_goes_to_its_own_file_and_short_files_come_whole(
    origin: SFTPOrigin, library: Library
) -> None:
    good = sorted(library.files)[:4]
    odd = [MISSING, SHORT, EMPTY] + ([DENIED] if (library.root / DENIED).is_symlink() else [])
    order = good[:2] + odd + good[2:]
    got = dict(zip(order, origin.read_heads(listed(library, order)), strict=True))
    assert isinstance(got.pop(MISSING), FileNotFoundError)
    if DENIED in got:
        assert isinstance(got.pop(DENIED), PermissionError)
    assert got == dict(zip(got, heads(library, list(got)), strict=True))
    assert got[SHORT] == (library.root / SHORT).read_bytes()  # all 5,000 bytes
    assert got[EMPTY] == b""
    # The session is still good: the next batch uses it, no new connection.
    assert origin.read_heads(listed(library, good[:1])) == heads(library, good[:1])
    assert origin.connections == 1


def test_a_folder_gone_from_the_server_fails_a_batch_as_unavailable_not_files_gone(
    origin: SFTPOrigin, library: Library
) -> None:
    relpaths = sorted(library.files)[:3]
    away = library.root.with_name(library.root.name + "-away")
    library.root.rename(away)  # a disk not mounted on the server
    try:
        with pytest.raises(OriginUnavailable) as info:
            origin.read_heads(listed(library, relpaths))
        assert "not on the server" in str(info.value)
    finally:
        away.rename(library.root)
    assert origin.read_heads(listed(library, relpaths)) == heads(library, relpaths)


def test_a_connection_killed_mid_batch_fails_it_at_once_and_the_next_reconnects(
    server: SSHServer, origin: SFTPOrigin, library: Library
) -> None:
    relpaths = sorted(library.files)
    thread, result = batch_while_frozen(server, origin, listed(library, relpaths))
    try:
        started = time.monotonic()
        server.stop()  # kills the connection with every request unanswered
        thread.join(timeout=20)
        assert not thread.is_alive(), "the batch hangs"
        # Far less than the origin's 30 s timeout: nothing waited for a reply.
        assert time.monotonic() - started < 15
    finally:
        server.thaw()
        server.start()
    (error,) = result
    assert isinstance(error, OriginUnavailable), error
    assert origin.location in str(error)
    assert origin.read_heads(listed(library, relpaths[:3])) == heads(library, relpaths[:3])
    assert origin.connections == 1


def test_a_server_that_answers_less_than_asked_still_gives_whole_heads(
    library: Library, tmp_path: Path
) -> None:
    """Reads answered with at most 16 KiB: each head is asked for again from
    where the answer stopped, and the connection learns to ask for 16 KiB."""
    log = tmp_path / "asked.log"
    cap = 16 * 1024
    filter_ = Path(__file__).resolve().parents[1] / "servers" / "sftpcap.py"
    relpaths = sorted(library.files)
    with sshd_server(library.root, wrapper=f"{sys.executable} {filter_} {cap} {log}") as capped:
        origin = make_origin(capped, library, timeout=30.0)
        try:
            assert origin.read_heads(listed(library, relpaths)) == heads(library, relpaths)
            learnt = len(log.read_text().split())
            two = relpaths[:2]
            assert origin.read_heads(listed(library, two)) == heads(library, two)
            asked = [int(n) for n in log.read_text().split()[learnt:]]
            assert asked == [cap] * (2 * HEAD // cap)  # no request asked past the cap
        finally:
            origin.close()
