"""Real players and probes work on files in the mount (SPEC NFR-12).

Proves, for one file of each format (FLAC, MP3, Ogg Vorbis, Opus, M4A):
ffprobe reads the tags we wrote, through the mount (Ogg/Opus tags are stream
tags, FLAC/MP3/M4A ones format tags — see ENVIRONMENT.md); mpv plays it to the
end without an error; mpv starts playback at a seek position (``--start=1``);
ffmpeg seeking into the file through the mount decodes exactly the same
samples as seeking into the origin file; and VLC (``cvlc``), run as another,
unprivileged user (it refuses root) on a mount made with ``--allow-other``,
opens, demuxes and decodes it to the end with no error in its log (its exit
status is always 0, so the log is the verdict) and produces exactly the PCM it
produces from the origin file.

Beyond one file at a time: a file-manager style walk (stat every entry, list
every folder, read the first 64 KiB of every file and every cover whole) sees
every file with the size of its origin and the origin's first bytes; three
different players (ffmpeg, mpv, VLC) hold three different files open and are
mid-playback at the same moment, and each still decodes exactly what it
decodes from the origin file; and an ffmpeg playback that is running while a
full rescan (SIGHUP) and live changes (files touched, the played one included)
are processed finishes with the origin's exact PCM and no error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.e2e.helpers import Mount, mounted, require_tools, wait_until
from tests.e2e.library import Library, TrackSpec, make_origin, render_path

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


# -- longer files, an origin and a mount other users can read -----------------------------

#: Bytes per second of the raw PCM the players are asked for (s16, stereo, 44.1 kHz).
PCM_RATE = 44100 * 2 * 2


def _noise_tags(title: str, track: int) -> dict[str, str]:
    return {"artist": "Noise Makers", "album": "Long Noise", "year": "2024",
            "title": title, "track": str(track)}  # fmt: skip


#: One longer file per player of the three-player test (origin relpaths in
#: `player_origin`): noise, so that it compresses badly and takes many reads.
LONG = {
    "ffmpeg": TrackSpec("players", "long/pink.flac", _noise_tags("Pink", 1), seconds=20),
    "mpv": TrackSpec("players", "long/white.mp3", _noise_tags("White", 2), seconds=20),
    # VLC plays in real time; it is mid-file for seconds even so.
    "vlc": TrackSpec("players", "long/brown.ogg", _noise_tags("Brown", 3), seconds=8),
}

_NOISE_CODECS = {
    "flac": ["-c:a", "flac"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "192k"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "4"],
}
_FFMPEG_TAGS = {"title": "title", "artist": "artist", "album": "album", "year": "date",
                "track": "track"}  # fmt: skip


def encode_noise(spec: TrackSpec, out: Path, color: str = "pink") -> None:
    """*spec.seconds* of stereo noise with *spec*'s tags, encoded by ffmpeg into *out*."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tags = [arg for k, v in spec.tags.items() for arg in ("-metadata", f"{_FFMPEG_TAGS[k]}={v}")]
    source = f"anoisesrc=duration={spec.seconds}:color={color}:amplitude=0.5:sample_rate=44100"
    result = run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", source,
                  "-ac", "2", *_NOISE_CODECS[spec.format], *tags, str(out)])  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def public_dir() -> Iterator[Path]:
    """A scratch folder every user may enter (pytest's temporary folders are private)."""
    path = Path(tempfile.mkdtemp(prefix="musicfs-players-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def player_origin(library: Library, public_dir: Path) -> Path:
    """An origin every user may read: the format samples and the `LONG` noise files.

    Readable by VLC's user too, so that VLC can decode the origin files
    themselves, the oracle for what it decodes through the mount.
    """
    require_tools("ffmpeg")
    origin = public_dir / "origin"
    make_origin(library, origin, SAMPLES.values())
    for spec, color in zip(LONG.values(), ("pink", "white", "brown"), strict=True):
        encode_noise(spec, origin / spec.relpath, color)
    return origin


@pytest.fixture(scope="module")
def shared_mount(player_origin: Path, public_dir: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Mount]:  # fmt: skip
    """`player_origin` mounted where any user can reach it, first scan finished.

    FUSE lets no one but the user who mounted into a mount unless it was made
    with ``allow_other``. As root (who needs no ``user_allow_other`` in
    /etc/fuse.conf for it), VLC runs as another user, so the mount gets
    ``--allow-other``; otherwise VLC runs as ourselves and needs none.
    """
    extra = ["--allow-other"] if os.geteuid() == 0 else []
    cache = tmp_path_factory.mktemp("players-cache")
    with mounted([player_origin], public_dir / "mnt", cache, *extra) as mount:
        yield mount


# -- VLC, as an unprivileged user -----------------------------------------------------------


def vlc_user() -> pwd.struct_passwd | None:
    """Who VLC runs as: ``nobody`` when the tests run as root (cvlc refuses root), else None
    (as ourselves)."""
    if os.geteuid() != 0:
        return None
    require_tools("setpriv")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to run VLC as (cvlc refuses to run as root)")


def vlc_dir(parent: Path) -> Path:
    """A fresh folder for one VLC run, owned by VLC's user: its HOME and where it writes."""
    path = Path(tempfile.mkdtemp(prefix="vlc-", dir=parent))
    give_to_vlc(path)
    return path


def give_to_vlc(path: Path) -> None:
    user = vlc_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def vlc_popen(media: Path, output: Path, home: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start cvlc decoding all of *media* into raw PCM (s16, stereo, no WAV header) in
    *output*, with its debug log (``--verbose=2``) in *log*.

    ``afile`` writes what VLC would send to a sound card, at the same pace;
    ``--play-and-exit`` makes it quit at the end of the file. ``setpriv`` execs,
    so the process is VLC's.
    """
    user = vlc_user()
    become = (
        []
        if user is None
        else ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "DBUS_"))}
    env["HOME"] = str(home)
    command = [*become, "cvlc", "--verbose=2", "--play-and-exit", "--no-video", "--aout=afile",
               f"--audiofile-file={output}", "--no-audiofile-wav", "--audiofile-format=s16",
               "--audiofile-channels=2", str(media)]  # fmt: skip
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
    )


class VlcDecode:
    """VLC decoding all of *media* into PCM, started at once; `result` waits for it.

    VLC plays in real time (``afile`` is paced like a sound card; only its first
    second of buffering goes faster), so runs that do not depend on each other
    are started together. As a context manager, it stops VLC on the way out.
    """

    def __init__(self, media: Path, parent: Path) -> None:
        self.media = media
        home = vlc_dir(parent)
        self._output, self._log = home / "out.pcm", home / "vlc.log"
        with open(self._log, "wb") as log:
            self._proc = vlc_popen(media, self._output, home, log)

    def result(self) -> tuple[bytes, str]:
        """VLC's PCM of the whole of *media*, and its log."""
        try:
            self._proc.wait(timeout=120)
        finally:
            self.stop()
        pcm = self._output.read_bytes() if self._output.exists() else b""
        return pcm, self._log.read_text(errors="replace")

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> VlcDecode:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


#: What the log of VLC playing a file to its end shows (VLC 3 wording, matched loosely).
VLC_MUST_SHOW = {
    "opened the input": re.compile(r"successfully opened"),
    "chose a demuxer": re.compile(r'using demux module "(?!directory")'),
    "chose an audio decoder": re.compile(r'using (?:audio )?decoder module "'),
    "read the input to its end": re.compile(r"\bEOF reached"),
}
#: Signs of a file VLC could not open, parse or decode, wherever they appear in its log.
VLC_MUST_NOT_SHOW = re.compile(
    r"can't be opened|cannot open|unable to open|no suitable (?:demux|access|decoder|packetizer)"
    r"|corrupt|failed to create|not functional",
    re.IGNORECASE,
)
#: An error line of VLC's log: ``[00007f2054000e90] ogg demux error: ...``.
VLC_ERROR = re.compile(r"^\[[0-9a-f]+\] [^\]]*? error: ")


def vlc_log_problems(log: str) -> list[str]:
    """What VLC's log says went wrong, or does not say went right; empty when all is well."""
    problems = [
        f"no line shows that VLC {what}"
        for what, pattern in VLC_MUST_SHOW.items()
        if not pattern.search(log)
    ]
    for line in log.splitlines():
        # The optional control interfaces (D-Bus, global hotkeys) fail without a
        # desktop session; that says nothing about the file.
        if "interface" in line:
            continue
        if VLC_ERROR.match(line) or VLC_MUST_NOT_SHOW.search(line):
            problems.append(line)
    return problems


def vlc_report(media: Path, problems: list[str], log: str) -> str:
    """An assertion message: what is wrong, then VLC's whole log (but its build options)."""
    shown = "\n".join(line for line in log.splitlines() if "configured with" not in line)
    return f"VLC on {media}:\n" + "\n".join(problems) + f"\n--- VLC's log ---\n{shown}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_vlc_plays_each_format_as_another_user(
    library: Library, shared_mount: Mount, player_origin: Path, public_dir: Path, fmt: str
) -> None:
    require_tools("cvlc")
    spec = library.find(SAMPLES[fmt]).spec
    path = shared_mount.mountpoint / render_path(spec)
    origin = player_origin / spec.relpath
    with VlcDecode(path, public_dir) as through_mount, VlcDecode(origin, public_dir) as from_origin:
        pcm, log = through_mount.result()
        want, origin_log = from_origin.result()
    problems = vlc_log_problems(log)
    assert not problems, vlc_report(path, problems, log)
    # All of the track (VLC keeps Opus at 48 kHz: more bytes then, never fewer).
    seconds = len(pcm) / PCM_RATE
    assert seconds >= 0.9 * spec.seconds, vlc_report(path, [f"only {seconds:.2f} s of PCM"], log)
    assert want, vlc_report(origin, ["no PCM from the origin"], origin_log)
    assert pcm == want, (
        f"VLC decodes {len(pcm)} bytes from the mount, {len(want)} different ones from the origin"
    )


# -- a file manager --------------------------------------------------------------------------

#: Names of cover images a file manager or player shows for a folder (issue 7
#: puts ``cover.jpg``, ``cover-medium.jpg``, ``cover-thumb.jpg`` in album folders).
COVER_NAME = re.compile(r"^(?:cover|folder|front)(?:-[a-z]+)?\.(?:jpe?g|png)$", re.IGNORECASE)
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
#: What a file manager reads of a file to sniff its type and thumbnail it.
HEAD = 64 * 1024


def test_file_manager_walk(library: Library, library_mount: Mount) -> None:
    """lstat + stat every entry, list every folder, read the first 64 KiB of every
    audio file and every cover whole: no error, every read as long as stat says,
    sizes and first bytes those of the origin. The tree has no covers until cover
    art exists (issue 7); any that appear are read and must be images."""
    root = library_mount.mountpoint
    origin_of = library.origin_of_virtual(root)
    heads: dict[str, tuple[int, bytes]] = {}
    covers: list[str] = []
    problems: list[str] = []
    folders = read = 0
    started = time.perf_counter()
    pending = [root]
    while pending:
        folder = pending.pop()
        folders += 1
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        for entry in entries:
            rel = Path(entry.path).relative_to(root).as_posix()
            link = entry.stat(follow_symlinks=False)  # what a listing shows
            st = os.stat(entry.path)  # what opening it will see
            if stat.S_ISDIR(st.st_mode):
                if not stat.S_ISLNK(link.st_mode):
                    pending.append(Path(entry.path))
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"{rel}: neither a folder nor a file ({stat.filemode(st.st_mode)})")
                continue
            with open(entry.path, "rb") as fh:
                data = fh.read() if COVER_NAME.match(entry.name) else fh.read(HEAD)
            read += len(data)
            if COVER_NAME.match(entry.name):
                covers.append(rel)
                if len(data) != st.st_size:
                    problems.append(f"{rel}: stat says {st.st_size} bytes, read {len(data)}")
                if not data.startswith(IMAGE_MAGIC):
                    problems.append(f"{rel}: neither a JPEG nor a PNG")
            else:
                heads[rel] = (st.st_size, data)
                if len(data) != min(HEAD, st.st_size):
                    problems.append(
                        f"{rel}: stat says {st.st_size} bytes, read {len(data)} of 64 KiB"
                    )
    elapsed = time.perf_counter() - started
    print(
        f"file-manager walk: {folders} folders, {len(heads)} files, {len(covers)} covers, "
        f"{read} bytes read in {elapsed * 1000:.0f} ms"
    )
    assert not problems, "\n".join(problems)
    assert set(heads) == library.expected_files()
    for rel, (size, head) in heads.items():
        origin = origin_of[rel].path
        assert size == origin.stat().st_size, f"{rel}: size {size}, origin {origin.stat().st_size}"
        with open(origin, "rb") as fh:
            assert head == fh.read(HEAD), f"{rel}: the first 64 KiB differ from the origin's"


# -- several players at once, and a player during a rescan ------------------------------------


class PcmReader(threading.Thread):
    """Reads a player's raw PCM output (a pipe, or a FIFO by path) in the background and
    hashes it.

    With *hold*, it reads *hold* bytes, sets `started` and waits for `resume`
    before it reads on: a player whose output nobody reads blocks on it, so it
    stays in the middle of its file until the test lets it go on.
    """

    def __init__(self, name: str, output: IO[bytes] | Path, hold: int = 0) -> None:
        super().__init__(name=f"pcm-{name}", daemon=True)
        self._output = output
        self._hold = hold
        self.started = threading.Event()
        self.resume = threading.Event()
        if not hold:
            self.resume.set()
        self.digest = hashlib.md5()
        self.size = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if isinstance(self._output, Path):
                # A FIFO's open waits for its writer: open it here, not in the test.
                with open(self._output, "rb") as output:
                    self._read(output)
            else:
                with self._output as output:
                    self._read(output)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.started.set()

    def _read(self, output: IO[bytes]) -> None:
        if self._hold:
            self._take(output.read(self._hold))
        self.started.set()
        self.resume.wait()
        while block := output.read(1 << 16):
            self._take(block)

    def _take(self, block: bytes) -> None:
        self.digest.update(block)
        self.size += len(block)


def open_offsets(pid: int, path: Path) -> list[int]:
    """The file offsets at which process *pid* has *path* open (empty: not open)."""
    offsets = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:  # the process is gone
        return []
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                found = re.search(r"^pos:\s*(\d+)", info, re.MULTILINE)
                if found:
                    offsets.append(int(found.group(1)))
    return offsets


def ffmpeg_pcm_command(path: Path, output: str) -> list[str]:
    """ffmpeg decoding all of *path* to raw PCM in *output* (``-``: stdout); fails on any error."""
    return ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(path),
            "-f", "s16le", "-ac", "2", "-ar", "44100", output]  # fmt: skip


def mpv_pcm_command(path: Path, output: Path) -> list[str]:
    """mpv playing all of *path* into raw PCM in *output*, as fast as it decodes."""
    return ["mpv", "--no-config", "--vo=null", "--ao=pcm", f"--ao-pcm-file={output}",
            "--ao-pcm-waveheader=no", "--audio-format=s16", "--audio-channels=stereo",
            str(path)]  # fmt: skip


def stop(procs: dict[str, subprocess.Popen[bytes]], fifos: list[Path]) -> None:
    """Kill the players still running, and free readers still waiting on a FIFO's open."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for fifo in fifos:
        with contextlib.suppress(OSError):  # ENXIO: no reader waits
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_three_players_on_three_files_at_once(
    shared_mount: Mount, player_origin: Path, public_dir: Path
) -> None:
    """ffmpeg, mpv and VLC each play a different file; all three are seen with their
    file open, mid-playback, at the same moment; each then decodes exactly what it
    decodes from the origin file, with no error."""
    require_tools("ffmpeg", "mpv", "cvlc")
    files = {
        player: (shared_mount.mountpoint / render_path(spec), player_origin / spec.relpath)
        for player, spec in LONG.items()
    }
    work = vlc_dir(public_dir)  # VLC's HOME, the players' FIFOs and logs
    fifos = {"mpv": work / "mpv.pcm", "vlc": work / "vlc.pcm"}
    for fifo in fifos.values():
        os.mkfifo(fifo, 0o600)
    give_to_vlc(fifos["vlc"])
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with contextlib.ExitStack() as stack:
        logs = {name: stack.enter_context(open(work / f"{name}.log", "wb")) for name in LONG}
        stack.callback(stop, procs, list(fifos.values()))
        # VLC plays in real time: its oracle (the origin file) plays alongside.
        vlc_origin = stack.enter_context(VlcDecode(files["vlc"][1], public_dir))
        procs["ffmpeg"] = subprocess.Popen(
            ffmpeg_pcm_command(files["ffmpeg"][0], "-"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=logs["ffmpeg"],
        )
        procs["mpv"] = subprocess.Popen(
            mpv_pcm_command(files["mpv"][0], fifos["mpv"]),
            stdin=subprocess.DEVNULL,
            stdout=logs["mpv"],
            stderr=subprocess.STDOUT,
        )
        procs["vlc"] = vlc_popen(files["vlc"][0], fifos["vlc"], work, logs["vlc"])
        ffmpeg_out = procs["ffmpeg"].stdout
        assert ffmpeg_out is not None
        readers = {
            "ffmpeg": PcmReader("ffmpeg", ffmpeg_out, hold=HEAD),
            "mpv": PcmReader("mpv", fifos["mpv"], hold=HEAD),
            "vlc": PcmReader("vlc", fifos["vlc"], hold=HEAD),
        }
        for reader in readers.values():
            reader.start()
        wait_until(  # (a player that died never opens its FIFO: stop waiting for it)
            lambda: all(
                r.started.is_set() or procs[n].poll() is not None for n, r in readers.items()
            ),
            timeout=60,
            what="all three players to start playing",
        )
        # Each player has played 64 KiB and now waits on its full output: a look
        # at all three at this moment shows whether they overlap.
        moment = {
            name: (procs[name].poll(), open_offsets(procs[name].pid, files[name][0]))
            for name in LONG
        }
        for reader in readers.values():
            reader.resume.set()
        for reader in readers.values():
            reader.join(timeout=120)
        for proc in procs.values():
            proc.wait(timeout=120)
        vlc_want, _ = vlc_origin.result()
    shown = {name: (work / f"{name}.log").read_text(errors="replace") for name in LONG}
    sizes = {name: files[name][0].stat().st_size for name in LONG}
    print("three players at once:", {
        name: f"at byte {offsets} of {sizes[name]}" for name, (_, offsets) in moment.items()
    })  # fmt: skip
    for name, (exit_status, offsets) in moment.items():
        assert exit_status is None, (
            f"{name} had finished before the others played: {moment}\n{shown[name]}"
        )
        assert offsets, f"{name} did not have {files[name][0]} open with the others: {moment}"
        assert readers[name].error is None, f"{name}'s output: {readers[name].error!r}"
    assert procs["ffmpeg"].returncode == 0, shown["ffmpeg"]
    assert shown["ffmpeg"] == "", shown["ffmpeg"]
    assert procs["mpv"].returncode == 0, shown["mpv"]
    assert "Errors when loading file" not in shown["mpv"], shown["mpv"]
    problems = vlc_log_problems(shown["vlc"])
    assert not problems, vlc_report(files["vlc"][0], problems, shown["vlc"])

    origin_pcm = {
        "ffmpeg": run(ffmpeg_pcm_command(files["ffmpeg"][1], "-")).stdout,
        "vlc": vlc_want,
    }
    origin_mpv = work / "mpv-origin.pcm"
    result = run(mpv_pcm_command(files["mpv"][1], origin_mpv))
    assert result.returncode == 0, result.stdout.decode(errors="replace")
    origin_pcm["mpv"] = origin_mpv.read_bytes()
    for name, reader in readers.items():
        want = origin_pcm[name]
        assert len(want) >= 0.9 * LONG[name].seconds * PCM_RATE, (
            f"{name} on the origin: {len(want)}"
        )
        assert (reader.size, reader.digest.hexdigest()) == (
            len(want),
            hashlib.md5(want).hexdigest(),
        ), f"{name} decodes {files[name][0]} differently through the mount than from the origin"


#: Library files beside the long one in the rescan test's origin, touched during the rescan.
RESCAN_NEIGHBOURS = (
    "Björk/Homogenic/01 Jóga.flac",
    "Björk/Homogenic/02 Unravel.flac",
    "Two Sides/CD1/01.flac",
    "Sigur Rós/svefn-g-englar.mp3",
)
#: How much faster than real time ffmpeg reads the long file (30 s of audio: ~7.5 s).
READRATE = 4


def test_playback_survives_a_rescan(library: Library, tmp_path: Path) -> None:
    """ffmpeg reads a 30 s FLAC through the mount at 4x real time while a full rescan
    (SIGHUP) runs and live changes (every file of the origin touched, the played one
    included) are taken in; it is still playing when they are, and its PCM is then
    exactly the origin file's, with no error."""
    require_tools("ffmpeg")
    origin = tmp_path / "origin"
    spec = TrackSpec("origin", "long/rescan.flac", _noise_tags("During The Rescan", 1), seconds=30)
    encode_noise(spec, origin / spec.relpath)
    specs = {spec.relpath: spec, **make_origin(library, origin, RESCAN_NEIGHBOURS)}
    want = run(ffmpeg_pcm_command(origin / spec.relpath, "-")).stdout
    with mounted([origin], tmp_path / "mnt", tmp_path / "cache") as mount:
        path = mount.mountpoint / render_path(spec)
        log_path = tmp_path / "ffmpeg.log"
        with open(log_path, "wb") as log:
            command = ffmpeg_pcm_command(path, "-")
            command[command.index("-i") : command.index("-i")] = ["-readrate", str(READRATE)]
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log
            )
            try:
                output = proc.stdout
                assert output is not None
                reader = PcmReader("rescan", output)
                reader.start()
                wait_until(lambda: reader.size > 0, timeout=30, what="ffmpeg to start decoding")
                before = mount.status()
                os.kill(mount.pid, signal.SIGHUP)
                touched = {}
                for relpath, touched_spec in specs.items():
                    file = origin / relpath
                    bumped = file.stat().st_mtime_ns + 2_000_000_000
                    os.utime(file, ns=(bumped, bumped))
                    touched[mount.mountpoint / render_path(touched_spec)] = bumped
                mount.wait_for_scan(after=before)
                wait_until(
                    lambda: all(os.stat(p).st_mtime_ns == t for p, t in touched.items()),
                    timeout=30,
                    what="the mount to show the touched files' new mtimes",
                )
                played_by_then = reader.size
                still_playing = proc.poll() is None
                proc.wait(timeout=120)
                reader.join(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    errors = log_path.read_text(errors="replace")
    print(f"rescan done after {played_by_then / PCM_RATE:.1f} s of {spec.seconds} s played")
    assert still_playing, (
        f"ffmpeg had finished ({played_by_then} bytes) before the rescan did: nothing shows "
        "that playback and rescan overlapped (make the file longer or READRATE lower)"
    )
    assert proc.returncode == 0, errors
    assert errors == "", errors
    assert reader.error is None, repr(reader.error)
    assert reader.size > played_by_then, "nothing was read after the rescan"
    assert (reader.size, reader.digest.hexdigest()) == (len(want), hashlib.md5(want).hexdigest()), (
        f"{reader.size} bytes of PCM through the mount, {len(want)} different ones from the origin"
    )
