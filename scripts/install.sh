#!/usr/bin/env bash
# Install MusicFS on Debian/Ubuntu and mount a music folder:
#
#     ./scripts/install.sh ~/Music ~/mnt/music
#
# Installs fuse3 and build tools with apt (sudo if not root), creates .venv
# with the four MusicFS packages, links `musicfs` into ~/.local/bin, and mounts.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

if [ "$#" -ne 2 ]; then
    echo "usage: $0 MUSIC_FOLDER MOUNTPOINT   (e.g. $0 ~/Music ~/mnt/music)" >&2
    exit 2
fi
MUSIC="$1"
MOUNTPOINT="$2"
if [ ! -d "$MUSIC" ]; then
    echo "error: music folder $MUSIC does not exist" >&2
    exit 2
fi

apt_install "${APT_RUNTIME[@]}"
make_venv
say "installing the MusicFS packages into $VENV"
venv_install "$ROOT/packages/musicfs-core" "$ROOT/packages/musicfs-plugins" \
    "$ROOT/packages/musicfs-control" "$ROOT/packages/musicfs-cli"
mkdir -p "$HOME/.local/bin"
ln -sf "$VENV/bin/musicfs" "$HOME/.local/bin/musicfs"

mkdir -p "$MOUNTPOINT"
say "mounting $MUSIC on $MOUNTPOINT"
"$VENV/bin/musicfs" mount "$MOUNTPOINT" --origin "$MUSIC"
cat >&2 <<MSG

MusicFS is mounted on $MOUNTPOINT (the tree fills in while the first scan runs).
  status:   musicfs status --mount $MOUNTPOINT
  unmount:  musicfs unmount $MOUNTPOINT
('musicfs' is linked into ~/.local/bin; add it to PATH if it is not there.)
MSG
