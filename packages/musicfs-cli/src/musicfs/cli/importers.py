"""``musicfs import beets LIBRARY.db`` and ``musicfs import itunes Library.xml``:
what another music program knows of the same files, brought into a mount.

beets: its SQLite library (table ``items``, read read-only with sqlite3; beets'
own code is not used) holds the tags beets corrected. Each item is matched to
a catalogued track by its absolute path (a local origin's folder + the
track's relpath, every local origin tried), else, when the file at beets'
path can be read here, by the identity of its audio (the same recording
moved, renamed or copied elsewhere: `musicfs.core.tags.identity`). beets 2
stores a path inside its music directory relative to it: a relative path is
tried as a relpath in every local origin, then under that directory
(``--directory``, else the ``directory:`` of the config.yaml beside the
library). Every field whose beets value differs from the file's own tag
becomes an override with source "beets", set through the mount like
``musicfs tag set`` (so the tree follows), or, with ``--cache-dir``, written
into an unmounted catalog for the next mount.

iTunes: Apple's ``Library.xml`` plist. Tracks are matched by their
``Location`` (a file:// URL) as above (path, else audio identity), else by
artist, album, title and track number. Play counts are added to the access
log (last played = ``Play Date UTC``), remembering per track how many were
imported, so importing the same or a later file again adds only the new plays;
ratings (0-100) are set; playlists are stored
(``Catalog.replace_playlist(name, "itunes", ...)``), unmatched entries as text.

Importing again changes nothing that is already there (overrides, ratings,
playlists, plays). Unmatched items are counted and the first ones listed with
the reason; a summary line ends the output.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicfs.cli.common import EXIT_OK, EXIT_USAGE, CLIError, daemon_client

#: How many unmatched items are listed (the rest are counted).
SHOWN_UNMATCHED = 20
#: beets' item columns -> the override fields they correct (beets 2 has the
#: multi-valued genres and composers where beets 1 had genre and composer).
BEETS_FIELDS = {
    "title": "title", "artist": "artist", "album": "album", "albumartist": "albumartist",
    "genre": "genre", "genres": "genre", "year": "year", "track": "track",
    "tracktotal": "tracktotal", "disc": "disc", "disctotal": "disctotal",
    "composer": "composer", "composers": "composer", "lyrics": "lyrics", "comp": "compilation",
}  # fmt: skip
#: How beets joins the values of a multi-valued field in its database.
_BEETS_DELIMITER = "\\\u2400"
_NUMBERS = frozenset({"year", "track", "tracktotal", "disc", "disctotal"})
#: "Play Date" counts seconds from 1904-01-01, the classic Mac OS epoch.
_MAC_EPOCH = 2_082_844_800
#: iTunes' own playlists (the whole library, media kinds): not the user's.
_BUILT_IN = ("Master", "Distinguished Kind", "Folder", "Party Shuffle", "Purchased Music")


def add_parsers(sources: Any, config_args: Any) -> None:
    beets = sources.add_parser(
        "beets",
        help="the tags beets corrected, as overrides",
        description="Read a beets library (its SQLite file) and override, with source "
        "beets, every tag where beets' value differs from the file's own. Items are "
        "matched by path (a local origin's folder + the track's path in it).",
    )
    beets.add_argument("library", type=Path, metavar="LIBRARY.db",
                       help="beets' library file (`library:` in its config)")  # fmt: skip
    beets.add_argument("--directory", type=Path,
                       help="beets' music directory (`directory:` in its config), that "
                       "its relative paths start from (default: read from the "
                       "config.yaml beside LIBRARY.db)")  # fmt: skip
    itunes = sources.add_parser(
        "itunes",
        help="play counts, ratings, last played and playlists from iTunes/Music",
        description="Read an iTunes or Apple Music library export (Library.xml). Tracks are "
        "matched by path, else by artist, album, title and track number. Play counts "
        "are added (only what is new since the last import), ratings set, playlists stored.",
    )
    itunes.add_argument("library", type=Path, metavar="Library.xml",
                        help="File > Library > Export Library... in iTunes or Music")  # fmt: skip
    for parser in (beets, itunes):
        parser.add_argument("--dry-run", action="store_true",
                            help="print what would change, change nothing")  # fmt: skip
        parser.add_argument("--cache-dir", type=Path,
                            help="change this unmounted cache dir's catalog (no mount "
                            "needed)")  # fmt: skip
        config_args(parser)


# -- what is in the mount ---------------------------------------------------------------


def _fold(text: str | None) -> str:
    return (text or "").strip().casefold()


@dataclass
class Here:
    """The catalog's tracks, indexed the ways an item is matched."""

    catalog_path: Path
    records: list[Any]  # facade.LibraryRecord
    roots: list[tuple[str, str]]  # (origin id, folder) of each local origin
    by_place: dict[tuple[str, str], Any] = field(default_factory=dict)
    by_audio: dict[str, list[Any]] = field(default_factory=dict)
    by_tags: dict[tuple[str, str, str, int | None], list[Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, catalog_path: Path) -> Here:
        from musicfs.core.mount.facade import catalog_origins, library_records

        records = library_records(catalog_path, used_only=False)
        roots = [(oid, os.path.normpath(loc)) for oid, _, loc in catalog_origins(catalog_path)
                 if os.path.isabs(loc)]  # fmt: skip
        here = cls(catalog_path, records, roots)
        for record in records:
            here.by_place[(record.origin, record.relpath)] = record
            if record.audio_id:
                here.by_audio.setdefault(record.audio_id, []).append(record)
            if record.title:
                key = (_fold(record.artist), _fold(record.album), _fold(record.title), record.track)
                here.by_tags.setdefault(key, []).append(record)
        return here

    def at_path(self, path: str) -> tuple[Any | None, str]:
        """The track at an absolute *path* of a local origin, or None and why not."""
        tried = {os.path.normpath(path)}
        tried.add(os.path.realpath(path))  # a symlinked folder in the path
        under = ""
        for origin, root in self.roots:
            for folder in {root, os.path.realpath(root)}:
                for candidate in tried:
                    relpath = os.path.relpath(candidate, folder)
                    if relpath.startswith(os.pardir) or os.path.isabs(relpath):
                        continue
                    found = self.by_place.get((origin, relpath.replace(os.sep, "/")))
                    if found is not None:
                        return found, ""
                    under = origin
        if under:
            return None, f"in origin {under}'s folder but not in its catalog (not scanned yet?)"
        if not self.roots:
            return None, "this mount has no local origin to find paths in"
        return None, "not in the folder of any local origin of this mount"

    def with_audio(self, path: str) -> tuple[Any | None, str]:
        """The track with the same audio as the file at *path* (the oldest, if
        copies are on several origins), or None and why not."""
        from musicfs.core.mount.facade import audio_identity_of

        if not os.path.isfile(path):
            return None, "no file there to compare its audio"
        audio_id = audio_identity_of(path)
        if audio_id is None:
            return None, "its audio cannot be read here"
        same = self.by_audio.get(audio_id, [])
        if not same:
            return None, "its audio matches no track of this mount"
        return same[0], ""

    def find(self, path: str) -> tuple[Any | None, str, bool]:
        """(track, why not, matched by audio) for an absolute *path*: the track at
        that path under a local origin, else the one with the same audio."""
        found, reason = self.at_path(path)
        if found is not None:
            return found, "", False
        found, why = self.with_audio(path)
        return found, "" if found is not None else f"{reason}; {why}", found is not None

    def with_tags(
        self, artist: str | None, album: str | None, title: str | None, track: int | None
    ) -> Any | None:
        """The only track with these tags (None: none, or more than one)."""
        if not title:
            return None
        same = self.by_tags.get((_fold(artist), _fold(album), _fold(title), track), [])
        return same[0] if len(same) == 1 else None


@contextmanager
def _catalog(args: argparse.Namespace) -> Iterator[tuple[Path, Any | None]]:
    """(catalog path, daemon client or None): the mount's, or with --cache-dir an
    unmounted cache dir's, held (its lock) so no daemon starts on it meanwhile."""
    if args.cache_dir is None:
        with daemon_client(args) as client:
            yield Path(client.status()["cache_dir"]) / "catalog.sqlite3", client
        return
    from musicfs.core.config.paths import CacheDirLock, CacheDirLocked

    path = args.cache_dir / "catalog.sqlite3"
    if not path.is_file():
        raise CLIError(f"no MusicFS catalog in {args.cache_dir} (never mounted with it?)")
    lock = CacheDirLock(args.cache_dir)
    if not args.dry_run:
        try:
            lock.acquire()
        except CacheDirLocked:
            raise CLIError(
                f"cache dir {args.cache_dir} is in use by a running MusicFS daemon; "
                "import through its mount instead (--mount MOUNTPOINT)",
                EXIT_USAGE,
            ) from None
    try:
        yield path, None
    finally:
        if not args.dry_run:
            lock.release()


def _list_unmatched(unmatched: Sequence[tuple[str, str]]) -> None:
    for label, reason in unmatched[:SHOWN_UNMATCHED]:
        print(f"no match: {label}: {reason}")
    if len(unmatched) > SHOWN_UNMATCHED:
        print(f"no match: ... and {len(unmatched) - SHOWN_UNMATCHED} more")


def cmd_import(args: argparse.Namespace) -> int:
    if args.import_source == "beets":
        items = read_beets(args.library)
        with _catalog(args) as (path, client):
            return _import_beets(args, items, Here.load(path), client)
    library = read_itunes(args.library)
    with _catalog(args) as (path, client):
        return _import_itunes(args, library, Here.load(path), client)


# -- beets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BeetsItem:
    """One row of beets' ``items``: the file's path and the tags beets has for it
    (override field -> value, text as `model.override_value` gives it)."""

    path: str
    tags: dict[str, str]


def read_beets(library: Path) -> list[BeetsItem]:
    """The items of a beets library; `CLIError` (exit 2) if it is not one."""
    from musicfs.core.model import override_value

    if not library.is_file():
        why = "no such file" if not library.exists() else "not a file"
        raise CLIError(f"cannot read beets library {library}: {why}", EXIT_USAGE)
    expected = "expected beets' library file, an SQLite database with an 'items' table"
    try:
        # Read-only: beets may be running, and its library is never changed here.
        conn = sqlite3.connect(f"{library.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise CLIError(f"cannot open {library}: {exc}", EXIT_USAGE) from None
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
        if "path" not in columns:
            raise CLIError(f"{library} is not a beets library ({expected})", EXIT_USAGE)
        wanted = [name for name in BEETS_FIELDS if name in columns]
        rows = conn.execute(f"SELECT path, {', '.join(wanted)} FROM items ORDER BY id").fetchall()
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        raise CLIError(
            f"{library} is not a beets library: {exc} ({expected})", EXIT_USAGE
        ) from None
    finally:
        conn.close()
    items = []
    for row in rows:
        raw = row[0]
        path = os.fsdecode(raw) if isinstance(raw, (bytes, str)) else ""
        tags = {}
        for name, stored in zip(wanted, row[1:], strict=True):
            field_name = BEETS_FIELDS[name]
            if field_name in tags:
                continue  # genre and genres both there: the first (the old) column won
            value = stored
            if isinstance(stored, str) and _BEETS_DELIMITER in stored:
                value = stored.split(_BEETS_DELIMITER)[0]  # MusicFS reads a tag's first value
            # beets has 0 and "" for "not set": no value, not a value to override with.
            if value is None or value == "" or (field_name in _NUMBERS and value == 0):
                continue
            try:
                text = override_value(field_name, str(int(value)) if field_name in _NUMBERS
                                      or field_name == "compilation" else str(value))  # fmt: skip
            except ValueError:
                continue  # a value MusicFS cannot serve (a year past 2**31...)
            if text is not None:
                tags[field_name] = text
        items.append(BeetsItem(path, tags))
    return items


def beets_directory(library: Path) -> Path | None:
    """beets' music directory from the config.yaml beside its library (beets keeps
    both in one folder by default), read as a plain top-level ``directory:`` line."""
    try:
        lines = (library.parent / "config.yaml").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key == "directory":
            value = value.split(" #")[0].strip().strip("\"'")
            return Path(value).expanduser() if value else None
    return None


def _tag_text(tags: Any, name: str) -> str | None:
    """A field of `TrackTags` as override text (None: not set)."""
    value = getattr(tags, name)
    if name == "compilation":
        return "1" if value else "0"
    return None if value is None or value == "" else str(value)


def beets_changes(item: BeetsItem, record: Any) -> dict[str, tuple[str | None, str]]:
    """field -> (value served now, beets' value) for each field beets has another
    value for than the file's own tag, and that is not overridden so already."""
    from musicfs.core.model import apply_overrides

    served = apply_overrides(record.own, record.overrides)
    changes = {}
    for name, value in item.tags.items():
        if value == _tag_text(record.own, name) or record.overrides.get(name, "\0") == value:
            continue
        if (name == "albumartist" and record.own.albumartist is None
                and value in (item.tags.get("artist"), record.own.artist)):  # fmt: skip
            continue  # beets fills it in from the artist where a file has none: no correction
        changes[name] = (_tag_text(served, name), value)
    return changes


def _beets_track(path: str, directory: Path | None, here: Here) -> tuple[Any | None, str, bool]:
    """(track, why not, matched by audio) of a beets path: absolute, or relative
    to beets' *directory* (else to each local origin's folder)."""
    if not path:
        return None, "no path in beets", False
    if os.path.isabs(path):
        return here.find(path)
    relpath = os.path.normpath(path).replace(os.sep, "/")
    for origin, _ in here.roots:
        found = here.by_place.get((origin, relpath))
        if found is not None:
            return found, "", False
    if directory is None:
        return None, ("a path relative to beets' music directory, which is not known: "
                      "pass --directory (beets' `directory:`)"), False  # fmt: skip
    return here.find(os.path.join(os.path.abspath(directory), path))


def _import_beets(args: argparse.Namespace, items: list[BeetsItem], here: Here, client: Any) -> int:
    from musicfs.control.client import ControlError
    from musicfs.core.mount.facade import mount_path_of, set_overrides_offline

    prefix = "would set" if args.dry_run else "set"
    unmatched: list[tuple[str, str]] = []
    matched = fields = failed = by_audio = 0
    offline: list[tuple[int, dict[str, str | None]]] = []
    directory = args.directory or beets_directory(args.library)
    for item in items:
        record, reason, audio = _beets_track(item.path, directory, here)
        if record is None:
            unmatched.append((item.path, reason))
            continue
        matched += 1
        by_audio += audio
        changes = beets_changes(item, record)
        if not changes:
            continue
        shown_at = record.path or f"{record.origin}:{record.relpath} (not in the tree)"
        print(f"{prefix} {shown_at}")
        for name, (old, new) in sorted(changes.items()):
            print(f"  {name}: {old if old is not None else '(none)'} → {new}")
        fields += len(changes)
        if args.dry_run:
            continue
        values: dict[str, str | None] = {name: new for name, (_, new) in changes.items()}
        if client is None:
            offline.append((record.file_id, values))
            continue
        # Where it is now: an earlier set may have renamed it (a freed "(2)" name).
        now_at = mount_path_of(here.catalog_path, record.file_id)
        try:
            if not now_at:
                raise ControlError(f"{shown_at}: not in the tree; nothing was changed")
            client.set_tags(now_at, {k: v or "" for k, v in values.items()}, source="beets")
        except ControlError as exc:  # e.g. a format MusicFS cannot write tags into
            failed += 1
            print(f"  not set: {exc}")
    if offline:
        set_overrides_offline(here.catalog_path, offline, "beets")
    _list_unmatched(unmatched)
    done = " (dry run: nothing changed)" if args.dry_run else ""
    later = " (set when it is next mounted)" if offline else ""
    failures = f", {failed} tracks could not be changed" if failed else ""
    how = f" ({by_audio} by their audio)" if by_audio else ""
    print(f"beets: {len(items)} items, {matched} matched{how}, {len(unmatched)} not; "
          f"{fields} fields {'to change' if args.dry_run else 'changed'}{later}"
          f"{failures}{done}")  # fmt: skip
    return EXIT_OK


# -- iTunes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ITunesTrack:
    """A track of an iTunes library: where it was, what it is, how it was used."""

    track_id: int
    path: str | None  # a local path from its Location (None: none, or not a file:// URL)
    artist: str | None
    album: str | None
    title: str | None
    number: int | None
    plays: int
    last_played: float | None
    rating: int | None  # 0-100; None: not rated (or only an album's rating)

    def label(self) -> str:
        tags = " - ".join(x or "?" for x in (self.artist, self.album, self.title))
        return f"{self.path or '(no location)'} ({tags})"


@dataclass(frozen=True)
class ITunesLibrary:
    tracks: dict[int, ITunesTrack]
    playlists: list[tuple[str, list[int]]]  # name, track ids in order


def location_path(location: str) -> str | None:
    """The local path of an iTunes ``Location`` (``file://localhost/Users/a%20b/...``)."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    return urllib.parse.unquote(parts.path)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def read_itunes(library: Path) -> ITunesLibrary:
    """The tracks and playlists of an iTunes Library.xml; `CLIError` (exit 2) if
    it is not one."""
    import plistlib  # here: every `musicfs` command builds this module's parsers

    expected = "expected an iTunes/Music Library.xml, a plist with a 'Tracks' dictionary"
    try:
        with library.open("rb") as file:
            document = plistlib.load(file)
    except FileNotFoundError:
        raise CLIError(f"cannot read iTunes library {library}: no such file", EXIT_USAGE) from None
    except OSError as exc:
        raise CLIError(
            f"cannot read iTunes library {library}: {exc.strerror}", EXIT_USAGE
        ) from None
    except Exception as exc:  # plistlib raises InvalidFileException, ExpatError, ValueError...
        raise CLIError(f"{library} is not an iTunes library: not a plist ({expected})",
                       EXIT_USAGE) from exc  # fmt: skip
    if not isinstance(document, dict) or not isinstance(document.get("Tracks"), dict):
        raise CLIError(f"{library} is not an iTunes library ({expected})", EXIT_USAGE)
    tracks = {}
    for key, data in document["Tracks"].items():
        if not isinstance(data, dict):
            continue
        track_id = _int(data.get("Track ID")) or (int(key) if str(key).isdecimal() else None)
        if track_id is None:
            continue
        location = _text(data.get("Location"))
        played, mac_time = data.get("Play Date UTC"), _int(data.get("Play Date"))
        last = None
        if isinstance(played, datetime.datetime):  # plistlib: naive, in UTC
            last = played.replace(tzinfo=datetime.UTC).timestamp()
        elif mac_time:  # older files: seconds since 1904 (local time: off by hours at most)
            last = float(mac_time - _MAC_EPOCH)
        rating = _int(data.get("Rating"))
        if data.get("Rating Computed") or rating is None or not 0 <= rating <= 100:
            rating = None  # computed: the album's rating shown on its tracks, not theirs
        tracks[track_id] = ITunesTrack(
            track_id, location_path(location) if location else None,
            _text(data.get("Artist")), _text(data.get("Album")), _text(data.get("Name")),
            _int(data.get("Track Number")), max(_int(data.get("Play Count")) or 0, 0), last,
            rating,
        )  # fmt: skip
    playlists = []
    for data in document.get("Playlists") or []:
        if not isinstance(data, dict) or not _text(data.get("Name")):
            continue
        if any(data.get(key) for key in _BUILT_IN) or data.get("Visible") is False:
            continue
        ids = [_int(item.get("Track ID")) for item in data.get("Playlist Items") or []
               if isinstance(item, dict)]  # fmt: skip
        playlists.append((data["Name"].strip(), [i for i in ids if i is not None]))
    return ITunesLibrary(tracks, playlists)


def _unique(name: str, taken: set[str]) -> str:
    """iTunes allows two playlists of one name; the catalog keeps one per name."""
    shown, n = name, 2
    while shown in taken:
        shown, n = f"{name} ({n})", n + 1
    taken.add(shown)
    return shown


def _import_itunes(
    args: argparse.Namespace, library: ITunesLibrary, here: Here, client: Any = None
) -> int:
    from musicfs.core.mount.facade import Imported, apply_import, imported_plays

    prefix = "would " if args.dry_run else ""
    imported = Imported("itunes")
    already = imported_plays(here.catalog_path, "itunes")
    matches: dict[int, Any] = {}
    unmatched: list[tuple[str, str]] = []
    plays = ratings = 0
    # Per track here: iTunes' plays and last played of every iTunes track that is
    # it (duplicates of one recording match one track by its audio), added up.
    totals: dict[int, tuple[int, float, str]] = {}
    for track in library.tracks.values():
        record, reason, _ = (here.find(track.path) if track.path
                             else (None, "no file:// location", False))  # fmt: skip
        if record is None:
            record = here.with_tags(track.artist, track.album, track.title, track.number)
        if record is None:
            unmatched.append((track.label(), f"{reason}; no track with its tags either"))
            continue
        matches[track.track_id] = record
        shown_at = record.path or f"{record.origin}:{record.relpath}"
        if track.plays or record.file_id in already:
            count, last, _ = totals.get(record.file_id, (0, 0.0, ""))
            totals[record.file_id] = (count + track.plays, max(last, track.last_played or 0.0),
                                      shown_at)  # fmt: skip
        if track.rating is not None and track.rating != record.rating:
            print(f"{prefix}rate {shown_at}: {track.rating}/100 ({track.rating / 20:g} stars)")
            imported.ratings.append((record.file_id, track.rating))
            ratings += 1
    for file_id, (count, last, shown_at) in totals.items():
        new = count - already.get(file_id, 0)
        if count and new > 0:
            when = (datetime.datetime.fromtimestamp(last).isoformat(" ", "seconds")
                    if last else "unknown")  # fmt: skip
            print(f"{prefix}add {new} plays to {shown_at} (last played {when})")
            plays += new
        imported.plays.append((file_id, count, last))
    taken: set[str] = set()
    for name, ids in library.playlists:
        entries: list[tuple[int | None, str]] = []
        for track_id in ids:
            found, record = library.tracks.get(track_id), matches.get(track_id)
            text = (found.path or " - ".join(x or "?" for x in (found.artist, found.title))
                    if found is not None else f"iTunes track {track_id}")  # fmt: skip
            entries.append((record.file_id if record is not None else None, text))
        stored = _unique(name, taken)
        imported.playlists[stored] = entries
        missing = sum(1 for file_id, _ in entries if file_id is None)
        print(f"{prefix}store playlist {stored!r}: {len(entries)} tracks"
              + (f" ({missing} not found, kept as text)" if missing else ""))  # fmt: skip
    if not args.dry_run:
        if client is not None:  # through the mount: with a shared catalog, there first
            if imported.plays:
                client.add_plays(list(imported.plays), "itunes")
            if imported.ratings:
                client.set_ratings(list(imported.ratings), "itunes")
            if imported.playlists:
                client.set_playlists(dict(imported.playlists), "itunes")
            imported.plays, imported.ratings, imported.playlists = [], [], {}
        apply_import(here.catalog_path, imported)
    _list_unmatched(unmatched)
    done = " (dry run: nothing changed)" if args.dry_run else ""
    print(f"itunes: {len(library.tracks)} tracks, {len(matches)} matched, {len(unmatched)} "
          f"not; {plays} plays {'to add' if args.dry_run else 'added'}, {ratings} ratings, "
          f"{len(imported.playlists)} playlists{done}")  # fmt: skip
    return EXIT_OK
