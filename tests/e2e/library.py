"""The test music library: what tags each file gets, how it is encoded, where it must appear.

`LIBRARY` lists every track of the end-to-end library; `build_library` encodes
them with the real encoders (flac, lame, oggenc, opusenc, ffmpeg) into two
origin folders. `render_path` is the test's own statement of the template rules
of the product documentation (fallbacks, zero padding, sanitising) — it is the
oracle the mounted tree is compared with, written without looking at the
product's template code.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import string
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mutagen.flac import FLAC

from tests.e2e.helpers import Mount, sha256_of

DEFAULT_TEMPLATE = "$albumartist/$album ($year) [$format_upper]/$track - $title.$format"

#: Command-line tools `build_library` needs.
ENCODERS = ("ffmpeg", "flac", "lame", "oggenc", "opusenc")

#: Folder names of the two origins.
ORIGIN_A, ORIGIN_B = "lib_a", "lib_b"


@dataclass(frozen=True)
class TrackSpec:
    """One file of the test library and the tags written into it.

    *tags* uses neutral keys: title, artist, album, albumartist, year, track,
    disc, genre, compilation ("1").
    """

    origin: str
    relpath: str
    tags: Mapping[str, str] = field(default_factory=dict)
    freq: int = 440
    seconds: float = 2.0

    @property
    def format(self) -> str:
        return self.relpath.rpartition(".")[2].lower()


def _album(artist: str, album: str, year: str, genre: str, **more: str) -> dict[str, str]:
    return {"artist": artist, "album": album, "year": year, "genre": genre, **more}


_HOMOGENIC = _album("Björk", "Homogenic", "1997", "Electronic")
_TWO_SIDES = _album("The Doubles", "Two Sides", "2010", "Rock")
_SUMMER = {"album": "Summer Hits", "year": "2020", "genre": "Pop", "compilation": "1"}
_TWIN = _album("Twin", "Reflections", "2001", "Pop", albumartist="Mirror", track="7", title="Echo")

#: Every track of the library. Each gets a distinct tone, so no two files are equal.
LIBRARY: tuple[TrackSpec, ...] = (
    # unicode: Latin-1, Cyrillic, CJK, in tags and in origin file names
    TrackSpec(ORIGIN_A, "Björk/Homogenic/01 Jóga.flac",
              {**_HOMOGENIC, "title": "Jóga", "track": "1"}),
    TrackSpec(ORIGIN_A, "Björk/Homogenic/02 Unravel.flac",
              {**_HOMOGENIC, "title": "Unravel", "track": "2"}),
    TrackSpec(ORIGIN_A, "Sigur Rós/svefn-g-englar.mp3",
              _album("Sigur Rós", "Ágætis byrjun", "1999", "Post-Rock",
                     title="Svefn-g-englar", track="2")),
    TrackSpec(ORIGIN_A, "Мумий Тролль/Морская/03.ogg",
              _album("Мумий Тролль", "Морская", "1997", "Rock",
                     title="Владивосток 2000", track="3")),
    TrackSpec(ORIGIN_A, "jp/光.opus",
              _album("宇多田ヒカル", "ディープ・リバー", "2002", "J-Pop", title="光", track="4")),
    # album artist differs from the track artist: the default template uses the album artist
    TrackSpec(ORIGIN_A, "m4a/near light.m4a",
              _album("Ólafur Arnalds", "Living Room Songs", "2011", "Ambient",
                     albumartist="Arnalds Collective", title="Near Light", track="5")),
    # no tags at all: every fallback, title from the file name
    TrackSpec(ORIGIN_A, "untagged/no tags at all.flac", {}),
    # two discs whose track numbers overlap
    TrackSpec(ORIGIN_A, "Two Sides/CD1/01.flac",
              {**_TWO_SIDES, "disc": "1", "track": "1", "title": "Overture"}),
    TrackSpec(ORIGIN_A, "Two Sides/CD1/02.flac",
              {**_TWO_SIDES, "disc": "1", "track": "2", "title": "Theme"}),
    TrackSpec(ORIGIN_A, "Two Sides/CD2/01.flac",
              {**_TWO_SIDES, "disc": "2", "track": "1", "title": "Reprise"}),
    TrackSpec(ORIGIN_A, "Two Sides/CD2/02.flac",
              {**_TWO_SIDES, "disc": "2", "track": "2", "title": "Finale"}),
    # a compilation: several artists, no album artist
    TrackSpec(ORIGIN_A, "comp/01.mp3",
              {**_SUMMER, "artist": "Artist One", "title": "First Song", "track": "1"}),
    TrackSpec(ORIGIN_A, "comp/02.mp3",
              {**_SUMMER, "artist": "Zweiter Künstler", "title": "Zweites Lied", "track": "2"}),
    # '/' in tags, and an album name with a leading dot
    TrackSpec(ORIGIN_A, "odd/either-or.ogg",
              _album("AC/DC", "...And Justice", "1988", "Metal", title="Either/Or", track="9")),
    # two different files that map to the same virtual path, one per origin
    TrackSpec(ORIGIN_A, "twins/echo.flac", _TWIN),
    TrackSpec(ORIGIN_B, "elsewhere/echo.flac", _TWIN),
    # names that are only dots: never '.', '..' or a hidden entry
    TrackSpec(ORIGIN_B, "dots/dots.flac",
              _album("..", ".", "2000", "Noise", title=".hidden", track="1")),
    # the second origin adds an album to an artist of the first
    TrackSpec(ORIGIN_B, "Björk/Post/hyperballad.mp3",
              _album("Björk", "Post", "1995", "Electronic", title="Hyperballad", track="4")),
)  # fmt: skip


# -- the template oracle ---------------------------------------------------------


def template_values(spec: TrackSpec) -> dict[str, str]:
    """The documented value of every template variable for *spec*, fallbacks applied."""
    tags = spec.tags
    stem = Path(spec.relpath).name.rpartition(".")[0]
    artist = tags.get("artist") or tags.get("albumartist") or "Unknown Artist"
    compilation_name = "Various Artists" if tags.get("compilation") == "1" else None
    albumartist = (
        tags.get("albumartist") or compilation_name or tags.get("artist") or "Unknown Artist"
    )
    return {
        "artist": artist,
        "albumartist": albumartist,
        "album": tags.get("album") or "Unknown Album",
        "title": tags.get("title") or stem,
        "track": tags.get("track", "0").zfill(2),
        "disc": tags.get("disc", "1"),
        "year": tags.get("year", "0000"),
        # Not in the product docs' fallback list; pinned here as what users see.
        "genre": tags.get("genre") or "Unknown Genre",
        "format": spec.format,
        "format_upper": spec.format.upper(),
        "composer": tags.get("composer") or "Unknown Composer",
    }


def sanitize(component: str) -> str:
    """'/' and NUL become '_', and so does a leading '.'."""
    component = component.replace("/", "_").replace("\0", "_")
    return "_" + component[1:] if component.startswith(".") else component


def render_path(spec: TrackSpec, template: str = DEFAULT_TEMPLATE) -> str:
    """The virtual path of *spec* before collision renaming."""
    values = template_values(spec)
    return "/".join(
        sanitize(string.Template(part).substitute(values)) for part in template.split("/")
    )


def with_counter(path: str, n: int) -> str:
    """The *n*-th distinct name for a colliding path: ``07 - Echo (2).flac``."""
    stem, dot, ext = path.rpartition(".")
    return f"{stem} ({n}).{ext}" if dot else f"{path} ({n})"


# -- the built library -------------------------------------------------------------


@dataclass(frozen=True)
class BuiltTrack:
    spec: TrackSpec
    path: Path  # the encoded file in its origin
    sha256: str


@dataclass(frozen=True)
class Library:
    """The encoded library: its origin folders and every track in them."""

    root: Path
    tracks: tuple[BuiltTrack, ...]

    @property
    def origins(self) -> list[Path]:
        return [self.root / ORIGIN_A, self.root / ORIGIN_B]

    def groups(self, template: str = DEFAULT_TEMPLATE) -> dict[str, list[BuiltTrack]]:
        """Tracks by the virtual path the template gives them (before renaming)."""
        by_path: dict[str, list[BuiltTrack]] = defaultdict(list)
        for track in self.tracks:
            by_path[render_path(track.spec, template)].append(track)
        return dict(by_path)

    def expected_files(self, template: str = DEFAULT_TEMPLATE) -> set[str]:
        """Every virtual file path the mount must show: colliding ones get `` (2)``, ..."""
        expected: set[str] = set()
        for path, tracks in self.groups(template).items():
            expected.add(path)
            expected.update(with_counter(path, n) for n in range(2, len(tracks) + 1))
        return expected

    def find(self, relpath: str) -> BuiltTrack:
        return next(t for t in self.tracks if t.spec.relpath == relpath)

    def origin_of_virtual(self, mount_root: Path) -> dict[str, BuiltTrack]:
        """Map every expected virtual path to the origin track it must serve.

        Unique paths map directly. Which file of a colliding group gets the plain
        name is not specified, so those are matched by content — but each file of
        the group must be served exactly once.
        """
        mapping: dict[str, BuiltTrack] = {}
        for path, tracks in self.groups().items():
            if len(tracks) == 1:
                mapping[path] = tracks[0]
                continue
            names = [path] + [with_counter(path, n) for n in range(2, len(tracks) + 1)]
            by_hash = {t.sha256: t for t in tracks}
            for name in names:
                digest = sha256_of(mount_root / name)
                assert digest in by_hash, f"{name} serves none of the files that collide there"
                mapping[name] = by_hash.pop(digest)
        return mapping


def retag_flac(path: Path, **tags: str) -> None:
    """Set Vorbis comments (``title="x"`` sets TITLE) of a FLAC file in place.

    The file's mtime is then moved 2 s forward, so that a rescan sees the change
    whatever the timestamp resolution of the filesystem.
    """
    before = path.stat().st_mtime_ns
    audio = FLAC(path)
    for key, value in tags.items():
        audio[key.upper()] = value
    audio.save()
    bumped = before + 2_000_000_000
    os.utime(path, ns=(bumped, bumped))


def missing_encoders() -> list[str]:
    return [tool for tool in ENCODERS if shutil.which(tool) is None]


def _run(cmd: Sequence[str]) -> None:
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({result.returncode}): {result.stderr.strip()}")


def _source_wav(spec: TrackSpec, out: Path) -> None:
    """A stereo 44.1 kHz sine tone, bit-exact WAV (no LIST chunk for flac to warn about)."""
    _run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
          "-i", f"sine=frequency={spec.freq}:duration={spec.seconds}",
          "-ar", "44100", "-ac", "2", "-c:a", "pcm_s16le",
          "-fflags", "+bitexact", "-flags:a", "+bitexact", str(out)])  # fmt: skip


_VORBIS_NAMES = {
    "title": "TITLE", "artist": "ARTIST", "album": "ALBUM", "albumartist": "ALBUMARTIST",
    "year": "DATE", "track": "TRACKNUMBER", "disc": "DISCNUMBER", "genre": "GENRE",
    "compilation": "COMPILATION",
}  # fmt: skip


def _encode_flac(tags: Mapping[str, str], wav: Path, out: Path) -> None:
    args = [f"--tag={_VORBIS_NAMES[k]}={v}" for k, v in tags.items()]
    _run(["flac", "--silent", "--force", *args, "-o", str(out), str(wav)])


def _encode_mp3(tags: Mapping[str, str], wav: Path, out: Path) -> None:
    """lame with an ID3v2 tag only (UTF-16, so any script survives)."""
    flags = {"title": "--tt", "artist": "--ta", "album": "--tl", "year": "--ty",
             "track": "--tn", "genre": "--tg"}  # fmt: skip
    frames = {"albumartist": "TPE2", "disc": "TPOS", "compilation": "TCMP"}
    args: list[str] = []
    for key, value in tags.items():
        args += [flags[key], value] if key in flags else ["--tv", f"{frames[key]}={value}"]
    _run(["lame", "--quiet", "--id3v2-only", "--id3v2-utf16", *args, str(wav), str(out)])


def _encode_ogg(tags: Mapping[str, str], wav: Path, out: Path) -> None:
    flags = {"title": "-t", "artist": "-a", "album": "-l", "year": "-d", "track": "-N",
             "genre": "-G"}  # fmt: skip
    args: list[str] = []
    for key, value in tags.items():
        args += [flags[key], value] if key in flags else ["-c", f"{_VORBIS_NAMES[key]}={value}"]
    _run(["oggenc", "-Q", *args, "-o", str(out), str(wav)])


def _encode_opus(tags: Mapping[str, str], wav: Path, out: Path) -> None:
    flags = {"title": "--title", "artist": "--artist", "album": "--album", "year": "--date",
             "track": "--tracknumber", "genre": "--genre"}  # fmt: skip
    args: list[str] = []
    for key, value in tags.items():
        args += (
            [flags[key], value] if key in flags else ["--comment", f"{_VORBIS_NAMES[key]}={value}"]
        )
    _run(["opusenc", "--quiet", *args, str(wav), str(out)])


def _encode_m4a(tags: Mapping[str, str], wav: Path, out: Path) -> None:
    names = {"title": "title", "artist": "artist", "album": "album",
             "albumartist": "album_artist", "year": "date", "track": "track", "disc": "disc",
             "genre": "genre", "compilation": "compilation"}  # fmt: skip
    args: list[str] = []
    for key, value in tags.items():
        args += ["-metadata", f"{names[key]}={value}"]
    _run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", "-b:a", "64k",
          *args, str(out)])  # fmt: skip


_ENCODERS = {
    "flac": _encode_flac,
    "mp3": _encode_mp3,
    "ogg": _encode_ogg,
    "opus": _encode_opus,
    "m4a": _encode_m4a,
}


def encode(spec: TrackSpec, out: Path, wav: Path) -> None:
    """Encode *spec* (tone and tags) to *out*, going through the source WAV *wav*."""
    out.parent.mkdir(parents=True, exist_ok=True)
    wav.parent.mkdir(parents=True, exist_ok=True)
    _source_wav(spec, wav)
    try:
        _ENCODERS[spec.format](spec.tags, wav, out)
    finally:
        wav.unlink(missing_ok=True)


def build_library(root: Path, specs: Iterable[TrackSpec] = LIBRARY) -> Library:
    """Encode every spec under ``root/<origin>/<relpath>`` (in parallel) and return the result.

    Each track gets its own tone (200 Hz + 37 Hz per index), so no two files are equal.
    """
    specs = [replace(s, freq=200 + 37 * i) for i, s in enumerate(specs)]
    scratch = root / "scratch"
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        jobs = [
            pool.submit(encode, s, root / s.origin / s.relpath, scratch / f"{i}.wav")
            for i, s in enumerate(specs)
        ]
        for job in jobs:
            job.result()
    shutil.rmtree(scratch, ignore_errors=True)
    built = tuple(
        BuiltTrack(s, root / s.origin / s.relpath, sha256_of(root / s.origin / s.relpath))
        for s in specs
    )
    return Library(root, built)


# -- building origins from the library, checking what a mount serves --------


def make_origin(library: Library, dest: Path, relpaths: Iterable[str]) -> dict[str, TrackSpec]:
    """Copy library tracks into a fresh origin folder *dest*; return their specs by relpath."""
    specs = {}
    for relpath in relpaths:
        track = library.find(relpath)
        target = dest / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(track.path, target)
        specs[relpath] = track.spec
    return specs


def expected(specs: Iterable[TrackSpec]) -> set[str]:
    return {render_path(spec) for spec in specs}


def assert_serves(mount: Mount, virtual: str, origin_file: Path) -> None:
    """The mount serves *origin_file*'s current bytes, size and mtime at *virtual*."""
    path = mount.mountpoint / virtual
    st, want = os.stat(path), origin_file.stat()
    assert (st.st_size, st.st_mtime_ns) == (want.st_size, want.st_mtime_ns), virtual
    assert sha256_of(path) == sha256_of(origin_file), f"{virtual}: stale or wrong bytes"
