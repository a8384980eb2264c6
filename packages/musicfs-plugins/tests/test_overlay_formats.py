"""The built-in format plugins of the metadata overlay (SPEC §3), on real files.

Every file here is made by the real encoder of its format (flac, lame, oggenc,
opusenc; ffmpeg for the tone and pictures). A plugin's output is served the way
the filesystem serves it: ``synthesize_for_file(meta, ...)`` (by default
``synthesize_header(meta, original[:hlen])``) ``+ original[hlen:]``. The
served bytes must give the new tags to mutagen, to the
catalog's reader (`read_tags`) and to ffprobe, decode to the very same PCM,
play and seek in mpv, and pass the format's own checker (``flac -t``,
``ogginfo``). The real-world corpus, when present, checks that no damaged file
makes a plugin crash: each is either overlaid correctly or passed through.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mutagen
import pytest
from mutagen.flac import FLAC, Picture
from mutagen.id3 import APIC, COMM, ID3, TALB, TCOM, TCON, TDRC, TIT2, TPE1, TRCK, TXXX
from mutagen.oggvorbis import OggVorbis

from musicfs.core.model import TrackTags
from musicfs.core.tags.reader import UnreadableFile, read_tags
from musicfs.plugins.api import FormatPlugin
from musicfs.plugins.builtin import BUILTIN_FORMATS, FlacFormat, Mp3Format, OggFormat

CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "corpus" / "realworld"
_TOOLS = ("ffmpeg", "ffprobe", "flac", "metaflac", "lame", "oggenc", "opusenc", "ogginfo", "mpv")
_MISSING = [tool for tool in _TOOLS if shutil.which(tool) is None]

pytestmark = [
    pytest.mark.media,
    pytest.mark.skipif(bool(_MISSING), reason=f"not installed: {', '.join(_MISSING)}"),
]

#: The tags every test file starts with.
ORIGINAL = {
    "title": "Original Title",
    "artist": "Original Artist",
    "album": "Original Album",
    "genre": "Rock",
    "date": "1999",
    "composer": "Old Composer",
}
#: What the overlay changes: new values, new fields, and one removal (album).
CHANGES: dict[str, Any] = {
    "title": "Neuer Titel: Grüße ß",
    "artist": "New Artist",
    "album": None,
    "year": 2024,
    "track": 7,
    "tracktotal": 12,
    "disc": 1,
    "disctotal": 2,
    "lyrics": "la la\nla",
    "compilation": True,
}
WRITTEN = (
    "title", "artist", "album", "albumartist", "genre", "year", "track", "tracktotal",
    "disc", "disctotal", "composer", "lyrics", "compilation",
)  # fmt: skip


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True)


# --- what the filesystem would serve -------------------------------------------------


def serve(plugin: FormatPlugin, original: bytes, meta: TrackTags) -> tuple[bytes, int]:
    """The served bytes for *meta*, and the original header's length."""

    def read(offset: int, size: int) -> bytes:
        return original[offset : offset + size]

    length = plugin.header_length(read, len(original))
    header = plugin.synthesize_for_file(meta, read, len(original), length)
    return header + original[length:], length


def served_file(plugin: FormatPlugin, path: Path, meta: TrackTags, out: Path) -> Path:
    out.write_bytes(serve(plugin, path.read_bytes(), meta)[0])
    return out


# --- how the outside world sees a file ------------------------------------------------


def probe(path: Path) -> tuple[float, dict[str, str]]:
    """ffprobe's duration and tags (format and stream tags, keys in lower case)."""
    out = run("ffprobe", "-v", "error", "-show_entries", "format=duration:format_tags:stream_tags",
              "-of", "json", path).stdout  # fmt: skip
    data = json.loads(out)
    tags: dict[str, str] = {}
    for section in [data["format"], *data.get("streams", [])]:
        tags.update({k.lower(): v for k, v in section.get("tags", {}).items()})
    return float(data["format"]["duration"]), tags


def pcm_md5(path: Path) -> str:
    return run("ffmpeg", "-v", "error", "-i", path, "-map", "0:a", "-f", "md5", "-").stdout.strip()


def mpv_start(path: Path, start: str) -> float:
    """Play 0.3 s of *path* from *start* with mpv; the position playback began at."""
    out = run("mpv", "--no-config", "--ao=null", "--vo=null", f"--start={start}", "--length=0.3",
              "--msg-level=all=error,term-msg=info", "--term-playing-msg=START=${=time-pos}",
              path).stdout  # fmt: skip
    return float(out.split("START=")[1].split()[0])


def pictures(path: Path) -> list[bytes]:
    """The embedded pictures' image data, whatever the format."""
    tags: Any = mutagen.File(path)
    if isinstance(tags, FLAC):
        return [p.data for p in tags.pictures]
    if isinstance(tags.tags, ID3):
        return [frame.data for frame in tags.tags.getall("APIC")]
    blocks = tags.get("metadata_block_picture", [])
    return [Picture(base64.b64decode(block)).data for block in blocks]


def effective(original: Path) -> tuple[TrackTags, TrackTags]:
    """The file's own tags, and the effective ones after `CHANGES`."""
    own = read_tags(str(original))
    return own, own.replace(**CHANGES)


def assert_tags(got: TrackTags, want: TrackTags) -> None:
    assert {f: getattr(got, f) for f in WRITTEN} == {f: getattr(want, f) for f in WRITTEN}


# --- the test files, made by the real encoders ------------------------------------------


@dataclass(frozen=True)
class Media:
    wav: Path
    cover: Path  # a small PNG
    noise: Path  # a ~200 KB PNG: a Vorbis comment that spans several Ogg pages


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    root = tmp_path_factory.mktemp("media")
    wav, cover, noise = root / "tone.wav", root / "cover.png", root / "noise.png"
    run("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=4",
        "-ac", "2", "-ar", "44100", "-fflags", "+bitexact", wav)  # fmt: skip
    run("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120", "-frames:v", "1",
        cover)  # fmt: skip
    ppm = root / "noise.ppm"
    ppm.write_bytes(b"P6 256 256 255\n" + os.urandom(256 * 256 * 3))  # incompressible
    run("ffmpeg", "-v", "error", "-i", ppm, noise)
    return Media(wav, cover, noise)


def make_flac(media: Media, out: Path) -> Path:
    tags = [f"--tag={k.upper()}={v}" for k, v in ORIGINAL.items()]
    run("flac", "-s", "-f", f"--picture={media.cover}", *tags, "--tag=TRACKNUMBER=2",
        "--tag=TRACKTOTAL=10", media.wav, "-o", out)  # fmt: skip
    return out


def make_mp3(media: Media, out: Path) -> Path:
    """ID3v2.3 only, as lame writes it, with a picture."""
    run("lame", "--silent", "--id3v2-only", "--ti", media.cover, "--tt", ORIGINAL["title"],
        "--ta", ORIGINAL["artist"], "--tl", ORIGINAL["album"], "--ty", ORIGINAL["date"],
        "--tg", ORIGINAL["genre"], "--tn", "2/10", "--tv", f"TCOM={ORIGINAL['composer']}",
        media.wav, out)  # fmt: skip
    return out


def make_mp3_v24(media: Media, out: Path) -> Path:
    """No tags from lame; an ID3v2.4 tag by mutagen with a picture, a comment and a TXXX."""
    run("lame", "--silent", media.wav, out)
    tags: Any = ID3()
    tags.add(TIT2(encoding=3, text=[ORIGINAL["title"]]))
    tags.add(TPE1(encoding=3, text=[ORIGINAL["artist"]]))
    tags.add(TALB(encoding=3, text=[ORIGINAL["album"]]))
    tags.add(TCON(encoding=3, text=[ORIGINAL["genre"]]))
    tags.add(TDRC(encoding=3, text=[ORIGINAL["date"]]))
    tags.add(TCOM(encoding=3, text=[ORIGINAL["composer"]]))
    tags.add(TRCK(encoding=3, text=["2/10"]))
    tags.add(COMM(encoding=3, lang="eng", desc="", text=["a comment"]))
    tags.add(TXXX(encoding=3, desc="MusicBrainz Album Id", text=["abc-123"]))
    tags.add(APIC(encoding=3, mime="image/png", type=3, desc="", data=media.cover.read_bytes()))
    tags.save(out, v2_version=4)
    return out


def make_ogg(media: Media, out: Path) -> Path:
    """oggenc's Vorbis, plus a picture (oggenc has no option for one)."""
    run("oggenc", "-Q", "-t", ORIGINAL["title"], "-a", ORIGINAL["artist"], "-l", ORIGINAL["album"],
        "-G", ORIGINAL["genre"], "-d", ORIGINAL["date"], "-N", "2",
        "-c", f"COMPOSER={ORIGINAL['composer']}", "-o", out, media.wav)  # fmt: skip
    picture = Picture()
    picture.type, picture.mime, picture.data = 3, "image/png", media.cover.read_bytes()
    audio: Any = OggVorbis(out)
    audio["metadata_block_picture"] = [base64.b64encode(picture.write()).decode("ascii")]
    audio.save()
    return out


def make_opus(media: Media, out: Path, cover: Path | None = None) -> Path:
    run("opusenc", "--quiet", "--picture", cover or media.cover, "--title", ORIGINAL["title"],
        "--artist", ORIGINAL["artist"], "--album", ORIGINAL["album"], "--genre", ORIGINAL["genre"],
        "--date", ORIGINAL["date"], "--tracknumber", "2", "--comment",
        f"COMPOSER={ORIGINAL['composer']}", media.wav, out)  # fmt: skip
    return out


@dataclass(frozen=True)
class Case:
    plugin: type[FormatPlugin]
    ext: str
    make: Callable[[Media, Path], Path]


CASES = {
    "flac": Case(FlacFormat, "flac", make_flac),
    "mp3-id3v23": Case(Mp3Format, "mp3", make_mp3),
    "mp3-id3v24": Case(Mp3Format, "mp3", make_mp3_v24),
    "ogg-vorbis": Case(OggFormat, "ogg", make_ogg),
    "opus": Case(OggFormat, "opus", make_opus),
}


@dataclass(frozen=True)
class Overlaid:
    plugin: FormatPlugin
    original: Path
    served: Path
    meta: TrackTags  # the effective tags served
    own: TrackTags  # the original file's tags


@pytest.fixture(scope="module", params=sorted(CASES))
def overlaid(request: pytest.FixtureRequest, media: Media) -> Overlaid:
    case = CASES[request.param]
    root = media.wav.parent
    original = case.make(media, root / f"{request.param}.{case.ext}")
    own, meta = effective(original)
    plugin = case.plugin()
    served = served_file(plugin, original, meta, root / f"{request.param}-served.{case.ext}")
    return Overlaid(plugin, original, served, meta, own)


# --- every format ------------------------------------------------------------------------


def test_builtin_formats_are_format_plugins_for_flac_mp3_ogg_and_mp4() -> None:
    handled = {ext for cls in BUILTIN_FORMATS for ext in cls.extensions}
    assert handled == {"flac", "mp3", "ogg", "oga", "opus", "m4a", "m4b", "mp4"}
    for cls in BUILTIN_FORMATS:
        assert issubclass(cls, FormatPlugin)
        assert cls().can_handle(f".{cls.extensions[0].upper()}")
    assert len({cls.name for cls in BUILTIN_FORMATS}) == len(BUILTIN_FORMATS)


def test_catalog_reads_the_effective_tags_from_the_served_file(overlaid: Overlaid) -> None:
    got = read_tags(str(overlaid.served))
    assert_tags(got, overlaid.meta)
    assert got.album is None  # removed
    assert got.genre == overlaid.own.genre == "Rock"  # untouched
    assert got.composer == "Old Composer"
    assert got.has_art
    assert got.duration == overlaid.own.duration


def test_pictures_are_kept(overlaid: Overlaid) -> None:
    kept = pictures(overlaid.served)
    assert kept
    assert kept == pictures(overlaid.original)


def test_plugin_parse_reads_the_served_file(overlaid: Overlaid) -> None:
    with overlaid.served.open("rb") as reader:
        assert_tags(overlaid.plugin.parse(reader), overlaid.meta)


def test_ffprobe_sees_the_new_tags_and_the_same_duration(overlaid: Overlaid) -> None:
    duration, tags = probe(overlaid.served)
    assert duration == pytest.approx(probe(overlaid.original)[0], abs=0.03)
    assert tags["title"] == CHANGES["title"]
    assert tags["artist"] == CHANGES["artist"]
    assert tags["date"].startswith("2024")
    assert tags["track"].startswith("7")
    assert tags["genre"] == "Rock"
    assert "album" not in tags


def test_audio_decodes_to_the_same_pcm(overlaid: Overlaid) -> None:
    assert pcm_md5(overlaid.served) == pcm_md5(overlaid.original)


def test_mpv_plays_and_seeks(overlaid: Overlaid) -> None:
    assert mpv_start(overlaid.served, "0") == pytest.approx(0, abs=0.1)
    assert mpv_start(overlaid.served, "50%") == pytest.approx(2.0, abs=0.1)


def test_synthesizing_from_the_served_header_is_stable(overlaid: Overlaid, tmp_path: Path) -> None:
    served = overlaid.served.read_bytes()
    plugin = overlaid.plugin
    again = serve(plugin, served, overlaid.meta)[0]
    assert again == served  # same tags again: nothing to change
    third = overlaid.meta.replace(title="Third Title", lyrics=None)
    out = tmp_path / overlaid.served.name
    out.write_bytes(serve(plugin, served, third)[0])
    assert_tags(read_tags(str(out)), third)
    assert pcm_md5(out) == pcm_md5(overlaid.original)


def test_unchanged_tags_give_the_original_header(overlaid: Overlaid) -> None:
    original = overlaid.original.read_bytes()
    assert serve(overlaid.plugin, original, overlaid.own)[0] == original


# --- FLAC ------------------------------------------------------------------------------


def flac_blocks(data: bytes) -> list[tuple[int, bool, bytes]]:
    """(type, last flag, data) of each metadata block, read independently of the plugin."""
    assert data[:4] == b"fLaC"
    blocks, at = [], 4
    while True:
        head, size = data[at], int.from_bytes(data[at + 1 : at + 4], "big")
        blocks.append((head & 0x7F, bool(head & 0x80), data[at + 4 : at + 4 + size]))
        at += 4 + size
        if head & 0x80:
            return blocks


@pytest.fixture
def flac_file(media: Media, tmp_path: Path) -> Path:
    return make_flac(media, tmp_path / "t.flac")


def test_flac_keeps_every_other_block_and_its_size(flac_file: Path, tmp_path: Path) -> None:
    _, meta = effective(flac_file)
    original = flac_file.read_bytes()
    served = serve(FlacFormat(), original, meta)[0]
    assert len(served) == len(original)  # the padding absorbed the new comments
    before, after = flac_blocks(original), flac_blocks(served)
    assert [b[0] for b in after] == [
        b[0] for b in before
    ]  # STREAMINFO SEEKTABLE VC PICTURE PADDING
    assert [b[1] for b in after] == [False] * (len(after) - 1) + [True]
    for (kind, _, old), (_, _, new) in zip(before, after, strict=True):
        if kind not in (1, 4):  # all but PADDING and VORBIS_COMMENT byte for byte
            assert new == old
    out = tmp_path / "served.flac"
    out.write_bytes(served)
    run("flac", "-t", "-s", out)  # decodes and checks STREAMINFO's MD5 of the audio
    run("metaflac", "--list", out)


def test_flac_other_comments_stay_in_place(flac_file: Path, tmp_path: Path) -> None:
    run("metaflac", "--set-tag=REPLAYGAIN_TRACK_GAIN=-3.2 dB", "--set-tag=title=lower case key",
        flac_file)  # fmt: skip
    _, meta = effective(flac_file)
    out = served_file(FlacFormat(), flac_file, meta, tmp_path / "served.flac")
    listing = run("metaflac", "--list", "--block-type=VORBIS_COMMENT", out).stdout
    comments = [line.split("]: ", 1)[1] for line in listing.splitlines() if "comment[" in line]
    assert "REPLAYGAIN_TRACK_GAIN=-3.2 dB" in comments
    assert comments[0] == f"TITLE={CHANGES['title']}"  # where the first title was
    assert not any(c.lower().startswith(("title=lower", "album=")) for c in comments)
    assert sum(c.lower().startswith("title=") for c in comments) == 1


def test_flac_id3v2_tag_in_front_is_dropped(flac_file: Path, tmp_path: Path) -> None:
    tags: Any = ID3()
    tags.add(TIT2(encoding=3, text=["stale ID3 title"]))
    tags.save(flac_file)  # mutagen puts it in front of fLaC
    original = flac_file.read_bytes()
    assert original[:3] == b"ID3"
    _, meta = effective(flac_file)
    served = serve(FlacFormat(), original, meta)[0]
    assert served[:4] == b"fLaC"
    assert len(served) == len(original)  # the ID3 tag's bytes went to the padding
    out = tmp_path / "served.flac"
    out.write_bytes(served)
    assert_tags(read_tags(str(out)), meta)
    run("flac", "-t", "-s", out)


def test_flac_without_comments_or_padding_gets_a_comment_block(
    flac_file: Path, tmp_path: Path
) -> None:
    run("metaflac", "--remove", "--block-type=VORBIS_COMMENT,PADDING", "--dont-use-padding",
        flac_file)  # fmt: skip
    own, meta = effective(flac_file)
    assert own.title is None
    original = flac_file.read_bytes()
    served = serve(FlacFormat(), original, meta)[0]
    kinds = [kind for kind, _, _ in flac_blocks(served)]
    assert kinds[:2] == [0, 4]  # right after STREAMINFO
    assert len(served) > len(original)  # no padding to absorb it: the header grows
    out = tmp_path / "served.flac"
    out.write_bytes(served)
    assert_tags(read_tags(str(out)), meta)
    assert pictures(out) == pictures(flac_file)
    run("flac", "-t", "-s", out)


def test_flac_header_shrinks_into_new_padding(flac_file: Path) -> None:
    run("metaflac", "--set-tag=LYRICS=" + "long lyrics " * 100, flac_file)
    run("metaflac", "--remove", "--block-type=PADDING", "--dont-use-padding", flac_file)
    own, _ = effective(flac_file)
    original = flac_file.read_bytes()
    served = serve(FlacFormat(), original, own.replace(lyrics=None))[0]
    assert len(served) == len(original)
    assert flac_blocks(served)[-1][0] == 1  # a PADDING block now ends the metadata


def test_flac_header_that_is_not_flac_is_refused() -> None:
    with pytest.raises(NotImplementedError):
        FlacFormat().synthesize_header(TrackTags(title="x"), b"not a flac header")


# --- MP3 -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlaid", ["mp3-id3v23", "mp3-id3v24"], indirect=True)
def test_mp3_tag_keeps_its_version_and_frames(overlaid: Overlaid) -> None:
    before: Any = ID3(overlaid.original)
    after: Any = ID3(overlaid.served)
    assert after.version == before.version
    assert before.version[1] in (3, 4)
    for key in ("COMM::eng", "TXXX:MusicBrainz Album Id", "TCOM"):
        if key in before:
            assert after[key] == before[key]
    assert str(after["TRCK"]) == "7/12"
    assert str(after["TPOS"]) == "1/2"
    assert str(after["TCMP"]) == "1"
    assert after.getall("USLT")[0].text == CHANGES["lyrics"]
    assert "TALB" not in after


def test_mp3_without_a_tag_gets_a_new_id3v24_tag(media: Media, tmp_path: Path) -> None:
    path = tmp_path / "bare.mp3"
    run("lame", "--silent", media.wav, path)
    original = path.read_bytes()
    _, meta = effective(path)
    served, length = serve(Mp3Format(), original, meta)
    assert length == 0
    assert served.endswith(original)  # the whole file is the payload
    out = tmp_path / "served.mp3"
    out.write_bytes(served)
    assert ID3(out).version == (2, 4, 0)
    assert_tags(read_tags(str(out)), meta)
    assert pcm_md5(out) == pcm_md5(path)
    assert probe(out)[1]["title"] == CHANGES["title"]


def test_mp3_id3v1_tag_at_the_end_stays_in_the_payload(media: Media, tmp_path: Path) -> None:
    path = tmp_path / "v1.mp3"
    run("lame", "--silent", "--add-id3v2", "--tt", "Old", "--ta", "Old Artist", media.wav, path)
    original = path.read_bytes()
    assert original[-128:-125] == b"TAG"
    own, _ = effective(path)
    meta = own.replace(title="New", artist=None)
    out = tmp_path / "served.mp3"
    out.write_bytes(serve(Mp3Format(), original, meta)[0])
    assert out.read_bytes()[-128:] == original[-128:]
    assert probe(out)[1]["title"] == "New"  # players take ID3v2 over ID3v1
    got = read_tags(str(out))
    assert got.title == "New"
    # The documented limit: mutagen fills fields missing from ID3v2 from ID3v1,
    # so the removed artist shows through there.
    assert got.artist == "Old Artist"


@pytest.mark.parametrize("overlaid", ["mp3-id3v23", "mp3-id3v24"], indirect=True)
def test_mp3_total_without_a_number_is_refused(overlaid: Overlaid) -> None:
    # ID3 has no frame for it: served, the total would be missing while the tree
    # (placed by the effective tags) counted on it. `tag set` says why instead.
    meta = overlaid.meta.replace(track=None, tracktotal=12)
    with pytest.raises(NotImplementedError, match="total without its number"):
        serve(overlaid.plugin, overlaid.original.read_bytes(), meta)
    meta = overlaid.meta.replace(track=None, tracktotal=None)
    served = serve(overlaid.plugin, overlaid.original.read_bytes(), meta)[0]
    assert "TRCK" not in ID3(io.BytesIO(served))


@pytest.mark.parametrize("overlaid", ["mp3-id3v23", "mp3-id3v24"], indirect=True)
def test_mp3_genres_id3_would_read_as_codes_are_refused_or_escaped(
    overlaid: Overlaid, tmp_path: Path
) -> None:
    # TCON text "17" is genre code 17 (Rock) to every ID3 reader; "(x" needs "((x".
    for genre in ("17", "CR"):
        with pytest.raises(NotImplementedError, match="genre code"):
            serve(
                overlaid.plugin, overlaid.original.read_bytes(), overlaid.meta.replace(genre=genre)
            )
    for genre in ("(17)", "(x) y"):
        out = served_file(overlaid.plugin, overlaid.original, overlaid.meta.replace(genre=genre),
                          tmp_path / "x.mp3")  # fmt: skip
        assert read_tags(str(out)).genre == genre


@pytest.mark.parametrize("overlaid", ["mp3-id3v23", "mp3-id3v24"], indirect=True)
def test_mp3_text_with_a_nul_is_refused(overlaid: Overlaid) -> None:
    # NUL separates an ID3 frame's values: "a\0b" would be read back as "a".
    with pytest.raises(NotImplementedError, match="NUL"):
        serve(overlaid.plugin, overlaid.original.read_bytes(), overlaid.meta.replace(title="a\0b"))


def test_mp3_stacked_id3v2_tags_are_passed_through(media: Media, tmp_path: Path) -> None:
    path = make_mp3_v24(media, tmp_path / "a.mp3")
    data = path.read_bytes()
    first = Mp3Format().header_length(lambda o, s: data[o : o + s], len(data))
    stacked = data[:first] + data  # a second tag right after the first
    plugin = Mp3Format()
    length = plugin.header_length(lambda o, s: stacked[o : o + s], len(stacked))
    assert length == 2 * first
    with pytest.raises(NotImplementedError):
        plugin.synthesize_header(TrackTags(title="x"), stacked[:length])


# --- Ogg -------------------------------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def ogg_pages(data: bytes) -> list[tuple[int, int, bool]]:
    """(sequence, granule, CRC right) of every page, by the book (not the plugin's code)."""
    pages, at = [], 0
    while at < len(data):
        assert data[at : at + 4] == b"OggS"
        nseg = data[at + 26]
        size = 27 + nseg + sum(data[at + 27 : at + 27 + nseg])
        page = bytearray(data[at : at + size])
        stored = int.from_bytes(page[22:26], "little")
        page[22:26] = bytes(4)
        crc = 0
        for byte in page:
            crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[(crc >> 24) ^ byte]
        granule = int.from_bytes(page[6:14], "little", signed=True)
        pages.append((int.from_bytes(page[18:22], "little"), granule, crc == stored))
        at += size
    return pages


def assert_sound_ogg(path: Path) -> None:
    pages = ogg_pages(path.read_bytes())
    assert all(ok for _, _, ok in pages)
    assert [seq for seq, _, _ in pages] == list(range(len(pages)))
    report = run("ogginfo", path)
    assert "WARNING" not in report.stdout + report.stderr
    assert "ERROR" not in report.stdout + report.stderr


@pytest.mark.parametrize("overlaid", ["ogg-vorbis", "opus"], indirect=True)
def test_ogg_pages_stay_in_sequence_with_valid_crcs(overlaid: Overlaid) -> None:
    assert_sound_ogg(overlaid.served)
    original, served = overlaid.original.read_bytes(), overlaid.served.read_bytes()
    length = overlaid.plugin.header_length(lambda o, s: original[o : o + s], len(original))
    header_pages = len(ogg_pages(original[:length]))
    assert len(ogg_pages(served)) == len(ogg_pages(original))
    assert ogg_pages(served)[header_pages:] == ogg_pages(original)[header_pages:]


@pytest.mark.parametrize("codec", ["opus", "vorbis"])
def test_ogg_comment_header_over_several_pages(media: Media, tmp_path: Path, codec: str) -> None:
    if codec == "opus":
        path = make_opus(media, tmp_path / "big.opus", cover=media.noise)
    else:
        path = make_ogg(media, tmp_path / "big.ogg")
        audio: Any = OggVorbis(path)
        audio["lyrics"] = ["x" * 150_000]  # spreads comment and setup over 4 pages
        audio.save()
    original = path.read_bytes()
    plugin = OggFormat()
    length = plugin.header_length(lambda o, s: original[o : o + s], len(original))
    assert len(ogg_pages(original[:length])) >= 4
    _, meta = effective(path)
    out = path.with_name("served" + path.suffix)
    served, _ = serve(plugin, original, meta)
    out.write_bytes(served)
    assert len(served) == len(original)  # padded back to the original size
    assert_sound_ogg(out)
    assert_tags(read_tags(str(out)), meta)
    assert pictures(out) == pictures(path)
    assert pcm_md5(out) == pcm_md5(path)
    assert mpv_start(out, "50%") == pytest.approx(2.0, abs=0.1)


def test_ogg_comments_too_large_for_the_pages_are_refused(media: Media, tmp_path: Path) -> None:
    path = make_opus(media, tmp_path / "t.opus")
    own, _ = effective(path)
    original = path.read_bytes()
    length = OggFormat().header_length(lambda o, s: original[o : o + s], len(original))
    assert len(ogg_pages(original[:length])) == 2  # OpusHead, OpusTags
    with pytest.raises(NotImplementedError, match="do not fit"):
        OggFormat().synthesize_header(own.replace(lyrics="x" * 70_000), original[:length])


def test_ogg_flac_is_passed_through(media: Media, tmp_path: Path) -> None:
    path = tmp_path / "flac.oga"
    run("ffmpeg", "-v", "error", "-i", media.wav, "-c:a", "flac", "-metadata", "title=T", path)
    data = path.read_bytes()
    plugin = OggFormat()
    assert plugin.header_length(lambda o, s: data[o : o + s], len(data)) == 0
    with pytest.raises(NotImplementedError):
        plugin.synthesize_header(TrackTags(title="x"), data[:4096])


# --- the real-world corpus ---------------------------------------------------------------


def _decode(path: Path) -> tuple[int, str]:
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a", "-f", "md5", "-"],
        capture_output=True,
        text=True,
        check=False,  # a damaged file may fail to decode: then the served one must fail alike
    )
    return result.returncode, result.stdout.strip()


def test_realworld_corpus(tmp_path: Path) -> None:
    """Every file a plugin handles and mutagen reads: overlaid with a new title that
    mutagen reads back and the same PCM, or passed through. Never a crash."""
    if not CORPUS.is_dir():
        pytest.skip(f"real-world corpus not found at {CORPUS}")
    plugins = [cls() for cls in BUILTIN_FORMATS]
    overlaid: list[str] = []
    passed: list[str] = []
    for path in sorted(CORPUS.iterdir()):
        ext = path.suffix.lstrip(".").lower()
        plugin = next((p for p in plugins if p.can_handle(ext)), None)
        if plugin is None or not path.is_file():
            continue
        try:
            own = read_tags(str(path))
        except UnreadableFile:
            continue
        original = path.read_bytes()
        try:
            served, _ = serve(plugin, original, own.replace(title="Overlay Title"))
        except NotImplementedError as exc:
            passed.append(f"{path.name}: {exc}")
            continue
        out = tmp_path / path.name
        out.write_bytes(served)
        got = read_tags(str(out))
        assert got.title == "Overlay Title", path.name
        assert got.replace(title=None) == own.replace(title=None), path.name
        assert _decode(out) == _decode(path), path.name
        overlaid.append(path.name)
    print(f"\ncorpus: {len(overlaid)} overlaid, {len(passed)} passed through")
    for line in passed:
        print(f"  passed through: {line}")
    assert overlaid
