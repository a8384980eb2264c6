"""Prefetch benchmark (FR-19): cache misses of a scripted listening session on a
remote-like origin, with and without prefetch.

    python benchmarks/bench_prefetch.py [--albums 5] [--tracks 10] [--track-kib 2048]
        [--delay-ms 20] [--bandwidth 16MiB] [--listen 1.0] [--ahead 2] [--output FILE]

The origin is S3 (moto_server on 127.0.0.1) behind a TCP proxy that holds each
request for *delay-ms* (about one round trip of a real network), with the
origin's own bandwidth limit. The library: *albums* x *tracks* tagged WAV files.

The session, the same for both runs (a fixed seed):

- day 1: the albums in order, each track played (read whole, then *listen*
  seconds with the file open) or, 15% of them, skipped (the first 256 KiB,
  then a quarter of *listen*); two "favourite" jumps are part of the habit:
  after a given track of one album the listener plays a track of another
  album, then goes on with the first;
- day 2: the same listener with an empty content cache (``musicfs cache
  clear``, then a new mount on the same cache dir: the catalog keeps what was
  learned), the albums in another order, the same favourite jumps.

A miss is an open served from the origin rather than the cache: the
``file.opened`` events' ``source`` detail (``musicfs events``). Also reported:
the time to open a track and read its first 128 KiB, and the bytes copied into
the cache (prefetches of tracks that were then skipped over cost bytes).
Writes JSON to benchmarks/results/ and prints a short table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mutagen.id3 import TALB, TIT2, TPE1, TRCK
from mutagen.wave import WAVE

from tests.e2e.eventstream import listening
from tests.e2e.helpers import Mount, describe, mounted, run_musicfs, walk_files, write_config
from tests.servers.s3 import S3Server, s3_server

ROOT = Path(__file__).resolve().parent
BUCKET = "bench"
FIRST_READ = 128 * 1024
SKIP_READ = 256 * 1024
SKIP_SHARE = 0.15
SEED = 7


@dataclass(frozen=True)
class Play:
    album: int
    track: int
    skip: bool = False

    @property
    def relpath(self) -> str:
        return f"Album {self.album + 1}/{self.track + 1:02d}.wav"


def script(albums: int, tracks: int) -> list[list[Play]]:
    """The two days of the session (see the module docstring)."""
    rng = random.Random(SEED)
    # After (album, track), the favourite (album, track) is played.
    favourites = {(1 % albums, min(6, tracks - 2)): (4 % albums, min(2, tracks - 1)),
                  (3 % albums, min(3, tracks - 2)): (0, min(8, tracks - 1))}  # fmt: skip
    orders = [list(range(albums)), rng.sample(range(albums), albums)]
    days = []
    for order in orders:
        plays = []
        for album in order:
            for track in range(tracks):
                plays.append(Play(album, track, skip=rng.random() < SKIP_SHARE))
                if (album, track) in favourites:
                    plays.append(Play(*favourites[(album, track)]))
        days.append(plays)
    return days


def write_track(path: Path, size: int, album: int, track: int) -> bytes:
    """A stereo 44.1 kHz WAV of about *size* bytes of noise, tagged (ID3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(44100)
        out.writeframes(os.urandom(size // 4 * 4))
    audio: Any = WAVE(str(path))  # mutagen is untyped
    audio.add_tags()
    for frame in (TIT2(encoding=3, text=[f"A{album + 1}T{track + 1}"]),
                  TPE1(encoding=3, text=["Bench"]), TALB(encoding=3, text=[f"Album {album + 1}"]),
                  TRCK(encoding=3, text=[str(track + 1)])):  # fmt: skip
        audio.tags.add(frame)
    audio.save()
    return path.read_bytes()


class DelayProxy:
    """A TCP proxy on 127.0.0.1 holding each chunk a client sends for *delay* s
    before passing it on: about one round trip per request, as over a network."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, self.delay),
                             daemon=True).start()  # fmt: skip
            threading.Thread(target=self._pump, args=(upstream, client, 0.0), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while data := source.recv(1 << 16):
                if delay:
                    time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._server.close()
        for sock in self._sockets:
            sock.close()


def play(path: Path, item: Play, listen: float) -> float:
    """Open, read as a player would, listen with the file open; return the
    seconds to open and read the first 128 KiB."""
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        fh.read(FIRST_READ)
        first = time.perf_counter() - started
        if item.skip:
            fh.read(SKIP_READ - FIRST_READ)
        else:
            while fh.read(1 << 20):
                pass
        time.sleep(listen / 4 if item.skip else listen)  # the listener, not a wait for MusicFS
    return first


def cli(*args: str | Path) -> dict[str, Any]:
    result = run_musicfs(*map(str, args), "--json")
    if result.returncode != 0:
        raise RuntimeError(describe(result))
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def run_day(mount: Mount, plays: list[Play], listen: float) -> dict[str, Any]:
    """Play *plays* on *mount*; count the opens served from origin and cache."""
    paths: dict[str, Path] = {}
    for name in walk_files(mount.mountpoint):  # "Bench/Album 3 (…)/04 - A3T4.wav"
        album, track = name.rpartition(" - A")[2].removesuffix(".wav").split("T")
        paths[Play(int(album) - 1, int(track) - 1).relpath] = mount.mountpoint / name
    firsts: dict[str, list[float]] = {"origin": [], "cache": []}
    with listening(mount, "--type", "file.opened") as events:
        timings = [play(paths[item.relpath], item, listen) for item in plays]
        events.wait_for(lambda e: e["type"] == "file.opened", count=len(plays), timeout=60)
        seen = [e for e in events.seen if e["type"] == "file.opened"]
    assert [e["path"] for e in seen] == [p.relpath for p in plays], "opens out of step"
    for event, first in zip(seen, timings, strict=True):
        firsts[event["details"]["source"]].append(first)
    stats = cli("cache", "stats", mount.mountpoint)
    return {
        "plays": len(plays),
        "misses": len(firsts["origin"]),
        "hits": len(firsts["cache"]),
        "sources": [f"{e['path']}: {e['details']['source']}" for e in seen],
        "first_read_ms": {k: [round(s * 1000, 2) for s in v] for k, v in firsts.items()},
        "cache_fill_bytes": stats["origin_bytes"],
        "cached_files": stats["cached_files"],
    }


def run(server: S3Server, proxy: DelayProxy, days: list[list[Play]], args: argparse.Namespace,
        *, prefetch: bool, tmp: Path) -> dict[str, Any]:  # fmt: skip
    origin = {"id": "cloud", "path": f"s3://{BUCKET}/lib", "endpoint_url": proxy.url,
              "bandwidth": args.bandwidth, "timeout": 10}  # fmt: skip
    config = write_config(tmp / "config.toml", [origin],
                          {"prefetch": {"enabled": prefetch, "ahead": args.ahead}})  # fmt: skip
    env = {"MUSICFS_SECRET_CLOUD_ACCESS_KEY": server.access_key,
           "MUSICFS_SECRET_CLOUD_SECRET_KEY": server.secret_key}  # fmt: skip
    results = []
    for day, plays in enumerate(days):
        with mounted([], tmp / "mnt", tmp / "cache", "--config", str(config), env=env) as mount:
            results.append(run_day(mount, plays, args.listen))
            if day == 0:
                cli("cache", "clear", mount.mountpoint)  # day 2 starts cold
        label = "prefetch" if prefetch else "no prefetch"
        print(f"  {label}, day {day + 1}: {results[-1]['misses']} misses "
              f"in {results[-1]['plays']} plays", flush=True)  # fmt: skip
    plays_all = sum(r["plays"] for r in results)
    misses = sum(r["misses"] for r in results)
    p50 = {source: median_of([ms for r in results for ms in r["first_read_ms"][source]])
           for source in ("origin", "cache")}  # fmt: skip
    return {"prefetch": prefetch, "plays": plays_all, "misses": misses,
            "miss_rate": misses / plays_all, "first_read_ms_p50": p50, "days": results}  # fmt: skip


def median_of(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--albums", type=int, default=5)
    parser.add_argument("--tracks", type=int, default=10)
    parser.add_argument("--track-kib", type=int, default=2048)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth", default="16MiB", help="bytes per second from the origin")
    parser.add_argument("--listen", type=float, default=1.0, help="seconds per played track")
    parser.add_argument("--ahead", type=int, default=2)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    days = script(args.albums, args.tracks)
    results: dict[str, Any] = {
        "albums": args.albums, "tracks_per_album": args.tracks,
        "track_bytes": args.track_kib * 1024, "delay_ms": args.delay_ms,
        "bandwidth": args.bandwidth, "listen_s": args.listen,
        "ahead": args.ahead, "skip_share": SKIP_SHARE, "seed": SEED,
        "session": [[{"play": p.relpath, "skip": p.skip} for p in day] for day in days],
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="musicfs-bench-prefetch-") as name:
        tmp = Path(name)
        objects = {f"lib/{Play(a, t).relpath}":
                   write_track(tmp / "src" / Play(a, t).relpath, args.track_kib * 1024, a, t)
                   for a in range(args.albums) for t in range(args.tracks)}  # fmt: skip
        with s3_server() as server:
            server.put_many(BUCKET, objects)
            proxy = DelayProxy((server.host, server.port), args.delay_ms / 1000)
            try:
                for prefetch in (False, True):
                    run_dir = tmp / ("on" if prefetch else "off")
                    run_dir.mkdir()
                    key = "with_prefetch" if prefetch else "without_prefetch"
                    results[key] = run(server, proxy, days, args, prefetch=prefetch, tmp=run_dir)
            finally:
                proxy.close()
    without, with_ = results["without_prefetch"], results["with_prefetch"]
    reduction = 1 - with_["misses"] / without["misses"] if without["misses"] else 0.0
    results["miss_reduction"] = reduction
    results["target_met"] = reduction >= 0.5
    out = args.output or ROOT / "results" / f"prefetch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"{'run':<12} {'plays':>5} {'misses':>6} {'miss %':>6} {'day 1':>5} {'day 2':>5}"
          f" {'1st 128K p50 ms miss/hit':>25} {'cache fill MiB':>14}")  # fmt: skip
    for label, r in (("no prefetch", without), ("prefetch", with_)):
        miss_ms, hit_ms = (r["first_read_ms_p50"][s] or 0.0 for s in ("origin", "cache"))
        fill = sum(d["cache_fill_bytes"] for d in r["days"]) / 2**20
        print(f"{label:<12} {r['plays']:>5} {r['misses']:>6} {r['miss_rate'] * 100:>6.1f}"
              f" {r['days'][0]['misses']:>5} {r['days'][1]['misses']:>5}"
              f" {miss_ms:>14.1f} / {hit_ms:>8.1f} {fill:>14.1f}")  # fmt: skip
    verdict = "met" if results["target_met"] else "NOT met"
    print(f"miss reduction: {reduction * 100:.1f}% (target >= 50%: {verdict})")
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
