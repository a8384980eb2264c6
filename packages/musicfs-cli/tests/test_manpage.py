"""musicfs(1) is made from the parser: every command, sub-command and option of
``musicfs`` is on the page, and groff and man render it without a warning."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from musicfs.cli import mounthelper
from musicfs.cli.main import build_parser
from musicfs.cli.manpage import main, render


def _commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ("musicfs",)
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (command words, parser) of the tree, the root first (the test's own walk)."""
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*words, name))


def _plain(roff: str) -> str:
    """The page's text without roff's escapes (fonts, minus signs)."""
    return re.sub(r"\\f[BIRP]", "", roff).replace("\\-", "-").replace("\\e", "\\")


@pytest.fixture(scope="module")
def page() -> str:
    return render(build_parser(), "musicfs 0.1.0")


def test_every_command_and_option_is_on_the_page(page: str) -> None:
    text = _plain(page)
    commands = list(_commands(build_parser()))
    assert len(commands) > 20  # the walk saw the nested actions (cache verify, tag set...)
    for words, parser in commands:
        heading = f".SS {' '.join(words)}"
        if len(words) > 1:
            assert heading + " " in text or text.endswith(heading), f"no section for {words}"
        for action in parser._actions:
            for option in action.option_strings:
                assert option in text, f"{' '.join(words)} {option} is not on the page"
            if isinstance(action, argparse._HelpAction):
                continue  # -h is described once, under OPTIONS
            if action.help and action.help is not argparse.SUPPRESS and "%" not in action.help:
                assert " ".join(action.help.split()) in text, f"help of {action.dest} missing"


def test_each_option_is_listed_under_its_own_command(page: str) -> None:
    # --scope belongs to `cache clear`: its entry is in that section, not before it.
    text = _plain(page)
    clear = text.index(".SS musicfs cache clear ")
    after = text.index(".SS ", clear + 1)
    assert "--scope" in text[clear:after]
    assert "--scope" not in text[:clear]


def test_page_shows_the_mount_helper_and_fstab(page: str) -> None:
    text = _plain(page)
    assert ".SH MOUNTING WITH MOUNT(8) AND /ETC/FSTAB" in text
    for word in ("mount -t fuse.musicfs", "x-systemd.automount", "_netdev", "/etc/fstab"):
        assert word in text
    assert ".SH EXIT STATUS" in text


def test_helper_page_has_every_call_option_and_mount_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["mount.musicfs"]) == 0
    text = _plain(capsys.readouterr().out)
    assert text.startswith('.\\" mount.musicfs(8)')
    options = text[text.index(".SH OPTIONS") : text.index(".SH MOUNT OPTIONS")]
    for action in mounthelper.build_parser()._actions:
        for option in action.option_strings:
            found = re.search(rf"(?<![\w-]){option}(?![\w-])", options)
            assert found, f"mount.musicfs {option} is not under OPTIONS"
    for name in mounthelper.FLAGS:
        assert f".TP\n{name}\n" in text
    for name, flag in mounthelper.VALUES.items():
        assert f".TP\n{name}=" in text
        assert f"\n{flag}" in text  # says which musicfs mount flag it is
    for name in ("_netdev", "nofail", "x-systemd.automount", "noauto"):
        assert name in text


def test_text_is_escaped_for_roff() -> None:
    parser = argparse.ArgumentParser(prog="demo", description="Demo.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help=".starts with a dot")
    run.add_argument("--dry-run", action="store_true", help="'quoted \\ backslash %(prog)s")
    roff = render(parser, "demo 1")
    assert "\\&.starts with a dot" in roff  # not read as a roff request
    assert "\\&'quoted \\e backslash demo run" in roff
    assert "\\fB\\-\\-dry\\-run\\fR" in roff


def test_date_comes_from_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert '.TH MUSICFS 1 "2023-11-14" "musicfs 0.1.0"' in render(build_parser(), "musicfs 0.1.0")


@pytest.mark.parametrize(
    ("which", "shows"),
    [
        ("musicfs", "musicfs mount [options] mountpoint"),
        ("mount.musicfs", "mount.musicfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]"),
    ],
)
def test_groff_and_man_render_it_without_warnings(tmp_path: Path, which: str, shows: str) -> None:
    if shutil.which("groff") is None or shutil.which("man") is None:
        pytest.skip("needs groff and man (apt-get install groff-base man-db)")
    made = subprocess.run(
        [sys.executable, "-m", "musicfs.cli.manpage", which],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    path = tmp_path / "page"
    path.write_text(made.stdout)
    groff = subprocess.run(
        ["groff", "-ww", "-z", "-man", str(path)], capture_output=True, text=True, check=False
    )
    assert (groff.returncode, groff.stderr) == (0, "")
    shown = subprocess.run(
        ["man", "--warnings", "-l", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat"},
    )
    assert (shown.returncode, shown.stderr) == (0, "")
    assert shows in shown.stdout
    assert "mount -t fuse.musicfs SOURCE MOUNTPOINT" in shown.stdout
