#!/usr/bin/env bash
# Run the whole MusicFS test suite on a fresh Debian/Ubuntu machine:
#
#     ./scripts/test.sh
#
# Installs what the tests use (fuse3, encoders, players, peers, packaging tools)
# with apt, creates .venv with nox and uv from requirements-dev.lock, then runs lint (ruff, mypy, generated
# code check), the unit and end-to-end tests against real FUSE mounts, the wheel
# build check, the install check, and the distro packages (packaging/check.sh).
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k templates;
# --setup-only installs and stops (.ci/run uses it, then runs the same nox line).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

apt_install "${APT_RUNTIME[@]}" "${APT_TEST[@]}"
make_venv
# nox and every tool the sessions run, at the exact versions and hashes of the lock.
venv_install --require-hashes -r "$ROOT/requirements-dev.lock"
cd "$ROOT"
export PATH="$VENV/bin:$PATH"
if [ "${1:-}" = "--setup-only" ]; then
    exit 0
fi
if [ "$#" -gt 0 ]; then
    exec "$VENV/bin/nox" -s tests -- "$@"
fi
# Keep in step with .ci/run and the README.
"$VENV/bin/nox" -s lint tests build install package
