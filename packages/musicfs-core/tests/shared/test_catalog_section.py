"""``[catalog] shared``: a shared catalog named in the config file or the
environment, checked as it is read, with errors that say what to write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from musicfs.core.config.catalog import CATALOG
from musicfs.core.config.settings import load_config
from musicfs.core.values import ConfigError


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_the_shared_catalog_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    path = _config(tmp_path, '[catalog]\nshared = "postgresql://musicfs@nas.lan:5432/music"\n')
    config = load_config(path, env={}, sections=[CATALOG])
    assert config.section(CATALOG).shared == "postgresql://musicfs@nas.lan:5432/music"
    env = {"MUSICFS_CATALOG_SHARED": "postgresql://me@db:6543/lib"}
    assert load_config(path, env=env, sections=[CATALOG]).section(CATALOG).shared == (
        "postgresql://me@db:6543/lib"
    )
    empty = _config(tmp_path, "")
    assert load_config(empty, env={}, sections=[CATALOG]).section(CATALOG).shared is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://musicfs:hunter2secret@nas.lan/music", "credentials store"),
        ("mysql://nas.lan/music", "postgresql://user@host:port/database"),
        ("postgresql://musicfs@nas.lan", "names no database"),
    ],
)
def test_a_bad_shared_catalog_is_refused_naming_the_key_and_the_fix(
    tmp_path: Path, url: str, says: str
) -> None:
    path = _config(tmp_path, f'[catalog]\nshared = "{url}"\n')
    with pytest.raises(ConfigError) as refused:
        load_config(path, env={}, sections=[CATALOG])
    message = str(refused.value)
    assert str(path) in message
    assert "catalog.shared" in message
    assert says in message
    assert "hunter2secret" not in message


def test_a_config_without_a_shared_catalog_does_not_load_the_driver(tmp_path: Path) -> None:
    path = _config(tmp_path, "[scan]\nworkers = 2\n")
    code = (
        "import sys\n"
        "from musicfs.core.config.catalog import CATALOG\n"
        "from musicfs.core.config.settings import load_config\n"
        f"load_config({str(path)!r}, env={{}}, sections=[CATALOG])\n"
        "print(sorted(m for m in sys.modules if m.startswith('psycopg')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
