"""Reading local files' tags in the scan's worker processes.

Job: what a worker process runs (`parse_files`: a window of files opened and
prefetched at once, then parsed through the descriptors) and what it returns
(`Parsed`), and the worker's start (`exit_with_parent`). The scanner
(`musicfs.core.sync.scanner`) walks, diffs and writes, and decides which files
come here.

Boundaries: a worker process imports this module to find the function it
runs, so it imports only what parsing needs (mutagen through
`musicfs.core.tags`, the model), not the catalog or the origins: each worker
then starts in well under half the CPU time (~0.1 s against ~0.3 s here), which a
scan of a few thousand files pays twice on 2 cores.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Sequence
from typing import NamedTuple

from musicfs.core.model import TrackTags


class Parsed(NamedTuple):
    """What parsing one file gave: its tags, or why they could not be read, and
    its audio identity (`musicfs.core.tags.identity`; None if unreadable)."""

    tags: TrackTags
    error: str | None = None
    audio_id: str | None = None


def parse_file(path: str) -> Parsed:
    """Read one file's tags and identity; never raises. Runs in worker processes."""
    from musicfs.core.tags.identity import audio_identity_of  # loaded on first scan
    from musicfs.core.tags.reader import UnreadableFile, read_tags

    try:
        tags = read_tags(path)
    except UnreadableFile as exc:
        return Parsed(TrackTags(), str(exc))
    except Exception as exc:  # pragma: no cover - read_tags already catches
        return Parsed(TrackTags(), f"{type(exc).__name__}: {exc}")
    return Parsed(tags, None, audio_identity_of(path))


def parse_files(paths: list[str]) -> list[Parsed]:
    """`parse_file` for several files: one round trip to a worker process for all.

    The files are opened `_AHEAD` at a time, the disk is asked for what parsing
    will read of all of them at once (`prefetch`), and each is then parsed
    through the descriptor it was opened with: one open a file, not three."""
    results: list[Parsed] = []
    for start in range(0, len(paths), _AHEAD):
        window = paths[start : start + _AHEAD]
        fds = prefetch(window)
        try:
            results += [
                parse_file(path) if fd is None else parse_open(path, fd)
                for path, fd in zip(window, fds, strict=True)
            ]
        finally:
            for fd in fds:
                if fd is not None:
                    os.close(fd)
    return results


def parse_open(path: str, fd: int) -> Parsed:
    """`parse_file` of the file at *path*, open for reading as *fd* (left open)."""
    from musicfs.core.tags.identity import audio_identity_of
    from musicfs.core.tags.reader import UnreadableFile, read_tags

    try:
        with open(fd, "rb", closefd=False) as file:
            tags = read_tags(path, file)
    except UnreadableFile as exc:
        return Parsed(TrackTags(), str(exc))
    except Exception as exc:  # pragma: no cover - read_tags already catches
        return Parsed(TrackTags(), f"{type(exc).__name__}: {exc}")
    return Parsed(tags, None, audio_identity_of(path, fd))


# Files opened and prefetched together by a worker: enough reads in flight to
# keep the disk busy, few enough descriptors whatever a folder holds.
_AHEAD = 32
# What parsing reads of a file, asked of the disk ahead (`prefetch`): its head
# (ID3v2 or FLAC metadata blocks, the first audio frames), the middle (the
# identity's middle sample, near the middle of the file unless the header is
# huge) and the tail (ID3v1/APEv2 tags, the identity's last sample). Wider
# windows cost more than they save: what a window misses is read on demand.
_HEAD = 32 * 1024
_AROUND_MIDDLE = 8 * 1024
_TAIL = 8 * 1024


def prefetch(paths: Sequence[str]) -> list[int | None]:
    """Open *paths* and ask the kernel to read now, all at once, the parts that
    parsing them will read; return their descriptors (None: could not be opened,
    `parse_file` then says why). With cold caches parsing waits on the disk
    three times a file (head, middle, tail), one read after the other; asked
    for together, the disk serves a window's reads in parallel. Only a hint:
    whatever it misses is read on demand."""
    fds: list[int | None] = []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fds.append(None)
            continue
        fds.append(fd)
        try:
            size = os.fstat(fd).st_size
            os.posix_fadvise(fd, 0, _HEAD, os.POSIX_FADV_WILLNEED)
            if size > _HEAD:
                middle = max(_HEAD, size // 2 - _AROUND_MIDDLE)
                os.posix_fadvise(fd, middle, 2 * _AROUND_MIDDLE, os.POSIX_FADV_WILLNEED)
                tail = max(_HEAD, size - _TAIL)
                os.posix_fadvise(fd, tail, size - tail, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass  # a hint only: parsing will say what is wrong with the file
    return fds


def exit_with_parent(parent: int) -> None:
    """Worker initializer: exit as soon as the daemon (*parent*) is gone.

    A daemon killed with SIGKILL cannot stop its workers, and they never see EOF
    on their pipes (each holds a write end itself), so without this they live on
    forever, with the resource tracker they keep alive. A pidfd becomes readable
    when its process exits. (Not PR_SET_PDEATHSIG: it fires when the *thread*
    that started the worker ends, and pool workers are started by scan threads.)
    """
    try:
        pidfd = os.pidfd_open(parent)
    except ProcessLookupError:
        os._exit(1)

    def wait() -> None:
        select.select([pidfd], [], [])
        os._exit(1)

    threading.Thread(target=wait, name="musicfs-exit-with-parent", daemon=True).start()
