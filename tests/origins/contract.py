"""What every origin must do, checked the same way for each (the origin contract).

`check_contract` takes an origin whose root holds exactly *files* (relpath ->
bytes) and checks listing, stat, ranged reads and the errors of the interface
in `musicfs.core.origins.base`.
"""

from __future__ import annotations

import io
import posixpath

import mutagen
import pytest

from musicfs.core.model import AUDIO_EXTENSIONS
from musicfs.core.origins import Origin, RangeReader


def walk(origin: Origin) -> dict[str, int]:
    """relpath -> size of every listed file, walking from the root."""
    found: dict[str, int] = {}
    stack = [""]
    while stack:
        reldir = stack.pop()
        listing = origin.list_dir(reldir, AUDIO_EXTENSIONS)
        for name, st in listing.files:
            found[posixpath.join(reldir, name) if reldir else name] = st.size
        stack.extend(posixpath.join(reldir, d) if reldir else d for d in listing.subdirs)
    return found


def check_contract(origin: Origin, files: dict[str, bytes]) -> None:
    origin.check()
    assert origin.reachable()
    audio = {p: d for p, d in files.items() if p.rpartition(".")[2].lower() in AUDIO_EXTENSIONS
             and not any(part.startswith(".") for part in p.split("/"))}  # fmt: skip
    assert walk(origin) == {p: len(d) for p, d in audio.items()}
    for relpath, data in audio.items():
        st = origin.stat(relpath)
        assert st.size == len(data)
        assert st.mtime_ns > 0
        with origin.open(relpath) as opened:
            assert opened.size == len(data)
            assert opened.read(0, len(data) + 100) == data  # short only at the end
            middle = len(data) // 2
            assert opened.read(middle, 1000) == data[middle : middle + 1000]
            assert opened.read(len(data), 10) == b""
    # [scan] include_hidden: names starting with a dot are listed too, never the
    # AppleDouble files (._*) macOS leaves beside each file.
    origin.include_hidden = True
    try:
        hidden = {p: d for p, d in files.items() if p.rpartition(".")[2].lower() in AUDIO_EXTENSIONS
                  and not any(part.startswith("._") for part in p.split("/"))}  # fmt: skip
        assert walk(origin) == {p: len(d) for p, d in hidden.items()}
    finally:
        origin.include_hidden = False
    with pytest.raises(FileNotFoundError):
        origin.stat("no/such/file.flac")
    with pytest.raises(FileNotFoundError):
        origin.open("no/such/file.flac")
    with pytest.raises(FileNotFoundError):
        origin.list_dir("no/such/folder", AUDIO_EXTENSIONS)
    assert "secret" not in origin.location.lower()


def check_tags_readable(origin: Origin, relpath: str) -> None:
    """mutagen reads the file's tags through ranged reads (as the scanner will)."""
    with origin.open(relpath) as opened:
        audio = mutagen.File(io.BufferedReader(RangeReader(opened), 64 * 1024))
    assert audio is not None
    assert audio.info.length > 0
