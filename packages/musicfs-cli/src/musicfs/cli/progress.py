"""Progress bars for the commands that follow a streamed job (rescan, prefetch, verify)
or a long job of their own (catalog migrate)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any


def follow(
    updates: Iterable[dict[str, Any]],
    label: str,
    quiet: bool,
    *,
    total: str,
    completed: str,
    describe: str = "current",
) -> Iterator[dict[str, Any]]:
    """Pass *updates* through, drawing a bar (unless *quiet*) from their
    *total* and *completed* fields, with *describe* beside it."""
    if quiet:
        yield from updates
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.description}"))  # fmt: skip
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("", total=None)
        for update in updates:
            progress.update(task, total=update.get(total) or None,
                            completed=update.get(completed, 0),
                            description=str(update.get(describe, "")))  # fmt: skip
            yield update


def last(updates: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The final update of a stream ({} if there was none)."""
    final: dict[str, Any] = {}
    for update in updates:
        final = update
    return final


@contextmanager
def steps(label: str, quiet: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A bar (unless *quiet*) for a job that reports (what, done, total): one line
    per *what*, on stderr (stdout keeps the command's report) if it is a terminal."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn(label), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn())  # fmt: skip
    tasks: dict[str, Any] = {}
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:

        def update(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = progress.add_task(what, total=total)
            progress.update(tasks[what], completed=done)

        yield update
