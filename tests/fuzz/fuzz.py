"""Fuzzing: damaged audio files through the tag reader, the overlay writers and a real mount.

    nox -s fuzz                          # 2,000 cases, a new seed
    nox -s fuzz -- --cases 100000 --seed 7
    python tests/fuzz/fuzz.py --help     # from the repository root, in a dev venv

Each case is a file made from a seed (the real-world corpus in
``../shared/corpus/realworld`` and files ffmpeg encodes now: FLAC, MP3, Ogg
Vorbis, Opus, M4A) by byte flips, truncation, zeroed or repeated runs, random
insertions, and splices of one file's header onto another's body. It goes:

1. through the scanner's tag reading (`parse_file`, what scan workers run) and
   `read_tags`, which may only answer tags or `UnreadableFile`;
2. through every built-in overlay writer that takes its extension
   (`header_length` + `synthesize_for_file` with changed tags), which may only
   answer a header or refuse with `NotImplementedError`; a header is read back;

both in worker processes with a per-case timeout, so a hang is caught (the
worker is killed and the case kept); and

3. through a real mount: a batch of cases is put in an origin, mounted once,
   and every file in the tree is stat'ed and read whole, each read giving
   ``st_size`` bytes, those of an origin file; the daemon must stay up.

The seed is printed first; a run is repeated exactly by its seed. Every
crasher (a case that raised, hung, killed its worker or broke the mount) is
printed and kept under ``tests/fuzz/crashers/`` (``--crashers``), named by
stage and content hash; ``test_fuzz.py`` replays them all in every test run.
Exit status: 0 without crashers, 1 with.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import multiprocessing.connection
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus" / "realworld"
CRASHERS = Path(__file__).resolve().parent / "crashers"
#: What ffmpeg makes as generated seeds: extension -> encoder arguments.
GENERATED = {
    "flac": ["-c:a", "flac"],
    "mp3": ["-c:a", "libmp3lame"],
    "ogg": ["-c:a", "libvorbis"],
    "opus": ["-c:a", "libopus"],
    "m4a": ["-c:a", "aac"],
}
MUTATIONS = ("flip", "truncate", "splice", "insert", "zero", "repeat")


@dataclass(frozen=True)
class Case:
    index: int
    name: str  # file name, with the extension it is scanned by
    data: bytes
    how: str  # the mutations made, for the report

    @property
    def ext(self) -> str:
        return self.name.rpartition(".")[2]


@dataclass
class Report:
    cases: int = 0
    mounted: int = 0
    read: int = 0  # files read whole through the mount
    crashes: list[tuple[str, Case, str]] = field(default_factory=list)
    hangs: int = 0

    def crash(self, stage: str, case: Case, detail: str) -> None:
        self.crashes.append((stage, case, detail))
        if "timed out" in detail:
            self.hangs += 1


# --- the cases ------------------------------------------------------------------------


def make_seeds(workdir: Path, corpus: Path | None) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every seed: the corpus' files and ffmpeg's."""
    seeds: list[tuple[str, bytes]] = []
    if corpus is not None and corpus.is_dir():
        seeds += [(p.name, p.read_bytes()) for p in sorted(corpus.iterdir()) if p.is_file()]
    if shutil.which("ffmpeg") is not None:
        for ext, codec in GENERATED.items():
            out = workdir / f"generated.{ext}"
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=0.5", *codec,
                 "-metadata", "title=Fuzz", "-metadata", "artist=Seed", "-metadata", "track=2/9",
                 str(out)],
                check=True,
            )  # fmt: skip
            seeds.append((out.name, out.read_bytes()))
    if not seeds:
        raise SystemExit("no seeds: neither the corpus nor ffmpeg is there")
    return seeds


def _mutate_once(
    rng: random.Random, data: bytes, seeds: Sequence[tuple[str, bytes]]
) -> tuple[bytes, str]:
    how = rng.choice(MUTATIONS)
    buf = bytearray(data)

    # Headers are where parsers go wrong: most damage lands in the first 8 KB.
    def spot() -> int:
        span = len(buf) if rng.random() < 0.2 else min(len(buf), 8192)
        return rng.randrange(span) if span else 0

    if how == "flip" and buf:
        for _ in range(rng.randint(1, 16)):
            buf[spot()] ^= 1 << rng.randrange(8) if rng.random() < 0.5 else rng.randrange(256)
    elif how == "truncate":
        del buf[spot() :]
    elif how == "splice":
        _, other = rng.choice(seeds)
        cut = rng.randrange(len(other) + 1)
        buf = bytearray(other[: min(cut, 65536)]) + buf[spot() :]
    elif how == "insert":
        at = spot()
        buf[at:at] = rng.randbytes(rng.choice([1, 2, 4, 8, 255, 4096]))
    elif how == "zero" and buf:
        at = spot()
        buf[at : at + rng.choice([1, 4, 64, 1024])] = bytes(min(len(buf) - at, 1024))
    elif how == "repeat" and buf:
        at = spot()
        piece = buf[at : at + rng.randint(1, 512)]
        buf[at:at] = piece * rng.randint(1, 64)
    # Size fields: set a 32-bit word to an extreme now and then.
    if rng.random() < 0.2 and len(buf) >= 4:
        at = spot() & ~3
        buf[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\0\0\0\0"])
    return bytes(buf), how


def make_case(rng: random.Random, index: int, seeds: Sequence[tuple[str, bytes]]) -> Case:
    name, data = rng.choice(seeds)
    hows = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        data, how = _mutate_once(rng, data, seeds)
        hows.append(how)
    ext = name.rpartition(".")[2] if "." in name else "bin"
    if rng.random() < 0.1:  # a misnamed file: another format's extension
        ext = rng.choice(seeds)[0].rpartition(".")[2]
    stem = name.rpartition(".")[0] or name
    return Case(index, f"{index:07d}-{stem[:40]}.{ext}", data, "+".join(hows))


# --- stages 1 and 2: in a worker process -----------------------------------------------


def check_bytes(name: str, data: bytes, workdir: str) -> str | None:
    """Run one file through the tag reader and the overlay writers; None if all
    answered as documented, else what went wrong (with a traceback)."""
    from musicfs.core.model import FileStat, ScannedFile
    from musicfs.core.sync.parsing import parse_file
    from musicfs.core.tags.reader import UnreadableFile, read_tags
    from musicfs.plugins.builtin import BUILTIN_FORMATS

    path = os.path.join(workdir, name)
    with open(path, "wb") as fh:
        fh.write(data)
    ext = name.rpartition(".")[2].lower()
    try:
        tags, error, _ = parse_file(path)  # the third: the audio identity
        if error is not None and not error:
            return f"scanner: parse_file gave an empty reason for {tags!r}"
        # What a scan does next with it: the catalog stores the row.
        ScannedFile("lib", name, FileStat(len(data), 1), ext, tags, error)
        row = tags.as_row()
        if any(isinstance(v, int) and not -(2**63) <= v < 2**63 for v in row):
            return f"scanner: a number SQLite cannot store in {row!r}"
        with contextlib.suppress(UnreadableFile):
            read_tags(path)
    except BaseException:
        return "scanner: " + traceback.format_exc()
    finally:
        os.unlink(path)

    def read(offset: int, size: int) -> bytes:
        return data[offset : offset + size]

    meta = tags.replace(title="Fuzzed Ü title", artist=None, track=7, tracktotal=12, year=2001,
                        genre="Fuzz")  # fmt: skip
    for plugin_class in BUILTIN_FORMATS:
        plugin = plugin_class()
        if not plugin.can_handle(ext):
            continue
        try:
            length = plugin.header_length(read, len(data))
            if not 0 < length <= len(data):
                continue
            header = plugin.synthesize_for_file(meta, read, len(data), length)
            if not isinstance(header, bytes | bytearray) or not header:
                return f"writer {plugin.name}: returned {type(header).__name__} {header!r:.80}"
            with open(path, "wb") as fh:
                fh.write(bytes(header) + data[length:])
            try:
                with contextlib.suppress(UnreadableFile):
                    read_tags(path)
            finally:
                os.unlink(path)
        except NotImplementedError:
            pass  # the documented refusal
        except BaseException:
            return f"writer {plugin.name}: " + traceback.format_exc()
    return None


def _worker(conn: multiprocessing.connection.Connection) -> None:
    with tempfile.TemporaryDirectory(prefix="musicfs-fuzz-") as workdir:
        while True:
            try:
                job = conn.recv()
            except EOFError:
                return
            if job is None:
                return
            index, name, data = job
            conn.send((index, check_bytes(name, data, workdir)))


class Pool:
    """Worker processes, one case each at a time, each case with a deadline."""

    def __init__(self, size: int, timeout: float) -> None:
        # fork: the workers need not import this file by name (pytest's
        # importlib mode does not put it on sys.path).
        self.context = multiprocessing.get_context("fork")
        self.timeout = timeout
        self.workers = [self._start() for _ in range(size)]

    def _start(
        self,
    ) -> tuple[multiprocessing.process.BaseProcess, multiprocessing.connection.Connection]:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker, args=(child,), daemon=True)
        process.start()
        child.close()
        return process, parent

    def run(self, jobs: Iterator[Case], report: Report) -> None:
        busy: dict[int, tuple[Case, float]] = {}  # worker slot -> (case, deadline)
        pending = iter(jobs)
        exhausted = False
        while True:
            for slot in range(len(self.workers)):
                if slot not in busy and not exhausted:
                    case = next(pending, None)
                    if case is None:
                        exhausted = True
                        break
                    self.workers[slot][1].send((case.index, case.name, case.data))
                    busy[slot] = (case, time.monotonic() + self.timeout)
            if not busy:
                return
            wait = max(0.0, min(deadline for _, deadline in busy.values()) - time.monotonic())
            ready = multiprocessing.connection.wait(
                [self.workers[slot][1] for slot in busy], timeout=wait
            )
            for slot, (case, deadline) in list(busy.items()):
                process, conn = self.workers[slot]
                if conn in ready:
                    try:
                        _, problem = conn.recv()
                    except (EOFError, OSError):
                        problem = f"the worker died (exit status {process.exitcode})"
                        self._restart(slot)
                    del busy[slot]
                    report.cases += 1
                    if problem is not None:
                        report.crash("reader", case, problem)
                elif time.monotonic() >= deadline:
                    self._restart(slot)
                    del busy[slot]
                    report.cases += 1
                    report.crash("reader", case, f"timed out after {self.timeout:g} s (a hang)")

    def _restart(self, slot: int) -> None:
        process, conn = self.workers[slot]
        process.kill()
        process.join()
        conn.close()
        self.workers[slot] = self._start()

    def close(self) -> None:
        for process, conn in self.workers:
            with contextlib.suppress(OSError):
                conn.send(None)
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()


# --- stage 3: a real mount -------------------------------------------------------------


def check_mount(batch: Sequence[Case], workdir: Path, report: Report) -> None:
    """Mount *batch* once; stat and read every file; the daemon must stay up."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.e2e.helpers import mounted, pid_alive, try_status

    origin, mountpoint, cache = workdir / "origin", workdir / "mnt", workdir / "cache"
    for path in (origin, mountpoint, cache):
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
    for case in batch:
        (origin / case.name).write_bytes(case.data)
    originals = {hashlib.sha256(case.data).hexdigest() for case in batch}
    by_name = {case.name: case for case in batch}
    first = batch[0]
    try:
        with mounted([origin], mountpoint, cache) as mount:
            for dirpath, _dirs, files in os.walk(mountpoint):
                for name in files:
                    path = Path(dirpath) / name
                    if path.suffix.lower() in (".jpg", ".png"):
                        continue  # album art made by MusicFS, not an origin file
                    try:
                        size = path.stat().st_size
                        data = path.read_bytes()
                    except OSError as exc:
                        report.crash("mount", by_name.get(name, first), f"{path}: {exc}")
                        continue
                    report.read += 1
                    if len(data) != size:
                        report.crash("mount", by_name.get(name, first),
                                     f"{path}: st_size {size}, read {len(data)} bytes")  # fmt: skip
                    elif hashlib.sha256(data).hexdigest() not in originals:
                        report.crash("mount", by_name.get(name, first),
                                     f"{path}: bytes of no origin file")  # fmt: skip
            if not pid_alive(mount.pid) or try_status(mountpoint) is None:
                log = (cache / "daemon.log").read_text(errors="replace")[-3000:]
                report.crash("mount", first, f"the daemon died; its log ends:\n{log}")
    except (AssertionError, OSError, subprocess.SubprocessError) as exc:
        report.crash("mount", first, f"the batch of {len(batch)} files: {exc}")
    report.mounted += len(batch)


def can_mount() -> bool:
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


# --- the run ---------------------------------------------------------------------------


def keep(crashers: Path, stage: str, case: Case, detail: str) -> Path:
    crashers.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(case.data).hexdigest()[:16]
    path = crashers / f"{stage}-{digest}.{case.ext}"
    path.write_bytes(case.data)
    path.with_name(path.name + ".txt").write_text(f"{case.how}\n{detail}\n")
    return path


def fuzz(
    *,
    seed: int,
    count: int,
    first: int = 0,
    timeout: float = 10.0,
    workers: int = 0,
    batch: int = 500,
    mount: bool = True,
    corpus: Path | None = CORPUS,
    crashers: Path = CRASHERS,
    out: TextIO | None = None,
) -> Report:
    """Run *count* cases from *seed*; print and keep crashers; return the report."""

    def say(text: str) -> None:
        print(text, file=out or sys.stdout, flush=True)

    started = time.monotonic()
    say(f"musicfs fuzz: seed {seed}, {count} cases, timeout {timeout:g} s per case")
    report = Report()
    if mount and not can_mount():
        say("no FUSE here (/dev/fuse, fusermount3): the mount stage is skipped")
        mount = False
    with tempfile.TemporaryDirectory(prefix="musicfs-fuzz-") as tmp:
        workdir = Path(tmp)
        seeds = make_seeds(workdir, corpus)
        say(f"seeds: {len(seeds)} files ({corpus if corpus and corpus.is_dir() else 'no corpus'}"
            " + ffmpeg's)")  # fmt: skip
        pool = Pool(workers or max(1, os.cpu_count() or 1), timeout)
        try:
            for start in range(first - first % batch, count, batch):
                chunk = list(_slice(seed, count, seeds, start, batch))
                before = len(report.crashes)
                pool.run(iter(chunk), report)
                if mount:
                    check_mount(chunk, workdir, report)
                repeat = (f"repeat: nox -s fuzz -- --seed {seed} --first {start} "
                          f"--cases {min(count, start + batch)} --batch {batch}")  # fmt: skip
                for stage, case, detail in report.crashes[before:]:
                    path = keep(crashers, stage, case, f"{repeat}\n{detail}")
                    say(f"CRASHER {stage} case {case.index} ({case.how}) -> {path}\n"
                        f"{detail.rstrip()}")  # fmt: skip
                say(f"{report.cases} cases, {report.mounted} mounted ({report.read} files read), "
                    f"{len(report.crashes)} crashes ({report.hangs} hangs), "
                    f"{time.monotonic() - started:.0f} s")  # fmt: skip
        finally:
            pool.close()
    say(f"done: seed {seed}, {report.cases} cases, {len(report.crashes)} crashes, "
        f"{report.hangs} hangs, {time.monotonic() - started:.0f} s")  # fmt: skip
    return report


def _slice(
    seed: int, count: int, seeds: Sequence[tuple[str, bytes]], start: int, size: int
) -> Iterator[Case]:
    """Cases *start* .. *start* + *size* of the run: the same for a seed, every time."""
    rng = random.Random(f"{seed}:{start}")
    for index in range(start, min(count, start + size)):
        yield make_case(rng, index, seeds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000, help="how many cases (default 2000)")
    parser.add_argument("--seed", type=int, default=None, help="repeat a run (default: new)")
    parser.add_argument(
        "--first",
        type=int,
        default=0,
        help="start at this case (its batch), to repeat a crasher's batch",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: cores)")
    parser.add_argument("--batch", type=int, default=500, help="cases per mount")
    parser.add_argument("--no-mount", action="store_true", help="skip the mount stage")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="real-world seed files")
    parser.add_argument("--crashers", type=Path, default=CRASHERS, help="where crashers go")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    report = fuzz(seed=seed, count=args.cases, first=args.first, timeout=args.timeout,
                  workers=args.workers, batch=args.batch, mount=not args.no_mount,
                  corpus=args.corpus, crashers=args.crashers)  # fmt: skip
    return 1 if report.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
