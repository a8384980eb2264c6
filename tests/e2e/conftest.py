"""Fixtures of the end-to-end tests: a real encoded library and a real FUSE mount of it.

``library`` encodes the tracks of `tests.e2e.library.LIBRARY` with the real
encoders once per test session (a couple of seconds of audio each).
``library_mount`` mounts both of its origins once per session with the default
template; tests that only read share it. Tests that change origins or mount
options mount their own with `tests.e2e.helpers.mounted`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helper modules are imported as ``tests.e2e.*``: make the repository root
# importable whatever directory pytest was started from.
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.e2e.helpers import Mount, mounted, require_fuse  # noqa: E402
from tests.e2e.library import Library, build_library, missing_encoders  # noqa: E402

# A real PostgreSQL for the shared catalog (test_shared_catalog.py).
from tests.servers.postgres import postgres, postgres_url  # noqa: E402, F401
from tests.servers.s3 import S3Server, s3_server  # noqa: E402

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "realworld"


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    """The test library, encoded with real encoders into two origin folders."""
    missing = missing_encoders()
    if missing:
        pytest.skip(f"encoders missing: {', '.join(missing)} (see ENVIRONMENT.md, 'Media tools')")
    return build_library(tmp_path_factory.mktemp("library"))


@pytest.fixture(scope="session")
def library_mount(library: Library, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """Both library origins mounted with the default template, first scan finished.

    Shared by every test that only reads; do not change its origins.
    """
    require_fuse()
    base = tmp_path_factory.mktemp("session-mount")
    with mounted(library.origins, base / "mnt", base / "cache") as mount:
        yield mount


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The real-world corpus of odd audio files (skips when it is not there)."""
    if not CORPUS.is_dir():
        pytest.skip(f"real-world corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture
def s3() -> Iterator[S3Server]:
    """A real S3 server (moto_server) on 127.0.0.1, stopped after the test."""
    try:
        with s3_server() as server:
            yield server
    except FileNotFoundError as exc:  # pragma: no cover - CI installs moto
        pytest.skip(f"moto_server is not installed: {exc}")
