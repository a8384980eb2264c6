"""The SMB direct-client origin (`musicfs.core.origins.smb`) against a real smbd.

The share holds real audio files (made with ffmpeg) in nested folders, plus
hidden and non-audio files that must not be listed, and a 10 MB file for reads
larger than the negotiated maximum. Outage tests get their own server, which
they stop, freeze (SIGSTOP) and bring back.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from musicfs.core.model import AUDIO_EXTENSIONS
from musicfs.core.origins import OriginUnavailable
from tests.origins.contract import check_contract, check_tags_readable

pytest.importorskip("smbclient")
if shutil.which("smbd") is None or shutil.which("ffmpeg") is None:
    pytest.skip("needs Samba (smbd) and ffmpeg", allow_module_level=True)

from musicfs.core.origins.smb import SMBOrigin
from tests.servers.smbd import SMBServer, smb_server

TIMEOUT = 3.0  # seconds, for the outage tests
SLACK = 1.5  # what a request may take beyond the timeout to give up
BIG = "Big/large.flac"
BIG_SIZE = 10 * 1024 * 1024

# relpath -> ffmpeg output options (codec and tags)
AUDIO = {
    "top.flac": ["-metadata", "title=Top"],
    "Artist/Album/01 One.flac": ["-metadata", "title=One", "-metadata", "artist=Artist"],
    "Artist/Album/02 Two.mp3": ["-c:a", "libmp3lame", "-metadata", "title=Two"],
    "Artist/Other/03 Three.ogg": ["-c:a", "libvorbis", "-metadata", "title=Three"],
    "Artist/Other/04 Four.opus": ["-c:a", "libopus", "-metadata", "title=Four"],
    "Artist/Other/05 Five.m4a": ["-c:a", "aac", "-metadata", "title=Five"],
    "Ünïcødé/Ça va.flac": ["-metadata", "title=Ça va"],
    "Artist/Album/SHOUT.FLAC": ["-metadata", "title=Shout"],
}
# Never listed: hidden, or not audio.
OTHER = {
    ".hidden/secret.flac": b"fLaC hidden folder",
    "Artist/.hidden.flac": b"fLaC hidden file",
    "Artist/._SHOUT.FLAC": b"\x00\x05\x16\x07 AppleDouble, no audio",
    "Artist/Album/cover.jpg": b"\xff\xd8\xff not audio",
    "notes.txt": b"liner notes",
    "noextension": b"no extension",
}


def make_audio(path: Path, options: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
         *options, str(path)],
        check=True,
        timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A folder with the files above (and an empty folder); relpath -> content."""
    root = tmp_path_factory.mktemp("smb-share")
    for relpath, options in AUDIO.items():
        make_audio(root / relpath, options)
    for relpath, data in OTHER.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(data)
    (root / BIG).parent.mkdir(parents=True, exist_ok=True)
    (root / BIG).write_bytes(random.Random(7).randbytes(BIG_SIZE))
    (root / "Empty").mkdir()
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return root, files


@pytest.fixture(scope="module")
def server(library: tuple[Path, dict[str, bytes]]) -> Iterator[SMBServer]:
    with smb_server(library[0]) as running:
        yield running


def make_origin(server: SMBServer, root: str = "", **options: object) -> SMBOrigin:
    settings: dict[str, object] = {
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "timeout": 10.0,
    }
    settings.update(options)
    return SMBOrigin("smb", server.host, server.share, root, **settings)  # type: ignore[arg-type]


@pytest.fixture
def origin(server: SMBServer) -> Iterator[SMBOrigin]:
    smb = make_origin(server)
    yield smb
    smb.close()


def test_contract(origin: SMBOrigin, library: tuple[Path, dict[str, bytes]]) -> None:
    check_contract(origin, library[1])


def test_contract_below_a_root(server: SMBServer, library: tuple[Path, dict[str, bytes]]) -> None:
    files = {p.removeprefix("Artist/"): d for p, d in library[1].items() if p.startswith("Artist/")}
    smb = make_origin(server, "Artist/")
    try:
        check_contract(smb, files)
        assert smb.location.endswith("/music/Artist")
    finally:
        smb.close()


def test_listing_skips_hidden_and_other_files(origin: SMBOrigin) -> None:
    root = origin.list_dir("", AUDIO_EXTENSIONS)
    assert sorted(root.subdirs) == ["Artist", "Big", "Empty", "Ünïcødé"]
    assert [name for name, _ in root.files] == ["top.flac"]
    album = origin.list_dir("Artist/Album", ["FLAC", ".mp3"])
    assert sorted(name for name, _ in album.files) == ["01 One.flac", "02 Two.mp3", "SHOUT.FLAC"]
    assert origin.list_dir("Empty", AUDIO_EXTENSIONS).files == []


def test_listing_stat_and_open_agree_on_mtime(origin: SMBOrigin) -> None:
    for name, listed in origin.list_dir("Artist/Other", AUDIO_EXTENSIONS).files:
        relpath = f"Artist/Other/{name}"
        assert origin.stat(relpath) == listed
        with origin.open(relpath) as opened:
            assert (opened.size, opened.mtime_ns) == (listed.size, listed.mtime_ns)


def test_mtime_follows_the_file(origin: SMBOrigin, library: tuple[Path, dict[str, bytes]]) -> None:
    path = library[0] / "top.flac"
    st = os.stat(path)
    assert origin.stat("top.flac").mtime_ns == st.st_mtime_ns // 1000 * 1000


@pytest.mark.parametrize("relpath", sorted(AUDIO))
def test_tags_readable(origin: SMBOrigin, relpath: str) -> None:
    check_tags_readable(origin, relpath)


def test_big_file_read_sequentially_in_128k_requests(
    origin: SMBOrigin, library: tuple[Path, dict[str, bytes]]
) -> None:
    expected = library[1][BIG]
    chunk = 128 * 1024
    with origin.open(BIG) as opened:
        assert opened.size == BIG_SIZE
        started = time.monotonic()
        parts = [opened.read(offset, chunk) for offset in range(0, BIG_SIZE, chunk)]
        elapsed = time.monotonic() - started
        assert all(len(part) == chunk for part in parts)
        assert b"".join(parts) == expected
        # One request bigger than the server's maximum read (8 MiB for Samba) loops.
        assert opened.read(1000, BIG_SIZE) == expected[1000:]
    print(f"10 MB in 128 KiB reads: {elapsed:.2f} s ({BIG_SIZE / elapsed / 1e6:.0f} MB/s)")


def test_concurrent_reads(origin: SMBOrigin, library: tuple[Path, dict[str, bytes]]) -> None:
    expected = library[1][BIG]
    errors: list[BaseException] = []
    shared = origin.open(BIG)

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with origin.open(BIG) as own:
                for _ in range(30):
                    offset, size = rng.randrange(BIG_SIZE), rng.randrange(1, 300_000)
                    for opened in (own, shared):
                        assert opened.read(offset, size) == expected[offset : offset + size]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    shared.close()
    assert not errors, errors


def test_missing_and_wrong_kinds(origin: SMBOrigin) -> None:
    with pytest.raises(FileNotFoundError):
        origin.stat("Artist/nope.flac")
    with pytest.raises(FileNotFoundError):
        origin.list_dir("Artist/Album/nope", AUDIO_EXTENSIONS)
    with pytest.raises(FileNotFoundError):
        origin.open("../escape.flac")
    with pytest.raises(NotADirectoryError):
        origin.list_dir("top.flac", AUDIO_EXTENSIONS)
    with pytest.raises(IsADirectoryError):
        origin.open("Artist")


def test_close_and_use_again(origin: SMBOrigin) -> None:
    assert origin.stat("top.flac").size > 0
    opened = origin.open("top.flac")
    origin.close()
    assert origin.stat("top.flac").size > 0
    assert opened.read(0, 4) == b"fLaC"  # the handle reopens on a new connection
    opened.close()
    origin.close()
    origin.close()


def test_location_has_no_password(server: SMBServer) -> None:
    smb = make_origin(server, "Artist/Album")
    assert smb.location == f"smb://root@127.0.0.1:{server.port}/music/Artist/Album"
    assert server.password not in repr(smb)
    anonymous = SMBOrigin("anon", "nas.example", "music", port=1445)
    assert anonymous.location == "smb://nas.example:1445/music"
    assert anonymous.kind == "smbclient"


def messages(exc: BaseException) -> str:
    """Every message of *exc* and of the exceptions it was raised from."""
    texts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


def test_wrong_password(server: SMBServer) -> None:
    password = "wrong-Pa55word-xyzzy"
    smb = make_origin(server, password=password)
    try:
        for request in (smb.check, lambda: smb.stat("top.flac"), lambda: smb.open("top.flac")):
            started = time.monotonic()
            with pytest.raises((OriginUnavailable, PermissionError)) as caught:
                request()
            assert time.monotonic() - started < 10.0
            assert password not in messages(caught.value)
            assert server.password not in messages(caught.value)
        assert not smb.reachable()
    finally:
        smb.close()


def test_unknown_share_is_unavailable(server: SMBServer) -> None:
    smb = SMBOrigin("smb", server.host, "nosuchshare", port=server.port, user=server.user,
                    password=server.password, timeout=5.0)  # fmt: skip
    try:
        with pytest.raises(OriginUnavailable):
            smb.check()
        with pytest.raises(OriginUnavailable):
            smb.stat("top.flac")  # not "the file is gone": the share is
    finally:
        smb.close()


def test_missing_root_is_unavailable(server: SMBServer) -> None:
    smb = make_origin(server, "No/Such/Root")
    try:
        with pytest.raises(OriginUnavailable):
            smb.check()
        with pytest.raises(OriginUnavailable):
            smb.list_dir("", AUDIO_EXTENSIONS)
        with pytest.raises(OriginUnavailable):
            smb.stat("x.flac")
    finally:
        smb.close()


def test_error_mapping(origin: SMBOrigin) -> None:
    from smbprotocol.exceptions import SMBOSError  # type: ignore[import-untyped]

    def mapped(status: int) -> BaseException:
        return origin._error(SMBOSError(status, r"\\h\s\x"), "x", timed_out=False)

    assert isinstance(mapped(0xC0000034), FileNotFoundError)
    assert isinstance(mapped(0xC000003A), FileNotFoundError)
    assert isinstance(mapped(0xC0000022), PermissionError)
    assert isinstance(mapped(0xC000006D), OriginUnavailable)
    assert isinstance(mapped(0xC00000C9), OriginUnavailable)
    assert mapped(0xC00000BA).errno == errno.EISDIR  # type: ignore[attr-defined]
    refused = ValueError("Failed to connect to 'h:445': refused")
    refused.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    assert isinstance(origin._error(refused, "x", timed_out=False), OriginUnavailable)
    timed_out = origin._error(RuntimeError("cut"), "x", timed_out=True)
    assert isinstance(timed_out, OriginUnavailable)
    assert timed_out.errno == errno.ETIMEDOUT


# -- outages --------------------------------------------------------------------------------


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[SMBServer, SMBOrigin, bytes]]:
    """A server of its own (the tests stop it), an origin with a short timeout,
    and the content of its one file ``song.flac``."""
    make_audio(tmp_path / "song.flac", ["-metadata", "title=Song"])
    with smb_server(tmp_path) as running:
        smb = make_origin(running, timeout=TIMEOUT)
        try:
            yield running, smb, (tmp_path / "song.flac").read_bytes()
        finally:
            smb.close()


def unavailable_quickly(request: object, limit: float = TIMEOUT + SLACK) -> OriginUnavailable:
    started = time.monotonic()
    with pytest.raises(OriginUnavailable) as caught:
        request()  # type: ignore[operator]
    elapsed = time.monotonic() - started
    assert elapsed < limit, f"took {elapsed:.1f} s"
    return caught.value


def works_again(smb: SMBOrigin, data: bytes) -> None:
    smb.check()
    assert smb.stat("song.flac").size == len(data)
    assert [name for name, _ in smb.list_dir("", AUDIO_EXTENSIONS).files] == ["song.flac"]
    with smb.open("song.flac") as opened:
        assert opened.read(0, len(data)) == data


def test_stopped_server_then_back(outage: tuple[SMBServer, SMBOrigin, bytes]) -> None:
    server, smb, data = outage
    works_again(smb, data)
    opened = smb.open("song.flac")
    assert opened.read(0, 4) == b"fLaC"

    server.stop()
    error = unavailable_quickly(lambda: smb.stat("song.flac"))
    assert server.password not in messages(error)
    unavailable_quickly(lambda: smb.list_dir("", AUDIO_EXTENSIONS))
    unavailable_quickly(lambda: smb.open("song.flac"))
    unavailable_quickly(lambda: opened.read(0, 100))
    unavailable_quickly(smb.check)
    assert not smb.reachable()

    server.start()
    works_again(smb, data)  # the same origin object, no new one
    assert opened.read(0, len(data)) == data  # the open file reopened its handle
    opened.close()


def test_frozen_server_times_out_then_back(outage: tuple[SMBServer, SMBOrigin, bytes]) -> None:
    server, smb, data = outage
    works_again(smb, data)
    opened = smb.open("song.flac")

    server.freeze()  # connections stay open; nothing answers
    try:
        error = unavailable_quickly(lambda: smb.stat("song.flac"))
        assert error.errno == errno.ETIMEDOUT
        unavailable_quickly(lambda: opened.read(0, 100))
        # The old connection was cut: this one connects anew, and the server
        # accepts (the kernel does) but never negotiates.
        unavailable_quickly(lambda: smb.list_dir("", AUDIO_EXTENSIONS))
        unavailable_quickly(smb.check)
    finally:
        server.thaw()

    works_again(smb, data)
    assert opened.read(0, len(data)) == data
    opened.close()


def test_close_does_not_hang_on_a_frozen_server(
    outage: tuple[SMBServer, SMBOrigin, bytes],
) -> None:
    server, smb, data = outage
    works_again(smb, data)
    server.freeze()
    try:
        started = time.monotonic()
        smb.close()  # logs off: the server does not answer
        assert time.monotonic() - started < TIMEOUT + SLACK
    finally:
        server.thaw()
    works_again(smb, data)


def test_frozen_server_does_not_hang_concurrent_requests(
    outage: tuple[SMBServer, SMBOrigin, bytes],
) -> None:
    server, smb, data = outage
    works_again(smb, data)
    results: list[BaseException | None] = []

    def request() -> None:
        try:
            smb.stat("song.flac")
        except BaseException as exc:
            results.append(exc)
        else:
            results.append(None)

    server.freeze()
    try:
        started = time.monotonic()
        threads = [threading.Thread(target=request) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT * 3)
        assert time.monotonic() - started < TIMEOUT + SLACK
        assert len(results) == 4
        assert all(isinstance(result, OriginUnavailable) for result in results), results
    finally:
        server.thaw()
    works_again(smb, data)


def test_server_that_never_ran(tmp_path: Path) -> None:
    from tests.servers import free_port

    smb = SMBOrigin("smb", "127.0.0.1", "music", port=free_port(), user="root",
                    password="secret-pw", timeout=TIMEOUT)  # fmt: skip
    error = unavailable_quickly(smb.check)
    assert "secret-pw" not in messages(error)
    smb.close()
