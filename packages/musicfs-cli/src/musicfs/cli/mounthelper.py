"""``mount.musicfs``: the mount(8) helper, so ``mount -t fuse.musicfs`` and
``/etc/fstab`` lines mount MusicFS.

mount(8) runs ``/sbin/mount.fuse.musicfs`` (for type ``fuse.musicfs``) or
``/sbin/mount.musicfs`` (type ``musicfs``) as::

    mount.musicfs SOURCE MOUNTPOINT [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t TYPE]

The packages install both names. This module turns that call into ``musicfs
mount MOUNTPOINT ...`` and runs it in this process (it returns once the mount
answers, as mount(8) and systemd expect of a helper):

- SOURCE is an origin, as ``--origin`` takes it (a folder, or a URL such as
  ``sftp://host/music``); ``none`` or ``musicfs`` means no origin here, the
  config file (``config=``) lists them.
- OPTIONS map to the flags of ``musicfs mount`` (`FLAGS`, `VALUES`); the generic
  mount options, and those meant for mount(8) and systemd (``_netdev``,
  ``nofail``, ``noauto``, ``x-systemd.*``...), are accepted and ignored
  (`IGNORED`): they have done their job before the helper runs. ``ro`` and
  ``rw`` are accepted: the mount is read-only whatever they say (mount(8)
  passes ``rw`` whenever ``ro`` is not given, so refusing it would refuse
  every plain ``mount -t fuse.musicfs``). Any other option is an error that
  names it, unless mount(8) was given ``-s`` (sloppy): then a warning.

Exit status follows mount(8)'s table, since mount(8) hands it on: 0 mounted,
1 bad usage (an unknown option, a refused mountpoint...), 32 the mount failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from musicfs.cli.common import EXIT_OK, EXIT_USAGE
from musicfs.core.errors import MusicFSError

PROG = "mount.musicfs"

#: mount(8)'s exit statuses (mount(8), "RETURN CODES").
MOUNT_OK = 0
MOUNT_USAGE = 1
MOUNT_FAILED = 32

#: Options without a value -> the flag of ``musicfs mount``.
FLAGS: dict[str, str] = {
    "allow_other": "--allow-other",
    "wait": "--wait",
}

#: Options with a value (``name=value``) -> the flag of ``musicfs mount``.
VALUES: dict[str, str] = {
    "origin": "--origin",  # more origins besides SOURCE; may repeat
    "config": "--config",
    "cache_dir": "--cache-dir",
    "template": "--template",
    "log_level": "--log-level",
    "socket": "--socket",
}

#: Options for mount(8), systemd or the kernel's generic mount flags, which
#: MusicFS has no use for (a FUSE mount is nosuid, nodev, and this one read-only).
IGNORED: frozenset[str] = frozenset(
    {
        "ro", "rw", "defaults", "auto", "noauto", "user", "nouser", "users", "owner",
        "group", "_netdev", "nofail", "exec", "noexec", "suid", "nosuid", "dev", "nodev",
        "sync", "async", "dirsync", "atime", "noatime", "relatime", "norelatime",
        "strictatime", "nostrictatime", "lazytime", "nolazytime", "diratime", "nodiratime",
        "silent", "loud", "iversion", "noiversion", "mand", "nomand", "symfollow",
        "nosymfollow",
    }
)  # fmt: skip

#: Prefixes of options for userspace tools (mount(8): "x-*" and "X-*" are comments
#: or application options, e.g. x-systemd.automount; "comment=" is the old form).
IGNORED_PREFIXES = ("x-", "X-", "comment=")

#: The source words that mean "no origin here: the config file lists them".
NO_SOURCE = frozenset({"none", "musicfs"})


class HelperError(MusicFSError):
    """A call mount.musicfs refuses: its message says which option and what to do."""


@dataclass(frozen=True)
class Translation:
    """What a mount.musicfs call becomes: the ``musicfs`` arguments, and what was left out."""

    argv: list[str]
    ignored: list[str] = field(default_factory=list)
    #: Unknown options dropped because mount(8) was sloppy (``-s``).
    dropped: list[str] = field(default_factory=list)


def split_options(text: str) -> list[str]:
    """``a,b=c,"d=e,f"`` -> ``['a', 'b=c', 'd=e,f']``: commas separate options except
    inside double quotes (libmount's quoting, for a template with a comma); the
    quotes around a value are removed."""
    options: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            options.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise HelperError(f"unbalanced double quote in the mount options: {text}")
    options.append("".join(current))
    return [option for option in options if option]


def translate(
    source: str, mountpoint: str, options: Sequence[str], *, sloppy: bool = False
) -> Translation:
    """The ``musicfs`` arguments (``mount MOUNTPOINT ...``) for one mount.musicfs call."""
    argv = ["mount", mountpoint]
    if source not in NO_SOURCE:
        if not source:
            raise HelperError("the source is empty: give a folder or origin URL, or 'none'")
        argv += ["--origin", source]
    ignored: list[str] = []
    dropped: list[str] = []
    seen: set[str] = set()
    for option in options:
        name, has_value, value = option.partition("=")
        if name in IGNORED or option.startswith(IGNORED_PREFIXES):
            ignored.append(option)
            continue
        key = name.replace("-", "_")  # cache-dir= as well as cache_dir=
        if key in FLAGS:
            if has_value:
                raise HelperError(f"mount option {name!r} takes no value (got {option!r})")
            argv.append(FLAGS[key])
        elif key in VALUES:
            if not has_value or not value:
                raise HelperError(f"mount option {name!r} needs a value: {name}=...")
            if key in seen and key != "origin":
                raise HelperError(f"mount option {name!r} is given twice; give it once")
            argv += [VALUES[key], value]
        elif sloppy:
            dropped.append(option)
            continue
        else:
            raise HelperError(
                f"unknown mount option {name!r}; MusicFS takes "
                f"{', '.join(sorted([*FLAGS, *(f'{v}=' for v in VALUES)]))} "
                "and ignores the generic ones (ro, _netdev, nofail, x-systemd.*...)"
            )
        seen.add(key)
    return Translation(argv, ignored, dropped)


class _Parser(argparse.ArgumentParser):
    """argparse, with mount(8)'s status for bad usage (1, not argparse's 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(MOUNT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="The mount(8) helper of MusicFS: `mount -t fuse.musicfs SOURCE MOUNTPOINT "
        "-o OPTIONS` and /etc/fstab lines run `musicfs mount` with the options as flags.",
        epilog=f"options: {', '.join(FLAGS)}, {', '.join(f'{v}=VALUE' for v in VALUES)}; "
        "ignored: ro, rw, _netdev, nofail, noauto, x-systemd.* and the generic mount options",
    )
    parser.add_argument("source", help="an origin folder or URL, or 'none' (origins in config=)")
    parser.add_argument("mountpoint", help="the directory to mount on")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                        help="comma-separated mount options")  # fmt: skip
    parser.add_argument("-s", dest="sloppy", action="store_true",
                        help="warn about unknown options instead of refusing them")  # fmt: skip
    parser.add_argument("-f", dest="fake", action="store_true",
                        help="do everything but mount (mount -f)")  # fmt: skip
    parser.add_argument("-n", dest="no_mtab", action="store_true",
                        help="accepted and ignored (there is no /etc/mtab to write)")  # fmt: skip
    parser.add_argument("-v", dest="verbose", action="store_true",
                        help="print the musicfs command that is run")  # fmt: skip
    parser.add_argument("-N", dest="namespace", metavar="NAMESPACE",
                        help="not supported: run mount inside the namespace")  # fmt: skip
    parser.add_argument("-t", dest="type", metavar="TYPE", help="fuse.musicfs or musicfs")
    return parser


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.namespace is not None:
        _error(
            f"-N {args.namespace}: mounting in another namespace is not supported; "
            "run mount in it instead (nsenter --mount=... mount ...)"
        )
        return MOUNT_USAGE
    if args.type is not None and args.type not in ("fuse.musicfs", "musicfs"):
        _error(f"-t {args.type}: this helper mounts fuse.musicfs only")
        return MOUNT_USAGE
    try:
        options = [o for text in args.options for o in split_options(text)]
        translation = translate(args.source, args.mountpoint, options, sloppy=args.sloppy)
    except HelperError as exc:
        _error(str(exc))
        return MOUNT_USAGE
    for option in translation.dropped:
        print(f"{PROG}: warning: unknown mount option {option!r} ignored (-s)", file=sys.stderr)
    if args.verbose or args.fake:
        print(f"{PROG}: musicfs {' '.join(translation.argv)}", file=sys.stderr)
    if args.fake:
        return MOUNT_OK
    from musicfs.cli.main import main as musicfs_main

    status = musicfs_main(translation.argv)
    if status == EXIT_OK:
        return MOUNT_OK
    return MOUNT_USAGE if status == EXIT_USAGE else MOUNT_FAILED


if __name__ == "__main__":
    sys.exit(main())
