"""The heads of many files read on one SFTP session, every file's requests in flight.

Job: `read_heads` opens each file of a batch, reads its first bytes and closes
it, with the requests of all the batch's files in flight together on one
session and one thread turning each reply into the file's next requests (open
-> every read of its head at once -> close). A scan's 32 files in flight then
need a few threads, not 32: in 32 threads, each reply woke the waiting threads
and every hand-over of the GIL cost more Python time than the request itself
(on 127.0.0.1: ~0.8 ms of CPU a file in 32 threads, ~0.25 ms in one per
connection).

Boundaries: it speaks the SFTP requests only, on a multiplexed `SFTPSession`
(other threads' requests stay in flight beside it). What a server's "no" means
is the caller's (`musicfs.core.origins.sftp.SFTPOrigin.read_heads`): a file
that cannot be opened or read gets its error in its place; a connection that
fails raises, for the whole batch.
"""

from __future__ import annotations

import collections
import contextlib
import errno
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from musicfs.core.origins.ssh import (
    Pipeline,
    Replies,
    SFTPSession,
    learn_cap,
    read_reply,
    request_size,
    status_error,
)

# Bytes of reads asked for and not answered at once, per batch (as
# `musicfs.core.origins.ssh.read_pipelined` keeps per file): a second batch
# of long tags must not put megabytes ahead of a playback read on the session.
_WINDOW = 2 * 1024 * 1024
# The least a read asks for, whatever a server's short answers suggest.
_LEAST_REQUEST = 4096


@dataclass
class _Reading:
    """One file of a batch: its open handle and the parts of its head read so far."""

    path: str
    length: int  # bytes wanted (at most the file's size)
    handle: bytes | None = None
    parts: dict[int, bytes] = field(default_factory=dict)  # offset -> bytes answered
    waiting: int = 0  # read requests not answered yet
    eof: bool = False
    result: bytes | OSError | None = None  # set once the file is done

    def assembled(self) -> tuple[bytes, int]:
        """The bytes read from offset 0 without a gap, and where they end."""
        joined: list[bytes] = []
        at = 0
        while (part := self.parts.get(at)) is not None and part:
            joined.append(part)
            at += len(part)
        return b"".join(joined)[: self.length], at


def read_heads(session: SFTPSession, files: Sequence[tuple[str, int]]) -> list[bytes | OSError]:
    """The first *length* bytes of each remote ``(path, length)`` of *files*
    (fewer where the file is shorter), or the error the server answered for
    it. A file's reads are sent at once as its open is answered, at most
    `_WINDOW` bytes of the batch's asked at a time; a server that answers
    less than asked is asked for the rest (twice the same short answer: its
    cap, asked for no more from then on). Each file is closed without waiting
    for the reply (the server handles requests in order). Raises what
    `SFTPSession.wait` raises if the connection fails or stops answering."""
    import paramiko
    from paramiko.sftp import (
        CMD_CLOSE,
        CMD_HANDLE,
        CMD_OPEN,
        CMD_READ,
        CMD_STATUS,
        SFTP_FLAG_READ,
        int64,
    )

    pipe = cast(Pipeline, session.sftp)
    request = request_size(pipe)
    replies = Replies()
    files_read = [_Reading(path, length) for path, length in files]
    # request number -> (its file, offset and size asked; None for the open)
    waiting: dict[int, tuple[_Reading, tuple[int, int] | None]] = {}
    replied: list[tuple[int, int]] = []  # (bytes asked, bytes got) of every read, for learn_cap
    shorts: collections.Counter[int] = collections.Counter()  # short answers by their size
    unsent: collections.deque[tuple[_Reading, int, int]] = collections.deque()
    asked_bytes = 0  # of the reads sent and not answered

    def read_from(file: _Reading, start: int) -> None:
        for offset in range(start, file.length, request):
            unsent.append((file, offset, min(request, file.length - offset)))
            file.waiting += 1

    def send_reads() -> None:
        nonlocal asked_bytes
        while unsent and (not asked_bytes or asked_bytes + unsent[0][2] <= _WINDOW):
            file, offset, size = unsent.popleft()
            if file.result is not None:  # it failed meanwhile (and is closed)
                continue
            number = pipe._async_request(replies, CMD_READ, file.handle, int64(offset), size)
            waiting[number] = (file, (offset, size))
            asked_bytes += size

    def done(file: _Reading, result: bytes | OSError) -> None:
        file.result = result
        if file.handle is not None:  # its reads still in flight are answered first
            pipe._async_request(type(None), CMD_CLOSE, file.handle)  # the reply is read past

    try:
        for file in files_read:
            attrs = paramiko.SFTPAttributes()
            number = pipe._async_request(
                replies, CMD_OPEN, pipe._adjust_cwd(file.path), SFTP_FLAG_READ, attrs
            )
            waiting[number] = (file, None)
        while waiting:  # reads not sent wait for a reply: one is always in flight then
            session.wait(lambda: bool(replies.replies))
            while replies.replies:  # popitem: another thread may be adding to it
                number, (kind, msg) = replies.replies.popitem()
                file, asked = waiting.pop(number)
                if asked is not None:
                    asked_bytes -= asked[1]
                if file.result is not None:
                    continue  # a read of a file that failed already
                if asked is None:  # the open's reply
                    if kind == CMD_HANDLE:
                        file.handle = msg.get_binary()
                        read_from(file, 0)
                    elif kind == CMD_STATUS:
                        file.result = status_error(msg, file.path)
                        continue
                    else:
                        file.result = OSError(errno.EIO, f"expected a handle, got reply {kind}")
                        continue
                else:
                    file.waiting -= 1
                    offset, size = asked
                    try:
                        data = read_reply(kind, msg)
                    except OSError as exc:
                        done(file, OSError(exc.errno, exc.strerror, file.path))
                        continue
                    if not data:  # an empty answer ends the file as EOF does
                        file.eof = True
                    else:
                        replied.append((size, len(data)))
                        file.parts[offset] = data
                        if len(data) < size:
                            shorts[len(data)] += 1
                            if shorts[len(data)] >= 2:  # the server's cap, not a file's end
                                request = max(_LEAST_REQUEST, min(request, len(data)))
                if file.waiting == 0:
                    head, end = file.assembled()
                    if end < file.length and not file.eof and head:
                        file.parts = {0: head}
                        read_from(file, end)  # what a short answer left out
                    else:
                        done(file, head)
            send_reads()
    finally:
        if session.failed is None:  # else the connection is gone, with its handles
            for file in files_read:
                if file.result is None and file.handle is not None:
                    with contextlib.suppress(Exception):
                        pipe._async_request(type(None), CMD_CLOSE, file.handle)
    learn_cap(pipe, request_size(pipe), replied)
    return [file.result if file.result is not None else b"" for file in files_read]
