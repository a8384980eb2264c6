#!/usr/bin/env bash
# Runs the README's install command exactly as a user would, in a scratch HOME
# and virtualenv, against a one-track library; checks the mount; unmounts.
# Called by `nox -s install`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRATCH="$(mktemp -d)"
MNT="$SCRATCH/mnt/music"
cleanup() {
    "$SCRATCH/venv/bin/musicfs" unmount "$MNT" >/dev/null 2>&1 || fusermount3 -u -z "$MNT" 2>/dev/null || true
    rm -rf "$SCRATCH"
}
trap cleanup EXIT
mkdir -p "$SCRATCH/Music/Some Album"
python3 - "$SCRATCH/Music/Some Album/tone.wav" <<'PY'
import sys, wave
with wave.open(sys.argv[1], "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000); w.writeframes(b"\0\1" * 4000)
PY
HOME="$SCRATCH" INSTALL_VENV="$SCRATCH/venv" XDG_CACHE_HOME="$SCRATCH/cache" \
    "$ROOT/scripts/install.sh" "$SCRATCH/Music" "$MNT"
test -L "$SCRATCH/.local/bin/musicfs"
EXPECTED="$MNT/Unknown Artist/Unknown Album (0000) [WAV]/00 - tone.wav"
for _ in $(seq 1 300); do
    [ -e "$EXPECTED" ] && break
    sleep 0.1  # polling for the first scan, with a 30 s deadline
done
cmp "$EXPECTED" "$SCRATCH/Music/Some Album/tone.wav"
echo "install check ok: $EXPECTED matches its origin"
