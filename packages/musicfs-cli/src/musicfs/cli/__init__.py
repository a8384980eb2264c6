"""The ``musicfs`` command line. `main` is the entry point; `build_parser` its arguments."""

from __future__ import annotations

from musicfs.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
