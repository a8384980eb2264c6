"""Behaviour cases of the mount's namespace, for any frontend (as rclone's vfs/vfstest).

One table of cases says what a user sees at paths of a small library: the
tree, the hidden virtual folders (``.search``, ``.collections``, the
``.prefetch`` mirror), cover files and tag overrides. Each case is a list of
checks run against a `Frontend`: the namespace in-process
(``packages/musicfs-core/tests/namespace/test_namespace.py``) runs all of
them, a real FUSE mount (``tests/e2e/test_namespace_mount.py``) the cases
marked ``mount``. Paths are relative to the mount's root ("" is the root).

`build_sample` writes the library: three FLAC tracks in two albums (real
ffmpeg encodes) and a JPEG beside the tracks of one of them.
"""

from __future__ import annotations

import errno
import io
import subprocess
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mutagen.flac import FLAC

ART = frozenset({"cover.jpg", "cover-medium.jpg", "cover-thumb.jpg"})
ACDC_ALBUM = "AC_DC/Back in Black (1980) [FLAC]"
BELLS = "01 - Hells Bells.flac"
THRILL = "02 - Shoot to Thrill.flac"
POST = "Björk/Post (1995) [FLAC]"
ARMY = "01 - Army of Me.flac"
COLLECTIONS = frozenset({"recently-added", "recently-played", "most-played"})

_TRACKS = {
    "acdc/bells.flac": {"artist": "AC/DC", "album": "Back in Black", "date": "1980",
                        "track": "1", "title": "Hells Bells"},
    "acdc/thrill.flac": {"artist": "AC/DC", "album": "Back in Black", "date": "1980",
                         "track": "2", "title": "Shoot to Thrill"},
    "bjork/army.flac": {"artist": "Björk", "album": "Post", "date": "1995",
                        "track": "1", "title": "Army of Me"},
}  # fmt: skip


def build_sample(root: Path) -> Path:
    """The sample library in *root* (made once; returned)."""
    for relpath, tags in _TRACKS.items():
        out = root / relpath
        out.parent.mkdir(parents=True, exist_ok=True)
        metadata = [arg for key, value in tags.items() for arg in ("-metadata", f"{key}={value}")]
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.5",
             *metadata, str(out)],
            check=True,
        )  # fmt: skip
    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(picture, "JPEG")
    (root / "acdc" / "cover.jpg").write_bytes(picture.getvalue())
    return root


class Frontend(Protocol):
    """What the checks do with a path; failures are OSErrors with an errno."""

    def kind(self, path: str) -> str:
        """ "dir", "file" or "link" (not following a link)."""

    def inode(self, path: str) -> int: ...

    def listdir(self, path: str) -> set[str]: ...

    def readlink(self, path: str) -> str: ...

    def read(self, path: str) -> bytes:
        """The whole content, following a link; its size as stat shows it must match."""

    def retitle(self, path: str, title: str) -> None:
        """Override the title tag of the track at *path*."""


@dataclass(frozen=True)
class Is:
    path: str
    kind: str


@dataclass(frozen=True)
class Lists:
    """*path* lists at least *names*, none of *lacks*; exactly *names* if *exactly*."""

    path: str
    names: AbstractSet[str] = frozenset()
    lacks: AbstractSet[str] = frozenset()
    exactly: bool = False


@dataclass(frozen=True)
class LinksTo:
    path: str
    target: str


@dataclass(frozen=True)
class Reads:
    """*path* (through a link, too) serves the bytes of *source* in the library."""

    path: str
    source: str


@dataclass(frozen=True)
class Fails:
    path: str
    errno: int


@dataclass(frozen=True)
class Retitled:
    """Overriding the title of the track at *path* moves it to *now* (same
    inode, the old name gone) and it then serves the new title."""

    path: str
    title: str
    now: str


Check = Is | Lists | LinksTo | Reads | Fails | Retitled


@dataclass(frozen=True)
class Case:
    id: str
    checks: tuple[Check, ...]
    mount: bool = False  # also run through a real mount


_THRILL_RESULT = ".search/thrill/AC_DC - Shoot to Thrill.flac"
_BELLS_MIRROR = f".prefetch/{ACDC_ALBUM}/{BELLS}"

CASES = (
    Case("tree", (
        Lists("", {"AC_DC", "Björk"}, exactly=True),
        Is(ACDC_ALBUM, "dir"),
        Lists(ACDC_ALBUM, {BELLS, THRILL}),
        Is(f"{ACDC_ALBUM}/{BELLS}", "file"),
        Reads(f"{ACDC_ALBUM}/{BELLS}", "acdc/bells.flac"),
        Reads(f"{POST}/{ARMY}", "bjork/army.flac"),
    ), mount=True),
    Case("virtual folders are hidden, yet there", (
        Lists("", lacks={".search", ".collections", ".prefetch"}),
        Is(".search", "dir"),
        Is(".collections", "dir"),
        Is(".prefetch", "dir"),
    ), mount=True),
    Case("a search lists links into the tree", (
        Lists(".search/thrill", {"AC_DC - Shoot to Thrill.flac"}, exactly=True),
        Is(_THRILL_RESULT, "link"),
        LinksTo(_THRILL_RESULT, f"../../{ACDC_ALBUM}/{THRILL}"),
        Reads(_THRILL_RESULT, "acdc/thrill.flac"),
        Lists(".search/no such words anywhere", exactly=True),
        Fails(".search/thrill/nope.flac", errno.ENOENT),
    ), mount=True),
    Case("collections", (
        Lists(".collections", COLLECTIONS, exactly=True),
        Lists(".collections/recently-added", {
            "AC_DC - Hells Bells.flac", "AC_DC - Shoot to Thrill.flac", "Björk - Army of Me.flac",
        }, exactly=True),
        Reads(".collections/recently-added/Björk - Army of Me.flac", "bjork/army.flac"),
        Fails(".collections/no such collection", errno.ENOENT),
    ), mount=True),
    Case("the prefetch mirror", (
        Lists(".prefetch", {"AC_DC", "Björk"}, exactly=True),
        Is(f".prefetch/{ACDC_ALBUM}", "dir"),
        Lists(f".prefetch/{ACDC_ALBUM}", {BELLS, THRILL}, exactly=True),
        Is(_BELLS_MIRROR, "link"),
        LinksTo(_BELLS_MIRROR, f"../../../{ACDC_ALBUM}/{BELLS}"),
        Reads(_BELLS_MIRROR, "acdc/bells.flac"),
        Fails(f".prefetch/{ACDC_ALBUM}/nope.flac", errno.ENOENT),
    ), mount=True),
    Case("cover files of a folder with art", (
        Reads(f"{ACDC_ALBUM}/cover.jpg", "acdc/cover.jpg"),  # an RGB JPEG is served as it is
        Is(f"{ACDC_ALBUM}/cover-thumb.jpg", "file"),
        Lists(ACDC_ALBUM, ART | {BELLS, THRILL}, exactly=True),
    ), mount=True),
    Case("no cover files without art, nor in folders of folders", (
        Fails(f"{POST}/cover.jpg", errno.ENOENT),
        Lists(POST, {ARMY}, exactly=True),
        Fails("AC_DC/cover.jpg", errno.ENOENT),
        Lists("AC_DC", {"Back in Black (1980) [FLAC]"}, exactly=True),
    ), mount=True),
    Case("missing names", (
        Fails("nope", errno.ENOENT),
        Fails(f"{ACDC_ALBUM}/nope.flac", errno.ENOENT),
        Fails(".collections/recently-added/nope.flac", errno.ENOENT),
    )),
    Case("a title override renames the track, same inode, and is served", (
        Retitled(f"{ACDC_ALBUM}/{BELLS}", "Hells Bells (Live)",
                 f"{ACDC_ALBUM}/01 - Hells Bells (Live).flac"),
        Lists(".search/live", {"AC_DC - Hells Bells (Live).flac"}, exactly=True),
        LinksTo(f".prefetch/{ACDC_ALBUM}/01 - Hells Bells (Live).flac",
                f"../../../{ACDC_ALBUM}/01 - Hells Bells (Live).flac"),
    )),
)  # fmt: skip


def title_of(data: bytes) -> str | None:
    """The FLAC title tag of a file's bytes."""
    audio = FLAC(io.BytesIO(data))
    titles = audio.get("title")
    return titles[0] if titles else None


def run_case(case: Case, frontend: Frontend, library: Path) -> None:
    """Run *case*'s checks in order; an AssertionError names the check that failed."""
    for check in case.checks:
        try:
            _run(check, frontend, library)
        except AssertionError as exc:
            raise AssertionError(f"{case.id}: {check}: {exc}") from None
        except OSError as exc:
            raise AssertionError(f"{case.id}: {check}: {exc!r}") from None


def _run(check: Check, fe: Frontend, library: Path) -> None:
    match check:
        case Is(path, kind):
            assert fe.kind(path) == kind
        case Lists(path, names, lacks, exactly):
            listed = fe.listdir(path)
            if exactly:
                assert listed == names, f"listed {sorted(listed)}"
            assert names <= listed, f"missing {sorted(names - listed)}"
            assert not lacks & listed, f"lists {sorted(lacks & listed)}"
        case LinksTo(path, target):
            assert fe.readlink(path) == target
        case Reads(path, source):
            assert fe.read(path) == (library / source).read_bytes()
        case Fails(path, code):
            assert _errno_of(fe.kind, path) == code
        case Retitled(path, title, now):
            inode = fe.inode(path)
            fe.retitle(path, title)
            assert fe.inode(now) == inode, "a new inode"
            assert title_of(fe.read(now)) == title
            assert _errno_of(fe.kind, path) == errno.ENOENT, "the old name stays"


def _errno_of(call: Callable[[str], object], path: str) -> int | None:
    """The errno *call(path)* fails with (None: it does not)."""
    try:
        call(path)
    except OSError as exc:
        return exc.errno
    return None
