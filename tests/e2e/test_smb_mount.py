"""An SMB share read directly (smbprotocol) through a real mount (issue 4, FR-13, NFR-13).

A real Samba smbd on 127.0.0.1 shares the encoded test library; MusicFS mounts
``smb://root@127.0.0.1:PORT/music/lib_a``, alone and together with a local
origin, and the tests check what a user sees: every track at the path the
template gives it, every file byte-identical to its source (also in ranged reads
at odd offsets); when the smbd stops, what was read before still plays from the
content cache, a file never read fails with EIO in bounded time instead of
hanging, and ``musicfs status`` shows the origin offline; when the smbd comes
back, the daemon recovers by itself. The SMB password (passed as
``MUSICFS_SECRET_<ID>_PASSWORD``) never shows in the log, the status or the
process list, nor does a wrong one.
"""

from __future__ import annotations

import base64
import errno
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    Mount,
    assert_no_secret_shown,
    describe,
    errno_name,
    errno_of,
    forget_pages,
    mounted,
    run_musicfs,
    sha256_of,
    wait_until,
    walk_files,
    write_config,
)
from tests.e2e.library import ORIGIN_A, ORIGIN_B, Library, render_path
from tests.servers.smbd import SMBD, SMBPASSWD, SMBServer, smb_server

pytestmark = [pytest.mark.mount, pytest.mark.media]

#: Seconds before an SMB request counts as failed, in the outage tests.
TIMEOUT = 3.0
#: How long a read of a file that is neither cached nor reachable may take to fail.
#: The origin gives up after TIMEOUT (a refused connection at once), and the
#: federation tries 3 times before it marks the origin offline.
EIO_BOUND = 3 * TIMEOUT + 3
#: How long the daemon may take to notice by itself that the smbd is back
#: (its probes back off 1, 2, 4, 8 ... s while an origin is offline).
RECOVERY_TIMEOUT = 90.0

JOGA = "Björk/Homogenic/01 Jóga.flac"  # read before the outage
SVEFN = "Sigur Rós/svefn-g-englar.mp3"  # never read before the outage
HIKARI = "jp/光.opus"  # never read before the outage either
POST = "Björk/Post/hyperballad.mp3"  # on the local origin


def require_smbd() -> None:
    for tool in (SMBD, SMBPASSWD):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"Samba is not installed ({tool} is missing; apt-get install samba)")


@pytest.fixture
def smbd(library: Library) -> Iterator[SMBServer]:
    """A smbd of its own for each test, sharing the library root as ``music``."""
    require_smbd()
    with smb_server(library.root) as server:
        yield server


def smb_url(server: SMBServer, folder: str = ORIGIN_A) -> str:
    return f"smb://{server.user}@{server.host}:{server.port}/{server.share}/{folder}"


def smb_origin(server: SMBServer, **more: object) -> dict[str, object]:
    return {"id": "nas", "path": smb_url(server), "timeout": TIMEOUT, **more}


def only(library: Library, origin: str) -> Library:
    """The part of *library* that is in the origin folder *origin*."""
    return Library(library.root, tuple(t for t in library.tracks if t.spec.origin == origin))


def check_ranged_reads(virtual: Path, data: bytes) -> None:
    """Reads at odd offsets and lengths, past the end too, return the source's bytes.

    Run on a file the kernel has not cached, so the reads reach the daemon.
    """
    size = len(data)
    assert virtual.stat().st_size == size, virtual
    cases = [(1, 1), (3, 4093), (4097, 3), (size // 3 + 7, 65537), (size // 2 + 1, 131_073),
             (size - 13, 100), (size, 10), (size + 4099, 7)]  # fmt: skip
    fd = os.open(virtual, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead past our requests
        for offset, length in cases:
            got = os.pread(fd, length, offset)
            assert got == data[offset : offset + length], (
                f"{virtual}: {length} bytes at {offset}: wrong bytes"
            )
    finally:
        os.close(fd)


def check_serves(mount: Mount, library: Library) -> None:
    """The tree is exactly what the template gives; every file has its source's bytes."""
    assert mount.files() == library.expected_files()
    for name, built in library.origin_of_virtual(mount.mountpoint).items():
        virtual = mount.mountpoint / name
        check_ranged_reads(virtual, built.path.read_bytes())
        assert sha256_of(virtual) == built.sha256, f"{name}: wrong bytes"


def errno_within(call: Callable[[], object], limit: float) -> tuple[int | None, float]:
    """The errno *call* fails with (None: it succeeded) and how long it took.

    Run in a thread: if the call is still running after *limit* seconds the test
    fails at once (the thread is left to the unmount, which ends the read).
    """
    outcome: dict[str, tuple[int | None, float]] = {}

    def run() -> None:
        started = time.monotonic()
        code = errno_of(call)
        outcome["result"] = (code, time.monotonic() - started)

    thread = threading.Thread(target=run, name="read-during-outage", daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"the read still hangs after {limit:.0f} s"
    return outcome["result"]


def origin_status(mount: Mount) -> dict[str, dict[str, object]]:
    return {str(o["id"]): o for o in mount.status()["origins"]}


def test_an_smb_origin_alone(library: Library, smbd: SMBServer, tmp_path: Path) -> None:
    """Named by its URL on the command line, its id (and so its secret's name)
    taken from the folder: ``lib_a`` → ``MUSICFS_SECRET_LIB_A_PASSWORD``."""
    env = {"MUSICFS_SECRET_LIB_A_PASSWORD": smbd.password}
    with mounted([smb_url(smbd)], tmp_path / "mnt", tmp_path / "cache", env=env) as mount:
        (origin,) = mount.status()["origins"]
        expected = {"id": "lib_a", "type": "smbclient", "online": True,
                    "location": f"smb://root@127.0.0.1:{smbd.port}/music/lib_a"}  # fmt: skip
        assert {key: origin[key] for key in expected} == expected
        assert mount.status()["state"] == "READY"
        check_serves(mount, only(library, ORIGIN_A))
        assert_no_secret_shown(mount, smbd.password)


def test_an_smb_origin_and_a_local_one_as_one_library(
    library: Library, smbd: SMBServer, tmp_path: Path
) -> None:
    """The whole library: lib_a over SMB, lib_b a local folder. The two
    different tracks that map to one path (one per origin) get ``(2)``."""
    config = write_config(tmp_path / "config.toml", [
        smb_origin(smbd), {"id": "disk", "path": str(library.root / ORIGIN_B)},
    ])  # fmt: skip
    env = {"MUSICFS_SECRET_NAS_PASSWORD": smbd.password}
    with mounted([], tmp_path / "mnt", tmp_path / "cache", "--config", str(config),
                 env=env) as mount:  # fmt: skip
        assert {k: v["online"] for k, v in origin_status(mount).items()} == {
            "nas": True,
            "disk": True,
        }
        check_serves(mount, library)
        assert_no_secret_shown(mount, smbd.password)


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_the_smbd_goes_away_then_comes_back(
    library: Library, smbd: SMBServer, tmp_path: Path, outage: str
) -> None:
    """*stopped*: smbd is killed (connections refused); *frozen*: SIGSTOP, so the
    port accepts and nothing answers (a hung server), which only a timeout ends."""
    take_away, bring_back = (
        (smbd.stop, smbd.start) if outage == "stopped" else (smbd.freeze, smbd.thaw)
    )
    config = write_config(tmp_path / "config.toml", [
        smb_origin(smbd), {"id": "disk", "path": str(library.root / ORIGIN_B)},
    ])  # fmt: skip
    env = {"MUSICFS_SECRET_NAS_PASSWORD": smbd.password}
    with mounted([], tmp_path / "mnt", tmp_path / "cache", "--config", str(config),
                 env=env) as mount:  # fmt: skip
        joga, svefn, hikari, post = (library.find(r) for r in (JOGA, SVEFN, HIKARI, POST))
        played, never_read, later, local = (
            mount.mountpoint / render_path(t.spec) for t in (joga, svefn, hikari, post)
        )
        assert sha256_of(played) == joga.sha256
        wait_until(lambda: mount.status()["cached_files"] >= 1, timeout=30,
                   what="the track read to be copied into the content cache")  # fmt: skip
        forget_pages(played)

        take_away()
        code, took = errno_within(lambda: sha256_of(played), EIO_BOUND)
        assert code is None, f"{played.name}: {errno_name(code)}, it should come from the cache"
        assert sha256_of(played) == joga.sha256, "wrong bytes from the cache"
        code, took = errno_within(lambda: sha256_of(never_read), EIO_BOUND)
        assert code == errno.EIO, f"{never_read.name}: {errno_name(code)}, not EIO"
        assert took < EIO_BOUND, f"EIO took {took:.1f} s"
        status = mount.status()
        assert status["state"] == "DEGRADED"
        assert {o["id"]: o["online"] for o in status["origins"]} == {"nas": False, "disk": True}
        assert sha256_of(local) == post.sha256, "the local origin must not suffer"
        album = {Path(p).name for p in library.expected_files()
                 if Path(p).parent == Path(render_path(joga.spec)).parent}  # fmt: skip
        assert set(os.listdir(played.parent)) == album, "browsing must still work"
        # A second file never read fails too, and quickly: the origin is known offline.
        code, took = errno_within(lambda: sha256_of(later), EIO_BOUND)
        assert code == errno.EIO, f"{later.name}: {errno_name(code)}, not EIO"
        assert took < TIMEOUT, f"EIO from an origin known to be offline took {took:.1f} s"

        bring_back()

        def recovered() -> bool:
            status = mount.status()
            online = all(o["online"] for o in status["origins"])
            return online and status["state"] == "READY"

        wait_until(recovered, timeout=RECOVERY_TIMEOUT, what="the daemon to see the smbd again")
        assert sha256_of(never_read) == svefn.sha256
        assert sha256_of(later) == hikari.sha256
        assert_no_secret_shown(mount, smbd.password)

        if outage == "frozen":  # unmounting must not wait on a server that hangs
            smbd.freeze()
            try:
                started = time.monotonic()
                result = run_musicfs("unmount", mount.mountpoint, "--timeout", "30", timeout=60)
                took = time.monotonic() - started
            finally:
                smbd.thaw()
            assert result.returncode == 0, describe(result)
            assert took < TIMEOUT + 10, f"unmounting with the smbd frozen took {took:.1f} s"


def test_no_smb_password_shows_in_the_log_status_or_process_list(
    library: Library, smbd: SMBServer, tmp_path: Path
) -> None:
    """Debug logging, and a second origin on the same share whose password is
    wrong (its logon fails, and is logged): neither password shows anywhere."""
    wrong = "not-the-smb-password-0123456789"
    config = write_config(tmp_path / "config.toml", [
        smb_origin(smbd), smb_origin(smbd, id="broken", path=smb_url(smbd, ORIGIN_B)),
    ], log_level="debug")  # fmt: skip
    env = {"MUSICFS_SECRET_NAS_PASSWORD": smbd.password, "MUSICFS_SECRET_BROKEN_PASSWORD": wrong}
    # The broken origin keeps the mount DEGRADED: wait for the good one's track.
    with mounted([], tmp_path / "mnt", tmp_path / "cache", "--config", str(config),
                 wait_scan=False, env=env) as mount:  # fmt: skip
        joga, post = library.find(JOGA), library.find(POST)
        virtual = mount.mountpoint / render_path(joga.spec)
        wait_until(virtual.exists, timeout=60, what="the SMB origin's track")
        assert sha256_of(virtual) == joga.sha256
        log = mount.cache_dir / "musicfs.log"
        wait_until(lambda: "logon failed" in log.read_text(), timeout=30,
                   what="the logon with the wrong password to fail")  # fmt: skip
        wait_until(lambda: origin_status(mount)["broken"]["online"] is False, timeout=30,
                   what="the origin with the wrong password to show offline")  # fmt: skip
        assert render_path(post.spec) not in walk_files(mount.mountpoint)
        assert_no_secret_shown(mount, smbd.password, wrong)


# -- the log --------------------------------------------------------------------------------

_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (DEBUG|INFO) (\S+): ", re.MULTILINE)


def chatter(log: str) -> list[str]:
    """Loggers other than MusicFS's own that wrote DEBUG or INFO lines."""
    return sorted({name for _, name in _LOG_LINE.findall(log) if not name.startswith("musicfs")})


def ntlm_authenticate_in(text: str) -> bool:
    """Whether *text* holds an NTLM AUTHENTICATE message (its ``NTLMSSP\\0`` type-3
    header), in base64 at any alignment or as a hex dump. With the server's
    challenge it is enough to crack the password offline (hashcat -m 5600)."""
    header = b"NTLMSSP\x00\x03\x00\x00\x00"
    forms = [" ".join(f"{byte:02X}" for byte in header)]
    for skip in range(3):
        encoded = base64.b64encode(b"\x00" * skip + header).decode()
        forms.append(encoded[-(-4 * skip // 3) : 8 * (len(header) + skip) // 6])
    return any(form in text for form in forms)


def test_the_log_at_the_default_level_has_no_line_per_smb_request(
    library: Library, smbd: SMBServer, tmp_path: Path
) -> None:
    env = {"MUSICFS_SECRET_LIB_A_PASSWORD": smbd.password}
    with mounted([smb_url(smbd)], tmp_path / "mnt", tmp_path / "cache", env=env) as mount:
        joga = library.find(JOGA)
        assert sha256_of(mount.mountpoint / render_path(joga.spec)) == joga.sha256
        log = (mount.cache_dir / "musicfs.log").read_text()
    assert "scan done" in log
    assert chatter(log) == [], f"{len(log.splitlines())} log lines for one scan and one read"


def test_the_debug_log_holds_no_ntlm_authentication(
    library: Library, smbd: SMBServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.toml", [smb_origin(smbd)], log_level="debug")
    env = {"MUSICFS_SECRET_NAS_PASSWORD": smbd.password}
    with mounted([], tmp_path / "mnt", tmp_path / "cache", "--config", str(config),
                 env=env) as mount:  # fmt: skip
        joga = library.find(JOGA)
        assert sha256_of(mount.mountpoint / render_path(joga.spec)) == joga.sha256
        log = (mount.cache_dir / "musicfs.log").read_text()
    assert "scan done" in log
    assert not ntlm_authenticate_in(log), "the NTLM AUTHENTICATE message is in the debug log"
