"""Path templates (FR-2): variables, fallbacks, sanitising, distinct names."""

from __future__ import annotations

import pytest

from musicfs.core.catalog.templates import (
    DEFAULT_TEMPLATE,
    PathTemplate,
    TemplateError,
    sanitize,
    with_counter,
)
from musicfs.core.model import TrackTags

FULL = TrackTags(
    title="Jóga", artist="Björk", album="Homogenic", albumartist="Björk", year=1997, track=3,
    disc=1, genre="Electronic", composer="Björk",
)  # fmt: skip


def render(tags: TrackTags, template: str = DEFAULT_TEMPLATE, relpath: str = "x/y.flac") -> str:
    return "/".join(
        PathTemplate.parse(template).render(tags, relpath, relpath.rsplit(".", maxsplit=1)[-1])
    )


def test_default_template_renders_every_part() -> None:
    assert render(FULL) == "Björk/Homogenic (1997) [FLAC]/03 - Jóga.flac"


def test_every_variable_is_filled() -> None:
    template = " ".join(
        "$" + v for v in ("artist", "albumartist", "album", "title", "track", "disc", "year",
                          "genre", "format", "format_upper", "composer")
    )  # fmt: skip
    assert render(FULL, template, "a.mp3") == (
        "Björk Björk Homogenic Jóga 03 1 1997 Electronic mp3 MP3 Björk"
    )


def test_missing_tags_fall_back() -> None:
    assert render(TrackTags(), relpath="dir/My Song.mp3") == (
        "Unknown Artist/Unknown Album (0000) [MP3]/00 - My Song.mp3"
    )


def test_album_artist_falls_back_to_artist_then_various_for_compilations() -> None:
    assert render(TrackTags(artist="A", title="T")).startswith("A/")
    assert render(TrackTags(artist="A", title="T", compilation=True)).startswith("Various Artists/")


def test_track_is_padded_to_the_width_of_the_total() -> None:
    assert render(TrackTags(title="T", track=7, tracktotal=120)).endswith("/007 - T.flac")


def test_slash_nul_and_leading_dot_are_replaced() -> None:
    path = render(TrackTags(artist="AC/DC", album=".hidden", title="a\x00b"))
    assert path == "AC_DC/_hidden (0000) [FLAC]/00 - a_b.flac"


@pytest.mark.parametrize("name", [".", "..", "", "   ", "/"])
def test_sanitize_never_yields_special_names(name: str) -> None:
    assert sanitize(name) not in {".", "..", ""}
    assert "/" not in sanitize(name)


def test_long_names_are_cut_to_255_bytes_keeping_the_extension() -> None:
    name = sanitize("é" * 300 + ".flac")
    assert len(name.encode()) <= 255
    assert name.endswith(".flac")


def test_counter_goes_before_the_extension() -> None:
    assert with_counter("01 - Song.flac", 2, is_file=True) == "01 - Song (2).flac"
    assert with_counter("Album", 3, is_file=False) == "Album (3)"
    long = with_counter("x" * 250 + ".flac", 12, is_file=True)
    assert long.endswith(" (12).flac")
    assert len(long.encode()) <= 255


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("$artist/$nosuch", "$nosuch"),
        ("$artist//$title", "empty path component"),
        ("$artist/cost $", "stray '$'"),
        ("$artist/fixed.flac", "same file name"),
        ("", "empty"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("$", r"\$")):
        PathTemplate.parse(template)
