"""What every ``musicfs`` command shares: exit codes, errors, naming the mount,
finding the daemon.

Every command that talks to a mount names it the same way: ``--mount
MOUNTPOINT`` (``-m``), optional while a single mount runs. Commands that took
the mountpoint as an argument (``status``, ``events``, ``verify``, ``cache``,
``unmount``, ``shutdown``) still do; `merge_mount_args` makes the two one.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from musicfs.core.config.paths import (
    UnsafeSocketDir,
    check_socket_dir,
    runtime_dir,
    socket_path_for,
)
from musicfs.core.config.settings import Config, load_config
from musicfs.core.errors import MusicFSError
from musicfs.core.exitcodes import ExitCode

# The table and its meanings: musicfs.core.exitcodes (also shown by --help).
EXIT_OK: int = ExitCode.OK
EXIT_FAILED: int = ExitCode.FAILED
EXIT_USAGE: int = ExitCode.USAGE
EXIT_NO_DAEMON: int = ExitCode.NO_DAEMON
EXIT_INTERRUPTED: int = ExitCode.INTERRUPTED


class CLIError(MusicFSError):
    """A failure to report in one line (no traceback); *code* is the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def print_error(message: str) -> None:
    print(f"musicfs: error: {message}", file=sys.stderr)


def load_args_config(args: argparse.Namespace, **overrides: Any) -> Config:
    """The config of the file, the environment and *overrides* (``section.key`` -> a
    flag's value), with the sections the daemon's control side reads and
    ``[catalog]`` (a shared catalog, which the mount follows)."""
    from musicfs.control.config import SECTIONS
    from musicfs.core.config.catalog import CATALOG

    if args.socket:
        overrides["control.socket"] = args.socket
    return load_config(
        args.config,
        overrides=overrides,
        origins=getattr(args, "origin", []),
        sections=(*SECTIONS, CATALOG),
    )


def add_mount_option(parser: argparse.ArgumentParser) -> None:
    """``-m/--mount MOUNTPOINT``: how every command that talks to a mount names it."""
    parser.add_argument(
        "-m", "--mount", dest="mount_option", type=Path, metavar="MOUNTPOINT",
        help="the mount to talk to (default: the only one running)",
    )  # fmt: skip


def merge_mount_args(args: argparse.Namespace) -> None:
    """Make ``--mount`` and a MOUNTPOINT argument one ``args.mountpoint``;
    naming two different mounts is a usage error."""
    option: Path | None = getattr(args, "mount_option", None)
    given: Path | None = getattr(args, "mountpoint", None)
    if (
        option is not None
        and given is not None
        and os.path.abspath(option) != os.path.abspath(given)
    ):
        raise CLIError(
            f"two mounts named: {given} and --mount {option}; name one",
            EXIT_USAGE,
        )
    args.mountpoint = option if option is not None else given


def socket_for(args: argparse.Namespace) -> Path:
    """The control socket of the mount *args* name: one this user may use, in a
    folder no other user can (a root-only one is refused as out of reach)."""
    try:
        socket_path = _find_socket(args)
        check_socket_access(socket_path)
        check_socket_dir(socket_path)
    except UnsafeSocketDir as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    return socket_path


def _find_socket(args: argparse.Namespace) -> Path:
    config = load_args_config(args)
    if args.mountpoint is not None:
        if not config.control.socket:
            check_not_inside_mount(args.mountpoint)
        return socket_path_for(config, args.mountpoint)
    if config.control.socket:
        return Path(config.control.socket)
    # Checked before looking inside: a socket in a folder another user owns is theirs.
    check_socket_dir(runtime_dir() / "any.sock")
    sockets = [s for s in sorted(runtime_dir().glob("*.sock")) if _answers(s)]
    if len(sockets) == 1:
        return sockets[0]
    if not sockets:
        raise CLIError(f"no MusicFS daemon is running (none answers in {runtime_dir()})",
                       EXIT_NO_DAEMON)  # fmt: skip
    raise CLIError(_several_mounts(args, config, sockets), EXIT_USAGE)


def _answers(socket_path: Path) -> bool:
    """Whether something listens on *socket_path*: a daemon killed with -9 leaves
    its socket file behind, which must not count as a running mount."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(socket_path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # not ours to judge (e.g. no permission): let the client say
    return True


def _several_mounts(args: argparse.Namespace, config: Config, sockets: list[Path]) -> str:
    """Which mounts run (by mountpoint, not socket name) and how to pick one."""
    by_socket = {socket_path_for(config, mount): mount for mount in musicfs_mounts()}
    # A socket with no mount in sight: a daemon still starting, or one whose
    # mount this process cannot see (another mount namespace).
    named = sorted(str(by_socket.get(s, f"(a daemon at {s})")) for s in sockets)
    words = [args.command, getattr(args, f"{args.command}_command", None)]
    command = " ".join(w for w in words if w)
    example = next((n for n in named if not n.startswith("(")), "MOUNTPOINT")
    return (
        f"{len(sockets)} mounts are running: {', '.join(named)}; name one with "
        f"--mount MOUNTPOINT, e.g. musicfs {command} --mount {example}"
    )


def client_for(socket_path: Path, mountpoint: Path | None = None) -> Any:
    from musicfs.control.client import ControlClient

    # Just after `musicfs mount` returns, the daemon may still be opening its socket.
    wait = 5.0 if mountpoint is not None and is_mounted(mountpoint) else 0.0
    return ControlClient(socket_path, wait_for_socket=wait)


def check_socket_access(socket_path: Path) -> None:
    """Refuse, in words, a control socket this user may not use (the socket or
    a folder on its way is another user's): a daemon serves only its own user."""
    try:
        owner: int | None = os.stat(socket_path).st_uid
    except PermissionError:  # a folder on the way is closed to us
        owner = _nearest_owner(socket_path.parent)
    except OSError:
        return  # not there (yet): the client says so
    else:
        if os.access(socket_path, os.W_OK):  # what connect() needs
            return
    whose = "another user" if owner is None else _user_name(owner)
    raise CLIError(
        f"permission denied on the control socket {socket_path} (it belongs to {whose}); "
        "run the command as the user who mounted it, or as root",
        EXIT_USAGE,
    )


def _nearest_owner(path: Path) -> int | None:
    """The owner of *path*, or of its nearest parent we may look at."""
    for candidate in (path, *path.parents):
        try:
            return os.stat(candidate).st_uid
        except OSError:
            continue
    return None


def _user_name(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def daemon_unreachable() -> type[Exception]:
    from musicfs.control.client import DaemonUnreachable

    return DaemonUnreachable


def is_mounted(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN  # a dead FUSE mount is still a mount
    return os.path.ismount(path)


@contextlib.contextmanager
def daemon_client(args: argparse.Namespace) -> Iterator[Any]:
    """A `ControlClient` for the mount *args* name; its failures as `CLIError`s
    (no daemon: exit 3; a request the daemon refused: exit 2)."""
    from musicfs.control.client import ControlError, DaemonUnreachable

    try:
        with client_for(socket_for(args), args.mountpoint) as client:
            yield client
    except DaemonUnreachable as exc:
        raise CLIError(str(exc), EXIT_NO_DAEMON) from None
    except ControlError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None


def check_not_inside_mount(mountpoint: Path) -> None:
    """Refuse a path below a MusicFS mountpoint where the mountpoint is meant."""
    absolute = Path(os.path.abspath(mountpoint))
    mounts = musicfs_mounts()
    if absolute in mounts:
        return
    for parent in absolute.parents:
        if parent in mounts:
            raise CLIError(
                f"{mountpoint} is inside the MusicFS mount {parent}, not its mountpoint; "
                f"name the mountpoint: {parent}",
                EXIT_USAGE,
            )


def path_in_mount(path: Path, mount: Path | None = None) -> tuple[Path, str]:
    """(mountpoint, path inside it) of a path the user gave inside a MusicFS mount.

    With *mount* (``--mount``), a relative *path* is inside that mount (as
    ``musicfs search --json`` prints paths), and any other must lie in it.
    """
    if mount is not None:
        mount = Path(os.path.abspath(mount))
        if not path.is_absolute():
            path = mount / path
    absolute = Path(os.path.abspath(path))
    mounts = musicfs_mounts()
    for candidate in (absolute, *absolute.parents):
        if candidate in mounts:
            if mount is not None and candidate != mount:
                raise CLIError(
                    f"{path} is inside the MusicFS mount {candidate}, not --mount {mount}",
                    EXIT_USAGE,
                )
            relpath = absolute.relative_to(candidate).as_posix()
            return candidate, "" if relpath == "." else relpath
    raise CLIError(f"{path} is not inside a mounted MusicFS", EXIT_USAGE)


def musicfs_mounts() -> set[Path]:
    """Mountpoints of MusicFS filesystems (type ``fuse.musicfs``) on this machine."""
    found = set()
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "fuse.musicfs":
                    # /proc/mounts escapes blanks and backslashes as octal (\040).
                    target = fields[1].encode().decode("unicode_escape").encode("latin-1")
                    found.add(Path(os.fsdecode(target)))
    except OSError:
        pass
    return found
