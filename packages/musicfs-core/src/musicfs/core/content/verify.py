"""Content verification on demand (FR-10.5): read files whole, compare their hash.

Size and mtime miss a file rewritten in place whose mtime was put back, and
some shares report neither reliably. `verify_content` reads every file of an
origin (or of all origins) from start to end through the federation (so its
limits and retries apply), hashes it with xxh3-128 (the chunk store's hash),
and compares the hash with the one the catalog recorded last time:

- no hash yet: it is recorded — the first verification is the baseline;
- the same hash: nothing to do;
- another hash, or another size or mtime: the file changed behind our back. Its
  catalog row is marked changed, so the next scan of its folder parses it
  again, and its cached copy is dropped (it holds the old bytes).

The caller rescans the folders of changed files. Runs in the calling thread with
its own catalog connection; a long verification can be stopped between files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from musicfs.core.catalog.store import Catalog, Track
from musicfs.core.content.cache import ContentCache
from musicfs.core.origins.federation import Federation

log = logging.getLogger(__name__)

_BLOCK = 4 * 1024 * 1024


@dataclass
class VerifyReport:
    """How far a verification got and what it found."""

    files: int = 0  # to verify
    checked: int = 0  # read whole and hashed
    bytes: int = 0
    recorded: int = 0  # hashed for the first time
    changed: list[Track] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "origin/relpath: why"
    current: str = ""  # the file being read
    stopped: bool = False


def content_hash(read: Callable[[int, int], bytes], size: int) -> str:
    """xxh3-128 of the first *size* bytes that *read(offset, n)* returns."""
    digest = xxhash.xxh3_128()
    offset = 0
    while offset < size:
        block = read(offset, min(_BLOCK, size - offset))
        if not block:
            raise EOFError(f"the file ended at byte {offset} of {size}")
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


def verify_content(
    catalog_path: str | Path,
    federation: Federation,
    content: ContentCache | None,
    origin_id: str | None = None,
    *,
    progress: Callable[[VerifyReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> VerifyReport:
    """Verify every catalogued file of *origin_id* (all origins when None)."""
    report = VerifyReport()
    with Catalog.open(catalog_path) as catalog:
        ids = catalog.file_ids(origin_id)
        report.files = len(ids)
        for file_id in ids:
            if should_stop is not None and should_stop():
                report.stopped = True
                break
            track = catalog.track(file_id)
            if track is None or track.origin not in federation.origins:
                continue  # removed by a scan meanwhile, or its origin is gone
            report.current = f"{track.origin}/{track.relpath}"
            if progress is not None:
                progress(report)
            _verify_one(catalog, federation, content, track, report)
    report.current = ""
    if report.changed:
        log.warning("content verification: %d files changed without a new size or mtime",
                    len(report.changed))  # fmt: skip
    return report


def _verify_one(
    catalog: Catalog,
    federation: Federation,
    content: ContentCache | None,
    track: Track,
    report: VerifyReport,
) -> None:
    try:
        with federation.open(track.origin, track.relpath) as file:
            digest = content_hash(file.read, file.size)
            size, mtime_ns = file.size, file.mtime_ns
    except (OSError, EOFError) as exc:
        report.failed.append(f"{report.current}: {exc}")
        return
    report.checked += 1
    report.bytes += size
    stored = catalog.content_hash(track.id)
    if (size, mtime_ns) == (track.size, track.mtime_ns) and stored in (None, digest):
        if stored is None:
            catalog.set_content_hash(track.id, size, mtime_ns, digest)
            report.recorded += 1
        return
    log.info("%s changed (content hash, size or mtime); it will be scanned again", report.current)
    catalog.mark_changed(track.id)
    if content is not None:
        content.forget(track.origin, track.relpath)
    report.changed.append(track)
