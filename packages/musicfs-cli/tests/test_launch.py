"""The daemon forked before the command line loads (musicfs.cli.launch): what
becomes of it when the command does not hand it a mount."""

from __future__ import annotations

import os

from musicfs.cli import launch


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_without_a_mount_it_exits_quietly_when_the_command_ends() -> None:
    launch.fork_early()
    early = launch.take_early_daemon()
    assert early is not None
    os.close(early.plan_fd)  # what the command's exit does
    _, status = os.waitpid(early.pid, 0)
    os.close(early.ready_fd)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_mount_that_cannot_be_sent_is_refused_and_the_process_reaped() -> None:
    launch.fork_early()
    early = launch.take_early_daemon()
    assert early is not None
    assert early.hand_over((lambda: None,)) is False  # pickle cannot copy a lambda
    assert _gone(early.pid)  # killed and reaped: the caller forks a daemon anew
    assert launch.take_early_daemon() is None
