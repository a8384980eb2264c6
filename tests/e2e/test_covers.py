"""Cover art through a real mount (FR-16): ``cover.jpg``, ``cover-medium.jpg`` and
``cover-thumb.jpg`` in each album folder that has art — from a picture embedded
in a track, or an image beside the tracks — with true sizes in stat, made with
Pillow; folders without art have none.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from mutagen.flac import FLAC, Picture
from PIL import Image

from tests.e2e.helpers import mounted, wait_until
from tests.e2e.library import Library, make_origin, render_path

pytestmark = [pytest.mark.mount, pytest.mark.media]

JOGA = "Björk/Homogenic/01 Jóga.flac"
UNRAVEL = "Björk/Homogenic/02 Unravel.flac"
SIGUR = "Sigur Rós/svefn-g-englar.mp3"
HYPER = "Björk/Post/hyperballad.mp3"
NAMES = {"cover.jpg", "cover-medium.jpg", "cover-thumb.jpg"}


def image(size: tuple[int, int], fmt: str, colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


def colour_at(picture: Image.Image) -> tuple[int, ...]:
    pixel = picture.convert("RGB").getpixel((10, 10))
    assert isinstance(pixel, tuple)
    return pixel


def embed(path: Path, data: bytes) -> None:
    picture = Picture()
    picture.type, picture.mime, picture.data = 3, "image/jpeg", data
    audio = FLAC(path)
    audio.add_picture(picture)
    audio.save()


def test_album_folders_with_art_show_three_covers(library: Library, tmp_path: Path) -> None:
    origin = tmp_path / "music"
    specs = make_origin(library, origin, [JOGA, UNRAVEL, SIGUR, HYPER])
    embed(origin / JOGA, image((1200, 800), "JPEG", "red"))
    (origin / "Sigur Rós" / "Folder.PNG").write_bytes(image((640, 640), "PNG", "blue"))
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        homogenic = (mount.mountpoint / render_path(specs[JOGA])).parent
        wait_until(lambda: set(os.listdir(homogenic)) >= NAMES, timeout=30,
                   what="the covers of an album with embedded art")  # fmt: skip
        for name, box in (("cover.jpg", 1200), ("cover-medium.jpg", 500), ("cover-thumb.jpg", 150)):
            data = (homogenic / name).read_bytes()
            assert (homogenic / name).stat().st_size == len(data)
            with Image.open(io.BytesIO(data)) as picture:
                assert picture.format == "JPEG"
                assert max(picture.size) == box
                assert colour_at(picture)[0] > 200  # red
        # A lookup without a listing first: the image beside the tracks.
        sigur = (mount.mountpoint / render_path(specs[SIGUR])).parent
        with Image.open(sigur / "cover-thumb.jpg") as picture:
            assert picture.size == (150, 150)
            assert colour_at(picture)[2] > 200  # blue
        post = (mount.mountpoint / render_path(specs[HYPER])).parent
        os.listdir(post)
        assert not (post / "cover.jpg").exists()
        assert not NAMES & set(os.listdir(post))
        assert not (origin / "Björk" / "Homogenic" / "cover.jpg").exists()  # origin untouched
