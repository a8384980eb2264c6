"""The heads of many files read on one SFTP session, every file's requests in flight.

Job: `read_heads` opens each file of a batch, reads its first bytes and closes
it, with the requests of all the batch's files in flight together on one
session and one thread turning each reply into the file's next request (open
-> read -> close). A scan's 32 files in flight then need a few threads, not 32:
in 32 threads, each reply woke the waiting threads and every hand-over of the
GIL cost more Python time than the request itself (on 127.0.0.1: ~0.8 ms of
CPU a file in 32 threads, ~0.25 ms in one per connection).

Boundaries: it speaks the SFTP requests only, on a multiplexed `SFTPSession`
(other threads' requests stay in flight beside it). What a server's "no" means
is the caller's (`musicfs.core.origins.sftp.SFTPOrigin.read_heads`): a file
that cannot be opened or read gets its error in its place; a connection that
fails raises, for the whole batch.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Sequence
from typing import cast

from musicfs.core.origins.ssh import (
    Pipeline,
    Replies,
    SFTPSession,
    learn_cap,
    request_size,
    status_error,
)


def read_heads(session: SFTPSession, files: Sequence[tuple[str, int]]) -> list[bytes | OSError]:
    """The first *length* bytes of each remote ``(path, length)`` of *files*
    (fewer where the file is shorter), or the error the server answered for
    it. Each file is closed without waiting for the reply (the server handles
    requests in order). Raises what `SFTPSession.wait` raises if the
    connection fails or stops answering."""
    import paramiko
    from paramiko.sftp import (
        CMD_CLOSE,
        CMD_DATA,
        CMD_HANDLE,
        CMD_OPEN,
        CMD_READ,
        CMD_STATUS,
        SFTP_EOF,
        SFTP_FLAG_READ,
        int64,
    )

    pipe = cast(Pipeline, session.sftp)
    request = request_size(pipe)
    replies = Replies()
    results: list[bytes | OSError] = [b""] * len(files)
    parts: list[list[bytes]] = [[] for _ in files]
    got = [0] * len(files)
    handles: dict[int, bytes] = {}  # file index -> its open handle
    waiting: dict[int, int] = {}  # request number -> file index
    replied: list[tuple[int, int]] = []  # (bytes asked, bytes got) of every read

    def read_more(i: int) -> None:
        asked = min(request, files[i][1] - got[i])
        number = pipe._async_request(replies, CMD_READ, handles[i], int64(got[i]), asked)
        waiting[number] = i

    def done(i: int, result: bytes | OSError | None = None) -> None:
        results[i] = b"".join(parts[i]) if result is None else result
        handle = handles.pop(i, None)
        if handle is not None:
            pipe._async_request(type(None), CMD_CLOSE, handle)  # its reply is read past

    try:
        for i, (path, _) in enumerate(files):
            attrs = paramiko.SFTPAttributes()
            number = pipe._async_request(
                replies, CMD_OPEN, pipe._adjust_cwd(path), SFTP_FLAG_READ, attrs
            )
            waiting[number] = i
        while waiting:
            session.wait(lambda: bool(replies.replies))
            while replies.replies:  # popitem: another thread may be adding to it
                number, (kind, msg) = replies.replies.popitem()
                i = waiting.pop(number)
                path, length = files[i]
                if i not in handles:  # the open's reply
                    if kind == CMD_HANDLE:
                        handles[i] = msg.get_binary()
                        if length > 0:
                            read_more(i)
                        else:
                            done(i)
                    elif kind == CMD_STATUS:
                        done(i, status_error(msg, path))
                    else:
                        done(i, OSError(errno.EIO, f"expected a handle, got reply {kind}", path))
                elif kind == CMD_DATA:
                    data = msg.get_string()
                    replied.append((min(request, length - got[i]), len(data)))
                    parts[i].append(data)
                    got[i] += len(data)
                    if data and got[i] < length:  # a server may answer less than asked
                        read_more(i)
                    else:
                        done(i)
                elif kind == CMD_STATUS:
                    code = msg.get_int()
                    text = msg.get_text()
                    done(
                        i,
                        None
                        if code == SFTP_EOF
                        else OSError(errno.EIO, f"read failed: {text}", path),
                    )
                else:
                    done(i, OSError(errno.EIO, f"expected data, got reply {kind}", path))
    finally:
        for handle in handles.values():  # the connection failed: close what it can
            with contextlib.suppress(Exception):  # the connection is gone with them
                pipe._async_request(type(None), CMD_CLOSE, handle)
    learn_cap(pipe, request, replied)
    return results
