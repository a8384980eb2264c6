#!/usr/bin/env bash
# Build and check every package recipe of packaging/ with the tools this machine has:
#
#     packaging/check.sh [--strict] [--keep]
#
# 1. shellcheck of the scripts and the PKGBUILD; one version everywhere;
# 2. the four wheels, installed into a clean venv: `musicfs --version`, `--help`;
# 3. the systemd units: `systemd-analyze verify` (any message fails), the system
#    unit's exposure (`systemd-analyze security`) at most 5.0 of 10;
# 4. the Debian package (dpkg-buildpackage), the RPM (rpmbuild, rpmlint) and the
#    Arch package (makepkg; namcap if present), built side by side from one
#    source tarball and one local wheelhouse (PyPI is asked once); each is
#    inspected (dpkg-deb -I/-c, rpm -qp, bsdtar) for its dependencies and files,
#    unpacked, and its own `musicfs --version` run, its mount(8) helper links
#    followed and run, its man pages rendered (man --warnings, groff -ww: no
#    warning); the three must install the same files outside the virtualenv;
# 5. the system unit's commands run from the unpacked .deb as systemd would
#    (packaging/systemd/try_unit.py: READY=1, ExecStop, STOPPING=1, the
#    capability bounding set, SystemCallFilter=); needs root and /dev/fuse.
#
# A step whose tools are missing is skipped, and said so. --strict (the default
# when $CI is set) makes a skip an error, except namcap's: Debian has no namcap.
# Each step logs to a file; a failed step prints the end of its log. --keep
# keeps the work folder (built packages, logs). The apt packages this uses are
# in APT_TEST of scripts/bootstrap.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKG="$ROOT/packaging"
PYTHON=/usr/bin/python3
MAX_EXPOSURE=50  # tenths: 5.0, "OK" on systemd-analyze's scale of 0 to 10
STRICT="${CI:+1}"
KEEP=""
for arg in "$@"; do
    case "$arg" in
        --strict) STRICT=1 ;;
        --keep) KEEP=1 ;;
        *)
            sed -n '2,4p' "${BASH_SOURCE[0]}" >&2
            exit 2
            ;;
    esac
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/musicfs-package.XXXXXX")"
chmod 755 "$WORK"  # makepkg builds as nobody
mkdir "$WORK/logs"
cleanup() {
    if [ -n "$KEEP" ]; then
        echo "work folder kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

PASSED=()
FAILED=()
SKIPPED=()
START=$SECONDS

bold() { printf '\033[1m%s\033[0m\n' "$*"; }

declare -A PIDS=() BEGAN=()

# start NAME COMMAND...: run COMMAND in the background, its output in
# $WORK/logs/NAME.log. (A subshell started outside any `if` keeps `set -e`: a
# function run as an `if` condition would ignore every failure inside it.)
start() {
    local name="$1"
    shift
    ("$@") >"$WORK/logs/$name.log" 2>&1 &
    PIDS[$name]=$!
    BEGAN[$name]=$SECONDS
}

# finish NAME: wait for it and report.
finish() {
    local name="$1"
    if wait "${PIDS[$name]}"; then
        PASSED+=("$name")
        bold "ok    $name ($((SECONDS - BEGAN[$name])) s)"
    else
        FAILED+=("$name")
        bold "FAIL  $name ($((SECONDS - BEGAN[$name])) s); the end of its log:"
        tail -n 40 "$WORK/logs/$name.log" | sed 's/^/    /'
    fi
}

# step NAME COMMAND...: run COMMAND now.
step() {
    start "$@"
    finish "$1"
}

failed() {
    [[ " ${FAILED[*]} " == *" $1 "* ]]
}

skip() {
    SKIPPED+=("$1")
    bold "skip  $1: $2"
}

# have TOOL...: all of them are on PATH.
have() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || return 1
    done
}

# -- what every package must hold ---------------------------------------------------

VERSION="$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$ROOT/packages/musicfs-cli/pyproject.toml")"
# SBIN/ is usr/sbin, on Arch usr/bin (which its /usr/sbin links to).
REQUIRED_FILES=(
    usr/bin/musicfs
    SBIN/mount.musicfs
    SBIN/mount.fuse.musicfs
    usr/share/man/man1/musicfs.1.gz
    usr/share/man/man8/mount.musicfs.8.gz
    usr/share/man/man8/mount.fuse.musicfs.8.gz
    usr/lib/musicfs/bin/musicfs
    usr/lib/musicfs/bin/python
    usr/lib/musicfs/pyvenv.cfg
    usr/lib/systemd/system/musicfs@.service
    usr/lib/systemd/user/musicfs@.service
    usr/share/musicfs/config.example.toml
    usr/share/musicfs/grafana/musicfs-dashboard.json
    usr/share/musicfs/plugins/examples/zip_origin.py
    usr/share/musicfs/plugins/examples/mtr_format.py
    usr/share/musicfs/plugins/examples/wasm-xyz-format/mfsx_format.wat
    usr/share/doc/musicfs/README.md
    usr/share/doc/musicfs/README.packaging.md
    etc/musicfs
)

# sbin_of NAME: where package NAME (deb, rpm, arch) puts mount(8) helpers.
sbin_of() {
    if [ "$1" = arch ]; then echo usr/bin; else echo usr/sbin; fi
}

# check_files LISTING NAME: every required file is in LISTING (one path a line).
check_files() {
    local listing="$1" sbin file missing=0
    sbin="$(sbin_of "$2")"
    for file in "${REQUIRED_FILES[@]/#SBIN\//$sbin/}"; do
        if ! grep -qxE "/?(\./)?$file/?" "$listing"; then
            echo "missing from the package: /$file"
            missing=1
        fi
    done
    return "$missing"
}

# check_unpacked DIR NAME: the unpacked package's own command runs, from DIR.
# Its files outside the virtualenv go to $WORK/NAME.files for the comparison.
check_unpacked() {
    local dir="$1" name="$2" python="$1/usr/lib/musicfs/bin/python" out
    # The package's python is a link to the system's /usr/bin/python3, which an
    # unpacked tree lacks where the link is relative (Debian makes it so).
    if [ ! -e "$dir/usr/bin/python3" ]; then
        ln -s "$PYTHON" "$dir/usr/bin/python3"
    fi
    out="$("$python" "$dir/usr/lib/musicfs/bin/musicfs" --version)"
    echo "packaged command: $out"
    [ "$out" = "musicfs $VERSION" ]
    "$python" "$dir/usr/lib/musicfs/bin/musicfs" --help >/dev/null
    check_helper "$dir" "$name"
    check_man "$dir"
    (cd "$dir" && find . -path ./usr/lib/musicfs -prune -o -path ./usr/bin/python3 -prune -o -print |
        sed 's|^\./||' | grep -v '^\.$' | grep -v '^\.[A-Z]' | sort) >"$WORK/$name.files"
}

# check_helper DIR NAME: mount(8)'s helper links lead to the virtualenv's
# mount.musicfs, which turns a call into the musicfs mount command (-f: only
# says it).
check_helper() {
    local dir="$1" sbin link out
    sbin="$(sbin_of "$2")"
    for link in mount.musicfs mount.fuse.musicfs; do
        [ "$(readlink -f "$dir/$sbin/$link")" = "$dir/usr/lib/musicfs/bin/mount.musicfs" ]
    done
    out="$("$dir/usr/lib/musicfs/bin/python" "$dir/$sbin/mount.fuse.musicfs" /srv/music /mnt/music \
        -f -o rw,allow_other,_netdev,x-systemd.automount 2>&1)"
    echo "mount.fuse.musicfs -f: $out"
    [ "$out" = "mount.musicfs: musicfs mount /mnt/music --origin /srv/music --allow-other" ]
}

# check_man DIR: the man pages render without a warning from man or groff, and
# show the commands they document.
check_man() {
    local dir="$1" page messages text
    for page in man1/musicfs.1.gz man8/mount.musicfs.8.gz man8/mount.fuse.musicfs.8.gz; do
        page="$dir/usr/share/man/$page"
        text="$WORK/$(basename "$page").txt"
        messages="$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >"$text")"
        messages+="$(zcat "$page" | groff -ww -z -man 2>&1)"
        echo "man -l and groff -ww ${page#"$dir"/}: ${messages:-no warnings}"
        [ -z "$messages" ]
        grep -q "mount -t fuse.musicfs SOURCE MOUNTPOINT" "$text"
    done
    grep -q "musicfs mount \[options\] mountpoint" "$WORK/musicfs.1.gz.txt"
    grep -q "x-systemd.automount" "$WORK/mount.musicfs.8.gz.txt"
}

# -- 1. sources ---------------------------------------------------------------------

check_shell() {
    shellcheck "$PKG"/*.sh
    shellcheck -s bash -e SC2034,SC2154,SC2164 "$PKG/arch/PKGBUILD"
}

check_versions() {
    local spec pkgbuild debian
    spec="$(sed -n 's/^Version: *//p' "$PKG/rpm/musicfs.spec")"
    pkgbuild="$(sed -n 's/^pkgver=//p' "$PKG/arch/PKGBUILD")"
    debian="$(sed -n '1s/^musicfs (\([^-]*\)-.*/\1/p' "$PKG/debian/changelog")"
    echo "musicfs-cli $VERSION, rpm $spec, arch $pkgbuild, debian $debian"
    [ "$spec" = "$VERSION" ] && [ "$pkgbuild" = "$VERSION" ] && [ "$debian" = "$VERSION" ]
}

# The source tarball every recipe builds from: the checkout as it is, with
# uncommitted changes, without what git ignores.
make_tarball() {
    cd "$ROOT"
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' file; do
            if [ -e "$file" ]; then printf '%s\0' "$file"; fi
        done |
        tar --null -T - --transform "s,^,musicfs-$VERSION/," -czf "$WORK/musicfs-$VERSION.tar.gz"
    tar -tzf "$WORK/musicfs-$VERSION.tar.gz" | wc -l
}

# The four wheels, and a wheelhouse with everything the recipes install.
make_wheels() {
    PYTHON="$PYTHON" "$PKG/venv-install.sh" wheels "$WORK/wheels"
    PYTHON="$PYTHON" "$PKG/venv-install.sh" wheelhouse "$WORK/wheels" "$WORK/wheelhouse"
    chmod -R a+rX "$WORK/wheelhouse"
    ls "$WORK/wheels" "$WORK/wheelhouse"
}

# Installs take their Python packages from the wheelhouse only.
offline() {
    env PIP_NO_INDEX=1 PIP_FIND_LINKS="$WORK/wheelhouse" PIP_NO_CACHE_DIR=1 "$@"
}

# -- 2. the wheels alone ------------------------------------------------------------

check_clean_venv() {
    local venv="$WORK/clean-venv" out
    "$PYTHON" -m venv "$venv"
    offline "$venv/bin/python" -m pip install -q "$WORK"/wheels/*.whl
    out="$("$venv/bin/musicfs" --version)"
    echo "$out"
    [ "$out" = "musicfs $VERSION" ]
    "$venv/bin/musicfs" --help | tee "$WORK/help.txt"
    grep -q "mount" "$WORK/help.txt"
    "$venv/bin/musicfs" mount --help >/dev/null
    "$venv/bin/musicfs" unmount --help >/dev/null
    "$venv/bin/mount.musicfs" --help >/dev/null
}

# -- 3. the systemd units -----------------------------------------------------------

# verify_unit system|user: systemd-analyze verify, with every message an error.
# The unit's /usr/bin/musicfs is not installed here: the copy checked runs the
# clean venv's (the packages are checked to ship /usr/bin/musicfs).
verify_unit() {
    local kind="$1" dir="$WORK/units/$1" unit instance messages
    local -a manager=()
    mkdir -p "$dir" "$WORK/units/runtime"
    chmod 700 "$WORK/units/runtime"
    grep -q '^Type=notify$' "$PKG/systemd/$kind/musicfs@.service"
    grep -q '^NotifyAccess=main$' "$PKG/systemd/$kind/musicfs@.service"
    grep -q '^ExecStart=/usr/bin/musicfs mount %f --foreground$' "$PKG/systemd/$kind/musicfs@.service"
    sed "s|/usr/bin/musicfs|$WORK/clean-venv/bin/musicfs|" \
        "$PKG/systemd/$kind/musicfs@.service" >"$dir/musicfs@.service"
    instance="$(systemd-escape --path /home/me/mnt/music)"
    unit="$dir/musicfs@$instance.service"
    ln -sf musicfs@.service "$unit"
    if [ "$kind" = user ]; then manager=(--user); fi
    messages="$(XDG_RUNTIME_DIR="$WORK/units/runtime" systemd-analyze "${manager[@]}" verify "$unit" 2>&1)"
    echo "systemd-analyze ${manager[*]} verify musicfs@$instance.service: ${messages:-no messages}"
    [ -z "$messages" ]
    XDG_RUNTIME_DIR="$WORK/units/runtime" systemd-analyze "${manager[@]}" security --offline=yes \
        "$unit" | tail -n 1
    if [ "$kind" = system ]; then
        systemd-analyze security --offline=yes --threshold="$MAX_EXPOSURE" "$unit" >/dev/null
    fi
}

# -- 4. the packages ----------------------------------------------------------------

build_deb() {
    mkdir -p "$WORK/deb"
    cd "$WORK/deb"
    tar -xzf "$WORK/musicfs-$VERSION.tar.gz"
    cd "musicfs-$VERSION"
    cp -r packaging/debian debian
    # zstd: xz (dpkg's default) takes 40 s more on this package.
    offline env DPKG_DEB_COMPRESSOR_TYPE=zstd DPKG_DEB_COMPRESSOR_LEVEL=3 \
        dpkg-buildpackage -us -uc -b
}

check_deb() {
    local deb
    deb="$(echo "$WORK"/deb/musicfs_"$VERSION"-*.deb)"
    dpkg-deb -I "$deb" | tee "$WORK/deb/info.txt"
    grep -E '^ Depends:.*\bfuse3\b' "$WORK/deb/info.txt"
    grep -E '^ Depends:.*\bpython3 \(>= 3\.[0-9]+\), python3 \(<< 3\.[0-9]+\)' "$WORK/deb/info.txt"
    grep -E '^ Depends:.*\blibfuse3-3\b' "$WORK/deb/info.txt"
    dpkg-deb -c "$deb" | awk '{print $6}' >"$WORK/deb/files.txt"
    wc -l <"$WORK/deb/files.txt"
    check_files "$WORK/deb/files.txt" deb
    rm -rf "$WORK/deb/root"
    dpkg-deb -x "$deb" "$WORK/deb/root"
    check_unpacked "$WORK/deb/root" deb
}

build_rpm() {
    mkdir -p "$WORK/rpm/SOURCES"
    cp "$WORK/musicfs-$VERSION.tar.gz" "$WORK/rpm/SOURCES/"
    # --nodeps: BuildRequires name RPM packages, which a Debian machine has not
    # got in its RPM database (the same tools are there as Debian packages).
    offline rpmbuild -bb --nodeps --define "_topdir $WORK/rpm" \
        --define "_binary_payload w3.zstdio" "$PKG/rpm/musicfs.spec"
}

check_rpm() {
    local rpm
    rpm="$(echo "$WORK"/rpm/RPMS/*/musicfs-"$VERSION"-*.rpm)"
    # Every error and warning fails, but those musicfs.rpmlintrc filters, each
    # with its reason (one run: a filter neither file uses is an error too).
    rpmlint -r "$PKG/rpm/musicfs.rpmlintrc" "$PKG/rpm/musicfs.spec" "$rpm" | tee "$WORK/rpm/lint.txt"
    grep -q ' 0 errors, 0 warnings' "$WORK/rpm/lint.txt"
    rpm -qpi "$rpm"
    rpm -qpR "$rpm" | tee "$WORK/rpm/requires.txt"
    grep -qx 'fuse3' "$WORK/rpm/requires.txt"
    grep -qE '^python\(abi\) = 3\.[0-9]+$' "$WORK/rpm/requires.txt"
    grep -q '^libfuse3.so.3()' "$WORK/rpm/requires.txt"
    if rpm -qpP "$rpm" | grep -vE '^musicfs(\(|\s|$)'; then
        echo "the package provides more than itself (see above)"
        return 1
    fi
    rpm -qpl "$rpm" >"$WORK/rpm/files.txt"
    wc -l <"$WORK/rpm/files.txt"
    check_files "$WORK/rpm/files.txt" rpm
    rm -rf "$WORK/rpm/root"
    mkdir "$WORK/rpm/root"
    (cd "$WORK/rpm/root" && rpm2cpio "$rpm" | cpio -idm --quiet)
    check_unpacked "$WORK/rpm/root" rpm
}

build_arch() {
    local dir="$WORK/arch"
    mkdir -p "$dir"
    cp "$PKG/arch/PKGBUILD" "$WORK/musicfs-$VERSION.tar.gz" "$dir/"
    chown -R nobody: "$dir"
    # makepkg refuses root. -d: the dependencies are Arch packages, not here.
    # (Without a pacman database, its .BUILDINFO step says "failed to initialize
    # alpm library"; the package is complete all the same.)
    (cd "$dir" && runuser -u nobody -- env PIP_NO_INDEX=1 PIP_FIND_LINKS="$WORK/wheelhouse" \
        PIP_NO_CACHE_DIR=1 PKGEXT=.pkg.tar.zst makepkg -d --noconfirm --nocolor)
}

check_arch() {
    local pkg
    pkg="$(echo "$WORK"/arch/musicfs-"$VERSION"-*.pkg.tar.zst)"
    bsdtar -xOf "$pkg" .PKGINFO | tee "$WORK/arch/pkginfo.txt"
    grep -qx 'depend = python' "$WORK/arch/pkginfo.txt"
    grep -qx 'depend = fuse3' "$WORK/arch/pkginfo.txt"
    bsdtar -tf "$pkg" >"$WORK/arch/files.txt"
    wc -l <"$WORK/arch/files.txt"
    check_files "$WORK/arch/files.txt" arch
    rm -rf "$WORK/arch/root"
    mkdir "$WORK/arch/root"
    bsdtar -xf "$pkg" -C "$WORK/arch/root"
    check_unpacked "$WORK/arch/root" arch
    if have namcap; then namcap "$WORK/arch/PKGBUILD" "$pkg"; fi
}

# The three packages install the same files outside the virtualenv (docs apart:
# each distribution has its own extra ones, such as Debian's changelog; and
# Arch's mount helpers are in usr/bin, its usr/sbin being a link to it).
compare_packages() {
    local a b status=0
    for a in deb rpm arch; do
        grep -vE '^usr/share/(doc|licenses)(/|$)' "$WORK/$a.files" |
            sed -E 's,^usr/bin/(mount\.),usr/sbin/\1,' | grep -vx 'usr/sbin' | sort -u >"$WORK/$a.cmp"
    done
    for a in deb rpm arch; do
        for b in deb rpm arch; do
            if [[ "$a" < "$b" ]] && ! diff -u "$WORK/$a.cmp" "$WORK/$b.cmp"; then status=1; fi
        done
    done
    wc -l <"$WORK/deb.cmp"
    return "$status"
}

# -- run ----------------------------------------------------------------------------

bold "checking the packaging of musicfs $VERSION in $WORK"
if have shellcheck; then step shellcheck check_shell; else skip shellcheck "shellcheck is missing"; fi
step versions check_versions
step tarball make_tarball
step wheels make_wheels
step clean-venv check_clean_venv
if have systemd-analyze systemd-escape; then
    step unit-system verify_unit system
    step unit-user verify_unit user
else
    skip units "systemd-analyze is missing"
fi

# The three builds run side by side (most of each is single-threaded).
BUILDS=()
if failed wheels || failed tarball; then
    skip packages "no wheels or tarball to build them from"
else
    if have dpkg-buildpackage dh dpkg-deb; then
        start build-deb build_deb
        BUILDS+=(deb)
    else
        skip deb "dpkg-buildpackage or debhelper is missing"
    fi
    if have rpmbuild rpmlint rpm2cpio cpio; then
        start build-rpm build_rpm
        BUILDS+=(rpm)
    else
        skip rpm "rpmbuild, rpmlint or rpm2cpio is missing"
    fi
    if have makepkg bsdtar runuser && [ "$(id -u)" -eq 0 ]; then
        start build-arch build_arch
        BUILDS+=(arch)
    else
        skip arch "makepkg, bsdtar, or root (to build as nobody) is missing"
    fi
fi
for kind in "${BUILDS[@]}"; do
    finish "build-$kind"
    if ! failed "build-$kind"; then step "check-$kind" "check_$kind"; fi
done
if [ -e "$WORK/deb.files" ] && [ -e "$WORK/rpm.files" ] && [ -e "$WORK/arch.files" ]; then
    step same-files compare_packages
fi
if ! have namcap; then
    bold "note  namcap is not available on Debian: the Arch package is checked by makepkg only"
fi

if [ -e "$WORK/deb.files" ] && [ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ] &&
    have strace setpriv fusermount3; then
    step unit-run "$PYTHON" "$PKG/systemd/try_unit.py" "$WORK/deb/root"
else
    skip unit-run "needs the unpacked .deb, root, /dev/fuse, strace and setpriv"
fi

echo
bold "packaging checks: ${#PASSED[@]} passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped in $((SECONDS - START)) s"
if [ "${#FAILED[@]}" -gt 0 ]; then
    bold "failed: ${FAILED[*]} (logs: $WORK/logs; run with --keep to keep them)"
    exit 1
fi
if [ -n "$STRICT" ] && [ "${#SKIPPED[@]}" -gt 0 ]; then
    bold "skipped in strict mode: ${SKIPPED[*]} (install APT_TEST of scripts/bootstrap.sh)"
    exit 1
fi
