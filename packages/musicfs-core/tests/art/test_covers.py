"""Cover art: where it is found, what is made of it, and how it is cached.

Real files: tracks encoded by ffmpeg, pictures made by Pillow and embedded
with mutagen, read through a `LocalOrigin` that counts what is asked of it.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import struct
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from mutagen.flac import FLAC, Picture
from mutagen.id3 import APIC, ID3, ID3NoHeaderError
from mutagen.mp4 import MP4, MP4Cover
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from PIL import Image

from musicfs.core.art import rendering
from musicfs.core.art.covers import CoverStore
from musicfs.core.art.imagestore import AlbumArt
from musicfs.core.art.rendering import ART_NAMES, render
from musicfs.core.catalog.store import Track
from musicfs.core.model import format_of
from musicfs.core.origins import LocalOrigin
from musicfs.core.origins.base import DirListing, OriginUnavailable
from musicfs.core.origins.federation import Federation
from musicfs.core.origins.local import LocalFile
from musicfs.core.tags.reader import read_tags

RED = (220, 20, 20)
BLUE = (20, 20, 220)
GREEN = (20, 200, 20)
FRONT, BACK = 3, 4

Encode = Callable[..., Path]  # the `encode` fixture of conftest.py


# -- helpers ------------------------------------------------------------------------------


def picture(size: tuple[int, int], color: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


def noise(size: tuple[int, int], fmt: str = "JPEG") -> bytes:
    """A picture that does not compress: its images are big enough to evict."""
    out = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(out, fmt)
    return out.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims *width* x *height* pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


MIME = {"JPEG": "image/jpeg", "PNG": "image/png"}


def embed(path: Path, pictures: list[tuple[int, bytes]]) -> None:
    """Put (picture type, image bytes) into *path*'s tags, in its format's way."""
    fmt = format_of(path.name)

    def flac_picture(kind: int, data: bytes) -> Any:
        block: Any = Picture()
        block.type, block.data = kind, data
        block.mime = MIME[Image.open(io.BytesIO(data)).format or "JPEG"]
        return block

    if fmt == "flac":
        audio: Any = FLAC(path)
        for kind, data in pictures:
            audio.add_picture(flac_picture(kind, data))
        audio.save()
    elif fmt == "mp3":
        try:
            tags: Any = ID3(path)
        except ID3NoHeaderError:
            tags = ID3()
        for n, (kind, data) in enumerate(pictures):
            tags.add(APIC(encoding=3, mime="image/jpeg", type=kind, desc=f"p{n}", data=data))
        tags.save(path)
    elif fmt == "m4a":  # MP4 has no picture types
        audio = MP4(path)
        audio.tags["covr"] = [MP4Cover(data) for _, data in pictures]
        audio.save()
    else:
        audio = OggOpus(path) if fmt == "opus" else OggVorbis(path)
        audio["metadata_block_picture"] = [
            base64.b64encode(flac_picture(kind, data).write()).decode() for kind, data in pictures
        ]
        audio.save()


class CountingFile(LocalFile):
    """A local file whose reads its origin counts."""

    def __init__(self, origin: CountingOrigin, file: LocalFile) -> None:
        super().__init__(origin.id, file.path, file.fd)  # takes the descriptor over
        self.origin = origin

    def read(self, offset: int, size: int) -> bytes:
        data = super().read(offset, size)
        with self.origin.count:
            self.origin.reads += 1
            self.origin.bytes_read += len(data)
        return data


class CountingOrigin(LocalOrigin):
    """A local folder that counts listings, opens and reads; can be switched off."""

    def __init__(self, origin_id: str, root: Path) -> None:
        super().__init__(origin_id, root)
        self.count = threading.Lock()
        self.listings = self.opens = self.reads = self.bytes_read = 0
        self.down = False

    def reset(self) -> None:
        self.listings = self.opens = self.reads = self.bytes_read = 0

    @property
    def touched(self) -> int:
        return self.listings + self.opens + self.reads

    def list_dir(self, reldir: str, extensions: Iterable[str]) -> DirListing:
        if self.down:
            raise OriginUnavailable(self.id, "switched off")
        with self.count:
            self.listings += 1
        return super().list_dir(reldir, extensions)

    def open(self, relpath: str) -> LocalFile:
        if self.down:
            raise OriginUnavailable(self.id, "switched off")
        with self.count:
            self.opens += 1
        return CountingFile(self, super().open(relpath))


class Library:
    """A folder of albums served by one counting origin."""

    def __init__(self, tmp_path: Path, encode: Encode) -> None:
        self.root = tmp_path / "lib"
        self.root.mkdir()
        self.encode = encode
        self.origin = CountingOrigin("lib", self.root)
        self.federation = Federation({"lib": self.origin})
        self.cache = tmp_path / "covers"

    def store(self, **kwargs: Any) -> CoverStore:
        return CoverStore(self.cache, self.federation, **kwargs)

    def track(self, relpath: str, pictures: list[tuple[int, bytes]] | None = None) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        self.encode(path, seconds=0.2, title=path.stem, album=path.parent.name)
        if pictures:
            embed(path, pictures)
        return path

    def tracks(self, *paths: Path) -> list[Track]:
        out = []
        for n, path in enumerate(paths, 1):
            st = path.stat()
            relpath = path.relative_to(self.root).as_posix()
            out.append(Track(n, "lib", relpath, st.st_size, st.st_mtime_ns, format_of(relpath),
                             read_tags(str(path)), None))  # fmt: skip
        return out


@pytest.fixture
def lib(tmp_path: Path, encode: Encode) -> Library:
    return Library(tmp_path, encode)


def read_all(art: AlbumArt, name: str) -> bytes:
    return art.read(name, 0, art.sizes[name] + 100)


def image_of(art: AlbumArt, name: str) -> Image.Image:
    data = read_all(art, name)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    image.load()
    return image


def color_of(image: Image.Image) -> tuple[int, int, int]:
    pixel = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
    assert isinstance(pixel, tuple)
    return (int(pixel[0]), int(pixel[1]), int(pixel[2]))


def close_to(color: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(color, expected, strict=True))


def check_images(art: AlbumArt, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    """The three images are JPEGs of the right sizes and colour; `sizes` is true."""
    assert set(art.sizes) == set(ART_NAMES)
    for name in ART_NAMES:
        data = read_all(art, name)
        assert len(data) == art.sizes[name]
        assert art.read(name, 3, 10) == data[3:13]
        assert art.read(name, art.sizes[name], 10) == b""
    big = image_of(art, "cover.jpg")
    assert big.size == size
    ratio = size[0] / size[1]
    for name, box in (("cover-medium.jpg", 500), ("cover-thumb.jpg", 150)):
        image = image_of(art, name)
        assert max(image.size) == min(box, max(size))
        assert abs(image.width / image.height - ratio) < 0.02
        assert close_to(color_of(image), color)
        assert image.info.get("progressive", 0) == 0
    assert close_to(color_of(big), color)


# -- where art comes from ----------------------------------------------------------------


@pytest.mark.parametrize("ext", ["flac", "mp3", "m4a", "ogg", "opus"])
def test_the_embedded_front_cover_is_found_in_each_format(lib: Library, ext: str) -> None:
    front = picture((1200, 800), RED)
    back = picture((300, 300), BLUE)
    pictures = [(FRONT, front)] if ext == "m4a" else [(BACK, back), (FRONT, front)]
    first = lib.track(f"Album/01.{ext}")  # no art: not opened
    second = lib.track(f"Album/02.{ext}", pictures)
    tracks = lib.tracks(first, second)
    assert tracks[1].tags.has_art
    assert not tracks[0].tags.has_art

    art = lib.store().album_art("album", tracks)

    assert art is not None
    assert read_all(art, "cover.jpg") == front  # a JPEG is served as it is
    check_images(art, (1200, 800), RED)
    assert image_of(art, "cover-medium.jpg").size == (500, 333)
    assert image_of(art, "cover-thumb.jpg").size == (150, 100)
    assert lib.origin.opens == 1  # only the track with art


def test_a_folder_image_beside_the_tracks_is_preferred_to_embedded_art(lib: Library) -> None:
    track = lib.track("Album/01.flac", [(FRONT, picture((1200, 800), RED))])
    (lib.root / "Album" / "Folder.PNG").write_bytes(picture((300, 200), BLUE, "PNG"))

    art = lib.store().album_art("album", lib.tracks(track))

    assert art is not None
    check_images(art, (300, 200), BLUE)  # not enlarged: medium is 300x200 too
    assert image_of(art, "cover-medium.jpg").size == (300, 200)
    assert image_of(art, "cover-thumb.jpg").size == (150, 100)
    assert lib.origin.opens == 1  # the PNG; the track was not opened


def test_cover_beats_folder_beats_front_and_other_images_are_ignored(lib: Library) -> None:
    track = lib.track("Album/01.mp3")
    folder = lib.root / "Album"
    (folder / "front.jpg").write_bytes(picture((40, 40), GREEN))
    (folder / "scan.jpg").write_bytes(picture((40, 40), RED))
    (folder / "FOLDER.jpeg").write_bytes(picture((40, 40), BLUE))
    store = lib.store(recheck_after=0)
    art = store.album_art("album", lib.tracks(track))
    assert art is not None
    assert close_to(color_of(image_of(art, "cover.jpg")), BLUE)

    (folder / "Cover.jpg").write_bytes(picture((40, 40), RED))
    art = store.album_art("album", lib.tracks(track))
    assert art is not None
    assert close_to(color_of(image_of(art, "cover.jpg")), RED)


def test_images_beside_tracks_in_other_folders_of_the_album_are_found(lib: Library) -> None:
    first = lib.track("Album/CD1/01.flac")
    second = lib.track("Album/CD2/01.flac")
    (lib.root / "Album" / "CD2" / "cover.png").write_bytes(picture((64, 64), GREEN, "PNG"))
    art = lib.store().album_art("album", lib.tracks(first, second))
    assert art is not None
    check_images(art, (64, 64), GREEN)


def test_a_png_is_re_encoded_and_transparency_laid_on_white(lib: Library) -> None:
    track = lib.track("Album/01.flac")
    image = Image.new("RGBA", (600, 400), (0, 0, 0, 0))
    out = io.BytesIO()
    image.save(out, "PNG")
    (lib.root / "Album" / "cover.png").write_bytes(out.getvalue())
    art = lib.store().album_art("album", lib.tracks(track))
    assert art is not None
    check_images(art, (600, 400), (255, 255, 255))
    assert image_of(art, "cover-medium.jpg").size == (500, 333)


def test_embedded_art_is_read_in_ranges_not_whole_files(lib: Library) -> None:
    path = lib.root / "Album" / "01.flac"
    path.parent.mkdir()
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anoisesrc=duration=10", str(path)],
        check=True,
    )  # fmt: skip
    cover = picture((100, 100), RED)
    embed(path, [(FRONT, cover)])
    size = path.stat().st_size
    assert size > 500_000
    art = lib.store().album_art("album", lib.tracks(path))
    assert art is not None
    assert read_all(art, "cover.jpg") == cover
    assert lib.origin.bytes_read < 200_000


# -- no art ----------------------------------------------------------------------------------


def test_an_album_without_art_has_none_and_its_audio_is_not_read(lib: Library) -> None:
    tracks = lib.tracks(lib.track("Album/01.flac"), lib.track("Album/02.mp3"))
    (lib.root / "Album" / "booklet.jpg").write_bytes(picture((10, 10), RED))
    store = lib.store()
    assert not store.has_answer("album")
    assert store.album_art("album", tracks) is None
    assert store.has_answer("album")
    assert store.known("album") is None
    assert lib.origin.opens == 0
    lib.origin.reset()
    assert store.album_art("album", tracks) is None
    assert lib.origin.touched == 0


def test_a_corrupt_image_gives_no_art_and_is_logged_once(
    lib: Library, caplog: pytest.LogCaptureFixture
) -> None:
    good = picture((200, 200), RED)
    first = lib.track("A/01.flac")
    second = lib.track("B/01.flac")
    (lib.root / "A" / "cover.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (lib.root / "B" / "cover.jpg").write_bytes(good[: len(good) // 2])
    store = lib.store()
    with caplog.at_level(logging.DEBUG, logger="musicfs.core.art.covers"):
        assert store.album_art("a", lib.tracks(first)) is None
        assert store.album_art("b", lib.tracks(second)) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "not a usable picture" in warnings[0].getMessage()
    assert store.has_answer("a")
    assert store.usage() == (0, 0)


def test_garbage_in_a_folder_image_falls_back_to_embedded_art(lib: Library) -> None:
    track = lib.track("Album/01.mp3", [(FRONT, picture((80, 80), GREEN))])
    (lib.root / "Album" / "cover.jpg").write_bytes(b"not a picture at all" * 10)
    art = lib.store().album_art("album", lib.tracks(track))
    assert art is not None
    check_images(art, (80, 80), GREEN)


def test_a_decompression_bomb_gives_no_art(lib: Library) -> None:
    track = lib.track("Album/01.flac")
    (lib.root / "Album" / "cover.png").write_bytes(bomb_png(100_000, 100_000))
    assert lib.store().album_art("album", lib.tracks(track)) is None


def test_a_picture_over_the_pixel_limit_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = picture((300, 300), RED)
    monkeypatch.setattr(rendering, "MAX_PIXELS", 300 * 299)
    with pytest.raises(Image.DecompressionBombError):
        render(data)
    with pytest.raises(Image.DecompressionBombError):
        render(bomb_png(100_000, 100_000))


def test_damaged_embedded_tags_give_no_art(lib: Library) -> None:
    path = lib.track("Album/01.flac", [(FRONT, picture((80, 80), RED))])
    tracks = lib.tracks(path)
    data = bytearray(path.read_bytes())
    data[4:64] = os.urandom(60)  # the metadata blocks no longer parse
    path.write_bytes(bytes(data))
    os.utime(path, ns=(tracks[0].mtime_ns, tracks[0].mtime_ns))
    assert lib.store().album_art("album", tracks) is None


def test_an_origin_that_does_not_answer_gives_none_and_is_asked_again(lib: Library) -> None:
    track = lib.track("Album/01.flac")
    (lib.root / "Album" / "cover.jpg").write_bytes(picture((50, 50), RED))
    tracks = lib.tracks(track)
    store = lib.store()
    lib.origin.down = True
    assert store.album_art("album", tracks) is None
    assert not store.has_answer("album")  # not "no art": it was not seen
    lib.origin.down = False
    lib.federation.probe("lib")
    art = store.album_art("album", tracks)
    assert art is not None
    check_images(art, (50, 50), RED)


# -- the cache ---------------------------------------------------------------------------


def test_a_second_request_costs_no_origin_access_even_after_a_restart(lib: Library) -> None:
    track = lib.track("Album/01.flac", [(FRONT, picture((1200, 800), RED))])
    tracks = lib.tracks(track)
    store = lib.store()
    first = store.album_art("album", tracks)
    assert first is not None
    assert lib.origin.reads > 0
    lib.origin.reset()

    again = store.album_art("album", tracks)
    known = store.known("album")
    assert again is not None
    assert known is not None
    assert again.sizes == known.sizes == first.sizes
    assert lib.origin.touched == 0
    store.close()

    reopened = lib.store()
    art = reopened.known("album")  # from disk alone
    assert art is not None
    assert art.sizes == first.sizes
    assert read_all(art, "cover-thumb.jpg") == read_all(first, "cover-thumb.jpg")
    assert reopened.album_art("album", tracks) is not None
    assert lib.origin.touched == 0


def test_an_unchanged_album_is_rechecked_by_listing_not_reading(lib: Library) -> None:
    track = lib.track("Album/01.flac")
    cover = lib.root / "Album" / "cover.jpg"
    cover.write_bytes(picture((50, 50), RED))
    tracks = lib.tracks(track)
    store = lib.store(recheck_after=0)
    assert store.album_art("album", tracks) is not None
    lib.origin.reset()
    assert store.album_art("album", tracks) is not None
    assert (lib.origin.listings, lib.origin.opens) == (1, 0)

    cover.write_bytes(picture((60, 60), BLUE))
    os.utime(cover, ns=(1, 1))
    art = store.album_art("album", tracks)
    assert art is not None
    check_images(art, (60, 60), BLUE)


def test_changed_tracks_are_looked_at_again(lib: Library) -> None:
    first = lib.track("Album/01.flac")
    store = lib.store()
    assert store.album_art("album", lib.tracks(first)) is None
    second = lib.track("Album/02.flac", [(FRONT, picture((70, 70), GREEN))])
    art = store.album_art("album", lib.tracks(first, second))
    assert art is not None
    check_images(art, (70, 70), GREEN)


def test_albums_with_one_picture_share_its_images(lib: Library) -> None:
    cover = picture((90, 90), RED)
    a = lib.track("A/01.mp3", [(FRONT, cover)])
    b = lib.track("B/01.flac", [(FRONT, cover)])
    store = lib.store()
    art_a = store.album_art("a", lib.tracks(a))
    art_b = store.album_art("b", lib.tracks(b))
    assert art_a is not None
    assert art_b is not None
    assert art_a.digest == art_b.digest
    assert store.usage()[0] == 1


def test_eviction_keeps_the_store_under_its_limit_least_recently_used_first(
    lib: Library,
) -> None:
    one = sum(len(blob) for blob in render(noise((200, 200))).values())
    limit = int(one * 2.5)
    store = lib.store(limit_bytes=limit)
    albums = {}
    for n in range(5):
        folder = lib.root / f"A{n}"
        track = lib.track(f"A{n}/01.flac")
        (folder / "cover.jpg").write_bytes(noise((200, 200)))
        albums[n] = lib.tracks(track)
        assert store.album_art(f"a{n}", albums[n]) is not None
        if n == 1:
            assert store.known("a0") is not None  # a0 is now used more recently than a1
        entries, used = store.usage()
        on_disk = sum(f.stat().st_size for f in (lib.cache / "images-1").rglob("*.jpg"))
        assert used == on_disk <= limit
        assert entries == min(n + 1, 2)
    assert store.known("a4") is not None
    assert store.known("a3") is not None
    for n in range(3):
        assert store.known(f"a{n}") is None
        assert not store.has_answer(f"a{n}")
    assert CoverStore(lib.cache, lib.federation, limit).usage() == store.usage()
    # An evicted album is made again on request.
    art = store.album_art("a0", albums[0])
    assert art is not None
    assert store.usage()[1] <= limit


def test_eviction_order_follows_use(lib: Library) -> None:
    one = sum(len(blob) for blob in render(noise((200, 200))).values())
    store = lib.store(limit_bytes=int(one * 2.5))
    for n in range(3):
        track = lib.track(f"A{n}/01.flac")
        (lib.root / f"A{n}" / "cover.jpg").write_bytes(noise((200, 200)))
        assert store.album_art(f"a{n}", lib.tracks(track)) is not None
        if n == 1:
            assert store.known("a0") is not None
    assert store.known("a0") is not None
    assert store.known("a1") is None


def test_images_removed_behind_the_store_are_made_again(lib: Library) -> None:
    track = lib.track("Album/01.flac")
    (lib.root / "Album" / "cover.jpg").write_bytes(picture((50, 50), RED))
    tracks = lib.tracks(track)
    store = lib.store()
    art = store.album_art("album", tracks)
    assert art is not None
    for name in ART_NAMES:
        (lib.cache / "images-1" / art.digest[:2] / art.digest / name).unlink()
    with pytest.raises(FileNotFoundError):
        art.read("cover.jpg", 0, 10)
    again = store.album_art("album", tracks)
    assert again is not None
    check_images(again, (50, 50), RED)


def test_concurrent_requests_for_one_album_agree(lib: Library) -> None:
    track = lib.track("Album/01.flac", [(FRONT, picture((800, 800), RED))])
    tracks = lib.tracks(track)
    store = lib.store()
    results: list[AlbumArt | None] = []

    def ask() -> None:
        results.append(store.album_art("album", tracks))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6
    digests = {art.digest if art is not None else None for art in results}
    assert len(digests) == 1
    assert None not in digests
    assert lib.origin.opens == 1


def test_unknown_names_are_not_images(lib: Library) -> None:
    track = lib.track("Album/01.flac")
    (lib.root / "Album" / "cover.jpg").write_bytes(picture((50, 50), RED))
    art = lib.store().album_art("album", lib.tracks(track))
    assert art is not None
    with pytest.raises(FileNotFoundError):
        art.read("cover.png", 0, 10)
