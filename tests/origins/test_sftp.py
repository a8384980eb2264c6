"""The SFTP origin against a real OpenSSH sshd on 127.0.0.1 (`tests.servers.sshd`):
the origin contract, reading (ranged, sequential, random), a server that stops or
hangs, host keys, logins and the bound on connections."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from musicfs.core.model import AUDIO_EXTENSIONS
from musicfs.core.origins import OriginUnavailable
from musicfs.core.origins.sftp import ACCEPT_NEW, INSECURE_IGNORE, SFTPOrigin
from tests.origins.contract import check_contract, check_tags_readable
from tests.servers.sshd import SSHD, SSHServer, sshd_server

pytestmark = pytest.mark.skipif(
    not (os.path.exists(SSHD) and shutil.which("ffmpeg") and shutil.which("ssh-keygen"))
    or os.geteuid() != 0,
    reason="needs openssh-server, ffmpeg and root (sshd)",
)

TIMEOUT = 2.0
BIG = "big.bin"
BIG_SIZE = 20 * 1000 * 1000
FLAC = "Artist/Album/01 One.flac"
LONG_FLAC = "Noise/Long.flac"


class Library:
    """A folder of real audio files, with what the origin must show of it, and
    the SSH client the origins made of it use (every test runs with both)."""

    def __init__(self, root: Path, files: dict[str, bytes] | None = None, client: str = "auto"):
        self.root = root
        self.files: dict[str, bytes] = {} if files is None else files
        self.client = client

    def path(self, relpath: str) -> Path:
        return self.root / relpath

    def data(self, relpath: str) -> bytes:
        return self.files[relpath]


def _encode(path: Path, title: str, source: str, *codec: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", source,
         "-metadata", f"title={title}", *codec, str(path)],
        check=True,
    )  # fmt: skip


@pytest.fixture(scope="module", params=["auto", "paramiko"])
def library(request: pytest.FixtureRequest, music: Library) -> Library:
    """*music*, read through OpenSSH's ssh where it can ("auto") or paramiko."""
    return Library(music.root, music.files, request.param)


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> Library:
    lib = Library(tmp_path_factory.mktemp("sftp-music"))
    root = lib.root
    sine = "sine=frequency=440:duration=1"
    _encode(root / FLAC, "One", sine)
    _encode(root / "Artist/Album/02 Two.mp3", "Two", sine, "-c:a", "libmp3lame")
    _encode(root / "Other Artist/Single/Çà et là.ogg", "Three", sine, "-c:a", "libvorbis")
    _encode(root / "Top.wav", "Top", sine)
    # 20 s of noise: too big to be read whole just for its tags.
    _encode(root / LONG_FLAC, "Long", "anoisesrc=d=20:a=0.5", "-ar", "44100", "-sample_fmt", "s16")
    # Hidden and non-audio files, which are not listed.
    (root / ".hidden.flac").write_bytes((root / FLAC).read_bytes())
    (root / "._hidden.flac").write_bytes(b"\x00\x05\x16\x07 AppleDouble, no audio")
    (root / ".Trash").mkdir()
    (root / ".Trash/gone.flac").write_bytes(b"fLaC old")
    (root / "Artist/Album/cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not audio")
    (root / "notes.txt").write_text("hello")
    (root / "README").write_text("no extension")
    (root / BIG).write_bytes(random.Random(7).randbytes(BIG_SIZE))
    # Symlinks: to a file (listed, with the target's size), dangling and to a
    # folder (neither listed).
    (root / "Artist/Album/link.flac").symlink_to("01 One.flac")
    (root / "dangling.flac").symlink_to("missing.flac")
    (root / "Linked Artist").symlink_to("Artist")
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            lib.files[path.relative_to(root).as_posix()] = path.read_bytes()
    lib.files["Artist/Album/link.flac"] = lib.files[FLAC]
    return lib


@pytest.fixture(scope="module")
def server(library: Library) -> Iterator[SSHServer]:
    with sshd_server(library.root) as running:
        yield running


def make_origin(
    server: SSHServer, library: Library, root: Path | None = None, **options: Any
) -> SFTPOrigin:
    settings: dict[str, Any] = {
        "port": server.port,
        "user": server.user,
        "key_file": server.key_file,
        "known_hosts": server.known_hosts,
        "timeout": TIMEOUT,
        "ssh_client": library.client,
    }
    settings.update(options)
    return SFTPOrigin("music", server.host, str(root or library.root), **settings)


@pytest.fixture
def origin(server: SSHServer, library: Library) -> Iterator[SFTPOrigin]:
    made = make_origin(server, library)
    yield made
    made.close()


def bytes_read(server: SSHServer, library: Library, relpath: str) -> list[int]:
    """What each closed handle of *relpath* read, as the server counted it."""
    return server.bytes_read(library.path(relpath))


def unavailable_quickly(operation: Callable[[], object], timeout: float = TIMEOUT) -> str:
    """*operation* raises OriginUnavailable, without hanging past *timeout*."""
    started = time.monotonic()
    with pytest.raises(OriginUnavailable) as info:
        operation()
    elapsed = time.monotonic() - started
    assert elapsed < timeout * 1.5 + 0.5, f"took {elapsed:.1f}s: {info.value}"
    return str(info.value)


# -- the contract and reading ---------------------------------------------------


def test_contract(origin: SFTPOrigin, library: Library) -> None:
    check_contract(origin, library.files)
    for relpath in (FLAC, "Artist/Album/02 Two.mp3", "Other Artist/Single/Çà et là.ogg"):
        check_tags_readable(origin, relpath)


def test_location_has_no_secret(server: SSHServer, library: Library) -> None:
    origin = make_origin(server, library, password="Secret-Pa55")
    assert origin.location == f"sftp://{server.user}@127.0.0.1:{server.port}{library.root}"
    assert "Secret-Pa55" not in origin.location
    assert "Secret-Pa55" not in repr(origin)
    assert origin.kind == "sftp"
    relative = SFTPOrigin("x", "::1", "~/music", port=2222)
    assert relative.location == "sftp://[::1]:2222/~/music"


def test_tags_are_read_with_ranged_reads(
    server: SSHServer, origin: SFTPOrigin, library: Library
) -> None:
    before = len(bytes_read(server, library, LONG_FLAC))
    check_tags_readable(origin, LONG_FLAC)
    (read,) = bytes_read(server, library, LONG_FLAC)[before:]
    size = len(library.data(LONG_FLAC))
    assert size > 1_000_000
    assert read <= 256 * 1024, f"{read} of {size} bytes read for the tags"


def test_sequential_read_is_fast_and_exact(
    server: SSHServer, origin: SFTPOrigin, library: Library
) -> None:
    expected = library.data(BIG)
    request = 128 * 1024
    before = len(bytes_read(server, library, BIG))
    with origin.open(BIG) as opened:
        assert opened.size == BIG_SIZE
        started = time.perf_counter()
        parts = [opened.read(offset, request) for offset in range(0, BIG_SIZE, request)]
        elapsed = time.perf_counter() - started
    assert b"".join(parts) == expected
    rate = BIG_SIZE / elapsed / 1e6
    print(f"\nSFTP sequential read, 128 KiB requests: {rate:.0f} MB/s")
    # ~100 MB/s here; ~5 MB/s would mean round trips stalled (Nagle) or unpipelined.
    assert rate > 10, f"{rate:.1f} MB/s"
    assert bytes_read(server, library, BIG)[before:] == [BIG_SIZE]  # nothing fetched twice


def test_a_server_that_answers_less_is_asked_for_that_much(
    library: Library, tmp_path: Path
) -> None:
    """A server that answers reads with at most 16 KiB (below the 64 KiB a
    request asks for) serves every byte; once it has answered short before a
    file's end, its connection asks for 16 KiB, and no read costs two requests."""
    log = tmp_path / "asked.log"
    cap = 16 * 1024
    filter_ = Path(__file__).resolve().parents[1] / "servers" / "sftpcap.py"
    expected = library.data(BIG)

    def asked() -> list[int]:
        return [int(line) for line in log.read_text().split()]

    with sshd_server(library.root, wrapper=f"{sys.executable} {filter_} {cap} {log}") as capped:
        origin = make_origin(capped, library, max_connections=1)
        try:
            with origin.open(BIG) as opened:
                assert opened.read(0, 1 << 20) == expected[: 1 << 20]
            assert max(asked()) == 64 * 1024  # the server's cap is not known at first
            learnt = len(asked())
            with origin.open(BIG) as opened:
                request = 128 * 1024
                parts = [opened.read(at, request) for at in range(0, BIG_SIZE, request)]
                assert b"".join(parts) == expected
                ranges = [(0, 64 * 1024), (BIG_SIZE // 2, 50_000), (BIG_SIZE - 70_000, 70_000)]
                assert opened.read_ranges(ranges) == [expected[o : o + n] for o, n in ranges]
            assert max(asked()[learnt:]) == cap
            # Every byte was asked for once: nothing was asked again after a short answer.
            assert sum(asked()[learnt:]) == BIG_SIZE + sum(n for _, n in ranges)
        finally:
            origin.close()


def test_random_reads_fetch_only_what_is_asked(
    server: SSHServer, origin: SFTPOrigin, library: Library
) -> None:
    expected = library.data(BIG)
    rnd = random.Random(1)
    asked = 0
    before = len(bytes_read(server, library, BIG))
    with origin.open(BIG) as opened:
        for _ in range(100):
            offset, size = rnd.randrange(BIG_SIZE), rnd.choice([4096, 65536, 100_000])
            assert opened.read(offset, size) == expected[offset : offset + size]
            asked += size
    (read,) = bytes_read(server, library, BIG)[before:]
    assert read <= asked


def test_mixed_reads_are_exact(origin: SFTPOrigin, library: Library) -> None:
    """Sequential runs of odd sizes (which end inside and across read-ahead
    windows), jumps, re-reads and reads past the end."""
    expected = library.data(BIG)
    rnd = random.Random(2)
    with origin.open(BIG) as opened:
        offset = 0
        for _ in range(300):
            choice = rnd.random()
            if choice < 0.1:
                offset = rnd.randrange(BIG_SIZE)
            elif choice < 0.15:
                offset = max(0, offset - rnd.randrange(200_000))
            elif choice < 0.17:
                offset = BIG_SIZE - rnd.randrange(50_000)
            size = rnd.choice([1, 4096, 100_000, 131072, 300_000])
            assert opened.read(offset, size) == expected[offset : offset + size]
            offset = min(BIG_SIZE, offset + size)
        assert opened.read(BIG_SIZE, 10) == b""
        assert opened.read(BIG_SIZE + 5, 10) == b""
        assert opened.read(0, 0) == b""


def test_errors_of_paths(origin: SFTPOrigin) -> None:
    with pytest.raises(FileNotFoundError):
        origin.stat("../outside.flac")
    with pytest.raises(IsADirectoryError):
        origin.open("Artist")
    with pytest.raises(FileNotFoundError):
        origin.list_dir("Top.wav/nothing", AUDIO_EXTENSIONS)


def test_missing_root_is_unavailable_not_empty(server: SSHServer, library: Library) -> None:
    """A root that is not there (a disk not mounted on the server) must not read
    as "every file is gone"."""
    origin = make_origin(server, library, root=library.root / "not-mounted")
    try:
        unavailable_quickly(origin.check)
        unavailable_quickly(lambda: origin.list_dir("", AUDIO_EXTENSIONS))
        unavailable_quickly(lambda: origin.stat(FLAC))
        unavailable_quickly(lambda: origin.open(FLAC))
    finally:
        origin.close()


def test_permission_denied(library: Library) -> None:
    with sshd_server(library.root, sftp_flags="-P open") as refusing:
        origin = make_origin(refusing, library)
        try:
            assert origin.stat(FLAC).size == len(library.data(FLAC))
            with pytest.raises(PermissionError):
                origin.open(FLAC)
            assert origin.reachable()
        finally:
            origin.close()


# -- a server that goes away ------------------------------------------------------


def test_stopped_server_is_unavailable_then_back(library: Library) -> None:
    expected = library.data(BIG)
    with sshd_server(library.root) as stopping:
        origin = make_origin(stopping, library)
        try:
            opened = origin.open(BIG)
            assert opened.read(0, 10) == expected[:10]
            stopping.stop()
            unavailable_quickly(lambda: opened.read(5_000_000, 4096))
            unavailable_quickly(lambda: origin.stat(FLAC))
            message = unavailable_quickly(lambda: origin.open(FLAC))
            assert origin.location in message
            unavailable_quickly(lambda: origin.list_dir("", AUDIO_EXTENSIONS))
            unavailable_quickly(origin.check)
            assert not origin.reachable()

            stopping.start()  # same port, same keys: the same origin works again
            origin.check()
            assert origin.stat(FLAC).size == len(library.data(FLAC))
            with origin.open(FLAC) as again:
                assert again.read(0, 100) == library.data(FLAC)[:100]
            # The file opened before the stop reopens itself on a new connection.
            assert opened.read(5_000_000, 4096) == expected[5_000_000:5_004_096]
            opened.close()
        finally:
            origin.close()


def test_hung_server_times_out(library: Library) -> None:
    expected = library.data(BIG)
    with sshd_server(library.root) as hanging:
        origin = make_origin(hanging, library)
        try:
            opened = origin.open(BIG)
            assert opened.read(0, 10) == expected[:10]
            hanging.freeze()
            assert "no answer" in unavailable_quickly(lambda: opened.read(7_000_000, 65536))
            unavailable_quickly(lambda: origin.stat(FLAC))  # a new connection hangs too
            hanging.thaw()
            assert origin.stat(FLAC).size == len(library.data(FLAC))
            assert opened.read(7_000_000, 65536) == expected[7_000_000:7_065_536]
            opened.close()
        finally:
            origin.close()


def test_nothing_listening(server: SSHServer, library: Library) -> None:
    closed = make_origin(server, library, port=1)  # nothing listens on port 1
    assert "refused" in unavailable_quickly(closed.check).lower()


def test_close_then_use_again(origin: SFTPOrigin, library: Library) -> None:
    opened = origin.open(FLAC)
    assert origin.connections == 1
    origin.close()
    assert origin.connections == 0
    assert origin.stat(FLAC).size == len(library.data(FLAC))
    assert opened.read(10, 20) == library.data(FLAC)[10:30]
    opened.close()
    opened.close()  # twice is fine
    with pytest.raises(ValueError, match="closed"):
        opened.read(0, 1)


# -- host keys and logins -------------------------------------------------------------


def test_unknown_host_key_is_refused_with_the_fix(
    server: SSHServer, library: Library, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    origin = make_origin(server, library, known_hosts=str(known_hosts))
    message = unavailable_quickly(origin.check)
    assert f"[127.0.0.1]:{server.port}" in message
    assert f"ssh-keyscan -p {server.port} 127.0.0.1 >> {known_hosts}" in message
    # Doing what the message says fixes it, without a new origin.
    scanned = subprocess.run(
        ["ssh-keyscan", "-p", str(server.port), "127.0.0.1"],
        capture_output=True,
        text=True,
        check=True,
    )
    known_hosts.write_text(scanned.stdout)
    origin.check()
    origin.close()


def test_unknown_host_key_with_default_files(
    server: SSHServer, library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/known_hosts
    origin = make_origin(server, library, known_hosts=None)
    message = unavailable_quickly(origin.check)
    assert f"ssh-keyscan -p {server.port} 127.0.0.1 >> ~/.ssh/known_hosts" in message


def test_accept_new_and_insecure_ignore(
    server: SSHServer, library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for mode in (ACCEPT_NEW, INSECURE_IGNORE):
        origin = make_origin(server, library, known_hosts=mode)
        origin.check()
        origin.close()
        origin.check()  # a second connection: the remembered key matches
        assert origin.stat(FLAC).size == len(library.data(FLAC))
        origin.close()
    assert not (tmp_path / ".ssh").exists()  # accept-new writes nothing


def test_changed_host_key_is_refused(server: SSHServer, library: Library, tmp_path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
        check=True,
        capture_output=True,
    )
    key_type, key = (tmp_path / "other.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{server.port} {key_type} {key}\n")
    origin = make_origin(server, library, known_hosts=str(known_hosts))
    assert "changed" in unavailable_quickly(origin.check)


def test_wrong_password(
    server: SSHServer, library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no default keys
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # no agent
    secret = "Wr0ng-Secret-Pa55word"
    origin = make_origin(server, library, key_file=None, password=secret)
    with pytest.raises((OriginUnavailable, PermissionError)) as info:
        origin.stat(FLAC)
    error: BaseException | None = info.value
    assert "authentication failed" in str(error)
    while error is not None:
        assert secret not in str(error)
        assert secret not in repr(error)
        error = error.__cause__ or error.__context__
    assert not origin.reachable()
    assert secret not in origin.location
    assert secret not in repr(origin)


def test_default_keys_are_used(
    server: SSHServer, library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (tmp_path / ".ssh").mkdir()
    shutil.copy(server.key_file, tmp_path / ".ssh/id_ed25519")
    origin = make_origin(server, library, key_file=None)
    origin.check()
    origin.close()


def test_a_folder_of_hundreds_is_listed_whole(
    server: SSHServer, library: Library, tmp_path: Path
) -> None:
    # sftp-server answers a read of a folder with at most 100 entries: this one
    # takes several, two at a time among the other requests in flight.
    big = tmp_path / "Big Folder"
    big.mkdir()
    for i in range(333):
        (big / f"{i:03d}.mp3").write_bytes(b"x" * i)
    (big / "notes.txt").write_text("not audio")
    (tmp_path / BIG).write_bytes(library.data(BIG))
    origin = make_origin(server, library, root=tmp_path)
    try:
        with origin.open(BIG) as opened:  # a file's reads in flight on the same session
            listing = origin.list_dir("Big Folder", AUDIO_EXTENSIONS)
            assert opened.read(1000, 10) == library.data(BIG)[1000:1010]
        assert sorted(listing.files) == [(f"{i:03d}.mp3", origin.stat(f"Big Folder/{i:03d}.mp3"))
                                         for i in range(333)]  # fmt: skip
        assert [size for _, st in sorted(listing.files) for size in [st.size]] == list(range(333))
        with pytest.raises(FileNotFoundError):
            origin.list_dir("No Such Folder", AUDIO_EXTENSIONS)
        assert origin.reachable()
    finally:
        origin.close()


# -- the SSH client -------------------------------------------------------------------


def ssh_processes() -> set[int]:
    """This process's children that run OpenSSH's ssh."""
    found = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        try:
            with open(f"/proc/{os.getpid()}/task/{task}/children") as children:
                pids = children.read().split()
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        for pid in pids:
            try:
                with open(f"/proc/{pid}/comm") as comm:
                    if comm.read().strip() == "ssh":
                        found.add(int(pid))
            except FileNotFoundError:
                pass  # gone meanwhile
    return found


def test_auto_speaks_through_openssh_where_it_can_and_leaves_no_process(
    server: SSHServer, library: Library
) -> None:
    before = ssh_processes()
    origin = make_origin(server, library, ssh_client="auto")
    assert origin.client == "openssh"
    with origin.open(FLAC) as opened:
        assert opened.read(0, 100) == library.data(FLAC)[:100]
        mine = ssh_processes() - before
        assert len(mine) == 1
    origin.close()
    assert not ssh_processes() & mine  # (other tests' connections may come and go)
    # What ssh cannot do, paramiko does: type a password, keep a new key in memory only.
    assert make_origin(server, library, ssh_client="auto", password="pw").client == "paramiko"
    accepting = make_origin(server, library, ssh_client="auto", known_hosts=ACCEPT_NEW)
    assert accepting.client == "paramiko"


def test_asking_for_openssh_where_it_cannot_serve_says_what_to_do(
    server: SSHServer, library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=r"cannot type a password.*ssh_client = 'paramiko'"):
        make_origin(server, library, ssh_client="openssh", password="pw")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ValueError, match=r"not on PATH \(apt install openssh-client\)"):
        make_origin(server, library, ssh_client="openssh")
    assert make_origin(server, library, ssh_client="auto").client == "paramiko"


def test_an_ssh_that_is_not_openssh_is_asked_at_the_first_connection_then_passed_over(
    server: SSHServer, library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another ``ssh`` (dropbear's, busybox's) takes other options: auto uses
    paramiko instead. Whose it is, is asked when the first connection is made,
    not while the mount starts (``ssh -V`` costs the start ~5 ms)."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho "Dropbear v2022.83" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    origin = make_origin(server, library, ssh_client="auto")
    try:
        assert not calls.exists()  # nothing run yet
        origin.check()  # the first connection
        assert origin.client == "paramiko"
        with origin.open(FLAC) as opened:
            assert opened.read(0, 100) == library.data(FLAC)[:100]
        assert calls.read_text().split() == ["-V"]  # asked, never used
    finally:
        origin.close()
    with pytest.raises(ValueError, match=r"needs OpenSSH's ssh"):
        make_origin(server, library, ssh_client="openssh")  # asked for: refused at once


def test_keys_ssh_would_refuse_or_misread_still_log_in(
    server: SSHServer, library: Library, tmp_path: Path
) -> None:
    odd = tmp_path / "key %d 50%"  # ssh expands "%" in key paths
    shutil.copy(server.key_file, odd)
    odd.chmod(0o600)
    origin = make_origin(server, library, ssh_client="openssh", key_file=str(odd))
    origin.check()
    origin.close()
    # Readable by others: ssh will not use it, paramiko does; auto picks paramiko.
    odd.chmod(0o644)
    with pytest.raises(ValueError, match=r"readable by others \(mode 644\).*chmod 600"):
        make_origin(server, library, ssh_client="openssh", key_file=str(odd))
    origin = make_origin(server, library, ssh_client="auto", key_file=str(odd))
    assert origin.client == "paramiko"
    origin.check()
    origin.close()


def test_a_dead_ssh_process_is_a_lost_connection_then_replaced(
    server: SSHServer, library: Library
) -> None:
    origin = make_origin(server, library, ssh_client="openssh")
    try:
        expected = library.data(BIG)
        before = ssh_processes()
        opened = origin.open(BIG)
        assert opened.read(0, 10) == expected[:10]
        (mine,) = ssh_processes() - before
        os.kill(mine, 9)
        # The open file reopens itself on a new connection (a new ssh).
        assert opened.read(3_000_000, 4096) == expected[3_000_000:3_004_096]
        assert ssh_processes() - before - {mine}
        opened.close()
    finally:
        origin.close()


# -- the pool --------------------------------------------------------------------------


def established(port: int) -> int:
    """TCP connections to 127.0.0.1:*port* open now (the client ends)."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and int(remote.rpartition(":")[2], 16) == port:
                count += 1
    return count


def test_connections_stay_within_the_bound(
    server: SSHServer, origin: SFTPOrigin, library: Library
) -> None:
    origin.close()
    deadline = time.monotonic() + 5
    while established(server.port) and time.monotonic() < deadline:
        time.sleep(0.01)  # connections of other tests closing
    bounded = make_origin(server, library, max_connections=2)
    expected = library.data(BIG)
    errors: list[BaseException] = []
    peak = [0, 0]
    done = threading.Event()

    def monitor() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], bounded.connections)
            peak[1] = max(peak[1], established(server.port))
            time.sleep(0.002)

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            # Each holds a file open throughout: 6 open files, 2 connections.
            with bounded.open(BIG) as held:
                for _ in range(25):
                    offset = rnd.randrange(BIG_SIZE)
                    assert held.read(offset, 65536) == expected[offset : offset + 65536]
                    if rnd.random() < 0.3:
                        for step in range(4):  # a sequential run
                            at = offset + 65536 + step * 131072
                            assert held.read(at, 131072) == expected[at : at + 131072]
                    if rnd.random() < 0.3:
                        assert bounded.stat(FLAC).size == len(library.data(FLAC))
                    if rnd.random() < 0.1:
                        assert "Artist" in bounded.list_dir("", AUDIO_EXTENSIONS).subdirs
        except BaseException as exc:
            errors.append(exc)

    watcher = threading.Thread(target=monitor)
    watcher.start()
    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    watcher.join()
    try:
        assert not errors, errors
        assert not any(thread.is_alive() for thread in threads)
        assert 1 <= peak[0] <= 2, peak
        assert 1 <= peak[1] <= 2, peak
    finally:
        bounded.close()
