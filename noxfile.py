"""Every development task of the MusicFS workspace.

    nox -s lint       ruff (lint + format check), mypy --strict, import-linter contracts,
                      generated gRPC code up to date
    nox -s tests      the whole test suite: unit tests of each package, then real mounts
    nox -s build      the four wheels in dist/, installed alone into a fresh venv and mounted
    nox -s install    the README's install command, run in a scratch HOME, mount checked
    nox -s package    the .deb, RPM and Arch packages and the systemd units, built and checked
    nox -s proto      regenerate the gRPC code from control.proto
    nox -s lock       rewrite requirements-dev.lock from requirements-dev.in
    nox -s bench      benchmarks (JSON + table in benchmarks/results/, plots in docs/performance.md)
    nox -s fuzz       damaged files through the tag reader, overlay writers and a mount
                      (-- --cases 100000 --seed N; crashers kept in tests/fuzz/crashers/)

Sessions use uv-made virtualenvs. Every tool and every dependency comes from
requirements-dev.lock (exact versions, hashes); the four packages are then
installed editable without dependencies.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
# Without .pyc files every daemon start, hence every mount in the tests, is 2-3x slower.
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
PACKAGES = ["core", "plugins", "control", "cli"]
EDITABLE = [arg for name in PACKAGES for arg in ("-e", f"packages/musicfs-{name}")]
PROTO_DIR = "packages/musicfs-control/src"
PROTO = "musicfs/control/v1/control.proto"
TEST_DIRS = ["tests/e2e", "tests/origins", "tests/servers", "tests/vfstest", "tests/fuzz",
             "tests/smoke_mount.py", "tests/bench", "benchmarks"]  # fmt: skip


LOCK = "requirements-dev.lock"
NO_EMIT = [arg for name in PACKAGES for arg in ("--no-emit-package", f"musicfs-{name}")]


def _install_locked(session: nox.Session) -> None:
    """The development tools and the packages' dependencies, exactly as locked."""
    session.install("--require-hashes", "-r", LOCK)


def _install_dev(session: nox.Session) -> None:
    _install_locked(session)
    # Their dependencies came from the lock; --no-deps keeps a release on PyPI out.
    session.install("--no-deps", *EDITABLE)


def _protoc(session: nox.Session, out: str) -> None:
    session.run(
        "python", "-m", "grpc_tools.protoc", "-I", PROTO_DIR,
        f"--python_out={out}", f"--grpc_python_out={out}", f"--pyi_out={out}",
        f"{PROTO_DIR}/{PROTO}",
    )  # fmt: skip


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy --strict, and a check that the gRPC code matches control.proto."""
    _install_dev(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", *(f"packages/musicfs-{name}/src" for name in PACKAGES))
    session.run("lint-imports")  # the layering contracts in pyproject.toml
    session.run("mypy", *sorted(str(p) for p in Path("plugins/examples").glob("*.py")))
    # Test folders one at a time (each may have its own conftest.py); tests call
    # untyped libraries (mutagen) directly.
    for tests in [*(f"packages/musicfs-{name}/tests" for name in PACKAGES), *TEST_DIRS]:
        if Path(tests).exists():
            session.run("mypy", "--allow-untyped-calls", tests)
    with tempfile.TemporaryDirectory() as tmp:
        _protoc(session, tmp)
        generated = Path(PROTO_DIR) / PROTO
        for new in (Path(tmp) / PROTO).parent.glob("control_pb2*"):
            old = generated.parent / new.name
            if not old.exists() or old.read_bytes() != new.read_bytes():
                session.error(f"{old} is out of date with control.proto: run `nox -s proto`")


@nox.session
def proto(session: nox.Session) -> None:
    """Regenerate the Python gRPC code from control.proto."""
    _install_locked(session)
    _protoc(session, PROTO_DIR)


@nox.session(venv_backend="none")
def lock(session: nox.Session) -> None:
    """Rewrite requirements-dev.lock from requirements-dev.in (exact versions, hashes)."""
    session.run("uv", "pip", "compile", "--quiet", "--python-version", "3.11",
                "--generate-hashes", "--no-header", "--annotation-style", "line", *NO_EMIT,
                *session.posargs, "requirements-dev.in", "-o", LOCK, external=True)  # fmt: skip


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests, then end-to-end tests against real FUSE mounts."""
    _install_dev(session)
    session.run("pytest", *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    """Build the four wheels into dist/, then prove they work alone in a fresh venv."""
    _install_locked(session)
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    for name in PACKAGES:
        session.run("python", "-m", "build", "--wheel", "--outdir", str(dist),
                    f"packages/musicfs-{name}")  # fmt: skip
    wheels = sorted(str(p) for p in dist.glob("*.whl"))
    if len(wheels) != len(PACKAGES):
        session.error(f"expected {len(PACKAGES)} wheels, got {wheels}")
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        session.run("uv", "venv", "-q", "--python", session.python or "python3", str(venv),
                    external=True)  # fmt: skip
        session.run("uv", "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
                    *wheels, external=True)  # fmt: skip
        session.run("python", "tests/smoke_mount.py", str(venv / "bin" / "musicfs"))


@nox.session(venv_backend="none")
def install(session: nox.Session) -> None:
    """Run the README's install command in a scratch HOME and venv, and check its mount."""
    session.run("bash", "tests/install_check.sh", external=True)


@nox.session
def package(session: nox.Session) -> None:
    """Build and check the distro packages and systemd units (packaging/check.sh)."""
    _install_locked(session)
    session.run("mypy", "--strict", "packaging/systemd/try_unit.py")
    session.run("bash", "packaging/check.sh", *session.posargs, external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against direct reads and peers (rclone, mergerfs); see benchmarks/."""
    _install_dev(session)
    session.run("python", "benchmarks/bench.py", *session.posargs)
    session.run("python", "benchmarks/bench_cache.py")
    session.run("python", "benchmarks/bench_origins.py")
    session.run("python", "benchmarks/bench_search.py")
    session.run("python", "benchmarks/bench_prefetch.py")


@nox.session
def fuzz(session: nox.Session) -> None:
    """Fuzz the tag reader, the overlay writers and a real mount (tests/fuzz/fuzz.py);
    prints its seed and every crasher, and keeps them in tests/fuzz/crashers/."""
    _install_dev(session)
    session.run("python", "tests/fuzz/fuzz.py", *session.posargs)
