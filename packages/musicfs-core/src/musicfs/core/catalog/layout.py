"""Layout: place catalogued files into the virtual tree according to the template.

`Layout.place` renders a file's path with the `PathTemplate`, creates missing
directory nodes, and gives the file a name no other node in that directory has
(``Title (2).flac``), so two tracks never hide each other (FR-2). `Layout.unplace`
removes a file's node and prunes directories left empty. Both return the
`TreeChange`s they made so the filesystem can tell the kernel to forget stale
entries. Call them inside a catalog transaction. A file with overrides (the
metadata overlay) is placed by its effective tags, with the size it is served at.

The same track on several origins (files with one replica key, see
`musicfs.core.catalog.store.replica_key`) gets one node: the first replica placed
holds it, the others wait. When the holder goes, the node passes to a waiting
replica in place, so the track never blinks out of the tree while any copy of
it is left. Which origin a read goes to is decided at open time, not here.

Indexers (MPD, beets, media servers) notice changes by mtime, so a node's
mtime is the one it is served with, and it only moves forward: when what a file
node serves changes (another version on the origin, another overlay header,
another replica; told by `content_version`), its mtime moves to the origin's
new mtime, or to now when that is not later (`later_mtime`); a folder whose
listing changed (an entry added, removed or renamed) gets a later mtime too. A
file whose path changes is moved, not made anew: it keeps its node id, i.e.
its inode number.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from enum import Enum

from musicfs.core.catalog.store import ROOT_NODE, Catalog, Node, Overlay, Track
from musicfs.core.catalog.templates import PathTemplate, split_suffix, with_counter
from musicfs.core.model import FileStat, TrackTags

log = logging.getLogger(__name__)

TEMPLATE_SETTING = "template"

_SECOND = 1_000_000_000


class ChangeKind(Enum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True, slots=True)
class TreeChange:
    """A node that appeared, disappeared, or kept its place but changed content."""

    kind: ChangeKind
    parent: int
    name: str
    node: int


class Layout:
    """Places files of one catalog into its tree with one template."""

    def __init__(self, catalog: Catalog, template: PathTemplate, *, skip_unreadable: bool = False):
        self.catalog = catalog
        self.template = template
        self.skip_unreadable = skip_unreadable
        # Most libraries have no overrides: skip two queries per file then.
        self.with_overrides = catalog.has_overrides()
        # Folders whose mtime moved in the current transaction: once is enough
        # (a batch adding 64 files to one folder must not push it 64 s ahead).
        self._touched: set[int] = set()
        self._touched_in = -1

    def place(
        self,
        file_id: int,
        relpath: str,
        fmt: str,
        tags: TrackTags,
        error: str | None = None,
        *,
        stat: FileStat | None = None,
    ) -> list[TreeChange]:
        """Put (or keep, or move) file *file_id* where the template says it belongs.

        *stat* is the file's size and mtime as stored in its row (read from the
        row when not given); the node keeps a copy for fast listings.
        """
        if error is not None and self.skip_unreadable:
            return self.unplace(file_id)
        if stat is None:
            track = self.catalog.track(file_id)
            if track is None:
                raise KeyError(f"no file with id {file_id} in the catalog")
            stat = FileStat(track.size, track.mtime_ns, track.ctime_ns)
        self._begin()
        size, overlay = stat.size, None
        if self.with_overrides:
            # The metadata overlay: the path follows the effective tags, and the
            # node's size is what reads return (the synthesized header's).
            overlay = self.catalog.overlay(file_id, stat.size, stat.mtime_ns)
            if overlay is None or overlay.header is not None:
                # No overlay made (yet), or one serving the effective tags. One
                # made without a header serves the file as it is: so the path
                # shows the file's own tags (the overrides could not be served).
                tags = self.catalog.effective_tags(file_id, tags)
            if overlay is not None:
                size = overlay.size(stat.size)
        version = content_version(file_id, stat, overlay)
        origin, key = self.catalog.replica_key_of(file_id)
        existing = self.catalog.node_of_file(file_id)
        if key is not None:
            holder = self.catalog.node_of_replica(key, origin)
            if holder is not None and holder.file_id != file_id:
                # Another origin's copy of this track is already shown: wait behind it.
                return self.unplace(file_id) if existing is not None else []
        components = self.template.render(tags, relpath, fmt)
        dirs, base = components[:-1], components[-1]
        changes: list[TreeChange] = []
        if existing is not None:
            mtime = self._served_mtime(existing, stat.mtime_ns, version)
            if existing.parent == self._find_dir(dirs) and is_variant(existing.name, base):
                self.catalog.update_node_file(
                    existing.id, file_id, size, mtime, key, version=version
                )
                return [TreeChange(ChangeKind.CHANGED, existing.parent, existing.name, existing.id)]
            handed = self._pass_to_heir(existing, file_id)
            if handed is None:
                # Nobody waits for the old place: move the node (same inode).
                self.catalog.update_node_file(
                    existing.id, file_id, size, mtime, key, version=version
                )
                return self._move(existing, dirs, base)
            changes = handed
        parent = ROOT_NODE
        for name in dirs:
            parent = self._ensure_dir(parent, name, changes)
        name = self._free_name(parent, base, is_file=True)
        node_id = self.catalog.insert_node(
            parent, name, file_id, size, stat.mtime_ns, replica_key=key, version=version
        )
        changes.append(TreeChange(ChangeKind.ADDED, parent, name, node_id))
        self._touch_dirs(changes)
        return changes

    def place_track(self, track: Track) -> list[TreeChange]:
        stat = FileStat(track.size, track.mtime_ns, track.ctime_ns)
        return self.place(track.id, track.relpath, track.format, track.tags, track.error, stat=stat)

    def unplace(self, file_id: int) -> list[TreeChange]:
        """Remove the file's node, and every directory that this leaves empty.

        If another replica of the track waits, the node passes to it instead.
        """
        node = self.catalog.node_of_file(file_id)
        if node is None:
            return []
        self._begin()
        handed = self._pass_to_heir(node, file_id)
        if handed is not None:
            return handed
        self.catalog.delete_node(node.id)
        changes = [TreeChange(ChangeKind.REMOVED, node.parent, node.name, node.id)]
        changes += self._leave(node.parent, node.name)
        self._touch_dirs(changes)
        return changes

    def _pass_to_heir(self, node: Node, file_id: int) -> list[TreeChange] | None:
        """Hand *file_id*'s node to a waiting replica of its track, if there is one."""
        node_key = self.catalog.node_replica_key(node.id)
        if node_key is None:
            return None
        origin = self.catalog.origin_of(file_id)  # None: the file's row is already gone
        for heir in self.catalog.replicas(node_key, besides=file_id):
            if heir.origin != origin and self.catalog.node_of_file(heir.id) is None:
                stat = FileStat(heir.size, heir.mtime_ns, heir.ctime_ns)
                version = content_version(heir.id, stat, None)
                mtime = self._served_mtime(node, heir.mtime_ns, version)
                self.catalog.update_node_file(
                    node.id, heir.id, heir.size, mtime, node_key, version=version
                )
                return [TreeChange(ChangeKind.CHANGED, node.parent, node.name, node.id)]
        return None

    def _move(self, node: Node, dirs: list[str], base: str) -> list[TreeChange]:
        """Move file node *node* to folder *dirs* under name *base* (made unique)."""
        changes: list[TreeChange] = []
        parent = ROOT_NODE
        for name in dirs:
            parent = self._ensure_dir(parent, name, changes)
        name = self._free_name(parent, base, is_file=True)
        self.catalog.move_node(node.id, parent, name)
        changes += [
            TreeChange(ChangeKind.REMOVED, node.parent, node.name, node.id),
            TreeChange(ChangeKind.ADDED, parent, name, node.id),
            TreeChange(ChangeKind.CHANGED, parent, name, node.id),  # its attributes, pages
        ]
        changes += self._leave(node.parent, node.name)
        self._touch_dirs(changes)
        return changes

    def _leave(self, parent_id: int, name: str) -> list[TreeChange]:
        """After a file left *name* in folder *parent_id*: its lowest variant takes
        the name, and folders left empty go."""
        changes = self._promote_variant(parent_id, name)
        while parent_id != ROOT_NODE and not self.catalog.has_children(parent_id):
            parent = self.catalog.node(parent_id)
            if parent is None:
                break
            self.catalog.delete_node(parent.id)
            changes.append(TreeChange(ChangeKind.REMOVED, parent.parent, parent.name, parent.id))
            parent_id = parent.parent
        return changes

    def _served_mtime(self, node: Node, origin_mtime_ns: int, version: int) -> int:
        """The mtime to serve file node *node* with once it serves *version*."""
        if self.catalog.node_version(node.id) == version:
            return node.mtime_ns  # the same bytes: nothing for an indexer to notice
        return later_mtime(node.mtime_ns, origin_mtime_ns)

    def rolled_back(self) -> None:
        """Part of the transaction was undone (a savepoint): folders touched in it
        must be touched again."""
        self._touched.clear()

    def _begin(self) -> None:
        """Start remembering touched folders afresh in a new transaction."""
        catalog = self.catalog
        current = catalog.transactions if catalog.in_transaction else -1
        if current == -1 or current != self._touched_in:
            self._touched.clear()
            self._touched_in = current

    def _touch_dirs(self, changes: list[TreeChange]) -> None:
        """Move the mtime of every folder whose listing *changes* changed forward,
        and add a CHANGED for each (the kernel and L1 hold their attributes)."""
        now = time.time_ns()
        folders = {c.parent for c in changes if c.kind is not ChangeKind.CHANGED}
        for folder_id in sorted(folders - self._touched):
            self._touched.add(folder_id)
            self.catalog.touch_dir(folder_id, now)
            folder = self.catalog.node(folder_id)
            if folder is not None:  # else pruned meanwhile
                changes.append(
                    TreeChange(ChangeKind.CHANGED, folder.parent, folder.name, folder.id)
                )

    def _promote_variant(self, parent: int, name: str) -> list[TreeChange]:
        """Give a freed name to the lowest ``(n)`` variant of it, if there is one.

        So the tree depends on what the catalog holds, not on the order changes
        came in: a file moved on the origin is found (and placed) before its old
        row is dropped, and must not keep a ``(2)`` name afterwards.
        """
        stem, suffix = split_suffix(name)
        pattern = re.compile(re.escape(stem) + r" \((\d+)\)" + re.escape(suffix))
        best: tuple[int, Node] | None = None
        for node in self.catalog.names_from(parent, stem + " ("):
            if not node.name.startswith(stem + " ("):
                break
            m = pattern.fullmatch(node.name)
            if m and node.file_id is not None and (best is None or int(m.group(1)) < best[0]):
                best = (int(m.group(1)), node)
        if best is None:
            return []
        node = best[1]
        self.catalog.rename_node(node.id, name)
        return [
            TreeChange(ChangeKind.REMOVED, parent, node.name, node.id),
            TreeChange(ChangeKind.ADDED, parent, name, node.id),
        ]

    def rebuild(self) -> int:
        """Lay out the whole tree again (after a template change); return tracks placed."""
        self.catalog.clear_tree()
        placed = 0
        for track in self.catalog.tracks():
            if self.place_track(track):
                placed += 1
        self.catalog.set_setting(TEMPLATE_SETTING, self.template.text)
        log.info("laid out %d tracks with template %r", placed, self.template.text)
        return placed

    def _find_dir(self, names: list[str]) -> int | None:
        parent = ROOT_NODE
        for name in names:
            node = self.catalog.lookup(parent, name)
            n = 1
            while node is not None and not node.is_dir:
                n += 1
                node = self.catalog.lookup(parent, with_counter(name, n, is_file=False))
            if node is None:
                return None
            parent = node.id
        return parent

    def _ensure_dir(self, parent: int, name: str, changes: list[TreeChange]) -> int:
        candidate, n = name, 1
        while True:
            node = self.catalog.lookup(parent, candidate)
            if node is None:
                node_id = self.catalog.insert_node(parent, candidate, None)
                self._touched.add(node_id)  # made now: its mtime is now already
                changes.append(TreeChange(ChangeKind.ADDED, parent, candidate, node_id))
                return node_id
            if node.is_dir:
                return node.id
            n += 1  # a file already has this name: the directory gets a distinct one
            candidate = with_counter(name, n, is_file=False)

    def _free_name(self, parent: int, base: str, *, is_file: bool) -> str:
        candidate, n = base, 1
        while self.catalog.lookup(parent, candidate) is not None:
            n += 1
            candidate = with_counter(base, n, is_file=is_file)
        return candidate


def content_version(file_id: int, stat: FileStat, overlay: Overlay | None) -> int:
    """A fingerprint of the bytes a node serves: which file, which version of it
    (size, mtime, ctime) and which synthesized header. 64 bits, signed (SQLite)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{file_id}:{stat.size}:{stat.mtime_ns}:{stat.ctime_ns}".encode())
    if overlay is not None and overlay.header is not None:
        digest.update(f":{overlay.header_length}:".encode())
        digest.update(overlay.header)
    return int.from_bytes(digest.digest(), "big", signed=True)


def later_mtime(previous_ns: int, origin_mtime_ns: int, now_ns: int | None = None) -> int:
    """The mtime of a node whose bytes changed, having been served at *previous_ns*.

    Strictly later in whole seconds (MPD compares seconds, beets floats): the
    origin's new mtime when it is, else now, or the next second after the old one.
    """
    floor = (previous_ns // _SECOND + 1) * _SECOND
    if origin_mtime_ns >= floor:
        return origin_mtime_ns
    return max(floor, time.time_ns() if now_ns is None else now_ns)


def is_variant(name: str, base: str) -> bool:
    """True if *name* is *base* or one of its ``(n)`` variants."""
    if name == base:
        return True
    _, suffix = split_suffix(base)
    m = re.search(r" \((\d+)\)" + re.escape(suffix) + r"\Z", name)
    # Made again the way `with_counter` made it: names near the 255-byte limit
    # have a shortened stem, cut at a character boundary.
    return m is not None and with_counter(base, int(m.group(1)), is_file=True) == name
