"""One error root: every exception class of the four packages is a MusicFSError
(or a Signal: control flow inside one module), and the command shows an expected
error as one line, never a traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import musicfs.cli
import musicfs.control
import musicfs.core
import musicfs.plugins
from musicfs.cli.main import main
from musicfs.core.errors import MusicFSError, Signal


def exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in a module of the four packages."""
    found: list[type[BaseException]] = []
    for package in (musicfs.core, musicfs.plugins, musicfs.control, musicfs.cli):
        prefix = package.__name__ + "."
        for info in pkgutil.walk_packages(package.__path__, prefix):
            if info.name.endswith("__main__"):
                continue  # running it is its import
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                    found.append(cls)
    return found


def test_every_exception_class_is_a_musicfs_error_or_a_signal() -> None:
    classes = exception_classes()
    assert len(classes) >= 24  # the walk found the packages' modules
    strays = [
        f"{c.__module__}.{c.__qualname__}"
        for c in classes
        if not issubclass(c, (MusicFSError, Signal)) and c is not Signal
    ]
    assert strays == []
    both = [
        c.__qualname__ for c in classes if issubclass(c, MusicFSError) and issubclass(c, Signal)
    ]
    assert both == []


def test_a_signal_that_escapes_is_a_bug_with_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from musicfs.cli import search

    def escaped(_args: object) -> int:
        raise Signal("stop")

    monkeypatch.setattr(search, "cmd_search", escaped)
    with pytest.raises(Signal):
        main(["search", "anything", "--mount", "/nowhere"])


def test_an_expected_error_is_one_line_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from musicfs.cli import search

    def refused(_args: object) -> int:
        raise MusicFSError("the origin 'nas' is unreachable: check that it is mounted")

    monkeypatch.setattr(search, "cmd_search", refused)
    assert main(["search", "anything", "--mount", "/nowhere"]) == 1
    err = capsys.readouterr().err
    assert err == "musicfs: error: the origin 'nas' is unreachable: check that it is mounted\n"


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from musicfs.cli import search

    def bug(_args: object) -> int:
        raise KeyError("state")

    monkeypatch.setattr(search, "cmd_search", bug)
    with pytest.raises(KeyError):  # not swallowed: Python prints its traceback
        main(["search", "anything", "--mount", "/nowhere"])
