"""Real players and probes work on files in the mount (SPEC NFR-12).

Proves, for one file of each format (FLAC, MP3, Ogg Vorbis, Opus, M4A):
ffprobe reads the tags we wrote, through the mount (Ogg/Opus tags are stream
tags, FLAC/MP3/M4A ones format tags — see ENVIRONMENT.md); mpv plays it to the
end without an error; mpv starts playback at a seek position (``--start=1``);
and ffmpeg seeking into the file through the mount decodes exactly the same
samples as seeking into the origin file.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import Mount, require_tools
from tests.e2e.library import Library, render_path

pytestmark = [pytest.mark.mount, pytest.mark.media]

#: One library file per format (origin relpath).
SAMPLES = {
    "flac": "Björk/Homogenic/01 Jóga.flac",
    "mp3": "Sigur Rós/svefn-g-englar.mp3",
    "ogg": "Мумий Тролль/Морская/03.ogg",
    "opus": "jp/光.opus",
    "m4a": "m4a/near light.m4a",
}

FORMATS = sorted(SAMPLES)


def virtual(library: Library, mount: Mount, fmt: str) -> tuple[Path, Path]:
    """(path in the mount, path in the origin) of the sample file of *fmt*."""
    track = library.find(SAMPLES[fmt])
    return mount.mountpoint / render_path(track.spec), track.path


def run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, capture_output=True, check=False, timeout=timeout)


def ffprobe_tags(path: Path) -> dict[str, str]:
    """Format tags merged with the first stream's tags, keys lower-cased."""
    result = run(["ffprobe", "-v", "error", "-show_entries", "format_tags:stream_tags",
                  "-of", "json", str(path)])  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    data = json.loads(result.stdout)
    tags: dict[str, str] = {}
    streams = data.get("streams") or [{}]
    for source in (streams[0].get("tags", {}), data.get("format", {}).get("tags", {})):
        tags.update({k.lower(): v for k, v in source.items()})
    return tags


@pytest.mark.parametrize("fmt", FORMATS)
def test_ffprobe_reads_tags_through_the_mount(
    library: Library, library_mount: Mount, fmt: str
) -> None:
    require_tools("ffprobe")
    path, origin = virtual(library, library_mount, fmt)
    spec = library.find(SAMPLES[fmt]).spec
    tags = ffprobe_tags(path)
    assert tags.get("title") == spec.tags["title"], tags
    assert tags.get("artist") == spec.tags["artist"], tags
    assert tags.get("album") == spec.tags["album"], tags
    assert tags == ffprobe_tags(origin)


@pytest.mark.parametrize("fmt", ["ogg", "opus"])
def test_ffprobe_ogg_tags_are_stream_tags(library: Library, library_mount: Mount, fmt: str) -> None:
    """Where ffprobe puts Ogg/Opus tags (ENVIRONMENT.md), read through the mount."""
    require_tools("ffprobe")
    path, _ = virtual(library, library_mount, fmt)
    result = run(["ffprobe", "-v", "error", "-show_entries", "stream_tags=title",
                  "-of", "default=noprint_wrappers=1:nokey=1", str(path)])  # fmt: skip
    assert result.returncode == 0
    assert result.stdout.decode().strip() == library.find(SAMPLES[fmt]).spec.tags["title"]


def mpv(path: Path, *options: str) -> subprocess.CompletedProcess[bytes]:
    return run(["mpv", "--no-config", "--ao=null", "--vo=null", "--ao-null-untimed",
                *options, str(path)])  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
def test_mpv_plays_each_format(library: Library, library_mount: Mount, fmt: str) -> None:
    require_tools("mpv")
    path, _ = virtual(library, library_mount, fmt)
    result = mpv(path, "--length=1")
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, output
    assert "Errors when loading file" not in output


@pytest.mark.parametrize("fmt", FORMATS)
def test_mpv_starts_at_a_seek_position(library: Library, library_mount: Mount, fmt: str) -> None:
    require_tools("mpv")
    path, _ = virtual(library, library_mount, fmt)
    result = mpv(path, "--start=1", "--length=0.5", "--term-playing-msg=START=${=time-pos}")
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, output
    starts = [line for line in output.splitlines() if line.startswith("START=")]
    assert starts, f"mpv printed no start position:\n{output}"
    # With untimed audio output, mpv may have played a little before it prints
    # the message (seen on plain files too): anything within the played half
    # second shows that playback started at the seek position, not at 0.
    position = float(starts[0].removeprefix("START="))
    assert 0.95 <= position <= 1.5, output


def decode(path: Path, start: float, seconds: float) -> bytes:
    """PCM (s16le, stereo, 44.1 kHz) of *seconds* from *start*, decoded by ffmpeg."""
    result = run(["ffmpeg", "-nostdin", "-v", "error", "-ss", str(start), "-i", str(path),
                  "-t", str(seconds), "-f", "s16le", "-ac", "2", "-ar", "44100", "-"])  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


@pytest.mark.parametrize("fmt", FORMATS)
def test_ffmpeg_seek_decodes_same_samples_as_origin(
    library: Library, library_mount: Mount, fmt: str
) -> None:
    require_tools("ffmpeg")
    path, origin = virtual(library, library_mount, fmt)
    through_mount = decode(path, 1.0, 0.5)
    assert len(through_mount) > 0.4 * 44100 * 4, "seeking to 1 s decoded (almost) nothing"
    assert through_mount == decode(origin, 1.0, 0.5)


def test_ffmpeg_decodes_whole_files_without_errors(library: Library, library_mount: Mount) -> None:
    """``ffmpeg -xerror`` finds no damage in any file of the mount (mpv would not say)."""
    require_tools("ffmpeg")
    for fmt in FORMATS:
        path, _ = virtual(library, library_mount, fmt)
        result = run(["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(path),
                      "-f", "null", "-"])  # fmt: skip
        assert result.returncode == 0, f"{path}: {result.stderr.decode(errors='replace')}"
        assert result.stderr == b"", f"{path}: {result.stderr.decode(errors='replace')}"


def test_several_players_at_once(library: Library, library_mount: Mount) -> None:
    """mpv on every format and ffprobe on all of them, all running at the same time."""
    require_tools("mpv", "ffprobe")
    paths = [virtual(library, library_mount, fmt)[0] for fmt in FORMATS]
    procs = [
        subprocess.Popen(
            ["mpv", "--no-config", "--ao=null", "--vo=null", "--ao-null-untimed", str(p)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for p in paths
    ] + [
        subprocess.Popen(
            ["ffprobe", "-v", "error", str(p)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for p in paths
    ]
    try:
        failures = []
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                failures.append(
                    f"{proc.args!r}: exit {proc.returncode}: {err.decode(errors='replace')}"
                )
        assert not failures, "\n".join(failures)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
