"""The ``remote-scan`` section of bench.py: a first scan of a remote library (issue 17.1).

Real FLAC and MP3 tracks of about 2 MB each (ffmpeg noise, tagged with mutagen
like the scan section's; built once under ``results/cache/remotelib-N``,
``--remote-tracks``, default 2,000) are served by S3 (moto_server,
tests/servers/s3.py) and SFTP (OpenSSH sshd, tests/servers/sshd.py) on
127.0.0.1, each measured on loopback and again through the delaying proxy
(tests/servers/delayproxy.py) with 20 ms added to every round trip. Per origin
and RTT, in the same run:

* ``musicfs``: MusicFS's first scan (the `Scanner` in this process, a new
  catalog, the origin behind a `Federation` as in the daemon, ``max_requests``
  = `CONCURRENCY`): tracks/s, and per track the requests (opens that are one,
  ranged reads), round trips and bytes the scan itself counted (SFTP: its
  connections made before, like the bare client's; ``connect_s`` says how long
  that took);
* ``ceiling``: the server's own rate for a bare client at the same concurrency
  through the same proxy: S3, 64 KiB ranged GETs/s (boto3, `CONCURRENCY`
  threads); SFTP, 32 KiB reads/s of open files (paramiko, one connection per
  thread, as many as MusicFS's SFTP connections), and for context
  open + read + close per second, and open + 64 KiB head + close (the scan's
  own requests a track, done by the bare client); ``ratio`` = musicfs
  tracks/s over ceiling/s (target >= 0.6), ``ratio_same_work`` = over the
  bare client's open + head + close/s; ``server_use`` = the scan's own requests (S3) or round
  trips (SFTP) per second over the ceiling: how hard it drives the server;
* ``beets``: on S3, ``beet import -A`` (tags only, no autotagging, a throwaway
  config and library) over an ``rclone mount`` of the same bucket, on the
  first `BEETS_TRACKS` tracks (beets reads one file at a time: its rate is
  the figure).
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.servers

import bench_data  # noqa: E402
import bench_measure as bm  # noqa: E402

BUCKET = "remote-scan"
CONCURRENCY = 32  # files (MusicFS) and requests (bare client) in flight
SFTP_CONNECTIONS = 8  # the daemon's cap of SFTP connections per origin
RTTS_MS = (0, 20)
CEILING_SECONDS = 6.0
BEETS_TRACKS = 200
HEAD = 64 * 1024  # what the scan reads of a remote file first (remote._REMOTE_HEAD)


def bench_scan_remote(ctx: Any, out: dict[str, Any]) -> dict[str, Any]:
    from tests.servers.s3 import moto_server_executable, s3_server
    from tests.servers.sshd import sshd_server

    n = ctx.settings.remote_tracks
    lib = remote_library(ctx.settings.cache_root, n, log=ctx.log)
    root = Path(lib["origin"])
    files = sorted(p for p in root.rglob("*.*") if p.suffix in (".flac", ".mp3"))
    out.update(
        tracks=n,
        mean_track_mib=round(lib["bytes"] / n / 2**20, 2),
        concurrency=CONCURRENCY,
        rtts_ms=list(RTTS_MS),
        rtt_note="RTT added by the proxy (tests/servers/delayproxy.py): half each way",
    )
    if moto_server_executable() is None:
        out["s3"] = {"skipped": "moto_server is not installed"}
    else:
        with s3_server() as s3:
            ctx.log(f"  uploading {n:,} tracks to moto ...")
            s3.put_many(BUCKET, {p.relative_to(root).as_posix(): p.read_bytes() for p in files}, 8)
            keys = [p.relative_to(root).as_posix() for p in files]
            out["s3"] = {str(rtt): _s3_at(ctx, s3, rtt, n, keys=keys, root=root) for rtt in RTTS_MS}
    if not Path("/usr/sbin/sshd").exists():
        out["sftp"] = {"skipped": "OpenSSH sshd is not installed"}
    else:
        with sshd_server(root) as server:
            out["sftp"] = {str(rtt): _sftp_at(ctx, server, rtt, n, files) for rtt in RTTS_MS}
    return out


# -- the library ------------------------------------------------------------------------------


def remote_library(cache_root: Path, n: int, *, log: Any = print) -> dict[str, Any]:
    """*n* tracks of ~2 MB, half FLAC half MP3 (by album), 10 per album folder."""
    directory = cache_root / f"remotelib-{n}"
    meta = bench_data._load_meta(directory)
    if meta is not None:
        return {**meta, "dir": str(directory), "cached": True}
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    bench_data._fresh(directory)
    log(f"making {n:,} tracks of ~2 MB in {directory} ...")
    started = time.perf_counter()
    seeds = directory / "seed"
    seeds.mkdir()
    encoders = {"flac": (12, ["-c:a", "flac"]), "mp3": (50, ["-c:a", "libmp3lame", "-b:a", "320k"])}
    for fmt, (seconds, args) in encoders.items():
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi",
             "-i", f"anoisesrc=duration={seconds}:amplitude=0.3", "-ac", "2", "-ar", "44100",
             *args, str(seeds / f"seed.{fmt}")],
            check=True,
        )  # fmt: skip
    origin = directory / "lib"
    total = bench_data.tagged_tracks(origin, n, {fmt: seeds / f"seed.{fmt}" for fmt in encoders})
    took = time.perf_counter() - started
    log(f"  {n:,} tracks ({total / 2**20:.0f} MiB) in {took:.1f} s")
    meta = {"files": n, "bytes": total, "origin": str(origin), "build_seconds": round(took, 1)}
    return {**bench_data._write_meta(directory, meta), "dir": str(directory), "cached": False}


@contextmanager
def _through(target: tuple[str, int], rtt_ms: int) -> Iterator[tuple[str, int]]:
    """Where to connect to reach *target* with *rtt_ms* added (itself for 0)."""
    if not rtt_ms:
        yield target
        return
    from tests.servers.delayproxy import delay_proxy_process

    with delay_proxy_process(target, rtt_ms / 2) as where:
        yield where


# -- MusicFS ----------------------------------------------------------------------------------


def _musicfs_scan(ctx: Any, origin: Any, n: int, max_requests: int) -> dict[str, Any]:
    from musicfs.core.catalog.store import Catalog
    from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
    from musicfs.core.origins.federation import Federation, OriginLimits
    from musicfs.core.sync.scanner import Scanner

    federation = Federation(
        {origin.id: origin}, {origin.id: OriginLimits(max_requests=max_requests)}
    )
    db = Path(tempfile.mkdtemp(prefix="remote-scan-", dir=ctx.mounter.workdir)) / "c.sqlite3"
    with Catalog.open(db) as catalog:
        scanner = Scanner(catalog, PathTemplate.parse(DEFAULT_TEMPLATE), federation=federation)
        try:
            with bm.heap_kept_aside() as kept_aside:
                report = scanner.scan(origin)
        finally:
            scanner.close()
    if report.added != n or report.unreadable:
        raise AssertionError(f"{origin.kind} scan: {report.summary()}, expected {n} tracks")
    traffic = report.remote
    return {
        "seconds": round(report.seconds, 2),
        "tracks_per_s": round(n / report.seconds, 1),
        "requests_per_track": round(traffic.requests / n, 2),
        "round_trips_per_track": round(traffic.round_trips / n, 2),
        "kib_per_track": round(traffic.bytes / n / 1024, 1),
        "summary": report.summary(),
        "heap_objects_kept_aside": kept_aside,
    }


# -- bare clients -----------------------------------------------------------------------------


def _rate(workers: int, op: Callable[[int, int], None], seconds: float) -> float:
    """Operations per second of *workers* threads each calling op(worker, i) in a loop."""
    stop = time.monotonic() + seconds
    counts = [0] * workers

    def loop(w: int) -> None:
        i = w
        while time.monotonic() < stop:
            op(w, i)
            counts[w] += 1
            i += workers

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(loop, range(workers)))
    return sum(counts) / (time.monotonic() - started)


def _s3_at(ctx: Any, s3: Any, rtt: int, n: int, *, keys: list[str], root: Path) -> dict[str, Any]:
    from musicfs.core.origins.s3 import S3Origin

    out: dict[str, Any] = {}
    with _through((s3.host, s3.port), rtt) as (host, port):
        endpoint = f"http://{host}:{port}"
        ctx.log(f"  S3, +{rtt} ms RTT: MusicFS scan of {n:,} tracks ...")
        origin = S3Origin("s3", BUCKET, endpoint_url=endpoint, region=s3.region,
                          access_key=s3.access_key, secret_key=s3.secret_key,
                          max_connections=3 * CONCURRENCY)  # fmt: skip
        try:
            out["musicfs"] = _musicfs_scan(ctx, origin, n, CONCURRENCY)
        finally:
            origin.close()
        for label, workers in (("ceiling", CONCURRENCY), ("ceiling_3x", 3 * CONCURRENCY)):
            out[label] = {"ranged_gets_per_s": round(_s3_ceiling(s3, endpoint, keys, workers), 1),
                          "concurrency": workers}  # fmt: skip
        gets = out["ceiling"]["ranged_gets_per_s"]
        out["ratio"] = round(out["musicfs"]["tracks_per_s"] / gets, 3)
        # How hard the scan drives the server: its GETs/s over the bare client's.
        mine = out["musicfs"]["tracks_per_s"] * out["musicfs"]["requests_per_track"]
        out["server_use"] = round(mine / gets, 3)
        ctx.log(
            f"    musicfs {out['musicfs']['tracks_per_s']:.0f} tracks/s "
            f"({out['musicfs']['requests_per_track']} requests, "
            f"{out['musicfs']['kib_per_track']} KiB a track); bare boto3 "
            f"{out['ceiling']['ranged_gets_per_s']:.0f} GETs/s: ratio {out['ratio']}"
        )
        try:
            out["beets"] = _beets_over_rclone(ctx, s3, endpoint, root)
        except Exception as exc:  # a baseline that fails is reported, the rest stands
            out["beets"] = {"error": f"{type(exc).__name__}: {exc}"}
        ctx.log(f"    beets over rclone: {out['beets']}")
    return out


def _s3_ceiling(s3: Any, endpoint: str, keys: list[str], workers: int) -> float:
    from botocore.config import Config  # type: ignore[import-untyped]

    client = s3.client(endpoint_url=endpoint, config=Config(max_pool_connections=workers))
    order = random.Random(17).sample(keys, len(keys))

    def get(_: int, i: int) -> None:
        body = client.get_object(Bucket=BUCKET, Key=order[i % len(order)], Range="bytes=0-65535")
        body["Body"].read()

    get(0, 0)
    return _rate(workers, get, CEILING_SECONDS)


def _sftp_at(ctx: Any, server: Any, rtt: int, n: int, files: list[Path]) -> dict[str, Any]:
    from musicfs.core.origins.sftp import SFTPOrigin

    out: dict[str, Any] = {}
    with _through((server.host, server.port), rtt) as (host, port):
        # MusicFS as configured by default (auto: OpenSSH's ssh carries the
        # connections), then with paramiko's own SSH (what it used before).
        for label, client in (("musicfs", "auto"), ("musicfs_paramiko", "paramiko")):
            ctx.log(f"  SFTP, +{rtt} ms RTT: MusicFS scan of {n:,} tracks ({client}) ...")
            origin = SFTPOrigin("sftp", host, str(server.root), port=port, user=server.user,
                                key_file=server.key_file, known_hosts="insecure-ignore",
                                max_connections=SFTP_CONNECTIONS, ssh_client=client)  # fmt: skip
            try:
                # Its connections made first, as the bare client's are (on this VM an
                # SSH connection takes ~0.3-0.5 s of CPU: a fixed cost, reported apart).
                started = time.perf_counter()
                _connect_all(origin, [p.relative_to(server.root).as_posix() for p in files])
                connect_s = round(time.perf_counter() - started, 2)
                out[label] = _musicfs_scan(ctx, origin, n, CONCURRENCY)
                out[label].update(connect_s=connect_s, ssh_client=origin.client)
            finally:
                origin.close()
        try:
            out["daemon"] = _daemon_scan(ctx, server, host, port, n)
        except Exception as exc:  # a figure that fails is reported, the rest stands
            out["daemon"] = {"error": f"{type(exc).__name__}: {exc}"}
        for label, transport in (("ceiling", "paramiko"), ("ceiling_openssh", "openssh")):
            reads, opens, heads = _sftp_ceiling(server, host, port, files, transport)
            out[label] = {"ranged_reads_per_s": round(reads, 1), "concurrency": SFTP_CONNECTIONS,
                          "open_read_close_per_s": round(opens, 1),
                          "open_head_close_per_s": round(heads, 1),
                          "transport": transport}  # fmt: skip
        rate = out["musicfs"]["tracks_per_s"]
        reads = out["ceiling"]["ranged_reads_per_s"]
        out["ratio"] = round(rate / reads, 3)
        out["ratio_same_work"] = round(rate / out["ceiling"]["open_head_close_per_s"], 3)
        out["ratio_openssh"] = round(rate / out["ceiling_openssh"]["ranged_reads_per_s"], 3)
        out["ratio_openssh_same_work"] = round(
            rate / out["ceiling_openssh"]["open_head_close_per_s"], 3
        )
        # Round trips on the sessions per second, over the bare client's reads/s.
        out["server_use"] = round(rate * out["musicfs"]["round_trips_per_track"] / reads, 3)
        bare = out["ceiling_openssh"]
        ctx.log(
            f"    musicfs {rate:.0f} tracks/s through {out['musicfs']['ssh_client']} "
            f"(paramiko: {out['musicfs_paramiko']['tracks_per_s']:.0f}; "
            f"{out['musicfs']['round_trips_per_track']} round trips a track); bare paramiko "
            f"{reads:.0f} reads/s, {out['ceiling']['open_head_close_per_s']:.0f} "
            f"open+head+close/s; bare client over ssh {bare['ranged_reads_per_s']:.0f} "
            f"reads/s, {bare['open_head_close_per_s']:.0f} open+head+close/s"
        )
    return out


def _daemon_scan(ctx: Any, server: Any, host: str, port: int, n: int) -> dict[str, Any]:
    """What a user gets: ``musicfs mount --wait`` of the server with the default
    settings (connections made as the scan needs them, none before): seconds
    until the command returns with the first scan done, and the scan's own
    rate from its report in the daemon's log."""
    work = Path(tempfile.mkdtemp(prefix="sftp-daemon-", dir=ctx.mounter.workdir))
    config = work / "config.toml"
    config.write_text(
        f'[[origins]]\nid = "nas"\npath = "sftp://{server.user}@{host}:{port}{server.root}"\n'
        # As the in-process scans: through the delaying proxy the server's key is
        # listed under another port, which a known_hosts check would refuse.
        f'key_file = "{server.key_file}"\nknown_hosts = "insecure-ignore"\n'
    )
    mountpoint = work / "mnt"
    mountpoint.mkdir()
    env = ctx.mounter.musicfs_env(scan_on_start=True)
    started = time.perf_counter()
    done = subprocess.run(
        [ctx.mounter.musicfs, "mount", str(mountpoint), "--config", str(config),
         "--cache-dir", str(work / "cache"), "--wait"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    try:
        if done.returncode != 0:
            raise RuntimeError(f"musicfs mount failed: {done.stderr.strip()[-400:]}")
        files = sum(len(names) for _, _, names in os.walk(mountpoint))
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False, capture_output=True)
    log = (work / "cache" / "musicfs.log").read_text(errors="replace")
    report = [line for line in log.splitlines() if "scan done" in line]
    if files != n:
        raise AssertionError(f"the daemon's tree has {files} files, expected {n}")
    result = {
        "mount_wait_s": round(seconds, 2),
        "tracks_per_s": round(n / seconds, 1),
        "scan_report": report[-1].partition("scan done: ")[2] if report else None,
    }
    ctx.log(f"    daemon, default settings: mount --wait {seconds:.2f} s for {n} tracks "
            f"({result['tracks_per_s']:.0f} tracks/s, connections made meanwhile)")  # fmt: skip
    return result


def _connect_all(origin: Any, relpaths: list[str]) -> None:
    """Make all of *origin*'s SFTP connections: as many files open at once,
    then wait for the connections the pool makes behind them (grow_behind)."""
    opened = []
    try:
        for relpath in relpaths[:SFTP_CONNECTIONS]:
            opened.append(origin.open(relpath))
        deadline = time.monotonic() + 60
        while len(origin._pool.sessions()) < SFTP_CONNECTIONS:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{origin.location}: fewer than {SFTP_CONNECTIONS} connections")
            time.sleep(0.01)
    finally:
        for file in opened:
            file.close()


class _OverSSH(socket.socket):
    """The socket to an ``ssh -s sftp`` process, as paramiko's SFTPClient takes it."""

    def get_name(self) -> str:
        return "ssh"


def _bare_sftp(server: Any, host: str, port: int, transport: str) -> tuple[Any, Callable[[], None]]:
    """A bare SFTP client (paramiko's SFTPClient) over paramiko's own SSH or
    over OpenSSH's ``ssh`` (as rclone's ``--sftp-ssh`` and sshfs do); its closer."""
    import paramiko

    if transport == "paramiko":
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(host, port, username=server.user, key_filename=server.key_file,
                       allow_agent=False, look_for_keys=False)  # fmt: skip
        sftp = client.open_sftp()
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(30)
        return sftp, client.close
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        ["ssh", "-F", "/dev/null", "-p", str(port), "-i", server.key_file, "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-x", "-a",
         "-T", "-l", server.user, "-s", host, "sftp"],
        stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.DEVNULL,
    )  # fmt: skip
    theirs.close()
    sock = _OverSSH(fileno=ours.detach())

    def close() -> None:
        sock.close()
        process.kill()
        process.wait()

    return paramiko.SFTPClient(sock), close  # type: ignore[arg-type]  # a socket: paramiko takes one


def _sftp_ceiling(
    server: Any, host: str, port: int, files: list[Path], transport: str
) -> tuple[float, float, float]:
    """A bare client's rates, one thread per connection: 32 KiB reads of open
    files; open + 32 KiB read + close; and the scan's own requests a track
    (open, one read of its 64 KiB head, close)."""
    made = [_bare_sftp(server, host, port, transport) for _ in range(SFTP_CONNECTIONS)]
    try:
        sftps = [sftp for sftp, _ in made]
        handles = [sftp.open(str(files[w]), "rb", bufsize=0) for w, sftp in enumerate(sftps)]
        order = random.Random(17).sample(files, len(files))

        def read(w: int, _: int) -> None:
            handles[w].seek(0)
            handles[w].read(32768)  # one SSH_FXP_READ: one round trip

        def open_read_close(w: int, i: int) -> None:
            with sftps[w].open(str(order[i % len(order)]), "rb", bufsize=0) as f:
                f.read(32768)

        def open_head_close(w: int, i: int) -> None:
            path = order[i % len(order)]
            with sftps[w].open(str(path), "rb", bufsize=0) as f:
                f.MAX_REQUEST_SIZE = HEAD  # the head in one request, as the scan asks
                f.read(HEAD)

        reads = _rate(SFTP_CONNECTIONS, read, CEILING_SECONDS)
        opens = _rate(SFTP_CONNECTIONS, open_read_close, CEILING_SECONDS)
        heads = _rate(SFTP_CONNECTIONS, open_head_close, CEILING_SECONDS)
        for handle in handles:
            handle.close()
        return reads, opens, heads
    finally:
        for _, close in made:
            close()


# -- beets over rclone ------------------------------------------------------------------------


def _beets_over_rclone(ctx: Any, s3: Any, endpoint: str, root: Path) -> dict[str, Any]:
    beet = Path(sys.executable).with_name("beet")
    if not beet.exists() or shutil.which("rclone") is None:
        return {"skipped": "beets (.venv/bin/beet) or rclone is not installed"}
    work = Path(tempfile.mkdtemp(prefix="beets-", dir=ctx.mounter.workdir))
    conf = work / "rclone.conf"
    conf.write_text(
        "[bench]\ntype = s3\nprovider = Other\n"
        f"access_key_id = {s3.access_key}\nsecret_access_key = {s3.secret_key}\n"
        f"endpoint = {endpoint}\nregion = {s3.region}\n"
    )
    (work / "beets.yaml").write_text(
        f"directory: {work / 'music'}\nlibrary: {work / 'library.db'}\n"
        "import:\n  copy: no\n  write: no\n  autotag: no\n  log: null\n"
        "plugins: []\n"
    )
    mnt = ctx.mounter.fresh_mountpoint("rclone-s3")
    cmd = ["rclone", "mount", f"bench:{BUCKET}", str(mnt), "--read-only",
           "--config", str(conf), "--log-level", "ERROR"]  # fmt: skip
    artists = sorted(p.name for p in root.iterdir())[: max(1, BEETS_TRACKS // 100)]
    m: Any = None
    try:
        m = _mount_rclone(root, mnt, cmd)
        env = {**os.environ, "BEETSDIR": str(work)}
        started = time.perf_counter()
        subprocess.run(
            [str(beet), "-c", str(work / "beets.yaml"), "import", "-A", "-q",
             *(str(mnt / a) for a in artists)],
            env=env, check=True, capture_output=True, timeout=3600,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        listed = subprocess.run(
            [str(beet), "-c", str(work / "beets.yaml"), "ls", "-f", "$title"],
            env=env, check=True, capture_output=True, text=True, timeout=600,
        ).stdout.split("\n")  # fmt: skip
    finally:
        if m is not None:
            ctx.mounter.unmount(m)
        else:  # it did not mount: stop rclone and take the mountpoint away
            from bench_mounts import ACTIVE

            failed = ACTIVE.get(mnt)
            if failed is not None:
                ctx.mounter.unmount(failed)
    tracks = sum(1 for line in listed if line.strip())
    return {"tracks": tracks, "seconds": round(seconds, 2),
            "tracks_per_s": round(tracks / seconds, 1)}  # fmt: skip


def _mount_rclone(root: Path, mnt: Path, cmd: list[str]) -> Any:
    """``rclone mount`` in the foreground, registered for the bench's cleanup.
    Without the ``AWS_*`` and CA-bundle variables of this environment: rclone
    refuses a custom CA bundle on a plain-HTTP endpoint (its config file has
    the keys)."""
    from bench_mounts import ACTIVE, Mount, MountError, wait_listable

    drop = ("AWS_", "SSL_CERT", "CURL_CA", "REQUESTS_CA", "NIX_SSL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    m = Mount("rclone", mnt, root)
    ACTIVE[mnt] = m
    m.started = time.perf_counter()
    m.proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    m.pid = m.proc.pid
    try:
        m.listable = wait_listable(mnt, timeout=120)
    except MountError:
        err = b""
        if m.proc.poll() is not None and m.proc.stderr is not None:
            err = m.proc.stderr.read()
        raise MountError(f"rclone did not mount: {err.decode(errors='replace')}") from None
    return m


def verdict_rows(results: dict[str, Any], row: Callable[..., None]) -> None:
    """The table's rows of this section: MusicFS's scan rate against the
    server's ceiling (target 0.6x) and beets over rclone, per origin and RTT."""
    for kind, unit_key in (("s3", "ranged_gets_per_s"), ("sftp", "ranged_reads_per_s")):
        for rtt, r in (results.get(kind) or {}).items():
            if not isinstance(r, dict) or "musicfs" not in r:
                continue
            mine = r["musicfs"]["tracks_per_s"]
            values: dict[str, Any] = {"musicfs": mine, "floor": r["ceiling"][unit_key]}
            same_work = r["ceiling"].get("open_head_close_per_s")
            also = (
                f"; bare open + 64 KiB head + close {same_work}/s: {r['ratio_same_work']}x"
                if same_work
                else ""
            )
            daemon = (r.get("daemon") or {}).get("tracks_per_s")
            if daemon is not None:
                also += f"; the daemon's `mount --wait`, default settings: {daemon}/s"
            if "ceiling_openssh" in r:  # SFTP: both SSH clients, MusicFS's and the bare one's
                bare = r["ceiling_openssh"]
                also += (
                    f"; through {r['musicfs']['ssh_client']} (with paramiko "
                    f"{r['musicfs_paramiko']['tracks_per_s']}/s); bare client over ssh "
                    f"{bare['ranged_reads_per_s']} reads/s ({r['ratio_openssh']}x), "
                    f"{bare['open_head_close_per_s']} open+head+close/s "
                    f"({r['ratio_openssh_same_work']}x)"
                )
            beets = (r.get("beets") or {}).get("tracks_per_s")
            if beets is not None:
                values["rclone"] = beets
            row(
                f"remote scan {kind.upper()} +{rtt} ms (tracks/s)",
                "/s",
                values,
                ">= 0.6x server ceiling",
                r["ratio"] >= 0.6,
                f"ratio {r['ratio']} (server use {r.get('server_use')}){also}; "
                f"{r['musicfs']['requests_per_track']} requests, "
                f"{r['musicfs']['round_trips_per_track']} round trips, "
                f"{r['musicfs']['kib_per_track']} KiB a track; floor column = bare client "
                "ops/s; rclone column = beets over rclone",
            )
