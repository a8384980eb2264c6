"""Pins for offline: tracks the user asked to keep in the content cache.

``musicfs cache pin`` names a file or folder of the tree, a smart collection or
a search; `Pinning.pin` resolves it to tracks, checks ``[cache] pin_limit``
(all or nothing: a pin that would go over it pins nothing), stores the request
and its tracks in the catalog (`musicfs.core.catalog.pins`), tells the content
cache which files to keep from eviction (`ContentCache.pin_files`) and has them
copied: at once with *wait* (the caller follows the progress), else by the
fill loop in the background (`FillQueue`, which asks `due`).

After every scan `refresh` evaluates each request again: a folder, collection
or search pins what it matches now (new tracks too; ones that left it are no
longer pinned by it, unless another request pins them), within the pin limit
(a request that would go over keeps its tracks, and a warning is logged); a
folder that is gone from the tree keeps its tracks (a retagged file keeps its
pin). Pinned files that changed on their origin are no longer cached in the
version the tree shows, so the fill loop copies them again.

With a shared catalog (``[catalog] shared``) the requests and the tracks they
pin are written there first (`publish`, `unpublish`) and reach every machine's
replica through the feed; what each machine has copied into its cache stays
its own (`changed` has the fill loop copy what another machine pinned).

Every method blocks on the catalog (its own connection): any thread but trio's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicfs.core.catalog.search import Searcher
from musicfs.core.catalog.store import Catalog, Track
from musicfs.core.config.collections import Collection
from musicfs.core.content.cache import ContentCache
from musicfs.core.content.readpolicy import version_of
from musicfs.core.errors import MusicFSError
from musicfs.core.events import EventBus, EventType
from musicfs.core.mount.assembly import Lifecycle
from musicfs.core.namespace.collections import all_collections
from musicfs.core.namespace.virtual import MAX_RESULTS
from musicfs.core.origins.federation import Federation

log = logging.getLogger(__name__)

#: What a pin request may name: a path of the tree, a collection, a search, or
#: the tracks an import named (a fixed set).
KINDS = ("path", "collection", "search", "import")
_POLL = 0.5  # seconds between progress reports


class PinError(MusicFSError):
    """A pin or unpin that cannot be done. *kind*: "not_found" or "invalid"."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class PinProgress:
    """What `Pinning.pin` pinned, and how far copying the tracks got."""

    tracks: int = 0  # tracks the request(s) pin
    bytes: int = 0  # their size
    pinned_tracks: int = 0  # every pinned track, after this pin
    pinned_bytes: int = 0
    pin_limit: int = 0
    files: int = 0  # of the tracks, those copied now (with wait)
    done: int = 0
    copied_bytes: int = 0
    already_cached: int = 0
    failed: list[str] = field(default_factory=list)
    current: str = ""
    finished: bool = False


def size_text(size: int) -> str:
    """*size* bytes for people: 1.5 MiB."""
    value, unit = float(size), "bytes"
    for name in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, name
    return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


class Pinning:
    """The pins of one mount."""

    def __init__(
        self, life: Lifecycle, catalog_path: Path, events: EventBus, federation: Federation
    ) -> None:
        self.life = life
        self.catalog_path = catalog_path
        self.events = events
        self.federation = federation
        # Set by `MusicFS.serve`: the content cache (None: off) and the fill
        # queue's copy of one file and wake-up.
        self.content: ContentCache | None = None
        self.copy: Callable[[Track], int] | None = None
        self.wake: Callable[[], None] | None = None
        # Set by `MusicFS.prepare` with a shared catalog: pins are written there
        # first ((kind, value) -> file ids, when), requests dropped there
        # ((kind, value) pairs, or all), and reach this replica through its
        # feed; each raises `PinError` naming the server when it cannot.
        # The collections defined in a shared catalog (`MusicFS.load_catalog_collections`).
        self.catalog_collections: dict[str, Collection] = {}
        self.publish: Callable[[dict[tuple[str, str], list[int]], float], None] | None = None
        self.unpublish: Callable[[list[tuple[str, str]], bool], None] | None = None

    @property
    def limit(self) -> int:
        return self.life.config.cache.pin_bytes

    # -- what a request names ------------------------------------------------------------

    def _resolve(self, catalog: Catalog, kind: str, value: str) -> list[int] | None:
        """The file ids *kind*/*value* names now; None for a path no longer in the tree."""
        if kind == "path":
            node = catalog.node_at(value)
            return None if node is None else catalog.file_ids_under(node.id)
        if kind == "collection":
            collections = self._collections()
            if value not in collections:
                return None
            return catalog.collection_file_ids(collections[value])
        if kind == "search":
            hits = Searcher(catalog).search(value, MAX_RESULTS)
            return [h.track.id for h in hits if catalog.node_of_file(h.track.id) is not None]
        return None  # an import: a fixed set

    def _collections(self) -> dict[str, Collection]:
        """The config's collections (and the built-in ones), and the shared catalog's."""
        return {**self.catalog_collections, **all_collections(self.life.config.collections)}

    def _named(self, catalog: Catalog, kind: str, value: str) -> list[int]:
        """`_resolve` for a new pin: what it does not find is an error."""
        if kind not in KINDS[:3]:
            raise PinError(f"cannot pin {kind!r}: pin a path, a collection or a search")
        found = self._resolve(catalog, kind, value)
        if kind == "path" and found is None:
            raise PinError(f"{value or '/'}: not in the mount", "not_found")
        if kind == "collection" and found is None:
            known = ", ".join(sorted(self._collections()))
            raise PinError(f"no collection {value!r}; the collections are: {known}", "not_found")
        if not found:
            what = {"path": f"{value or '/'} holds", "collection": f"collection {value!r} has",
                    "search": f"search {value!r} finds"}[kind]  # fmt: skip
            raise PinError(f"{what} no track: nothing to pin", "not_found")
        return found

    # -- pinning ---------------------------------------------------------------------------

    def pin(
        self,
        targets: Sequence[tuple[str, str]],
        *,
        wait: bool = False,
        imported: Sequence[str] = (),
        progress: Callable[[PinProgress], None] | None = None,
    ) -> PinProgress:
        """Pin the tracks each (kind, value) of *targets* names (for an ``import``
        target, labelled *value*: the tracks at the paths *imported*). All or
        nothing: over the pin limit, or with a target that names nothing,
        nothing is pinned (`PinError`). With *wait*, copy the tracks not cached
        yet now, telling *progress*; else the fill loop copies them in the
        background."""
        if self.content is None:
            raise PinError('the cache is off ([cache] mode = "passthrough"): nothing can be pinned')
        if not targets:
            raise PinError("name what to pin: paths of the mount, --collection or --search")
        report = PinProgress(pin_limit=self.limit)
        with Catalog.open(self.catalog_path) as catalog:
            wanted, mine, after, sizes, total = self._pin_rows(catalog, targets, imported)
            if self.publish is not None:  # a shared catalog: there first, back by the feed
                self.publish(wanted, time.time())
            tracks = [t for f in sorted(mine) if (t := catalog.track(f)) is not None]
            keys = self._pinned_keys(catalog)
        report.tracks, report.bytes = len(tracks), sum(sizes.get(t.id, 0) for t in tracks)
        report.pinned_tracks, report.pinned_bytes = len(after), total
        self.content.pin_files(keys)
        for (kind, value), ids in wanted.items():
            shown = value if kind == "path" else ""
            self.events.publish(EventType.CACHE_PINNED, path=shown, kind=kind, value=value,
                                tracks=len(ids))  # fmt: skip
        log.info("pinned %d tracks (%s); %d pinned in all", report.tracks,
                 size_text(report.bytes), report.pinned_tracks)  # fmt: skip
        if wait:
            self._copy_now(tracks, report, progress)
        elif self.wake is not None:
            self.wake()
        report.current, report.finished = "", True
        return report

    def _pin_rows(
        self, catalog: Catalog, targets: Sequence[tuple[str, str]], imported: Sequence[str]
    ) -> tuple[dict[tuple[str, str], list[int]], set[int], set[int], dict[int, int], int]:
        """What `pin` pins: (request -> file ids, the files of these requests,
        every file pinned after, sizes, bytes pinned after); stored here unless
        a shared catalog takes them first."""
        with catalog.transaction():
            wanted: dict[tuple[str, str], list[int]] = {}
            for kind, given in targets:
                value = given.strip("/") if kind == "path" else given
                if kind == "import":
                    wanted[(kind, value)] = [
                        f for path in imported for f in self._named(catalog, "path", path)
                    ]
                else:
                    wanted[(kind, value)] = self._named(catalog, kind, value)
            old = [r.id for t in wanted if (r := catalog.pin_request(*t)) is not None]
            mine = {f for ids in wanted.values() for f in ids}
            before = catalog.pinned_file_ids()
            after = catalog.pinned_file_ids(besides=old) | mine
            sizes = catalog.file_sizes(after | before)
            total = sum(sizes[f] for f in after if f in sizes)
            if total > self.limit:
                pinned = sum(sizes[f] for f in before if f in sizes)
                asked = sum(sizes[f] for f in mine - before if f in sizes)
                raise PinError(
                    f"cannot pin {len(mine)} tracks: that would pin {size_text(total)}, over "
                    f"[cache] pin_limit {size_text(self.limit)} ({size_text(pinned)} is pinned "
                    f"already, {size_text(asked)} more requested); unpin something "
                    "(musicfs cache unpin) or raise pin_limit in the config file"
                )
            if self.publish is None:
                now = time.time()
                for (kind, value), ids in wanted.items():
                    catalog.set_pinned(catalog.add_pin_request(kind, value, now), ids)
        return wanted, mine, after, sizes, total

    def _copy_now(
        self,
        tracks: list[Track],
        report: PinProgress,
        progress: Callable[[PinProgress], None] | None,
    ) -> None:
        """Copy *tracks* into the cache now (the ones there already cost nothing)."""
        report.files = len(tracks)
        last = 0.0
        for track in tracks:
            if self.life.stopping:
                return
            report.current = f"{track.origin}/{track.relpath}"
            if progress is not None and time.monotonic() - last >= _POLL:
                last = time.monotonic()
                progress(report)
            try:
                copied = self.copy(track) if self.copy is not None else 0
            except OSError as exc:
                report.failed.append(f"{report.current}: {exc}")
                continue
            report.done += 1
            report.copied_bytes += copied
            report.already_cached += copied == 0
        if report.failed and self.wake is not None:
            self.wake()  # copied when their origins answer

    def unpin(self, targets: Sequence[tuple[str, str]], everything: bool = False) -> dict[str, int]:
        """Drop the pin requests *targets* name (a path drops the path pins at or
        below it), or all of them. Their tracks may be evicted again unless another
        request pins them. Returns how many requests went and how many tracks are
        no longer pinned."""
        if not targets and not everything:
            raise PinError("name what to unpin: paths of the mount, --collection, --search "
                           "or --all")  # fmt: skip
        with Catalog.open(self.catalog_path) as catalog:
            with catalog.transaction():
                requests = catalog.pin_requests()
                drop = {r.id: r for r in requests} if everything else {}
                for kind, value in targets:
                    found = [r for r in requests if _covers(kind, value, r.kind, r.value)]
                    if not found:
                        raise PinError(self._not_pinned(catalog, kind, value), "not_found")
                    drop.update((r.id, r) for r in found)
                before = catalog.pinned_file_ids()
                if self.unpublish is None:
                    for request_id in drop:
                        catalog.drop_pin_request(request_id)
            if self.unpublish is not None:  # a shared catalog: there first, back by the feed
                self.unpublish([(r.kind, r.value) for r in drop.values()], everything)
            after = catalog.pinned_file_ids()
            keys = self._pinned_keys(catalog)
        if self.content is not None:
            self.content.pin_files(keys)
        for request in drop.values():
            self.events.publish(EventType.CACHE_UNPINNED, kind=request.kind, value=request.value,
                                path=request.value if request.kind == "path" else "")  # fmt: skip
        return {"requests": len(drop), "tracks_unpinned": len(before - after),
                "pinned_tracks": len(after)}  # fmt: skip

    def _not_pinned(self, catalog: Catalog, kind: str, value: str) -> str:
        """Why (*kind*, *value*) cannot be unpinned: what pins it, if anything does."""
        shown = _label(kind, value)
        if kind == "path":
            node = catalog.node_at(value)
            ids = set(catalog.file_ids_under(node.id)) if node is not None else set()
            through = [r for r in catalog.pin_requests() if ids & set(catalog.pinned_by(r.id))]
            if through:
                names = "; ".join(_label(r.kind, r.value) for r in through)
                return (f"{shown} is not pinned by itself; its tracks are pinned through: "
                        f"{names} (unpin that)")  # fmt: skip
        return f"{shown} is not pinned (musicfs cache pins lists the pins)"

    # -- what is pinned --------------------------------------------------------------------

    def pins(self) -> dict[str, Any]:
        """Each request: what it names, its tracks, their size, how many of them
        (and how many bytes) are in the cache now; and the totals."""
        content = self.content
        rows = []
        with Catalog.open(self.catalog_path, readonly=True) as catalog:
            present: dict[int, bool] = {}
            sizes: dict[int, int] = {}
            for request in catalog.pin_requests():
                ids = catalog.pinned_by(request.id)
                for file_id in ids:
                    if file_id not in present:
                        track = catalog.track(file_id)
                        sizes[file_id] = track.size if track is not None else 0
                        present[file_id] = bool(
                            track is not None
                            and content is not None
                            and content.has(version_of(track))
                        )
                here = [f for f in ids if present[f]]
                rows.append({
                    "kind": request.kind, "value": request.value, "pinned_at": request.at,
                    "tracks": len(ids), "bytes": sum(sizes[f] for f in ids),
                    "present_tracks": len(here), "present_bytes": sum(sizes[f] for f in here),
                })  # fmt: skip
        return {
            "pins": rows,
            "tracks": len(present),
            "bytes": sum(sizes.values()),
            "present_tracks": sum(present.values()),
            "present_bytes": sum(sizes[f] for f, here in present.items() if here),
            "pin_limit": self.limit,
        }

    def due(self) -> list[Track]:
        """The pinned tracks to copy now: not cached in the version the tree shows,
        on an origin that answers (the fill loop asks; any thread but trio's)."""
        content = self.content
        if content is None:
            return []
        with Catalog.open(self.catalog_path, readonly=True) as catalog:
            tracks = [t for f in sorted(catalog.pinned_file_ids()) if (t := catalog.track(f))]
        return [
            t for t in tracks if self.federation.online(t.origin) and not content.has(version_of(t))
        ]

    # -- keeping up with the library -----------------------------------------------------

    def refresh(self, catalog: Catalog) -> None:
        """Evaluate every request again (after a scan, on the scanner's *catalog*),
        then keep the pinned files from eviction and have the fill loop copy what
        changed or is new."""
        changed = False
        with catalog.transaction():
            for request in catalog.pin_requests():
                found = self._resolve(catalog, request.kind, request.value)
                if found is None:
                    continue  # gone from the tree, an import: its tracks stay pinned
                had = catalog.pinned_by(request.id)
                if set(found) == set(had):
                    continue
                after = catalog.pinned_file_ids(besides=[request.id]) | set(found)
                total = sum(catalog.file_sizes(after).values())
                if total > self.limit:
                    log.warning("pin %s now names %d tracks, which would pin %s, over "
                                "[cache] pin_limit %s: its new tracks are not pinned",
                                _label(request.kind, request.value), len(found),
                                size_text(total), size_text(self.limit))  # fmt: skip
                    continue
                catalog.set_pinned(request.id, found)
                changed = True
            keys = self._pinned_keys(catalog)
        if self.content is None:
            return
        if changed or keys:
            self.content.pin_files(keys)
        if keys and self.wake is not None:
            self.wake()  # pinned files that changed (or are new) are copied again

    def changed(self) -> None:
        """The pin set changed under this mount (another machine pinned or
        unpinned, through a shared catalog): keep the pinned files from
        eviction, and have the fill loop copy what is not cached yet."""
        self.load()
        if self.wake is not None:
            self.wake()

    def load(self) -> None:
        """Tell the content cache which files are pinned (when the mount starts)."""
        if self.content is None:
            return
        with Catalog.open(self.catalog_path, readonly=True) as catalog:
            keys = self._pinned_keys(catalog)
        self.content.pin_files(keys)

    @staticmethod
    def _pinned_keys(catalog: Catalog) -> set[tuple[str, str]]:
        return {
            (t.origin, t.relpath)
            for f in catalog.pinned_file_ids()
            if (t := catalog.track(f)) is not None
        }


def _covers(kind: str, value: str, req_kind: str, req_value: str) -> bool:
    """Whether unpinning (*kind*, *value*) drops the request (*req_kind*, *req_value*):
    the same request, or a path request at or below the path."""
    if kind != req_kind:
        return False
    if kind != "path":
        return value == req_value
    base = value.strip("/")
    return not base or req_value == base or req_value.startswith(base + "/")


def _label(kind: str, value: str) -> str:
    """How a request is named in messages."""
    if kind == "path":
        return value or "/"
    return f"{kind} {value!r}"
