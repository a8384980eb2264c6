"""A mount's daemon, started early: ``musicfs mount`` forks it first.

Job: ``musicfs mount`` without ``--foreground`` (`musicfs.cli.entry`) forks the process that becomes
the daemon *first*, before the command line's own modules are imported. That
process imports trio, pyfuse3 and the mount's modules (about 0.15 s of CPU)
on another core while this one parses the arguments and the config and checks
the mountpoint (about 0.07 s); `musicfs.cli.mount` then hands it what to mount
(`EarlyDaemon.hand_over`), and it becomes the daemon (`become_daemon`, also
what `musicfs.cli.mount` runs in a process it forks itself). When the command
does not get that far (a refused mountpoint, ``--help``, a bad config), the
early process is killed before it did anything.

Boundaries: only the standard library is imported before the fork, and the
early process neither reads nor writes anything but its two pipes until it
is handed a mount; the checks are `musicfs.cli.mount`'s, the daemon is
`musicfs.control.daemon.run_daemon`. `python -m musicfs.cli` and the
``mount.musicfs`` helper fork at the usual place instead.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing, enum, signal costs ~10 ms
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, NoReturn

    from musicfs.core.config.settings import Config

# Imported here: os and sys only (the interpreter has them already); everything
# else after the fork.

_early: EarlyDaemon | None = None


class EarlyDaemon:
    """The forked process that becomes the daemon once handed a mount."""

    def __init__(self, pid: int, plan_fd: int, ready_fd: int) -> None:
        self.pid = pid
        self.plan_fd = plan_fd  # write end: the pickled mount
        self.ready_fd = ready_fd  # read end: the daemon's READY/ERROR lines

    def hand_over(self, plan: tuple[Any, ...]) -> bool:
        """Send *plan* (`become_daemon`'s arguments); False if the process is
        gone or the plan cannot be sent (a config holding something pickle
        cannot copy): then it is reaped, and the caller forks anew."""
        import pickle

        try:
            data = pickle.dumps(plan)
        except Exception:
            self.discard()
            return False
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.plan_fd, view) :]
        except OSError:
            self.discard()
            return False
        os.close(self.plan_fd)
        return True

    def discard(self) -> None:
        """Stop the process, which has done nothing yet, and reap it."""
        import contextlib
        import signal

        for fd in (self.plan_fd, self.ready_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def become_daemon(
    config: Config, mountpoint: Path, wait: bool, daemon_log: Path, *, ready_fd: int
) -> NoReturn:
    """In the forked process: leave the terminal, log to *daemon_log*, run the
    daemon (it reports on *ready_fd*) and exit with its status."""
    from musicfs.core.exitcodes import ExitCode

    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(daemon_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    status: int = ExitCode.FAILED
    try:
        from musicfs.control.daemon import run_daemon

        status = run_daemon(config, mountpoint, foreground=False, ready_fd=ready_fd, wait_scan=wait)
    except BaseException:
        import traceback

        traceback.print_exc()  # into daemon.log: the parent shows its tail
    finally:
        os._exit(status)


def take_early_daemon() -> EarlyDaemon | None:
    """The process forked at start for this mount, if there is one (once)."""
    global _early
    early, _early = _early, None
    return early


def fork_early() -> None:
    """Fork the process that becomes the daemon (see the module's docstring)."""
    global _early
    plan_read, plan_write = os.pipe()
    ready_read, ready_write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:  # no process to spare: `musicfs.cli.mount` forks later, as it can
        for fd in (plan_read, plan_write, ready_read, ready_write):
            os.close(fd)
        return
    if pid == 0:
        os.close(plan_write)
        os.close(ready_read)
        _await_plan(plan_read, ready_write)
    os.close(plan_read)
    os.close(ready_write)
    _early = EarlyDaemon(pid, plan_write, ready_read)


def _await_plan(plan_fd: int, ready_fd: int) -> NoReturn:
    """In the early process: import what the daemon needs, then wait for the
    plan; exit quietly when the command closes the pipe without one."""
    # The terminal (or the caller's pipes) is the command's, not this process's:
    # a Ctrl-C there is for the command, which closes the plan pipe on its way out.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    import contextlib

    # Trio, pyfuse3 and the mount: why this process exists. What fails to import
    # fails again in `become_daemon`, whose log says what.
    with contextlib.suppress(BaseException):
        import musicfs.control.daemon  # noqa: F401
    chunks: list[bytes] = []
    while chunk := os.read(plan_fd, 65536):
        chunks.append(chunk)
    os.close(plan_fd)
    if not chunks:
        os._exit(0)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import pickle

    try:
        plan = pickle.loads(b"".join(chunks))
    except Exception as exc:  # the command waits for a line on ready_fd: say why
        os.write(
            ready_fd,
            f"ERROR the daemon could not read what to mount ({type(exc).__name__}: {exc}); "
            "`musicfs mount --foreground` mounts without it\n".encode(),
        )
        os._exit(1)
    become_daemon(*plan, ready_fd=ready_fd)
