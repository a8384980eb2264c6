"""Which folders to name: the changed folders of a round, made few.

`collapse` takes the mount-relative folder paths gathered during one debounce
window and returns what a server is told: a folder and anything below it
become that folder (a server rescans a folder with its subfolders), and when
more than *cap* folders are left, the deepest are replaced by their parents,
level by level, until at most *cap* remain: at the top that is the root (""),
the whole library. `Gather` is the debounce window itself, with the clock passed in so
tests need no sleeping.
"""

from __future__ import annotations

from collections.abc import Iterable

#: The root of the mount: the whole library.
ROOT = ""


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def outermost(paths: Iterable[str]) -> list[str]:
    """*paths* without those inside another of them (the root holds everything)."""
    result: list[str] = []
    # By components: a folder comes right before everything inside it ("a", "a/x",
    # "a b"; as plain strings "a b" would come between them).
    for path in sorted(set(paths), key=lambda p: p.split("/")):
        if path == ROOT:
            return [ROOT]
        if result and path.startswith(result[-1] + "/"):
            continue
        result.append(path)
    return result


def collapse(paths: Iterable[str], cap: int) -> list[str]:
    """The folders to name for *paths*: outermost ones, at most *cap* (>= 1) of them."""
    folders = outermost(paths)
    while len(folders) > cap:
        # The deepest climb first: siblings deep down meet in their parent while
        # folders higher up stay named.
        deepest = max(p.count("/") for p in folders)
        folders = outermost(parent_of(p) if p.count("/") == deepest else p for p in folders)
    return folders


class Gather:
    """One debounce window: folders come in; the round is due *debounce* seconds
    after the first of them (later ones join it, they do not delay it further,
    so a scan that keeps changing things still reports every *debounce* s)."""

    def __init__(self, debounce: float) -> None:
        self.debounce = debounce
        self.paths: set[str] = set()
        self.started: float | None = None  # when the first folder of this round came

    def add(self, path: str, now: float) -> None:
        if self.started is None:
            self.started = now
        self.paths.add(path)

    def due_in(self, now: float) -> float | None:
        """Seconds until the round is due (0: now), or None when nothing waits."""
        if self.started is None:
            return None
        return max(0.0, self.started + self.debounce - now)

    def take(self) -> set[str]:
        """The round's folders; the window starts again empty."""
        paths, self.paths, self.started = self.paths, set(), None
        return paths
