"""Playlist files on origins (issue 15.3): ``.m3u``/``.m3u8`` read into the catalog.

The scanner lists playlist files beside the audio (`PLAYLIST_EXTENSIONS`) and
hands each folder's to `PlaylistSync`, which reads a file when it is new or
changed (size, mtime), parses it (`parse_playlist`), matches each entry to a
file of the same origin (`match_entry`) and stores the playlist as file ids
(`Catalog.store_origin_playlist`); a playlist file that is gone drops its
playlist. After each scan of an origin, entries that matched nothing are
matched again (`PlaylistSync.match_unmatched`): a file that appears later, or
an entry whose file was removed, finds its file.

Entries are matched so (M3U has no standard for paths, players write all kinds):

* a relative entry (``Album/01.flac``, ``..\\Other\\02.mp3``) against the
  playlist's folder on the origin;
* an absolute entry (``/home/me/Music/A/01.flac``, ``C:\\Music\\A\\01.flac``)
  or a ``file://`` URL by the longest suffix of its path that is the path of
  a file of the origin (the playlist may come from another machine, or the
  origin be mounted elsewhere);
* backslashes are separators; other URLs (``http://``) match nothing.

Entries keep their original text, so one that matches nothing is shown, not lost.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Callable, Sequence
from urllib.parse import unquote, urlsplit

from musicfs.core.catalog.rows import join_relpath
from musicfs.core.catalog.store import Catalog
from musicfs.core.model import FileStat

log = logging.getLogger(__name__)

PLAYLIST_EXTENSIONS: tuple[str, ...] = ("m3u", "m3u8")
#: A playlist file bigger than this is not read (no real playlist comes near).
MAX_PLAYLIST_BYTES = 16 * 1024 * 1024

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DRIVE = re.compile(r"^[A-Za-z]:(/|$)")


def is_playlist(name: str) -> bool:
    """Whether a file called *name* is a playlist (by its extension)."""
    return name.rpartition(".")[2].lower() in PLAYLIST_EXTENSIONS


def decode_playlist(data: bytes, filename: str) -> str:
    """The text of a playlist file: UTF-8 for ``.m3u8``; for ``.m3u`` UTF-8 if it
    decodes as such, else Latin-1 (what older players wrote). A BOM is dropped."""
    if filename.lower().endswith(".m3u8"):
        text = data.decode("utf-8", errors="replace")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    return text.removeprefix("\ufeff")


def parse_playlist(data: bytes, filename: str) -> list[str]:
    """The entries of a playlist file, in order, as written: every line that is
    not blank and not a ``#`` line (``#EXTM3U``, ``#EXTINF``, comments)."""
    lines = (line.strip() for line in decode_playlist(data, filename).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def candidates(text: str, reldir: str) -> list[str]:
    """The origin relpaths entry *text* of a playlist in folder *reldir* may
    mean, best first (see the module's docstring)."""
    if text[:5].lower() == "file:":
        parts = urlsplit(text)
        path = unquote(parts.path)
        if parts.netloc and parts.netloc.lower() != "localhost":
            path = f"/{parts.netloc}{path}"  # file://server/share/...: a UNC path
        return _suffixes(path.replace("\\", "/"))
    if _URL.match(text):
        return []  # a stream, not a file
    path = text.replace("\\", "/")
    if path.startswith("/") or _DRIVE.match(path):
        return _suffixes(path)
    found = _relative(path, reldir)
    if "%" in path:  # some players write URL-escaped relative paths
        found += [p for p in _relative(unquote(path), reldir) if p not in found]
    return found


def _relative(path: str, reldir: str) -> list[str]:
    joined = posixpath.normpath(join_relpath(reldir, path))
    if joined in (".", "..") or joined.startswith(("../", "/")):
        return []  # outside the origin
    return [joined]


def _suffixes(path: str) -> list[str]:
    """Every trailing part of an absolute *path*, longest first."""
    parts = [p for p in posixpath.normpath(path).split("/") if p and p not in (".", "..")]
    if parts and _DRIVE.match(parts[0]):
        parts = parts[1:]
    return ["/".join(parts[i:]) for i in range(len(parts))]


def match_entry(lookup: Callable[[str], int | None], text: str, reldir: str) -> int | None:
    """The file entry *text* of a playlist in *reldir* matches: the first of its
    `candidates` that *lookup* (relpath -> file id) finds."""
    for relpath in candidates(text, reldir):
        file_id = lookup(relpath)
        if file_id is not None:
            return file_id
    return None


class PlaylistSync:
    """The scanner's half for playlist files: one per scan of one catalog.

    *read(origin_relpath)* returns a file's bytes (through the federation when
    there is one); it is given per call, with the origin it reads from.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._seen: set[str] = set()  # relpaths of playlist files listed by this walk

    def start_census(self) -> None:
        """A full walk begins: playlist files not listed by its end are gone."""
        self._seen.clear()

    def visit(
        self,
        origin: str,
        reldir: str,
        files: Sequence[tuple[str, FileStat]],
        read: Callable[[str], bytes],
    ) -> None:
        """Folder *reldir* lists these playlist files: read the new and changed
        ones, drop the playlists of those gone from it."""
        known = self.catalog.playlist_files_in(origin, reldir)
        gone = set(known)
        for name, st in files:
            relpath = join_relpath(reldir, name)
            self._seen.add(relpath)
            gone.discard(name)
            if known.get(name) == (st.size, st.mtime_ns):
                continue
            if st.size > MAX_PLAYLIST_BYTES:
                log.warning("not reading playlist %s/%s: %d bytes is too big for a playlist",
                            origin, relpath, st.size)  # fmt: skip
                continue
            try:
                data = read(relpath)
            except OSError as exc:  # kept as it was; read again by a later scan
                log.warning("cannot read playlist %s/%s: %s", origin, relpath, exc)
                continue
            self._store(origin, relpath, st, data)
        if gone:
            with self.catalog.transaction():
                self.catalog.drop_origin_playlists(origin, [join_relpath(reldir, n) for n in gone])

    def _store(self, origin: str, relpath: str, st: FileStat, data: bytes) -> None:
        reldir = relpath.rpartition("/")[0]
        texts = parse_playlist(data, relpath)

        def lookup(path: str) -> int | None:
            return self.catalog.file_id_at(origin, path)

        entries = [(match_entry(lookup, text, reldir), text) for text in texts]
        with self.catalog.transaction():
            name = self.catalog.store_origin_playlist(origin, relpath, st.size, st.mtime_ns,
                                                      entries)  # fmt: skip
        matched = sum(1 for file_id, _ in entries if file_id is not None)
        log.info("playlist %r from %s/%s: %d of %d entries matched",
                 name, origin, relpath, matched, len(entries))  # fmt: skip

    def gone(self, origin: str, reldir: str) -> None:
        """Folder *reldir* of *origin* is gone, and the playlists in and under it."""
        with self.catalog.transaction():
            self.catalog.drop_origin_playlists_under(origin, reldir)

    def end_census(self, origin: str) -> None:
        """A full walk of *origin* listed every folder: drop the playlists of
        files it did not list."""
        gone = set(self.catalog.playlist_file_paths(origin)) - self._seen
        if gone:
            with self.catalog.transaction():
                self.catalog.drop_origin_playlists(origin, sorted(gone))

    def match_unmatched(self, origin: str) -> int:
        """Match again the entries of *origin*'s playlists that matched no file;
        returns how many match now."""
        matches: list[tuple[int, int, int]] = []

        def lookup(path: str) -> int | None:
            return self.catalog.file_id_at(origin, path)

        for playlist, position, reldir, text in self.catalog.unmatched_playlist_entries(origin):
            file_id = match_entry(lookup, text, reldir)
            if file_id is not None:
                matches.append((file_id, playlist, position))
        if matches:
            with self.catalog.transaction():
                self.catalog.match_playlist_entries(matches)
        return len(matches)
