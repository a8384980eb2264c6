"""``musicfs export`` and ``musicfs import musicfs FILE``: what a user did to a
library (tag overrides, play counts, last played, pins for offline, ratings)
carried to another machine. ``import beets`` and ``import itunes`` are in
`musicfs.cli.importers`.

The export reads the mount's catalog read-only (no RPC). Each track is keyed by
its origin id + relpath, by the identity of its audio
(`musicfs.core.tags.identity`) and by its own tags (artist, album, title, track
number), so that `match_entries` can find it again where the folders differ.
The import sets overrides through the running mount (``SetTags``, as ``musicfs
tag set`` does, so the tree and the kernel's caches follow) and adds the play
counts to the catalog's access log: counts add up, last played becomes the
later of the two. Pinned tracks are pinned there too, as one pin named after
the file (``musicfs cache pins`` shows it; ``cache unpin`` takes its tracks'
paths), within that mount's ``[cache] pin_limit``. Ratings (0-100) are set.

JSON: ``{"musicfs_export": 1, "tracks": [{origin, relpath, audio_id, artist,
album, title, track, overrides: {field: value or null}, plays, last_played,
pinned, rating}]}`` (``audio_id``, ``pinned``, ``rating`` may be missing: older
exports).
CSV: one row per track with the same columns; ``overrides`` holds the JSON object.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicfs.cli.common import EXIT_OK, EXIT_USAGE, CLIError, daemon_client

FORMAT_VERSION = 1
_KEYS = ("artist", "album", "title", "track")
_CSV_NEEDED = ("origin", "relpath", *_KEYS, "plays", "last_played", "overrides")
CSV_COLUMNS = (*_CSV_NEEDED, "audio_id", "pinned", "rating")  # optional when read


@dataclass(frozen=True)
class Entry:
    """One track of an export: where it was, what it is, what the user did to it."""

    origin: str
    relpath: str
    artist: str | None
    album: str | None
    title: str | None
    track: int | None
    overrides: dict[str, str | None] = field(default_factory=dict)
    plays: int = 0
    last_played: float | None = None
    audio_id: str | None = None  # the same audio has it on every machine
    pinned: bool = False
    rating: int | None = None

    def tag_key(self) -> tuple[str, str, str, int | None] | None:
        """What identifies the track by its tags (None: too few tags to tell)."""
        if not self.title:
            return None
        return (_fold(self.artist), _fold(self.album), _fold(self.title), self.track)

    def label(self) -> str:
        tags = " - ".join(x or "?" for x in (self.artist, self.album, self.title))
        return f"{self.origin}:{self.relpath} ({tags})"

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "relpath": self.relpath,
            "artist": self.artist,
            "album": self.album,
            "title": self.title,
            "track": self.track,
            "overrides": self.overrides,
            "plays": self.plays,
            "last_played": self.last_played,
            "audio_id": self.audio_id,
            "pinned": self.pinned,
            "rating": self.rating,
        }


def _fold(text: str | None) -> str:
    return (text or "").strip().casefold()


def match_entries(
    entries: Sequence[Entry], candidates: Sequence[Entry]
) -> list[tuple[Entry, Entry | None]]:
    """Each exported entry with the candidate (a track here) it is: the one at the
    same origin + relpath, else the only one with the same audio identity, else
    the only one with the same artist, album, title and track number; None when
    nothing (or more than one) matches."""
    by_place = {(c.origin, c.relpath): c for c in candidates}
    by_audio: dict[str, list[Entry]] = {}
    for candidate in candidates:
        if candidate.audio_id:
            by_audio.setdefault(candidate.audio_id, []).append(candidate)
    by_tags: dict[tuple[str, str, str, int | None], list[Entry]] = {}
    for candidate in candidates:
        key = candidate.tag_key()
        if key is not None:
            by_tags.setdefault(key, []).append(candidate)
    matched: list[tuple[Entry, Entry | None]] = []
    for entry in entries:
        found = by_place.get((entry.origin, entry.relpath))
        if found is None and entry.audio_id:
            same_audio = by_audio.get(entry.audio_id, [])
            found = same_audio[0] if len(same_audio) == 1 else None
        if found is None:
            key = entry.tag_key()
            same = by_tags.get(key, []) if key is not None else []
            found = same[0] if len(same) == 1 else None
        matched.append((entry, found))
    return matched


# -- reading an export ----------------------------------------------------------------


def _entry(data: Any, where: str) -> Entry:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object")
    for key in ("origin", "relpath"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"{where}: {key!r} must be a string")
    for key in ("artist", "album", "title"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValueError(f"{where}: {key!r} must be a string or null")
    track = data.get("track")
    if track is not None and (isinstance(track, bool) or not isinstance(track, int)):
        raise ValueError(f"{where}: 'track' must be a whole number or null")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in overrides.items()
    ):
        raise ValueError(f"{where}: 'overrides' must map field names to text or null")
    plays = data.get("plays") or 0
    if isinstance(plays, bool) or not isinstance(plays, int) or plays < 0:
        raise ValueError(f"{where}: 'plays' must be a whole number >= 0")
    last = data.get("last_played")
    if last is not None and (isinstance(last, bool) or not isinstance(last, (int, float))):
        raise ValueError(f"{where}: 'last_played' must be seconds since 1970 or null")
    audio_id = data.get("audio_id") or None
    if audio_id is not None and not isinstance(audio_id, str):
        raise ValueError(f"{where}: 'audio_id' must be a string or null")
    pinned = data.get("pinned") or False
    if not isinstance(pinned, bool):
        raise ValueError(f"{where}: 'pinned' must be true or false")
    rating = data.get("rating")
    if rating is not None and (
        isinstance(rating, bool) or not isinstance(rating, int) or not 0 <= rating <= 100
    ):
        raise ValueError(f"{where}: 'rating' must be a whole number 0-100 or null")
    return Entry(data["origin"], data["relpath"], data.get("artist"), data.get("album"),
                 data.get("title"), track, dict(overrides), plays,
                 None if last is None else float(last), audio_id, pinned, rating)  # fmt: skip


def parse_export(text: str) -> list[Entry]:
    """The entries of an export (JSON or CSV); ValueError says what is wrong."""
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
        if not isinstance(document, dict) or "musicfs_export" not in document:
            raise ValueError("not a MusicFS export (no 'musicfs_export' key)")
        if document["musicfs_export"] != FORMAT_VERSION:
            raise ValueError(
                f"export format {document['musicfs_export']!r} is not known "
                f"(this MusicFS reads {FORMAT_VERSION})"
            )
        tracks = document.get("tracks")
        if not isinstance(tracks, list):
            raise ValueError("'tracks' must be a list")
        return [_entry(item, f"track {n}") for n, item in enumerate(tracks, 1)]
    reader = csv.DictReader(io.StringIO(text))
    if not text.strip() or set(_CSV_NEEDED) - set(reader.fieldnames or ()):
        raise ValueError(
            f"not a MusicFS export (JSON, or CSV with columns {', '.join(_CSV_NEEDED)})"
        )
    entries = []
    for n, row in enumerate(reader, 2):
        try:
            data: dict[str, Any] = {k: row[k] or None for k in ("origin", "relpath", *_KEYS[:3])}
            data["origin"], data["relpath"] = row["origin"], row["relpath"]
            data["track"] = int(row["track"]) if row["track"] else None
            data["plays"] = int(row["plays"] or 0)
            data["last_played"] = float(row["last_played"]) if row["last_played"] else None
            data["overrides"] = json.loads(row["overrides"] or "{}")
            data["audio_id"] = row.get("audio_id") or None
            data["pinned"] = (row.get("pinned") or "").lower() in ("true", "1")
            data["rating"] = int(row["rating"]) if row.get("rating") else None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"line {n}: {exc}") from None
        entries.append(_entry(data, f"line {n}"))
    return entries


# -- the commands ---------------------------------------------------------------------


def add_parser(sub: Any, config_args: Any) -> None:
    export = sub.add_parser(
        "export",
        help="write overrides, play counts, pins and ratings, to import on another machine",
        description="Write what was done to the library of a mount (tag overrides, play "
        "counts, last played, pins for offline, ratings) with each track's origin path "
        "and tags.",
    )
    export.add_argument("--format", choices=("json", "csv"), default="json",
                        help="json (default) or csv (one row per track)")  # fmt: skip
    export.add_argument("-o", "--output", type=Path, help="write here (default: stdout)")
    export.add_argument("--cache-dir", type=Path,
                        help="read this cache dir's catalog (no mount needed)")  # fmt: skip
    config_args(export)
    imp = sub.add_parser("import", help="bring overrides and plays from another program")
    sources = imp.add_subparsers(dest="import_source", required=True, metavar="SOURCE")
    own = sources.add_parser(
        "musicfs",
        help="a file written by musicfs export",
        description="Restore a musicfs export: tracks are matched by origin and path, else "
        "by artist, album, title and track number. Overrides and ratings are set; play "
        "counts are added (last played becomes the later of the two); pinned tracks are "
        "pinned, as one pin named after FILE.",
    )
    own.add_argument("file", type=Path, help="the export (JSON or CSV)")
    own.add_argument("--dry-run", action="store_true", help="print what would change")
    config_args(own)
    from musicfs.cli import importers

    importers.add_parsers(sources, config_args)


def _catalog_path(client: Any) -> Path:
    return Path(client.status()["cache_dir"]) / "catalog.sqlite3"


def _entries_here(catalog_path: Path, only_used: bool) -> list[tuple[Any, Entry]]:
    """(record, entry) of the tracks of a catalog: those with overrides, plays or
    a rating, or all of them."""
    from musicfs.core.mount.facade import library_records

    return [
        (
            r,
            Entry(
                r.origin,
                r.relpath,
                r.artist,
                r.album,
                r.title,
                r.track,
                r.overrides,
                r.plays,
                r.last_played,
                r.audio_id,
                r.pinned,
                r.rating,
            ),
        )
        for r in library_records(catalog_path, only_used)
    ]


def cmd_export(args: argparse.Namespace) -> int:
    if args.cache_dir is not None:  # offline, like `musicfs cache backup`
        path = args.cache_dir / "catalog.sqlite3"
        if not path.is_file():
            raise CLIError(f"no MusicFS catalog in {args.cache_dir} (never mounted with it?)")
    else:
        with daemon_client(args) as client:
            path = _catalog_path(client)
    entries = [entry for _, entry in _entries_here(path, only_used=True)]
    if args.format == "json":
        text = json.dumps({"musicfs_export": FORMAT_VERSION,
                           "tracks": [e.to_json() for e in entries]},
                          indent=2, ensure_ascii=False) + "\n"  # fmt: skip
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_COLUMNS)
        writer.writeheader()
        for entry in entries:
            row = entry.to_json()
            row["overrides"] = json.dumps(entry.overrides, ensure_ascii=False)
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
        text = out.getvalue()
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CLIError(f"cannot write {args.output}: {exc.strerror}") from None
        print(f"{len(entries)} tracks written to {args.output}", file=sys.stderr)
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    if args.import_source != "musicfs":
        from musicfs.cli import importers

        return importers.cmd_import(args)

    try:
        entries = parse_export(args.file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CLIError(f"cannot read {args.file}: {exc.strerror}", EXIT_USAGE) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CLIError(f"{args.file}: {exc}", EXIT_USAGE) from None
    prefix = "would " if args.dry_run else ""
    matched = unmatched = 0
    plays: list[tuple[int, int, float]] = []
    pins: list[str] = []
    ratings: list[tuple[int, int | None]] = []
    with daemon_client(args) as client:
        path = _catalog_path(client)
        here = _entries_here(path, only_used=False)
        records = {id(entry): record for record, entry in here}
        for entry, found in match_entries(entries, [e for _, e in here]):
            if found is None:
                unmatched += 1
                print(f"no match: {entry.label()}")
                continue
            matched += 1
            record = records[id(found)]
            changed = {k: v for k, v in entry.overrides.items()
                       if found.overrides.get(k, "\0") != v}  # fmt: skip
            shown_at = record.path or f"{record.origin}:{record.relpath}"
            if changed and not record.path:
                print(f"not in the tree, overrides skipped: {shown_at}")
            elif changed:
                shown = ", ".join(f"{k}={v or '(removed)'}" for k, v in sorted(changed.items()))
                print(f"{prefix}set {shown_at}: {shown}")
                if not args.dry_run:  # as `musicfs tag set`: the tree and kernel caches follow
                    client.set_tags(record.path, {k: v or "" for k, v in changed.items()})
            if entry.plays:
                print(f"{prefix}add {entry.plays} plays to {shown_at}")
                plays.append((record.file_id, entry.plays, entry.last_played or 0.0))
            if entry.pinned and not found.pinned:
                if record.path:
                    print(f"{prefix}pin {shown_at}")
                    pins.append(record.path)
                else:
                    print(f"not in the tree, not pinned: {shown_at}")
            if entry.rating is not None and entry.rating != found.rating:
                print(f"{prefix}rate {shown_at}: {entry.rating}/100")
                ratings.append((record.file_id, entry.rating))
    if (plays or ratings) and not args.dry_run:
        # Through the mount: a shared catalog takes them first.
        with daemon_client(args) as client:
            if plays:
                client.add_plays(plays)
            if ratings:
                client.set_ratings(ratings, "musicfs")
    if pins and not args.dry_run:  # all or nothing, within the pin limit
        from musicfs.cli.progress import last

        with daemon_client(args) as client:
            if not last(client.pin(pins, import_label=args.file.name)).get("finished"):
                raise CLIError("the daemon stopped before the tracks were pinned; run it again")
    dry = " (dry run: nothing changed)" if args.dry_run else ""
    print(f"{matched} tracks matched, {unmatched} not{dry}")
    return EXIT_OK
