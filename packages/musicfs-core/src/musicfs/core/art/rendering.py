"""Rendering a cover picture (FR-16): the three JPEGs served in an album folder.

`render` turns a picture (JPEG, PNG, GIF, BMP or WebP bytes) into
``cover.jpg`` (the picture itself when it is an RGB or grey JPEG, else
re-encoded), ``cover-medium.jpg`` (fits 500x500) and ``cover-thumb.jpg``
(fits 150x150): aspect kept, never enlarged, EXIF orientation applied, JPEG
quality 85, baseline. A picture of more than `MAX_PIXELS` pixels is refused
before it is decoded (decompression bombs).

Pillow is imported on first use, not with this module. Boundaries: bytes in,
bytes out; nothing here knows origins, the disk cache or albums.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

COVER = "cover.jpg"
MEDIUM = "cover-medium.jpg"
THUMB = "cover-thumb.jpg"
ART_NAMES: tuple[str, ...] = (COVER, MEDIUM, THUMB)
MEDIUM_BOX = 500  # pixels: cover-medium.jpg fits in a square of this side
THUMB_BOX = 150
JPEG_QUALITY = 85
#: Bump with any change to what `render` makes: the cache keeps images per version,
#: so old renderings are never served again (`CoverStore` names its folder after it).
RENDER_VERSION = 1
MAX_PIXELS = 40_000_000  # a bigger picture is refused before it is decoded (~120 MB as RGB)
# Pillow's own guard (set when Pillow is first used): it refuses images of more
# than twice this many pixels with DecompressionBombError (and warns above it);
# our check of MAX_PIXELS stops them first.
_PILLOW_PIXELS = MAX_PIXELS

# Decoders tried on a picture (fewer decoders, less hostile-input surface).
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")


def render(data: bytes) -> dict[str, bytes]:
    """The three images (`ART_NAMES`) of the picture *data*, as JPEG bytes.

    Raises what Pillow raises for damaged input or another format than JPEG,
    PNG, GIF, BMP or WebP (`OSError`, `SyntaxError`, `ValueError`...), and
    `Image.DecompressionBombError` for a picture of more than `MAX_PIXELS`
    pixels, checked before anything is decoded.
    """
    from PIL import Image, ImageOps  # here: importing Pillow is not mount time

    Image.MAX_IMAGE_PIXELS = _PILLOW_PIXELS
    with Image.open(io.BytesIO(data), formats=_FORMATS) as image:
        width, height = image.size
        if width < 1 or height < 1 or width * height > MAX_PIXELS:
            raise Image.DecompressionBombError(f"{width}x{height} pixels is too many")
        # A JPEG is served as it is (CMYK ones, which many players get wrong, are
        # not), so it is decoded only at the scale the smaller sizes need.
        is_jpeg = image.format in ("JPEG", "MPO") and image.mode in ("RGB", "L")
        if is_jpeg:
            image.draft("RGB", (MEDIUM_BOX, MEDIUM_BOX))
        image.load()
        picture = _rgb(ImageOps.exif_transpose(image))
    medium = _fit(picture, MEDIUM_BOX)
    return {
        COVER: data if is_jpeg else _jpeg(picture),
        MEDIUM: _jpeg(medium),
        THUMB: _jpeg(_fit(medium, THUMB_BOX)),
    }


def _rgb(image: Image.Image) -> Image.Image:
    """*image* as RGB; transparency is laid on white."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):  # 16/32-bit grey
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _fit(image: Image.Image, box: int) -> Image.Image:
    from PIL import Image

    fitted = image.copy()
    fitted.thumbnail((box, box), Image.Resampling.LANCZOS)
    return fitted


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, progressive=False)
    return out.getvalue()
