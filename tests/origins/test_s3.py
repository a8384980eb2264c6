"""The S3 origin against a real S3 server (moto_server on 127.0.0.1).

A bucket holds real FLAC and MP3 files (made by ffmpeg, with tags) in nested
"folders" under a prefix, next to hidden and non-audio objects and objects
outside the prefix. Beyond the origin contract: listing by pages, the stat of a
listing matching that of HeadObject, a file replaced while open, a stopped and a
hung server (offline, within the timeout), and a wrong secret key.
"""

from __future__ import annotations

import errno
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from musicfs.core.model import AUDIO_EXTENSIONS
from musicfs.core.origins import OriginUnavailable
from musicfs.core.origins.s3 import S3Origin
from tests.origins.contract import check_contract, check_tags_readable
from tests.servers.s3 import S3Server, moto_server_executable, s3_server

BUCKET = "music-library"
PREFIX = "music"

pytestmark = pytest.mark.skipif(
    moto_server_executable() is None, reason="moto_server missing (pip install 'moto[server]')"
)


def _encode(path: Path, *args: str) -> bytes:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
         "-i", "sine=frequency=440:duration=1", *args, str(path)],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A real FLAC and a real MP3 with tags."""
    directory = tmp_path_factory.mktemp("s3-audio")
    tags = ["-metadata", "title=Sine", "-metadata", "artist=Test Artist",
            "-metadata", "album=Test Album"]  # fmt: skip
    return {
        "flac": _encode(directory / "x.flac", *tags),
        "mp3": _encode(directory / "x.mp3", "-c:a", "libmp3lame", "-b:a", "64k", *tags),
    }


@pytest.fixture(scope="module")
def library(audio: dict[str, bytes]) -> dict[str, bytes]:
    """relpath (under PREFIX) -> bytes of every object under the origin's root."""
    return {
        "Artist A/Album One/01 Sine.flac": audio["flac"],
        "Artist A/Album One/02 Sine.mp3": audio["mp3"],
        "Artist A/Album One/cover.jpg": b"\xff\xd8\xff not really a jpeg",
        "Artist A/Album One/notes.txt": b"liner notes",
        "Artist A/Album One/.hidden.flac": audio["flac"],
        "Artist A/Album One/._01 Sine.flac": b"\x00\x05\x16\x07 AppleDouble, no audio",
        "Artist A/Album Two/CD 1/01 Sine.FLAC": audio["flac"],
        "Björk/Homogénic/01 Jóga.flac": audio["flac"],
        ".Trash/deleted.flac": audio["flac"],
        "loose.mp3": audio["mp3"],
        "tiny.flac": b"x",
    }


@pytest.fixture(scope="module")
def server(library: dict[str, bytes], audio: dict[str, bytes]) -> Iterator[S3Server]:
    """One moto_server for the tests that only read, with BUCKET filled."""
    with s3_server() as s3:
        objects = {f"{PREFIX}/{relpath}": data for relpath, data in library.items()}
        # A folder marker, objects outside the prefix, and a sibling prefix that
        # starts with the same letters: none of them belongs to the origin.
        objects[f"{PREFIX}/Artist A/"] = b""
        objects["elsewhere/other.flac"] = audio["flac"]
        objects[f"{PREFIX}-extra/other.flac"] = audio["flac"]
        objects["top.flac"] = audio["flac"]
        s3.put_many(BUCKET, objects)
        yield s3


def make_origin(
    s3: S3Server, prefix: str = PREFIX, bucket: str = BUCKET, **kwargs: object
) -> S3Origin:
    options: dict[str, object] = {
        "endpoint_url": s3.endpoint_url,
        "region": s3.region,
        "access_key": s3.access_key,
        "secret_key": s3.secret_key,
        "timeout": 3.0,
    }
    options.update(kwargs)
    return S3Origin("s3-test", bucket, prefix, **options)  # type: ignore[arg-type]


@pytest.fixture
def origin(server: S3Server) -> Iterator[S3Origin]:
    s3 = make_origin(server)
    yield s3
    s3.close()


def test_contract(origin: S3Origin, library: dict[str, bytes]) -> None:
    check_contract(origin, library)


def test_contract_with_prefix_slashes_and_whole_bucket(
    server: S3Server, library: dict[str, bytes], audio: dict[str, bytes]
) -> None:
    """The prefix is normalised; without one the origin is the whole bucket."""
    check_contract(make_origin(server, prefix=f"/{PREFIX}/"), library)
    whole = make_origin(server, prefix="")
    listing = whole.list_dir("", AUDIO_EXTENSIONS)
    assert sorted(listing.subdirs) == ["elsewhere", PREFIX, f"{PREFIX}-extra"]
    assert [name for name, _ in listing.files] == ["top.flac"]
    assert whole.stat("top.flac").size == len(audio["flac"])


def test_tags_readable(origin: S3Origin) -> None:
    check_tags_readable(origin, "Artist A/Album One/01 Sine.flac")
    check_tags_readable(origin, "Artist A/Album One/02 Sine.mp3")
    check_tags_readable(origin, "Björk/Homogénic/01 Jóga.flac")


def test_listing(origin: S3Origin, library: dict[str, bytes]) -> None:
    root = origin.list_dir("", AUDIO_EXTENSIONS)
    assert sorted(root.subdirs) == ["Artist A", "Björk"]  # not .Trash
    assert sorted(name for name, _ in root.files) == ["loose.mp3", "tiny.flac"]
    album = origin.list_dir("Artist A/Album One", ["FLAC"])  # extensions in any case
    assert album.subdirs == []
    assert [name for name, _ in album.files] == ["01 Sine.flac"]  # not .hidden, .mp3, .jpg
    assert origin.list_dir("Artist A/", AUDIO_EXTENSIONS).subdirs == ["Album One", "Album Two"]
    with pytest.raises(FileNotFoundError):
        origin.list_dir("loose.mp3", AUDIO_EXTENSIONS)  # a file is no folder
    with pytest.raises(FileNotFoundError):
        origin.list_dir("Artist", AUDIO_EXTENSIONS)  # a prefix of a name is no folder


def test_listing_stat_and_open_agree(origin: S3Origin) -> None:
    """The catalog compares a listing's stat with open()'s: they must be equal
    (HeadObject has second precision, ListObjectsV2 milliseconds)."""
    relpath = "Artist A/Album One/01 Sine.flac"
    listed = dict(origin.list_dir("Artist A/Album One", AUDIO_EXTENSIONS).files)["01 Sine.flac"]
    assert origin.stat(relpath) == listed
    with origin.open(relpath) as opened:
        assert (opened.size, opened.mtime_ns) == (listed.size, listed.mtime_ns)
    assert abs(listed.mtime_ns / 1e9 - time.time()) < 3600


def test_location_and_repr(origin: S3Origin, server: S3Server) -> None:
    assert origin.location == f"s3://{BUCKET}/{PREFIX} at {server.endpoint_url}"
    assert server.secret_key not in repr(origin)
    assert server.access_key not in repr(origin)
    with_userinfo = S3Origin("x", BUCKET, endpoint_url="http://user:pw@127.0.0.1:9/")
    assert with_userinfo.location == f"s3://{BUCKET}/ at http://127.0.0.1:9/"


def test_reads_are_ranged(origin: S3Origin, audio: dict[str, bytes]) -> None:
    data = audio["flac"]
    ranges: list[str] = []

    def record(params: dict[str, object], **_: object) -> None:
        ranges.append(str(params.get("headers", {}).get("Range")))  # type: ignore[attr-defined]

    origin.client.meta.events.register("before-call.s3.GetObject", record)
    with origin.open("Artist A/Album One/01 Sine.flac") as opened:
        assert opened.read(10, 20) == data[10:30]
        assert opened.read(len(data) - 5, 100) == data[-5:]
        assert opened.read(len(data) + 1, 100) == b""  # past the end: no request
        assert opened.read(0, 0) == b""
    assert ranges == ["bytes=10-29", f"bytes={len(data) - 5}-{len(data) - 1}"]


def test_concurrent_reads_share_one_client(origin: S3Origin, audio: dict[str, bytes]) -> None:
    data = audio["flac"]
    with origin.open("Artist A/Album One/01 Sine.flac") as opened:

        def chunk(offset: int) -> bytes:
            return opened.read(offset, 4096)

        with ThreadPoolExecutor(8) as pool:
            chunks = list(pool.map(chunk, range(0, len(data), 4096)))
    assert b"".join(chunks) == data


def test_replaced_while_open_fails_instead_of_mixing(
    server: S3Server, audio: dict[str, bytes]
) -> None:
    bucket = "replaced"  # not BUCKET: the contract tests expect its contents unchanged
    key = f"{PREFIX}/replaced/track.flac"
    server.put(bucket, key, audio["flac"])
    origin = make_origin(server, bucket=bucket)
    with origin.open("replaced/track.flac") as opened:
        assert opened.read(0, 100) == audio["flac"][:100]
        server.put(bucket, key, audio["flac"][:100] + b"changed" + audio["flac"][107:])
        with pytest.raises(OriginUnavailable) as caught:
            opened.read(0, 200)
        assert caught.value.errno == errno.ESTALE
    with origin.open("replaced/track.flac") as reopened:  # a new open sees the new file
        assert reopened.read(100, 7) == b"changed"


def test_missing_key_and_bucket(server: S3Server) -> None:
    origin = make_origin(server)
    with pytest.raises(FileNotFoundError):
        origin.stat("Artist A/Album One/03 Missing.flac")
    with pytest.raises(FileNotFoundError):
        origin.open("Artist A/Album One/03 Missing.flac")
    no_bucket = S3Origin(
        "s3-test", "no-such-bucket", endpoint_url=server.endpoint_url, region=server.region,
        access_key=server.access_key, secret_key=server.secret_key, timeout=3.0,
    )  # fmt: skip
    with pytest.raises(OriginUnavailable, match="no-such-bucket"):
        no_bucket.check()
    assert not no_bucket.reachable()
    # A missing bucket takes the whole tree offline, it does not empty it.
    with pytest.raises(OriginUnavailable, match="no-such-bucket"):
        no_bucket.list_dir("", AUDIO_EXTENSIONS)


def test_close_then_use_again(server: S3Server) -> None:
    origin = make_origin(server)
    origin.check()
    origin.close()
    origin.check()
    assert origin.stat("loose.mp3").size > 0


def test_listing_by_pages(server: S3Server) -> None:
    """One folder with more than 1000 entries (S3's page size): every one is
    listed, across several ListObjectsV2 calls."""
    folder = f"{PREFIX}/big"
    objects = {f"{folder}/track {i:04d}.flac": b"%d" % i for i in range(995)}
    objects.update({f"{folder}/sub {i}/a.flac": b"a" for i in range(6)})
    objects.update({f"{folder}/skip {i}.txt": b"t" for i in range(10)})
    bucket = "pages"  # not BUCKET: the contract tests expect its contents unchanged
    server.put_many(bucket, objects)
    origin = make_origin(server, bucket=bucket)
    calls = 0

    def count(**_: object) -> None:
        nonlocal calls
        calls += 1

    origin.client.meta.events.register("after-call.s3.ListObjectsV2", count)
    listing = origin.list_dir("big", AUDIO_EXTENSIONS)
    assert calls >= 2
    assert sorted(listing.subdirs) == [f"sub {i}" for i in range(6)]
    assert len(listing.files) == 995
    assert dict(listing.files)["track 0123.flac"].size == 3


@pytest.fixture
def own_server() -> Iterator[S3Server]:
    """A moto_server of the test's own, to stop, freeze or lock down."""
    with s3_server() as s3:
        s3.put(BUCKET, f"{PREFIX}/a.flac", b"fLaC and more")
        yield s3


def test_stopped_server_is_unavailable_not_hanging(own_server: S3Server) -> None:
    origin = make_origin(own_server, timeout=2.0)
    with origin.open("a.flac") as opened:
        own_server.stop()
        calls = [
            origin.check,
            lambda: origin.stat("a.flac"),
            lambda: origin.open("a.flac"),
            lambda: origin.list_dir("", AUDIO_EXTENSIONS),
            lambda: opened.read(0, 4),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(OriginUnavailable) as caught:
                call()
            assert time.monotonic() - started < 10
            assert caught.value.origin_id == "s3-test"
            assert own_server.secret_key not in str(caught.value)
    assert not origin.reachable()


def test_hung_server_times_out(own_server: S3Server) -> None:
    """A server that accepts connections and never answers: OriginUnavailable
    with ETIMEDOUT after the timeout (two attempts), not a hang."""
    origin = make_origin(own_server, timeout=1.0)
    origin.check()
    own_server.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(OriginUnavailable) as caught:
            origin.stat("a.flac")
        elapsed = time.monotonic() - started
        assert 1.0 <= elapsed < 8, elapsed
        assert caught.value.errno == errno.ETIMEDOUT
    finally:
        own_server.thaw()
    origin.close()
    assert origin.stat("a.flac").size == len(b"fLaC and more")  # answers again


def test_wrong_secret_key(own_server: S3Server) -> None:
    access_key, secret_key = own_server.require_signatures()
    good = make_origin(own_server, access_key=access_key, secret_key=secret_key)
    good.check()
    assert [name for name, _ in good.list_dir("", AUDIO_EXTENSIONS).files] == ["a.flac"]
    wrong_secret = "Wr0ngSecretKeyThatMustNotLeak+/1234567890"
    bad = make_origin(own_server, access_key=access_key, secret_key=wrong_secret)
    calls = [
        bad.check,
        lambda: bad.stat("a.flac"),
        lambda: bad.list_dir("", AUDIO_EXTENSIONS),
        lambda: bad.open("a.flac"),
    ]
    for call in calls:
        with pytest.raises((PermissionError, OriginUnavailable)) as caught:
            call()
        assert wrong_secret not in str(caught.value)
        assert wrong_secret not in repr(caught.value)
    assert not bad.reachable()
    assert wrong_secret not in bad.location
    assert wrong_secret not in repr(bad)


def test_secret_never_in_messages_even_if_echoed(server: S3Server) -> None:
    """Should a store echo the secret in an error message, it is scrubbed."""
    secret = "EchoedSecret123"
    origin = make_origin(server, secret_key=secret)
    error = origin._map_error(  # the scrubbing itself: moto never echoes a secret
        origin._botocore_errors.ClientError(
            {
                "Error": {"Code": "InternalError", "Message": f"bad {secret}"},
                "ResponseMetadata": {"HTTPStatusCode": 500},
            },
            "GetObject",
        ),
        "x.flac",
        bucket_level=False,
    )
    assert isinstance(error, OriginUnavailable)
    assert secret not in str(error)


def test_half_a_key_pair_is_refused() -> None:
    with pytest.raises(ValueError, match="both") as caught:
        S3Origin("x", BUCKET, secret_key="OnlyTheSecret")
    assert "OnlyTheSecret" not in str(caught.value)


def test_import_does_not_load_boto3() -> None:
    code = "import sys, musicfs.core.origins.s3; sys.exit('boto3' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_threads_share_the_origin(origin: S3Origin) -> None:
    """list_dir, stat and open from several threads at once (one shared client)."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                origin.list_dir("Artist A/Album One", AUDIO_EXTENSIONS)
                origin.stat("loose.mp3")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
