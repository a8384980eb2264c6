"""Remote-origin benchmarks: S3 (moto_server) and SFTP (sshd) on 127.0.0.1.

    python benchmarks/bench_origins.py [--size-mib 32] [--runs 50] [--output FILE]

Measured in one run, each against a baseline of the same run:
- sequential read of a file of random bytes through the origin class, in
  128 KiB ``read(offset, size)`` calls (as FUSE asks), vs the client library
  used directly (boto3 ``get_object`` streamed in 1 MiB reads; paramiko
  ``open`` + ``prefetch()`` + ``read``) — MiB/s and the ratio origin/direct;
- first-byte latency, p50 and p95 over *runs* fresh opens each reading the
  first 4 KiB, via the origin class and directly (boto3 ranged ``get_object``;
  paramiko ``open`` + ``read(4096)``).
Connections are set up before timing starts (a warm-up request on each
client), so the figures compare reads, not SSH or HTTP handshakes.
Writes JSON to benchmarks/results/ and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paramiko

from musicfs.core.origins.s3 import S3Origin
from musicfs.core.origins.sftp import SFTPOrigin
from tests.servers.s3 import S3Server, s3_server
from tests.servers.sshd import SSHServer, sshd_server

ROOT = Path(__file__).resolve().parent
FUSE_BLOCK = 128 * 1024
DIRECT_BLOCK = 1 << 20
FIRST_BYTES = 4096
BUCKET = "bench"
NAME = "song.bin"


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    """Seconds taken by *fn*, and what it returned (bytes read)."""
    start = time.perf_counter()
    n = fn()
    return time.perf_counter() - start, n


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": statistics.median(ms), "p95_ms": q[94], "runs": len(ms)}


def read_via_origin(origin: S3Origin | SFTPOrigin, size: int) -> int:
    total = 0
    with origin.open(NAME) as file:
        for offset in range(0, size, FUSE_BLOCK):
            total += len(file.read(offset, FUSE_BLOCK))
    return total


def first_via_origin(origin: S3Origin | SFTPOrigin) -> int:
    with origin.open(NAME) as file:
        return len(file.read(0, FIRST_BYTES))


def summarize(
    size: int,
    origin_s: float,
    direct_s: float,
    origin_first: list[float],
    direct_first: list[float],
) -> dict[str, Any]:
    mib = size / 2**20
    return {
        "file_bytes": size,
        "origin_read_s": origin_s,
        "direct_read_s": direct_s,
        "origin_mib_s": mib / origin_s,
        "direct_mib_s": mib / direct_s,
        "ratio_origin_direct": direct_s / origin_s,
        "first_byte_origin": percentiles(origin_first),
        "first_byte_direct": percentiles(direct_first),
    }


def bench_s3(server: S3Server, data: bytes, runs: int) -> dict[str, Any]:
    server.put(BUCKET, NAME, data)
    size = len(data)
    origin = S3Origin("bench-s3", BUCKET, endpoint_url=server.endpoint_url,
                      region=server.region, access_key=server.access_key,
                      secret_key=server.secret_key)  # fmt: skip
    client = server.client()
    try:
        origin.check()
        client.head_bucket(Bucket=BUCKET)

        def direct() -> int:
            total = 0
            body = client.get_object(Bucket=BUCKET, Key=NAME)["Body"]
            try:
                while chunk := body.read(DIRECT_BLOCK):
                    total += len(chunk)
            finally:
                body.close()
            return total

        def direct_first() -> int:
            body = client.get_object(Bucket=BUCKET, Key=NAME, Range=f"bytes=0-{FIRST_BYTES - 1}")[
                "Body"
            ]
            try:
                return len(body.read())
            finally:
                body.close()

        origin_s, n1 = timed(lambda: read_via_origin(origin, size))
        direct_s, n2 = timed(direct)
        assert n1 == n2 == size, (n1, n2, size)
        o_first = [timed(lambda: first_via_origin(origin))[0] for _ in range(runs)]
        d_first = [timed(direct_first)[0] for _ in range(runs)]
        return summarize(size, origin_s, direct_s, o_first, d_first)
    finally:
        origin.close()
        client.close()


def bench_sftp(server: SSHServer, root: Path, runs: int) -> dict[str, Any]:
    size = (root / NAME).stat().st_size
    origin = SFTPOrigin("bench-sftp", server.host, str(root), port=server.port,
                        user=server.user, key_file=server.key_file,
                        known_hosts=server.known_hosts)  # fmt: skip
    ssh = paramiko.SSHClient()
    ssh.load_host_keys(server.known_hosts)
    ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
    ssh.connect(server.host, port=server.port, username=server.user,
                key_filename=server.key_file, allow_agent=False, look_for_keys=False)  # fmt: skip
    sftp = ssh.open_sftp()
    remote = str(root / NAME)
    try:
        origin.check()
        sftp.stat(remote)

        def direct() -> int:
            total = 0
            with sftp.open(remote, "rb") as fh:
                fh.prefetch(size)
                while chunk := fh.read(DIRECT_BLOCK):
                    total += len(chunk)
            return total

        def direct_first() -> int:
            with sftp.open(remote, "rb") as fh:
                return len(fh.read(FIRST_BYTES))

        origin_s, n1 = timed(lambda: read_via_origin(origin, size))
        direct_s, n2 = timed(direct)
        assert n1 == n2 == size, (n1, n2, size)
        o_first = [timed(lambda: first_via_origin(origin))[0] for _ in range(runs)]
        d_first = [timed(direct_first)[0] for _ in range(runs)]
        return summarize(size, origin_s, direct_s, o_first, d_first)
    finally:
        origin.close()
        sftp.close()
        ssh.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    data = os.urandom(args.size_mib * 2**20)
    results: dict[str, Any] = {"size_mib": args.size_mib, "read_block": FUSE_BLOCK}
    with s3_server() as server:
        results["s3"] = bench_s3(server, data, args.runs)
    with tempfile.TemporaryDirectory(prefix="musicfs-bench-origins-") as tmp:
        root = Path(tmp)
        (root / NAME).write_bytes(data)
        with sshd_server(root) as sshd:
            results["sftp"] = bench_sftp(sshd, root, args.runs)
    out = args.output or ROOT / "results" / f"origins-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"{'origin':<6} {'origin MiB/s':>13} {'direct MiB/s':>13} {'ratio':>6}"
          f" {'1st byte p50/p95 ms origin':>27} {'direct':>14}")  # fmt: skip
    for kind in ("s3", "sftp"):
        r = results[kind]
        fo, fd = r["first_byte_origin"], r["first_byte_direct"]
        print(f"{kind:<6} {r['origin_mib_s']:>13.1f} {r['direct_mib_s']:>13.1f}"
              f" {r['ratio_origin_direct']:>6.2f}"
              f" {fo['p50_ms']:>17.2f} / {fo['p95_ms']:>7.2f}"
              f" {fd['p50_ms']:>6.2f} / {fd['p95_ms']:>5.2f}")  # fmt: skip
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
