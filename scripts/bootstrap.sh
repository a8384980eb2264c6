# Sourced by install.sh and test.sh: installs Debian/Ubuntu packages and makes .venv.
# Functions only; nothing runs when this file is sourced.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${INSTALL_VENV:-$ROOT/.venv}"  # INSTALL_VENV: install elsewhere (used by the tests)

# What the FUSE binding needs to build and mount.
APT_RUNTIME=(fuse3 libfuse3-dev pkg-config gcc)
# What the tests and benchmarks use as real parts: encoders, players, peers;
# prometheus for promtool (tests/e2e/test_metrics.py lints the live endpoint) and the
# server (tests/e2e/test_grafana_dashboard.py runs the dashboard's queries on it);
# vlc for cvlc (tests/e2e/test_players.py).
APT_TEST=(ffmpeg flac lame opus-tools vorbis-tools mpv vlc rsync rclone mergerfs openssh-server
          samba prometheus)
# Real clients that read what the mount serves: MPD and mpc (indexing by mtime),
# exiftool and mediainfo (independent tag readers). beets comes from the lock.
APT_TEST+=(mpd mpc libimage-exiftool-perl mediainfo)
# A real PostgreSQL server for the shared catalog's tests (tests/servers/postgres.py).
APT_TEST+=(postgresql)
# What packaging/check.sh (nox -s package) builds and checks the distro packages
# and the systemd units with (Debian has no namcap); man and groff render musicfs(1).
APT_TEST+=(systemd strace shellcheck debhelper python3-venv python3-dev rpm rpmlint cpio
           makepkg pacman-package-manager libarchive-tools zstd man-db groff-base)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    # Python must be able to make a venv and compile a C extension.
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    python3 - <<'PY' 2>/dev/null || missing+=(python3-dev)
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}

make_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        python3 -m venv "$VENV"
    fi
    # uv at the version the development lock names, so installs resolve the same on any day.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$(locked_version uv)"
}

# The version requirements-dev.lock pins for one package, e.g. `locked_version uv`.
locked_version() {
    sed -n "s/^$1==\([^ ]*\).*/\1/p" "$ROOT/requirements-dev.lock"
}

# uv installs the four packages in one go (pip alone would look for siblings on PyPI).
venv_install() {
    # --compile-bytecode: without .pyc files every start (and so every mount) is 2-3x slower.
    "$VENV/bin/uv" pip install -q --compile-bytecode --python "$VENV/bin/python" "$@"
}
