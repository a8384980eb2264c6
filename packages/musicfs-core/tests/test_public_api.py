"""The public API of musicfs.core: every exported name resolves, and the light
names load without the FUSE binding."""

from __future__ import annotations

import subprocess
import sys

import musicfs.core


def test_every_exported_name_resolves() -> None:
    for name in musicfs.core.__all__:
        assert getattr(musicfs.core, name) is not None, name


def test_reading_a_catalog_does_not_load_pyfuse3_or_trio() -> None:
    code = (
        "import sys; from musicfs.core import Catalog, load_config, PathTemplate; "
        "print(sorted(m for m in ('pyfuse3', 'trio', 'mutagen') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
