"""Cover art (FR-16): the images served as ``cover.jpg``, ``cover-medium.jpg`` and
``cover-thumb.jpg`` in every album folder that has art.

Job: given the catalogued tracks of one album folder, find the album's picture
and keep three JPEGs of it on disk.

- **Where the picture comes from**, in order: an image beside the tracks on
  their origin (``cover``, ``folder`` or ``front`` + ``.jpg``/``.jpeg``/``.png``,
  any case; the folders of the tracks in the order given, cover before folder
  before front), else the picture embedded in the first track that has one
  (``Track.tags.has_art``; the front cover preferred: FLAC PICTURE and ID3 APIC
  type 3, MP4 ``covr``, Ogg/FLAC ``METADATA_BLOCK_PICTURE``, APE and ASF
  pictures). Embedded pictures are read by mutagen through ranged reads
  (`RangeReader`), so only a track's tags are fetched, never its audio.
- **What is made** (Pillow): ``cover.jpg`` is the picture itself when it is
  an RGB or grey JPEG, else the picture re-encoded as one; ``cover-medium.jpg``
  fits it into 500x500 and ``cover-thumb.jpg`` into 150x150, aspect kept,
  never enlarged, EXIF orientation applied (JPEG quality 85, baseline).
- **The cache** is its own, apart from the audio tiers: under *root*,
  ``images-1/<h[:2]>/<h>/`` holds the three files of the source picture whose
  xxh3-128 is *h* (two albums with one picture share them), made in a temporary
  folder and renamed into place whole. The store keeps under ``limit_bytes`` by
  dropping the least recently used pictures (the folder's mtime is the use
  time, refreshed at most once a minute; one picture larger than the limit
  alone is kept). ``albums.sqlite3`` remembers each album's answer — its
  picture or "no art" — with a fingerprint of the tracks and of the images
  found beside them, so asking again costs a dict lookup and a few stats, no
  origin access. After `CoverStore.recheck_after` seconds `album_art` lists
  the album's folders again and reads nothing unless they changed; other
  tracks than last time mean a new search. `known` never rechecks.

Pillow and mutagen's picture code are imported on first use (rendering or
reading a picture), not with this module: a `CoverStore` answers what it
already has (`known`, `has_answer`) from its index without them, so the mount
can list cover files from the moment it is ready at no import cost.

Boundaries: nothing here knows FUSE, the tree or the catalog database; the
caller names an album by a key of its choosing and passes its `Track`s.
`CoverStore.album_art` blocks on origins and on Pillow: call it from worker
threads. `CoverStore.known` only looks at the cache (memory and a local SQLite
file) and is meant for the FUSE thread. Origins are reached only through the
`Federation` (limits, retries, health). A damaged, truncated or oversized
picture (decompression bombs included) means "no art": it is logged once, the
next candidate is tried, and no exception leaves this module. All methods are
thread-safe.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import shutil
import sqlite3
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import xxhash

from musicfs.core.origins.base import DirListing, Origin, OriginFile, RangeReader
from musicfs.core.origins.federation import Federation

if TYPE_CHECKING:
    from PIL import Image

    from musicfs.core.catalog.store import Track

log = logging.getLogger(__name__)

COVER = "cover.jpg"
MEDIUM = "cover-medium.jpg"
THUMB = "cover-thumb.jpg"
ART_NAMES: tuple[str, ...] = (COVER, MEDIUM, THUMB)
MEDIUM_BOX = 500  # pixels: cover-medium.jpg fits in a square of this side
THUMB_BOX = 150
JPEG_QUALITY = 85

DEFAULT_LIMIT = 256 * 1024 * 1024  # bytes of images kept on disk
RECHECK_AFTER = 3600.0  # seconds an album's answer is trusted without listing its folders
MAX_SOURCE_BYTES = 32 * 1024 * 1024  # a bigger picture file is not read
MAX_PIXELS = 40_000_000  # a bigger picture is refused before it is decoded (~120 MB as RGB)
# Pillow's own guard (set when Pillow is first used): it refuses images of more
# than twice this many pixels with DecompressionBombError (and warns above it);
# our check of MAX_PIXELS stops them first.
_PILLOW_PIXELS = MAX_PIXELS
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png")
FOLDER_NAMES: tuple[str, ...] = ("cover", "folder", "front")  # by preference

# Decoders tried on a picture (fewer decoders, less hostile-input surface).
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_IMAGES = "images-1"  # bump when the rendering changes: old images are then not reused
_FRONT = 3  # picture type "Cover (front)" in FLAC, ID3 and ASF
_MAX_DIRS = 8  # album folders listed for an image
_MAX_TRACKS = 4  # tracks with art opened for an embedded picture
_TOUCH_EVERY = 60.0  # seconds between two mtime refreshes of one image folder
_RECORDS_IN_MEMORY = 10_000
_READ_BLOCK = 1024 * 1024
_TAG_BUFFER = 64 * 1024
_MAX_WARNED = 10_000


class AlbumArt:
    """The three images of one album, on disk. *sizes* maps each name of
    `ART_NAMES` to its true size in bytes, *mtime_ns* is when they were made."""

    __slots__ = ("_dir", "digest", "mtime_ns", "sizes")

    def __init__(self, digest: str, directory: str, sizes: dict[str, int], mtime_ns: int) -> None:
        self.digest = digest
        self._dir = directory
        self.sizes = sizes
        self.mtime_ns = mtime_ns

    def __repr__(self) -> str:
        return f"AlbumArt({self.digest!r}, {self.sizes!r})"

    def read(self, name: str, offset: int, size: int) -> bytes:
        """Up to *size* bytes of image *name* at *offset* (fewer only at its end).

        Raises `FileNotFoundError` for a name not in `ART_NAMES`, or when the
        images were evicted since this object was handed out (ask again).
        """
        if name not in self.sizes:
            raise FileNotFoundError(f"no cover image called {name!r}")
        fd = os.open(os.path.join(self._dir, name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)


@dataclass(slots=True)
class _Record:
    """What is known of one album: its picture's digest, or None for no art."""

    tracks: str  # fingerprint of the tracks it was found for
    signature: str  # of the tracks and the images beside them; "" = look again
    source: str | None
    checked: float  # time.time() of the last full look; 0 = look again


@dataclass(slots=True)
class _Entry:
    """One picture's three images in the store."""

    sizes: dict[str, int]
    mtime_ns: int
    touched: float  # when the folder's mtime was last set

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


@dataclass(frozen=True, slots=True)
class _Candidate:
    """An image file beside the tracks."""

    origin: str
    relpath: str
    size: int
    mtime_ns: int


_T = TypeVar("_T")


class _Look:
    """One search for an album's art; remembers whether every origin answered."""

    def __init__(self) -> None:
        self.complete = True

    def failed(self, what: str, exc: OSError) -> None:
        self.complete = False
        log.debug("cover art: %s: %s", what, exc)

    def attempt(self, what: str, read: Callable[[], _T]) -> _T | None:
        """*read()*, or None if it failed: a file gone or denied is simply no art;
        any other origin error leaves the search incomplete (tried again later)."""
        try:
            return read()
        except (FileNotFoundError, PermissionError) as exc:
            log.debug("cover art: %s: %s", what, exc)
        except OSError as exc:
            self.failed(what, exc)
        return None


class _TrackReader(RangeReader):
    """A `RangeReader` that remembers an origin error, which mutagen would
    otherwise turn into a parse error."""

    def __init__(self, file: OriginFile) -> None:
        super().__init__(file)
        self.error: OSError | None = None

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return super().readinto(buffer)
        except OSError as exc:
            self.error = exc
            raise


class CoverStore:
    """Album art found on origins, rendered with Pillow, cached under *root*.

    See the module docstring. `album_art` for worker threads, `known` and
    `has_answer` for the FUSE thread; everything is thread-safe.
    """

    def __init__(
        self,
        root: str | Path,
        federation: Federation,
        limit_bytes: int = DEFAULT_LIMIT,
        *,
        recheck_after: float = RECHECK_AFTER,
    ) -> None:
        self.root = Path(root)
        self.federation = federation
        self.limit = limit_bytes
        self.recheck_after = recheck_after
        self._images = self.root / _IMAGES
        self._images.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # entries, records, the database
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._busy: dict[str, tuple[threading.Lock, int]] = {}  # album key -> its lock, users
        self._warned: set[str] = set()
        self._db = sqlite3.connect(self.root / "albums.sqlite3", check_same_thread=False,
                                   isolation_level=None)  # fmt: skip
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS albums (key TEXT PRIMARY KEY, tracks TEXT NOT NULL,"
            " signature TEXT NOT NULL, source TEXT, checked REAL NOT NULL)"
        )
        self._load_entries()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the FUSE thread's questions ------------------------------------------------

    def known(self, album_key: str) -> AlbumArt | None:
        """The album's art if the cache has it; never touches an origin."""
        with self._lock:
            record = self._record_locked(album_key)
            if record is None or record.source is None:
                return None
            return self._art_locked(record.source)

    def has_answer(self, album_key: str) -> bool:
        """Whether the cache knows the album: its art, or that it has none (found
        by a search that every origin answered). False means `album_art` has to
        look (in a worker thread)."""
        with self._lock:
            record = self._record_locked(album_key)
            if record is None:
                return False
            if record.source is None:
                return bool(record.signature)
            return record.source in self._entries

    def usage(self) -> tuple[int, int]:
        """(pictures, bytes) in the store."""
        with self._lock:
            return len(self._entries), self._bytes

    def forget(self, album_key: str) -> None:
        """Drop what is known of an album (its images stay for others to share)."""
        with self._lock:
            self._records.pop(album_key, None)
            self._db.execute("DELETE FROM albums WHERE key = ?", (album_key,))

    # -- finding art (worker threads) --------------------------------------------------

    def album_art(self, album_key: str, tracks: Sequence[Track]) -> AlbumArt | None:
        """The art of the album made of *tracks* (in the order to search them), or
        None if it has none, or it cannot be read. Blocks on origins and Pillow."""
        try:
            with self._album_lock(album_key):
                return self._album_art(album_key, tracks)
        except Exception as exc:  # a disk or database failure: no art, never a crash
            self._warn(f"failure:{type(exc).__name__}", "cover art of %r failed: %r", album_key,
                       exc)  # fmt: skip
            return None

    def _album_art(self, album_key: str, tracks: Sequence[Track]) -> AlbumArt | None:
        fingerprint = _fingerprint(tracks)
        with self._lock:
            record = self._record_locked(album_key)
        fresh = record is not None and time.time() - record.checked < self.recheck_after
        if record is not None and fresh and record.tracks == fingerprint:
            usable, art = self._answer(record)
            if usable:
                return art

        look = _Look()
        candidates = self._candidates(tracks, look)
        signature = _signature(fingerprint, candidates) if look.complete else ""
        if record is not None and signature and record.signature == signature:
            usable, art = self._answer(record)
            if usable:  # nothing changed: just note that it was checked
                self._save(album_key, _Record(fingerprint, signature, record.source, time.time()))
                return art

        source = self._resolve(candidates, tracks, look)
        if not look.complete:  # an origin did not answer: look again next time
            signature = ""
        checked = time.time() if signature else 0.0
        self._save(album_key, _Record(fingerprint, signature, source, checked))
        if source is None:
            return None
        with self._lock:
            return self._art_locked(source)

    def _answer(self, record: _Record) -> tuple[bool, AlbumArt | None]:
        """(True, art or None) if *record* can be answered from the store: no art,
        or images that are still all there (one stat each)."""
        if record.source is None:
            return True, None
        with self._lock:
            art = self._art_locked(record.source)
        if art is None:
            return False, None
        try:
            for name in ART_NAMES:
                os.stat(os.path.join(self._dir_of(record.source), name))
        except OSError:  # removed behind our back: make it again
            with self._lock:
                self._drop_locked(record.source)
            return False, None
        return True, art

    def _candidates(self, tracks: Sequence[Track], look: _Look) -> list[_Candidate]:
        """Image files called cover/folder/front beside *tracks*, best first."""
        found: list[tuple[int, int, int, _Candidate]] = []
        for place, (origin_id, reldir) in enumerate(_album_dirs(tracks)):
            origin = self.federation.origins.get(origin_id)
            if origin is None:
                continue
            try:
                listing = self.federation.call(origin, _lister(origin, reldir))
            except FileNotFoundError:
                continue
            except OSError as exc:
                look.failed(f"listing {origin_id}:{reldir}", exc)
                continue
            for name, stat in listing.files:
                stem, _, ext = name.lower().rpartition(".")
                if stem not in FOLDER_NAMES or ext not in IMAGE_EXTENSIONS:
                    continue
                relpath = f"{reldir}/{name}" if reldir else name
                candidate = _Candidate(origin_id, relpath, stat.size, stat.mtime_ns)
                rank = (place, FOLDER_NAMES.index(stem), IMAGE_EXTENSIONS.index(ext))
                found.append((*rank, candidate))
        found.sort(key=lambda item: item[:3])
        return [item[3] for item in found]

    def _resolve(
        self, candidates: list[_Candidate], tracks: Sequence[Track], look: _Look
    ) -> str | None:
        """The digest of the first picture that renders, its images stored."""
        for what, data in self._sources(candidates, tracks, look):
            digest = xxhash.xxh3_128_hexdigest(data)
            with self._lock:
                if self._art_locked(digest) is not None:
                    return digest
            if self._store(digest, data, what):
                return digest
        return None

    def _sources(
        self, candidates: list[_Candidate], tracks: Sequence[Track], look: _Look
    ) -> Iterator[tuple[str, bytes]]:
        """(description, bytes) of each picture to try, best first."""
        for candidate in candidates:
            what = f"{candidate.origin}:{candidate.relpath}"
            if candidate.size > MAX_SOURCE_BYTES:
                self._warn(what, "cover art: %s is too big (%d bytes)", what, candidate.size)
                continue
            data = look.attempt(what, partial(self._read_image, candidate))
            if data is not None:
                yield what, data
        opened = 0
        for track in tracks:
            if not track.tags.has_art or opened >= _MAX_TRACKS:
                continue
            opened += 1
            what = f"{track.origin}:{track.relpath}"
            for data in look.attempt(what, partial(self._embedded, track)) or []:
                yield f"picture in {what}", data

    def _read_image(self, candidate: _Candidate) -> bytes | None:
        what = f"{candidate.origin}:{candidate.relpath}"
        with self.federation.open(candidate.origin, candidate.relpath) as file:
            if file.size > MAX_SOURCE_BYTES:
                self._warn(what, "cover art: %s is too big (%d bytes)", what, file.size)
                return None
            out = bytearray()
            while len(out) < file.size:
                block = file.read(len(out), min(_READ_BLOCK, file.size - len(out)))
                if not block:
                    break
                out += block
        return bytes(out)

    def _embedded(self, track: Track) -> list[bytes]:
        """The pictures in *track*'s tags, the front cover first; [] if none or
        its tags cannot be parsed. Raises `OSError` when the origin fails."""
        with self.federation.open(track.origin, track.relpath) as file:
            reader = _TrackReader(file)
            buffered = io.BufferedReader(reader, _TAG_BUFFER)
            try:
                pictures = _pictures_in(track.format, buffered)
            except Exception as exc:  # mutagen has bugs on hostile input
                if reader.error is not None:
                    raise reader.error from None
                log.debug("cover art: tags of %s:%s: %r", track.origin, track.relpath, exc)
                return []
        pictures.sort(key=lambda picture: picture[0] != _FRONT)  # stable: front first
        return [data for _, data in pictures if len(data) <= MAX_SOURCE_BYTES]

    # -- the store ----------------------------------------------------------------------

    def _store(self, digest: str, data: bytes, what: str) -> bool:
        """Render *data* and keep its images under *digest*; False if it is no
        usable picture (logged once)."""
        try:
            images = render(data)
        except Exception as exc:  # Pillow: OSError, SyntaxError, DecompressionBombError, ...
            self._warn(digest, "cover art: %s is not a usable picture: %r", what, exc)
            return False
        final = self._dir_of(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.parent / f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp"
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
        try:
            for name, blob in images.items():
                (temp / name).write_bytes(blob)
            with self._lock:
                if digest not in self._entries:
                    with contextlib.suppress(FileNotFoundError):
                        shutil.rmtree(final)  # a half-gone leftover
                    os.rename(temp, final)
                    entry = _entry_at(final)
                    if entry is None:
                        return False
                    self._entries[digest] = entry
                    self._bytes += entry.total
                    self._evict_locked(keep=digest)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        return True

    def _evict_locked(self, keep: str) -> None:
        """Drop least recently used pictures until the store is under its limit
        (*keep*, just made, stays even if it alone is over)."""
        freed = 0
        for digest in list(self._entries):
            if self._bytes <= self.limit:
                break
            if digest == keep:
                continue
            freed += self._drop_locked(digest)
        if freed:
            log.info("evicted %d bytes of cover art (limit %d)", freed, self.limit)

    def _drop_locked(self, digest: str) -> int:
        entry = self._entries.pop(digest, None)
        shutil.rmtree(self._dir_of(digest), ignore_errors=True)
        if entry is None:
            return 0
        self._bytes -= entry.total
        return entry.total

    def _art_locked(self, digest: str) -> AlbumArt | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        self._entries.move_to_end(digest)
        now = time.time()
        directory = self._dir_of(digest)
        if now - entry.touched >= _TOUCH_EVERY:  # the use time that survives a restart
            entry.touched = now
            with contextlib.suppress(OSError):
                os.utime(directory, (now, now))
        return AlbumArt(digest, str(directory), dict(entry.sizes), entry.mtime_ns)

    def _dir_of(self, digest: str) -> Path:
        return self._images / digest[:2] / digest

    def _load_entries(self) -> None:
        """Index the images on disk, oldest use first; drop leftovers of a crash."""
        found: list[tuple[float, str, _Entry]] = []
        for shard in _subdirs(self._images):
            for directory in _subdirs(shard):
                entry = None if directory.name.startswith(".") else _entry_at(directory)
                if entry is None:
                    shutil.rmtree(directory, ignore_errors=True)
                    continue
                found.append((entry.touched, directory.name, entry))
        found.sort(key=lambda item: item[0])
        for _, digest, entry in found:
            self._entries[digest] = entry
            self._bytes += entry.total

    # -- album records ------------------------------------------------------------------

    def _record_locked(self, album_key: str) -> _Record | None:
        record = self._records.get(album_key)
        if record is not None:
            self._records.move_to_end(album_key)
            return record
        row = self._db.execute(
            "SELECT tracks, signature, source, checked FROM albums WHERE key = ?", (album_key,)
        ).fetchone()
        if row is None:
            return None
        record = _Record(*row)
        self._remember_locked(album_key, record)
        return record

    def _remember_locked(self, album_key: str, record: _Record) -> None:
        self._records[album_key] = record
        self._records.move_to_end(album_key)
        while len(self._records) > _RECORDS_IN_MEMORY:
            self._records.popitem(last=False)

    def _save(self, album_key: str, record: _Record) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO albums (key, tracks, signature, source, checked)"
                " VALUES (?, ?, ?, ?, ?)",
                (album_key, record.tracks, record.signature, record.source, record.checked),
            )
            self._remember_locked(album_key, record)

    @contextlib.contextmanager
    def _album_lock(self, album_key: str) -> Iterator[None]:
        """One search per album at a time; a second caller waits and gets its answer."""
        with self._lock:
            lock, users = self._busy.get(album_key, (threading.Lock(), 0))
            self._busy[album_key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, users = self._busy[album_key]
                if users == 1:
                    del self._busy[album_key]
                else:
                    self._busy[album_key] = (lock, users - 1)

    def _warn(self, key: str, message: str, *args: object) -> None:
        """Log *message* as a warning the first time for *key*, at debug after."""
        with self._lock:
            first = key not in self._warned
            if first:
                if len(self._warned) >= _MAX_WARNED:
                    self._warned.clear()
                self._warned.add(key)
        log.log(logging.WARNING if first else logging.DEBUG, message, *args)


# -- rendering ------------------------------------------------------------------------------


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


# -- embedded pictures ------------------------------------------------------------------------


def _pictures_in(fmt: str, fileobj: IO[bytes]) -> list[tuple[int, bytes]]:
    """(picture type, bytes) of the pictures in a file's tags."""
    from mutagen.id3 import ID3, ID3NoHeaderError  # here: not mount time

    from musicfs.core.tags.reader import open_audio

    id3: Any = ID3  # mutagen is mostly untyped
    if fmt in ("mp3", "mp2"):  # the ID3 tag alone: no MPEG frames are read
        try:
            return _id3_pictures(id3(fileobj))
        except ID3NoHeaderError:
            fileobj.seek(0)
    audio = open_audio(f"file.{fmt}", fileobj)
    return [] if audio is None else _pictures(audio)


def _pictures(audio: Any) -> list[tuple[int, bytes]]:
    from mutagen.apev2 import APEv2
    from mutagen.asf import ASFTags
    from mutagen.flac import Picture
    from mutagen.id3 import ID3
    from mutagen.mp4 import MP4Tags

    # mutagen's classes as Any (isinstance does not narrow to them): parts of
    # them are typed, most are not.
    _ID3: Any = ID3
    _Picture: Any = Picture
    _MP4Tags: Any = MP4Tags
    _ASFTags: Any = ASFTags
    _APEv2: Any = APEv2
    out = [(int(p.type), bytes(p.data)) for p in getattr(audio, "pictures", None) or []]
    tags: Any = audio.tags
    if tags is None:
        return out
    if isinstance(tags, _ID3):
        out += _id3_pictures(tags)
    elif isinstance(tags, _MP4Tags):  # no picture types: the first is the cover
        out += [(_FRONT, bytes(cover)) for cover in tags.get("covr", [])]
    elif isinstance(tags, _ASFTags):
        for attribute in tags.get("WM/Picture", []):
            picture = _asf_picture(bytes(attribute.value))
            if picture is not None:
                out.append(picture)
    elif isinstance(tags, _APEv2):
        for key in tags.keys():  # noqa: SIM118 - APEv2 is a case-insensitive dict
            item = tags[key]
            if key.lower().startswith("cover art") and getattr(item, "kind", 0) == 1:
                data = bytes(item.value).partition(b"\0")[2]
                out.append((_FRONT if "front" in key.lower() else 0, data))
    elif hasattr(tags, "keys") and hasattr(tags, "get"):  # Vorbis comments (Ogg, FLAC)
        for key in tags.keys():  # noqa: SIM118 - VComment is list-like
            lowered = key.lower()
            if lowered not in ("metadata_block_picture", "coverart"):
                continue
            for value in tags.get(key, []):
                with contextlib.suppress(Exception):  # bad base64 or block: skip it
                    raw = base64.b64decode(value)
                    if lowered == "coverart":  # the old way: the image itself
                        out.append((0, raw))
                    else:
                        block = _Picture(raw)
                        out.append((int(block.type), bytes(block.data)))
    return out


def _id3_pictures(tags: Any) -> list[tuple[int, bytes]]:
    return [(int(frame.type), bytes(frame.data)) for frame in tags.getall("APIC")]


def _asf_picture(value: bytes) -> tuple[int, bytes] | None:
    """WM/Picture: type byte, data length (LE u32), MIME and description
    (UTF-16LE, NUL-terminated), then the data."""
    if len(value) < 5:
        return None
    kind, length = value[0], struct.unpack_from("<I", value, 1)[0]
    position = 5
    for _ in range(2):  # MIME type, description
        while position + 1 < len(value) and value[position : position + 2] != b"\0\0":
            position += 2
        position += 2
    data = value[position : position + length]
    return (kind, data) if data else None


# -- helpers --------------------------------------------------------------------------------


def _lister(origin: Origin, reldir: str) -> Callable[[], DirListing]:
    def list_images() -> DirListing:
        return origin.list_dir(reldir, IMAGE_EXTENSIONS)

    return list_images


def _album_dirs(tracks: Sequence[Track]) -> list[tuple[str, str]]:
    """The (origin, folder) pairs of *tracks*, in order, at most `_MAX_DIRS`."""
    dirs: dict[tuple[str, str], None] = {}
    for track in tracks:
        dirs.setdefault((track.origin, track.relpath.rpartition("/")[0]), None)
        if len(dirs) >= _MAX_DIRS:
            break
    return list(dirs)


def _fingerprint(tracks: Sequence[Track]) -> str:
    text = "\n".join(
        f"{t.origin}\x1f{t.relpath}\x1f{t.size}\x1f{t.mtime_ns}\x1f{int(t.tags.has_art)}"
        for t in tracks
    )
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogateescape"))


def _signature(fingerprint: str, candidates: list[_Candidate]) -> str:
    text = fingerprint + "".join(
        f"\n{c.origin}\x1f{c.relpath}\x1f{c.size}\x1f{c.mtime_ns}" for c in candidates
    )
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogateescape"))


def _entry_at(directory: Path) -> _Entry | None:
    """The entry of an image folder, None unless all three images are there."""
    try:
        stats = {name: os.stat(directory / name) for name in ART_NAMES}
        touched = os.stat(directory).st_mtime
    except OSError:
        return None
    sizes = {name: st.st_size for name, st in stats.items()}
    return _Entry(sizes, stats[COVER].st_mtime_ns, touched)


def _subdirs(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
