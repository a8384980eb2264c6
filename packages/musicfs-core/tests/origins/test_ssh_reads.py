"""Pipelined SFTP reads (`musicfs.core.origins.ssh`) against a server played in
memory: what a short answer teaches the connection, and what it must not."""

from __future__ import annotations

import random
from collections import deque

import pytest

paramiko_sftp = pytest.importorskip("paramiko.sftp")

from musicfs.core.origins import ssh  # noqa: E402

CAP = 16 * 1024


class _Message:
    def __init__(self, data: bytes = b"", code: int = 0) -> None:
        self.data, self.code = data, code

    def get_string(self) -> bytes:
        return self.data

    def get_int(self) -> int:
        return self.code

    def get_text(self) -> str:
        return "failure"


class _Server:
    """The part of paramiko's SFTPClient the pipelined reads use, answering
    from *files* in the order asked, each answer at most *cap* bytes, or
    what *answer(offset, size)* says to send."""

    def __init__(self, files: dict[bytes, bytes], cap: int = 1 << 30) -> None:
        self.files, self.cap = files, cap
        self.queue: deque[tuple[object, int, bytes, int, int]] = deque()
        self.asked: list[int] = []

    def answer(self, offset: int, size: int) -> int:
        return min(size, self.cap)

    def _async_request(
        self, reply_to: object, t: int, handle: bytes, offset: int, size: int
    ) -> int:
        self.asked.append(int(size))
        self.queue.append((reply_to, len(self.asked), handle, int(offset), int(size)))
        return len(self.asked)

    def _read_response(self, waitfor: int | None = None) -> tuple[None, None]:
        reply_to, number, handle, offset, size = self.queue.popleft()
        data = self.files[handle][offset : offset + self.answer(offset, size)]
        if data:
            reply_to._async_response(paramiko_sftp.CMD_DATA, _Message(data), number)  # type: ignore[attr-defined]
        else:
            message = _Message(code=paramiko_sftp.SFTP_EOF)
            reply_to._async_response(paramiko_sftp.CMD_STATUS, message, number)  # type: ignore[attr-defined]
        return None, None

    def _send_packet(self, t: int, packet: object) -> None:
        return None

    def _adjust_cwd(self, path: str) -> str:
        return path


class _Handle:
    def __init__(self, server: _Server, name: bytes) -> None:
        self.sftp, self.handle = server, name


def _data(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def test_a_capped_server_is_asked_for_what_it_answers() -> None:
    data = _data(2 << 20)
    server = _Server({b"a": data}, cap=CAP)
    assert ssh.request_size(server) == 64 * 1024
    assert ssh.fetch(_Handle(server, b"a"), 0, 1 << 20) == data[: 1 << 20]  # type: ignore[arg-type]
    assert ssh.request_size(server) == CAP
    server.asked.clear()
    assert ssh.fetch(_Handle(server, b"a"), 1 << 20, 1 << 20) == data[1 << 20 :]  # type: ignore[arg-type]
    assert set(server.asked) == {CAP}  # nothing asked twice


def test_a_file_shorter_than_listed_does_not_slow_the_connection() -> None:
    """A file rewritten shorter since it was listed answers short at its new
    end: that is not the server's cap."""
    server = _Server({b"old": _data(1_000_000), b"big": _data(8 << 20, 2)})
    listed = 1_000_100
    tail = (listed - 64 * 1024, 64 * 1024)  # one full request across the new end
    tails = ssh.read_ranges(_Handle(server, b"old"), [tail])  # type: ignore[arg-type]
    assert len(tails[0]) == 1_000_000 - tail[0]
    assert ssh.request_size(server) == 64 * 1024


def test_a_server_that_answers_short_now_and_then_does_not_slow_the_connection() -> None:
    data = _data(4 << 20, 3)
    server = _Server({b"a": data})
    short = {5 * 64 * 1024}  # one request answered with a few bytes

    def answer(offset: int, size: int) -> int:
        return 100 if offset in short else size

    server.answer = answer  # type: ignore[method-assign]
    assert ssh.fetch(_Handle(server, b"a"), 0, len(data)) == data  # type: ignore[arg-type]
    assert ssh.request_size(server) == 64 * 1024
