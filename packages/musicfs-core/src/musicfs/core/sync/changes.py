"""What changed on an origin, and what the scanner is asked to look at again.

`WatchEvent`s (added, modified, removed, renamed) are what a watcher reports;
a `ScanRequest` groups them into the folders whose files changed (rescanned
one level), the folders that appeared (walked completely) and the folders that
went away (their files dropped), or asks for a full rescan.

Boundaries: plain values shared by the watcher (`musicfs.core.sync.watch`),
the scanner and the mount; no inotify, no catalog.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class WatchKind(enum.Enum):
    ADDED = "added"
    MODIFIED = "modified"
    REMOVED = "removed"
    RENAMED = "renamed"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change on an origin. For RENAMED, *old_relpath* is where it was."""

    kind: WatchKind
    relpath: str
    is_dir: bool
    old_relpath: str | None = None


@dataclass
class ScanRequest:
    """What a batch of events asks the scanner to look at again."""

    dirs: set[str] = field(default_factory=set)  # rescan these folders' files
    trees: set[str] = field(default_factory=set)  # walk these folders completely
    gone: set[str] = field(default_factory=set)  # drop everything below these
    full: bool = False  # something was missed: rescan the whole origin

    def __bool__(self) -> bool:
        return bool(self.dirs or self.trees or self.gone or self.full)

    def add(self, event: WatchEvent) -> None:
        parent = event.relpath.rpartition("/")[0]
        if event.kind is WatchKind.RENAMED and event.old_relpath is not None:
            self.add(WatchEvent(WatchKind.REMOVED, event.old_relpath, event.is_dir))
            self.add(WatchEvent(WatchKind.ADDED, event.relpath, event.is_dir))
        elif event.is_dir and event.kind is WatchKind.ADDED:
            self.trees.add(event.relpath)
            self.gone.discard(event.relpath)
        elif event.is_dir and event.kind is WatchKind.REMOVED:
            self.gone.add(event.relpath)
            self.trees.discard(event.relpath)
        else:
            self.dirs.add(parent)

    def merge(self, other: ScanRequest) -> None:
        self.dirs |= other.dirs
        self.trees |= other.trees
        self.gone |= other.gone
        self.full |= other.full
