"""Smoke test of an installed `musicfs` command: mount a one-track library, read it, unmount.

Run by `nox -s build` against a fresh venv holding only the four wheels, to
prove the wheels alone make a working command. Standard library only.

    python tests/smoke_mount.py /path/to/venv/bin/musicfs
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path


def main(musicfs: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        origin, mnt, cache = root / "music", root / "mnt", root / "cache"
        for d in (origin, mnt):
            d.mkdir()
        with wave.open(str(origin / "tone.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\x00\x10" * 8000)
        base = [musicfs, "mount", str(mnt), "--origin", str(origin), "--cache-dir", str(cache)]
        subprocess.run(base, check=True)
        try:
            expected = mnt / "Unknown Artist" / "Unknown Album (0000) [WAV]" / "00 - tone.wav"
            deadline = time.monotonic() + 30
            while not expected.exists():
                if time.monotonic() > deadline:
                    status = subprocess.run(
                        [musicfs, "status", str(mnt), "--json"],
                        capture_output=True, text=True, check=False,
                    )  # fmt: skip
                    print(f"{expected} never appeared; status: {status.stdout}", file=sys.stderr)
                    return 1
                time.sleep(0.05)
            if expected.read_bytes() != (origin / "tone.wav").read_bytes():
                print("bytes through the mount differ from the origin", file=sys.stderr)
                return 1
            status = json.loads(
                subprocess.run(
                    [musicfs, "status", str(mnt), "--json"],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            print(f"smoke test ok: musicfs {status['version']}, {status['tracks']} track(s)")
        finally:
            subprocess.run([musicfs, "unmount", str(mnt)], check=False)
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
