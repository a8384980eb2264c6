#!/usr/bin/env bash
# The build steps every distro recipe here shares (debian/rules, rpm/musicfs.spec,
# arch/PKGBUILD): MusicFS is packaged as a self-contained virtualenv in
# /usr/lib/musicfs, with /usr/bin/musicfs linked to its command.
#
#     packaging/venv-install.sh wheels WHEELDIR
#         build the four MusicFS wheels from this source tree into WHEELDIR
#     packaging/venv-install.sh wheelhouse WHEELDIR DIR
#         fetch into DIR everything an offline build of the wheels of WHEELDIR
#         needs (their dependencies and the build backend); then build with
#         PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR
#     packaging/venv-install.sh install DESTDIR WHEELDIR [PREFIX]
#         make the virtualenv PREFIX (default /usr/lib/musicfs) under DESTDIR,
#         install the wheels of WHEELDIR and what they depend on, link
#         DESTDIR/usr/bin/musicfs and the mount(8) helper SBINDIR/mount.musicfs
#         and mount.fuse.musicfs to it, and write the man pages musicfs(1) and
#         mount.musicfs(8) from the installed commands' parsers
#
# Why a virtualenv: the control package needs grpcio and protobuf releases no
# distribution ships yet, the plugin host needs wasmtime, which none ships at all,
# and the four packages pin each other. See packaging/README.md.
#
# Python packages come from PyPI, or with pip's own settings from a local
# folder: PIP_NO_INDEX=1 PIP_FIND_LINKS=/some/wheelhouse (packaging/check.sh).
# PYTHON is the interpreter the virtualenv runs on (default /usr/bin/python3): the
# package then depends on that Python's minor version. SBINDIR is where mount(8)
# finds its helpers (default /usr/sbin, which /sbin links to; Arch: /usr/bin).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-/usr/bin/python3}"
PACKAGES=(core plugins control cli)
TOOLS=""
trap 'if [ -n "$TOOLS" ]; then rm -rf "$TOOLS"; fi' EXIT

usage() {
    sed -n '6,18p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

pip() {
    "$1" -m pip --disable-pip-version-check --no-input -q "${@:2}"
}

# The build backend the four pyproject.toml files ask for, one requirement a line.
build_requires() {
    "$PYTHON" - "${PACKAGES[@]/#/$SRC/packages/musicfs-}" <<'PY'
import sys, tomllib
needs = set()
for folder in sys.argv[1:]:
    with open(f"{folder}/pyproject.toml", "rb") as fh:
        needs.update(tomllib.load(fh)["build-system"]["requires"])
print("\n".join(sorted(needs)))
PY
}

wheelhouse() {
    local wheels="$1" out="$2" requires
    mapfile -t requires < <(build_requires)
    TOOLS="$(mktemp -d)"
    "$PYTHON" -m venv "$TOOLS/venv"
    pip "$TOOLS/venv/bin/python" wheel --wheel-dir "$out" "$wheels"/musicfs_*.whl "${requires[@]}"
    rm -f "$out"/musicfs_*.whl  # the recipes build their own
}

build_wheels() {
    local out="$1"
    TOOLS="$(mktemp -d)"
    # A throwaway venv with the build backend: the system Python may have no pip
    # (Debian's has none), and one backend install beats one per package.
    "$PYTHON" -m venv "$TOOLS/venv"
    local requires
    mapfile -t requires < <(build_requires)
    pip "$TOOLS/venv/bin/python" install "${requires[@]}"
    mkdir -p "$out"
    pip "$TOOLS/venv/bin/python" wheel --no-deps --no-build-isolation --wheel-dir "$out" \
        "${PACKAGES[@]/#/$SRC/packages/musicfs-}"
}

install_venv() {
    local destdir="$1" wheels="$2" prefix="${3:-/usr/lib/musicfs}"
    destdir="$(realpath -m "$destdir")"
    local venv="$destdir$prefix"
    local found=("$wheels"/musicfs_*.whl)
    if [ "${#found[@]}" -ne "${#PACKAGES[@]}" ]; then
        echo "venv-install.sh: expected ${#PACKAGES[@]} musicfs wheels in $wheels, found: ${found[*]}" >&2
        exit 1
    fi
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    # --no-compile: the .pyc files are made below, with the paths they will have.
    pip "$venv/bin/python" install --no-compile \
        "${found[@]}"
    pip "$venv/bin/python" uninstall -y pip setuptools
    # Only `musicfs` and `mount.musicfs` are wanted from bin/ (the other scripts
    # are the dependencies' tools, and a system venv is never activated); their
    # man pages go too.
    find "$venv/bin" -type f ! -name musicfs ! -name mount.musicfs -delete
    rm -rf "$venv/share" "$venv/include"
    # The venv was made at $venv but runs at $prefix: fix the paths that name it
    # (script shebangs, pyvenv.cfg).
    grep -rlF -- "$venv" "$venv/bin" "$venv/pyvenv.cfg" | while read -r file; do
        sed -i "s|$venv|$prefix|g" "$file"
    done
    find "$venv" -name direct_url.json -delete  # records the build folder
    # Modules and metadata some wheels mark executable are read, never run.
    find "$venv/lib" -type f -perm /111 ! -name '*.so' ! -name '*.so.*' -exec chmod a-x {} +
    find "$venv" -name __pycache__ -prune -exec rm -rf {} +
    "$venv/bin/python" -m compileall -q -j 0 -s "$destdir" -p / "$venv/lib" >/dev/null
    # The man pages, made from the parsers of the commands just installed (-B:
    # no .pyc files besides those compiled above). Gzipped here, as all three
    # distributions ship them (dh_compress and makepkg leave a .gz as it is):
    # Debian's rpm does not compress them (its brp-compress needs bash, runs in dash).
    local man="$destdir/usr/share/man"
    mkdir -p "$man/man1" "$man/man8"
    "$venv/bin/python" -B -m musicfs.cli.manpage musicfs | gzip -9n >"$man/man1/musicfs.1.gz"
    "$venv/bin/python" -B -m musicfs.cli.manpage mount.musicfs |
        gzip -9n >"$man/man8/mount.musicfs.8.gz"
    ln -sfn mount.musicfs.8.gz "$man/man8/mount.fuse.musicfs.8.gz"
    if grep -rqF -- "$destdir" "$venv"; then
        echo "venv-install.sh: files still name the build folder $destdir:" >&2
        grep -rlF -- "$destdir" "$venv" >&2
        exit 1
    fi
    # Last (the venv's python does not run from DESTDIR after it): relative links,
    # as distributions want; bin/python3 goes to the system's python.
    local link target
    for link in "$venv"/bin/python*; do
        target="$(readlink "$link")"
        if [[ "$target" == /* ]]; then
            ln -sfn "$(realpath -ms --relative-to="$prefix/bin" "$target")" "$link"
        fi
    done
    mkdir -p "$destdir/usr/bin"
    ln -sfn "$(realpath -ms --relative-to=/usr/bin "$prefix/bin/musicfs")" "$destdir/usr/bin/musicfs"
    # mount(8) runs /sbin/mount.fuse.musicfs for type fuse.musicfs, and
    # /sbin/mount.musicfs for type musicfs.
    local sbindir="${SBINDIR:-/usr/sbin}"
    mkdir -p "$destdir$sbindir"
    ln -sfn "$(realpath -ms --relative-to="$sbindir" "$prefix/bin/mount.musicfs")" \
        "$destdir$sbindir/mount.musicfs"
    ln -sfn mount.musicfs "$destdir$sbindir/mount.fuse.musicfs"
}

case "${1:-}" in
    wheels)
        if [ "$#" -ne 2 ]; then usage; fi
        build_wheels "$2"
        ;;
    wheelhouse)
        if [ "$#" -ne 3 ]; then usage; fi
        wheelhouse "$2" "$3"
        ;;
    install)
        if [ "$#" -lt 3 ] || [ "$#" -gt 4 ]; then usage; fi
        install_venv "${@:2}"
        ;;
    *) usage ;;
esac
