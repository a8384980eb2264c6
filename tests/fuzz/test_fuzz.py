"""The fuzzer in every test run: a short seeded round, and every kept crasher replayed.

The long runs are ``nox -s fuzz -- --cases N`` (see fuzz.py); what they find is
kept in crashers/ and replayed here, through the stage it failed in.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.e2e.helpers import require_fuse
from tests.fuzz.fuzz import CRASHERS, Case, Pool, Report, can_mount, check_mount, fuzz

#: The seed of the round CI runs: fixed, so a failure is repeated by
#: ``nox -s fuzz -- --seed 13 --cases 300``.
CI_SEED = 13


def _xfails() -> dict[str, str]:
    listed = CRASHERS / "XFAIL"
    if not listed.exists():
        return {}
    lines = (line.strip() for line in listed.read_text().splitlines())
    return dict(line.partition(" ")[::2] for line in lines if line and not line.startswith("#"))


def _crashers() -> list[object]:
    xfails = _xfails()
    files = sorted(
        p
        for p in CRASHERS.iterdir()
        if p.is_file() and p.suffix != ".txt" and p.name not in ("README.md", "XFAIL")
    )
    return [
        pytest.param(p, id=p.name, marks=[pytest.mark.xfail(reason=xfails[p.name], strict=True)])
        if p.name in xfails
        else pytest.param(p, id=p.name)
        for p in files
    ]


@pytest.mark.mount
def test_a_short_seeded_round_finds_no_crasher(tmp_path: Path) -> None:
    require_fuse()
    report = fuzz(seed=CI_SEED, count=300, batch=300, timeout=60, crashers=tmp_path / "crashers")
    assert report.cases == 300
    assert report.mounted == 300
    assert report.read > 0, "no file of the round was read through the mount"
    found = "\n".join(f"{stage} {case.how}: {detail}" for stage, case, detail in report.crashes)
    assert not report.crashes, f"crashers (kept in {tmp_path / 'crashers'}):\n{found}"


@pytest.mark.parametrize("crasher", _crashers())
def test_a_kept_crasher_is_answered_as_documented(crasher: Path, tmp_path: Path) -> None:
    """Through the reader and writers (in a worker, so a hang fails in a minute
    instead of stalling the run), then through a real mount."""
    data = crasher.read_bytes()
    name = crasher.name.partition("-")[2]
    case = Case(0, f"{hashlib.sha256(data).hexdigest()[:8]}-{name}", data, "replay")
    report = Report()
    pool = Pool(1, timeout=60)
    try:
        pool.run(iter([case]), report)
    finally:
        pool.close()
    assert not report.crashes, report.crashes[0][2]
    if can_mount():
        check_mount([case], tmp_path, report)
        assert not report.crashes, report.crashes[0][2]
