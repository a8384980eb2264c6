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
  pictures; `musicfs.core.art.pictures`). Embedded pictures are read by
  mutagen through ranged reads, so only a track's tags are fetched, never its
  audio.
- **What is made** (Pillow, `musicfs.core.art.rendering`): ``cover.jpg`` is
  the picture itself when it is an RGB or grey JPEG, else the picture
  re-encoded as one; ``cover-medium.jpg`` fits it into 500x500 and
  ``cover-thumb.jpg`` into 150x150, aspect kept, never enlarged, EXIF
  orientation applied (JPEG quality 85, baseline).
- **The cache** is its own, apart from the audio tiers: under *root*,
  ``images-1/`` holds the three images of each source picture by its hash,
  within ``limit_bytes``, least recently used dropped first
  (`musicfs.core.art.imagestore`). ``albums.sqlite3`` remembers each album's answer — its
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

import contextlib
import io
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import xxhash

from musicfs.core.art.imagestore import AlbumArt, ImageStore
from musicfs.core.art.pictures import FRONT, TrackReader, embedded_pictures
from musicfs.core.art.rendering import RENDER_VERSION, render
from musicfs.core.origins.base import DirListing, Origin
from musicfs.core.origins.federation import Federation

if TYPE_CHECKING:
    from musicfs.core.catalog.store import Track

__all__ = ["DEFAULT_LIMIT", "RECHECK_AFTER", "CoverStore"]

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 256 * 1024 * 1024  # bytes of images kept on disk
RECHECK_AFTER = 3600.0  # seconds an album's answer is trusted without listing its folders
MAX_SOURCE_BYTES = 32 * 1024 * 1024  # a bigger picture file is not read
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png")
FOLDER_NAMES: tuple[str, ...] = ("cover", "folder", "front")  # by preference

_IMAGES = f"images-{RENDER_VERSION}"  # old renderings are never reused
_MAX_DIRS = 8  # album folders listed for an image
_MAX_TRACKS = 4  # tracks with art opened for an embedded picture
_RECORDS_IN_MEMORY = 10_000
_READ_BLOCK = 1024 * 1024
_TAG_BUFFER = 64 * 1024  # mutagen reads tags through a buffer this big
_MAX_WARNED = 10_000


@dataclass(slots=True)
class _Record:
    """What is known of one album: its picture's digest, or None for no art."""

    tracks: str  # fingerprint of the tracks it was found for
    signature: str  # of the tracks and the images beside them; "" = look again
    source: str | None
    checked: float  # time.time() of the last full look; 0 = look again


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
        self.recheck_after = recheck_after
        self._images = ImageStore(self.root / _IMAGES, limit_bytes)
        self._lock = threading.Lock()  # records, the database, warnings
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

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def limit(self) -> int:
        """Bytes of images the store keeps at most."""
        return self._images.limit

    # -- the FUSE thread's questions ------------------------------------------------

    def known(self, album_key: str) -> AlbumArt | None:
        """The album's art if the cache has it; never touches an origin."""
        with self._lock:
            record = self._record_locked(album_key)
        if record is None or record.source is None:
            return None
        return self._images.art(record.source)

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
        return self._images.has(record.source)

    def usage(self) -> tuple[int, int]:
        """(pictures, bytes) in the store."""
        return self._images.usage()

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
        return self._images.art(source)

    def _answer(self, record: _Record) -> tuple[bool, AlbumArt | None]:
        """(True, art or None) if *record* can be answered from the store: no art,
        or images that are still all there (one stat each)."""
        if record.source is None:
            return True, None
        art = self._images.present(record.source)  # removed behind our back: make it again
        return art is not None, art

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
            if self._images.art(digest) is not None:
                return digest
            try:
                images = render(data)
            except Exception as exc:  # Pillow: OSError, SyntaxError, DecompressionBombError...
                self._warn(digest, "cover art: %s is not a usable picture: %r", what, exc)
                continue
            if self._images.put(digest, images):
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
            reader = TrackReader(file)
            buffered = io.BufferedReader(reader, _TAG_BUFFER)
            try:
                pictures = embedded_pictures(track.format, buffered)
            except Exception as exc:  # mutagen has bugs on hostile input
                if reader.error is not None:
                    raise reader.error from None
                log.debug("cover art: tags of %s:%s: %r", track.origin, track.relpath, exc)
                return []
        pictures.sort(key=lambda picture: picture[0] != FRONT)  # stable: front first
        return [data for _, data in pictures if len(data) <= MAX_SOURCE_BYTES]

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
