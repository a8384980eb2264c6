"""Progress bars for the commands that follow a streamed job (rescan, prefetch, verify)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
