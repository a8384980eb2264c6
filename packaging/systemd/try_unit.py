"""Run the system unit's commands the way systemd would, without systemd.

systemd is not PID 1 on the machines that build the packages, so the unit
cannot be started there. This does its part by hand, against a packaged tree
(an unpacked .deb, .rpm or Arch package), as root:

- ExecStart= with the unit's Environment=, UMask=, NoNewPrivileges= and
  CapabilityBoundingSet= (applied with setpriv), a clean environment and a
  $NOTIFY_SOCKET; it must send READY=1 (Type=notify) before TimeoutStartSec=,
  and the mount must then show the test track from outside the unit;
- ExecStop=, which must drain and unmount; the daemon must send STOPPING=1
  and exit 0 before TimeoutStopSec=; then ExecStopPost=;
- every system call the daemon and its children made (strace), with the
  packaged example plugins loaded (Python and WebAssembly), must be allowed by
  the unit's SystemCallFilter= (groups expanded by systemd-analyze).

    python3 packaging/systemd/try_unit.py ROOT   (ROOT: the unpacked package)

Standard library only. Exit status 0 when every check passed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path

UNIT = "usr/lib/systemd/system/musicfs@.service"
VENV = "usr/lib/musicfs"
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TEST_LIMIT = 60.0  # seconds: no test waits longer, whatever the unit allows


class Failed(Exception):
    pass


def parse_service(text: str) -> dict[str, list[str]]:
    """The [Service] settings of a unit file: name → values in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service":
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(value: str) -> float:
    """A systemd time span such as ``45s``, ``10min`` or ``90``."""
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


class Unit:
    """The unit's commands, expanded for one instance and mapped onto the package tree."""

    def __init__(self, root: Path, work: Path, mountpoint: Path) -> None:
        self.root = root
        self.work = work
        self.mountpoint = mountpoint
        self.settings = parse_service((root / UNIT).read_text())
        self.instance = subprocess.run(
            ["systemd-escape", "--path", str(mountpoint)], check=True, capture_output=True,
            text=True,
        ).stdout.strip()  # fmt: skip
        # The unit's system paths, moved into the test folder or the package tree.
        self.paths = {
            "/etc/musicfs/": f"{work}/etc/musicfs/",
            "/var/cache": f"{work}/cache",
        }

    def one(self, key: str, default: str = "") -> str:
        return self.settings.get(key, [default])[-1]

    def expand(self, word: str) -> str:
        specifiers = {"i": self.instance, "f": str(self.mountpoint), "%": "%"}
        word = re.sub(r"%(.)", lambda m: specifiers[m.group(1)], word)
        for path, there in self.paths.items():
            if word.startswith(path):
                word = there + word[len(path) :]
        return word

    def command(self, key: str) -> tuple[list[str], bool]:
        """The argv of Exec*=KEY, and whether its failure is ignored ("-")."""
        words = shlex.split(self.one(key))
        ignore = words[0].startswith("-")
        words[0] = words[0].lstrip("-")
        argv = [self.expand(w) for w in words]
        if argv[0] == "/usr/bin/musicfs":  # the packaged command, run from the tree
            if not (self.root / "usr/bin/musicfs").is_symlink():
                raise Failed("the package has no /usr/bin/musicfs")
            argv[:1] = [str(self.root / VENV / "bin/python"), str(self.root / VENV / "bin/musicfs")]
        return argv, ignore

    def environment(self, notify: Path) -> dict[str, str]:
        env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "NOTIFY_SOCKET": str(notify)}
        for line in self.settings.get("Environment", []):
            for assignment in shlex.split(line):
                name, _, value = assignment.partition("=")
                env[name] = self.expand(value)
        return env

    def sandbox(self) -> list[str]:
        """setpriv arguments for NoNewPrivileges= and CapabilityBoundingSet=."""
        argv = ["setpriv"]
        if self.one("NoNewPrivileges") == "yes":
            argv.append("--no-new-privs")
        caps = self.one("CapabilityBoundingSet").split()
        if caps:
            keep = ",".join("+" + c.lower().removeprefix("cap_") for c in caps)
            argv += [f"--bounding-set=-all,{keep}", "--inh-caps=-all"]
        return [*argv, "--"]

    def umask(self) -> int:
        return int(self.one("UMask", "0022"), 8)


def allowed_syscalls(groups: list[str]) -> set[str]:
    names: set[str] = set()
    for group in groups:
        if not group.startswith("@"):
            names.add(group)
            continue
        out = subprocess.run(
            ["systemd-analyze", "syscall-filter", group], check=True, capture_output=True,
            text=True,
        ).stdout  # fmt: skip
        for line in out.splitlines()[1:]:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                names |= allowed_syscalls([entry])
    return names


def make_library(work: Path) -> Path:
    """A one-track origin."""
    music = work / "music"
    music.mkdir()
    with wave.open(str(music / "tone.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x10" * 8000)
    return music


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == str(path) for line in fh)


def run(root: Path) -> list[str]:
    if os.geteuid() != 0:
        raise Failed("needs root (the system unit runs as root)")
    for tool in ("setpriv", "strace", "systemd-analyze", "systemd-escape", "fusermount3"):
        if shutil.which(tool) is None:
            raise Failed(f"{tool} is missing")
    report = []
    with tempfile.TemporaryDirectory(prefix="musicfs-unit.") as tmp:
        work = Path(tmp)
        mountpoint = work / "mnt"
        mountpoint.mkdir()
        unit = Unit(root, work, mountpoint)
        report.append(f"instance musicfs@{unit.instance}.service")
        music = make_library(work)
        examples = root / "usr/share/musicfs/plugins/examples"
        wasm = examples / "wasm-xyz-format" / "mfsx_format.wat"
        config = Path(unit.expand(f"/etc/musicfs/{unit.instance}.toml"))
        config.parent.mkdir(parents=True)
        config.write_text(
            f'[plugins]\npaths = ["{examples}", "{wasm}"]\n\n'
            f'[[origins]]\nid = "music"\npath = "{music}"\n'
        )
        notify_path = work / "notify"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.setblocking(False)
        messages: list[str] = []

        def received(wanted: str) -> bool:
            while True:
                try:
                    messages.extend(notify.recv(4096).decode().splitlines())
                except BlockingIOError:
                    return wanted in messages

        env = unit.environment(notify_path)
        start, _ = unit.command("ExecStart")
        trace = work / "strace.txt"
        log_path = work / "daemon.log"
        log = open(log_path, "w")  # noqa: SIM115 - open while the daemon runs
        mask = unit.umask()
        daemon = subprocess.Popen(
            [*unit.sandbox(), "strace", "-f", "-qq", "-o", str(trace), *start],
            env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            umask=mask,
        )  # fmt: skip
        try:
            limit = min(seconds(unit.one("TimeoutStartSec", "90s")), TEST_LIMIT)
            wait_for("READY=1", lambda: received("READY=1") or daemon.poll() is not None, limit)
            if "READY=1" not in messages:
                raise Failed(f"ExecStart exited with {daemon.returncode} before READY=1")
            report.append(f"ExecStart: READY=1 ({' '.join(start[1:])})")
            if not mounted(mountpoint):
                raise Failed(f"READY=1 but {mountpoint} is not mounted (seen from outside)")
            track = mountpoint / "Unknown Artist" / "Unknown Album (0000) [WAV]" / "00 - tone.wav"
            wait_for(f"{track.name} in the mount", track.exists, TEST_LIMIT)
            if track.read_bytes() != (music / "tone.wav").read_bytes():
                raise Failed("the track read through the mount differs from its origin")
            report.append("mount visible outside the unit, track read back")
            log.flush()
            plugins = re.findall(r"plugin \S+ \S+ loaded \((?:native|wasm), ", log_path.read_text())
            if len(plugins) < 3:
                raise Failed(f"the example plugins did not all load: {plugins}")
            report.append(f"{len(plugins)} example plugins loaded (Python and WebAssembly)")
            stop, _ = unit.command("ExecStop")
            stop_limit = min(seconds(unit.one("TimeoutStopSec", "90s")), TEST_LIMIT)
            result = subprocess.run(
                [*unit.sandbox(), *stop], env=env, cwd="/", capture_output=True, text=True,
                timeout=stop_limit, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise Failed(f"ExecStop failed ({result.returncode}): {result.stderr.strip()}")
            report.append(f"ExecStop: {result.stdout.strip()}")
            status = daemon.wait(timeout=stop_limit)
            received("STOPPING=1")
            if status != 0:
                raise Failed(f"the daemon exited with {status} after ExecStop")
            if "STOPPING=1" not in messages:
                raise Failed(f"no STOPPING=1 from the daemon (got {messages})")
            if mounted(mountpoint):
                raise Failed(f"{mountpoint} is still mounted after ExecStop")
            report.append("daemon: STOPPING=1, exit status 0, unmounted")
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
            post, _ = unit.command("ExecStopPost")
            subprocess.run([*unit.sandbox(), *post], env=env, capture_output=True, check=False)
            log.close()
            notify.close()
            if daemon.returncode not in (0, None):
                sys.stderr.write(log_path.read_text()[-3000:])
        used = set(re.findall(r"^\d+\s+([a-z0-9_]+)\(", trace.read_text(), re.MULTILINE))
        filters = " ".join(unit.settings.get("SystemCallFilter", [])).split()
        if filters:
            denied = sorted(used - allowed_syscalls(filters))
            if denied:
                raise Failed(f"system calls SystemCallFilter= would deny: {', '.join(denied)}")
            report.append(f"all {len(used)} system calls made are in SystemCallFilter=")
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: try_unit.py ROOT", file=sys.stderr)
        return 2
    try:
        for line in run(Path(argv[0]).resolve()):
            print(f"ok: {line}")
    except (Failed, subprocess.SubprocessError, OSError) as exc:
        print(f"try_unit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
