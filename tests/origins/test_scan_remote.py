"""A first scan of a remote origin (S3 on moto_server, SFTP on sshd) reads each file
with one request, and catalogs the tags a local scan of the same files does.

Real FLAC and MP3 files (ffmpeg, noise so they are ~1 MB like real tracks, tags
at the head as taggers write them) are scanned from a folder, then from a bucket
and over SFTP, through the origins' `Federation` as the daemon does. For each
file the tags must be those of the local scan; the audio identity (what carries
a user's data over moves) is left out of a remote scan, and read only for the
files that get user data: then it is the local scan's, and a move of such a
file on the bucket keeps its data. What it cost is checked where the server's
side can be seen: on S3 every API call boto3 makes (no HeadObject per file, one
ranged GET of the head), on SFTP sftp-server's own log (one open per file, a
small part of each file read, never all of it).
"""

from __future__ import annotations

import collections
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from musicfs.core.catalog.store import Catalog
from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
from musicfs.core.model import TrackTags
from musicfs.core.origins import LocalOrigin, Origin
from musicfs.core.origins.federation import Federation, OriginLimits
from musicfs.core.origins.s3 import S3Origin
from musicfs.core.origins.sftp import SFTPOrigin
from musicfs.core.sync.parsing import parse_file
from musicfs.core.sync.remote import backfill_identities, read_remote
from musicfs.core.sync.scanner import Scanner, ScanReport
from tests.servers.s3 import moto_server_executable, s3_server
from tests.servers.sshd import SSHServer, sshd_server

pytestmark = pytest.mark.skipif(
    moto_server_executable() is None or shutil.which("ffmpeg") is None,
    reason="needs moto_server and ffmpeg",
)

BUCKET = "scan-remote"


def _encode(path: Path, seconds: int, *args: str, **tags: str) -> None:
    meta = [a for key, value in tags.items() for a in ("-metadata", f"{key}={value}")]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
         "-i", f"anoisesrc=duration={seconds}:amplitude=0.3:seed={len(path.name)}",
         "-ac", "2", "-ar", "44100", *meta, *args, str(path)],
        check=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four FLAC and four MP3 files of 0.5-1.5 MB in two album folders."""
    root = tmp_path_factory.mktemp("scan-remote") / "lib"
    for n in range(4):
        tags = {"artist": "Remote Artist", "title": f"Song {n}", "track": f"{n + 1}/4"}
        _encode(root / "Album F" / f"{n + 1:02d}.flac", 5, "-c:a", "flac",
                album="Album F", date="2001", **tags)  # fmt: skip
        _encode(root / "Album M" / f"{n + 1:02d}.mp3", 20 + n, "-c:a", "libmp3lame",
                "-b:a", "320k", album="Album M", date="2002", **tags)  # fmt: skip
    return root


def _scan(
    catalog_path: Path, origin: Origin, max_requests: int = 8
) -> tuple[ScanReport, dict[str, Any]]:
    """A first scan of *origin* through a `Federation`; per relpath: tags,
    error and audio identity as catalogued."""
    limits = OriginLimits(max_requests=max_requests)
    federation = Federation({origin.id: origin}, {origin.id: limits})
    with Catalog.open(catalog_path) as catalog:
        scanner = Scanner(catalog, PathTemplate.parse(DEFAULT_TEMPLATE), federation=federation)
        try:
            report = scanner.scan(origin)
        finally:
            scanner.close()
        found = {t.relpath: (t.tags, t.error, catalog.audio_id(t.id)) for t in catalog.tracks()}
    return report, found


@pytest.fixture(scope="module")
def local(library: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    report, found = _scan(tmp_path_factory.mktemp("local") / "c.sqlite3", LocalOrigin("l", library))
    assert (report.added, report.unreadable) == (8, 0)
    assert all(audio_id for _, _, audio_id in found.values())
    return found


def _same_as_local(found: dict[str, Any], local: dict[str, Any]) -> None:
    """The tags a local scan reads; no identity (no file has user data yet)."""
    assert found.keys() == local.keys()
    for relpath, (tags, error, audio_id) in found.items():
        assert error is None, relpath
        assert isinstance(tags, TrackTags)
        assert tags == local[relpath][0], relpath
        assert audio_id is None, relpath


def _s3_origin(s3: Any, library: Path) -> S3Origin:
    """An origin on the test bucket, *library*'s files uploaded to it first."""
    s3.put_many(
        BUCKET, {p.relative_to(library).as_posix(): p.read_bytes() for p in library.rglob("*.*")}
    )
    return S3Origin(
        "s3", BUCKET, endpoint_url=s3.endpoint_url, region=s3.region,
        access_key=s3.access_key, secret_key=s3.secret_key, max_connections=24,
    )  # fmt: skip


def _count_gets(origin: S3Origin) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Every API call the origin's client makes, and the GetObjects per key."""
    calls: collections.Counter[str] = collections.Counter()
    gets: collections.Counter[str] = collections.Counter()
    events = origin.client.meta.events
    events.register("before-call.s3.*", lambda model, **_: calls.update([model.name]))
    events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: gets.update([params["Key"]])
    )
    return calls, gets


def test_s3_first_scan_makes_one_get_per_file_and_reads_the_tags_of_a_local_scan(
    library: Path, local: dict[str, Any], tmp_path: Path
) -> None:
    with s3_server() as s3:
        origin = _s3_origin(s3, library)
        calls, gets = _count_gets(origin)
        try:
            report, found = _scan(tmp_path / "c.sqlite3", origin)
        finally:
            origin.close()
    _same_as_local(found, local)
    files = report.remote.files
    assert files == 8
    # No HeadObject: the listing's size and time are the open's.
    assert calls["HeadObject"] == 0
    assert calls["GetObject"] == report.remote.requests
    # The head of each file, where its tags are: one GET a file.
    assert gets == {relpath: 1 for relpath in local}
    assert report.remote.requests == report.remote.round_trips == files
    sizes = sum(p.stat().st_size for p in library.rglob("*.*"))
    assert report.remote.bytes < sizes / 5  # never a whole file
    assert "round trips" in report.summary()


def _scan_sftp(
    server: SSHServer, root: Path, catalog_path: Path, max_requests: int = 8
) -> tuple[ScanReport, dict[str, Any]]:
    """`_scan` of *root* served by *server*, over 4 SFTP connections."""
    origin = SFTPOrigin(
        "sftp", server.host, str(root), port=server.port, user=server.user,
        key_file=server.key_file, known_hosts=server.known_hosts, max_connections=4,
    )  # fmt: skip
    try:
        return _scan(catalog_path, origin, max_requests)
    finally:
        origin.close()


def test_sftp_first_scan_opens_each_file_once_reads_little_and_reads_local_tags(
    library: Path, local: dict[str, Any], tmp_path: Path
) -> None:
    with sshd_server(library) as server:
        report, found = _scan_sftp(server, library, tmp_path / "c.sqlite3")
        _same_as_local(found, local)
        for path in library.rglob("*.*"):
            read = server.bytes_read(path)
            assert len(read) == 1, path  # one open (and close) of each file
            assert read[0] < path.stat().st_size / 4, path
    # The open, then one read of the head.
    assert report.remote.round_trips == 2 * report.remote.files == 16


def _covered(flac: Path, mp3: Path) -> bytes:
    """Make a FLAC and an MP3 with a 300 KB cover in their tags (longer than a
    scan's first read of a file); return the cover."""
    import mutagen.flac
    import mutagen.id3

    cover = bytes(range(256)) * 1200
    _encode(flac, 8, "-c:a", "flac", title="Covered", artist="A")
    _encode(mp3, 30, "-c:a", "libmp3lame", "-b:a", "192k", title="Covered", artist="A")
    picture = mutagen.flac.Picture()
    picture.type, picture.mime, picture.data = 3, "image/jpeg", cover
    audio = mutagen.flac.FLAC(flac)
    audio.add_picture(picture)
    audio.save()
    tags = mutagen.id3.ID3(mp3)
    tags.add(mutagen.id3.APIC(encoding=3, mime="image/jpeg", type=3, desc="", data=cover))
    tags.save(mp3)
    return cover


def test_sftp_scan_of_covers_and_of_tags_at_the_end_reads_local_tags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files whose tags a head does not hold, among plain ones, 32 in flight:
    a FLAC and an MP3 with a 300 KB cover (their heads show the tags' length:
    read again in a second batch, whole), an MP3 with only ID3v1 (at its end:
    read again through an open file), an Ogg Vorbis (not batched: its tags
    read through the open file, as before). Every file's tags are a local
    scan's, none is read whole, and only those two kinds are opened twice."""
    lib = tmp_path / "lib"
    _covered(lib / "Covered" / "c.flac", lib / "Covered" / "c.mp3")
    for n in range(6):
        _encode(lib / "Plain" / f"{n}.flac", 3, "-c:a", "flac", title=f"F{n}", album="Plain")
    _encode(lib / "Other" / "v.ogg", 60, "-c:a", "libvorbis", title="Vorbis", artist="V")
    _encode(lib / "Old" / "v1.mp3", 30, "-c:a", "libmp3lame", "-id3v2_version", "0",
            "-write_id3v1", "1", title="Old", artist="One")  # fmt: skip
    _, local = _scan(tmp_path / "local.sqlite3", LocalOrigin("l", lib))
    asked: list[tuple[str, int]] = []
    read_heads = SFTPOrigin.read_heads

    def recorded(origin: SFTPOrigin, heads: Any) -> list[bytes | OSError]:
        asked.extend((relpath, length) for relpath, _, length in heads)
        return read_heads(origin, heads)

    monkeypatch.setattr(SFTPOrigin, "read_heads", recorded)
    with sshd_server(lib) as server:
        report, found = _scan_sftp(server, lib, tmp_path / "c.sqlite3", max_requests=32)
        _same_as_local(found, local)
        for path in lib.rglob("*.*"):
            read = server.bytes_read(path)
            twice = path.parent.name in ("Covered", "Old")
            assert len(read) == (2 if twice else 1), (path, read)
            assert sum(read) < path.stat().st_size, (path, read)
    # FLAC and MP3 in batches, 64 KiB of each; then the covered files' whole tags.
    batched = sorted(p.relative_to(lib).as_posix() for p in lib.rglob("*.*") if p.suffix != ".ogg")
    assert sorted(relpath for relpath, length in asked if length == 65536) == batched
    longer = dict((relpath, length) for relpath, length in asked if length > 65536)
    assert sorted(longer) == ["Covered/c.flac", "Covered/c.mp3"]
    assert all(300_000 < length < 400_000 for length in longer.values()), longer
    assert report.remote.files == 10, report.remote


def test_tags_longer_than_the_head_cost_a_few_more_reads_and_read_the_same(
    tmp_path: Path,
) -> None:
    """A FLAC and an MP3 with a 300 KB cover in their tags (longer than the
    first read): the reads past it fetch the rest; tags and identity are what a
    local scan reads, and the file is still not read whole."""

    cover = _covered(tmp_path / "c.flac", tmp_path / "c.mp3")
    flac, mp3 = tmp_path / "c.flac", tmp_path / "c.mp3"
    origin = LocalOrigin("l", tmp_path)
    for path in (flac, mp3):
        with origin.open_listed(path.name, origin.stat(path.name)) as opened:
            parsed, traffic = read_remote(opened, path.name)
        local = parse_file(str(path))
        assert parsed == local, path.name
        assert parsed.tags.has_art
        assert parsed.audio_id
        assert traffic.requests <= opened.open_requests + 3 + 3, path.name
        assert traffic.bytes < len(cover) + 256 * 1024 < path.stat().st_size, path.name


def test_s3_a_track_with_user_data_gets_its_identity_and_keeps_it_over_a_move(
    library: Path, local: dict[str, Any], tmp_path: Path
) -> None:
    """After a first scan (no identities), one track gets an override: its
    identity is read (the mount does it every `IDENTITY_ROUND` seconds, see
    tests/e2e/test_identity.py), the same as a local scan's, for that track
    alone. The object is then moved on the bucket to another folder: the
    rescan gives the override to the new key and reports the move."""
    moved_from, moved_to = "Album M/02.mp3", "Elsewhere/renamed.mp3"
    with s3_server() as s3:
        origin = _s3_origin(s3, library)
        _, gets = _count_gets(origin)
        federation = Federation({origin.id: origin}, {origin.id: OriginLimits(max_requests=8)})
        template = PathTemplate.parse(DEFAULT_TEMPLATE)
        try:
            with Catalog.open(tmp_path / "c.sqlite3") as catalog:
                scanner = Scanner(catalog, template, federation=federation)
                try:
                    assert scanner.scan(origin).added == 8
                finally:
                    scanner.close()
                ids = {t.relpath: t.id for t in catalog.tracks()}
                assert all(catalog.audio_id(i) is None for i in ids.values())
                with catalog.transaction():
                    catalog.set_overrides(ids[moved_from], {"genre": "Moved Genre"})
                gets.clear()
                assert backfill_identities(catalog, origin, federation) == 1
                assert set(gets) == {moved_from}  # the other tracks are not read
                assert catalog.audio_id(ids[moved_from]) == local[moved_from][2]
                assert backfill_identities(catalog, origin, federation) == 0  # done once

                client = s3.default_client
                client.copy_object(
                    Bucket=BUCKET, Key=moved_to, CopySource={"Bucket": BUCKET, "Key": moved_from}
                )
                client.delete_object(Bucket=BUCKET, Key=moved_from)
                scanner = Scanner(catalog, template, federation=federation)
                try:
                    report = scanner.scan(origin)
                finally:
                    scanner.close()
                assert (report.added, report.removed) == (1, 1)
                assert [(m.from_relpath, m.relpath) for m in report.moved] == [
                    (moved_from, moved_to)
                ]
                new = {t.relpath: t.id for t in catalog.tracks()}[moved_to]
                assert catalog.overrides(new) == {"genre": "Moved Genre"}
                assert catalog.audio_id(new) == local[moved_from][2]
                assert catalog.departed_count() == 0
        finally:
            origin.close()


def test_s3_a_copy_of_a_track_with_overrides_gets_them_and_only_it_costs_more_reads(
    library: Path, local: dict[str, Any], tmp_path: Path
) -> None:
    """A local library with an override on one track; the same files then on
    S3 (a second origin, as a backup copy): the S3 copy of that track shows the
    override too, as a local copy would. Only that copy's identity is read (a
    few more GETs: its header, middle and end); every other file costs its one GET."""
    overridden = "Album M/02.mp3"
    with s3_server() as s3:
        origin = _s3_origin(s3, library)
        _, gets = _count_gets(origin)
        home = LocalOrigin("l", library)
        origins: dict[str, Origin] = {home.id: home, origin.id: origin}
        federation = Federation(origins, {o: OriginLimits(max_requests=8) for o in origins})
        template = PathTemplate.parse(DEFAULT_TEMPLATE)
        try:
            with Catalog.open(tmp_path / "c.sqlite3") as catalog:
                scanner = Scanner(catalog, template, federation=federation)
                try:
                    assert scanner.scan(home).added == 8
                    ids = {(t.origin, t.relpath): t.id for t in catalog.tracks()}
                    with catalog.transaction():
                        catalog.set_overrides(ids[("l", overridden)], {"genre": "Copied Genre"})
                    assert scanner.scan(origin).added == 8
                finally:
                    scanner.close()
                remote = {t.relpath: t.id for t in catalog.tracks() if t.origin == "s3"}
                assert catalog.overrides(remote[overridden]) == {"genre": "Copied Genre"}
                assert catalog.audio_id(remote[overridden]) == local[overridden][2]
                others = [r for r in remote if r != overridden]
                assert all(catalog.overrides(remote[r]) == {} for r in others)
                assert all(catalog.audio_id(remote[r]) is None for r in others)
                assert 1 < gets[overridden] <= 4
                assert all(gets[r] == 1 for r in others), gets
        finally:
            origin.close()
