"""A TCP proxy on 127.0.0.1 that delays every byte: a slow network for tests and the bench.

The kernel here has no ``netem`` qdisc, so a remote origin "20 ms away" is
played by this proxy between a client and a server on 127.0.0.1: every chunk
read from one side is written to the other *delay_ms* later, in both
directions, so a round trip through the proxy costs ``2 * delay_ms`` more than
one without it (`DelayProxy.rtt_ms`). Only latency is added: chunks are not
held back behind each other, so many connections and requests stay in flight
at once, as on a real long link (no bandwidth limit, no loss).

One thread runs every connection (a selector and a heap of timed writes):
cheap on a 2-core machine, and the delay does not grow with the number of
connections. `delay_proxy` starts it on a free port and stops it, closing every
connection, on exit.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 256 * 1024


class _Pipe:
    """One direction of one connection: bytes due for *dst*, in order."""

    def __init__(self, dst: socket.socket) -> None:
        self.dst = dst
        self.pending = bytearray()  # due, not yet accepted by the kernel
        self.eof = False  # the source closed: shut *dst* down once pending is out


class DelayProxy:
    """Accepts on ``127.0.0.1:port`` and forwards to *target*, delaying each way."""

    def __init__(self, target: tuple[str, int], delay_ms: float) -> None:
        self.target = target
        self.delay = delay_ms / 1000.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.host, self.port = "127.0.0.1", self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._timed: list[tuple[float, int, _Pipe, bytes | None]] = []
        self._order = itertools.count()
        self._peer: dict[socket.socket, socket.socket] = {}
        self._pipes: dict[socket.socket, _Pipe] = {}  # by destination
        self._clients: set[socket.socket] = set()  # the accepted sides
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.connections = 0  # accepted so far
        self.bytes_up = 0  # client -> server
        self.bytes_down = 0  # server -> client
        self._thread = threading.Thread(target=self._run, name="delayproxy", daemon=True)

    def __repr__(self) -> str:
        return f"DelayProxy(127.0.0.1:{self.port} -> {self.target}, +{self.rtt_ms:g} ms RTT)"

    @property
    def rtt_ms(self) -> float:
        """What the proxy adds to a round trip."""
        return 2 * self.delay * 1000

    def start(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(timeout=10)
        for sock in [*self._peer, self._listener, self._wake_r, self._wake_w]:
            with contextlib.suppress(OSError):
                sock.close()
        self._selector.close()

    # -- the loop ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            while self._timed and self._timed[0][0] <= now:
                _, _, pipe, data = heapq.heappop(self._timed)
                self._deliver(pipe, data)
            timeout = max(0.0, self._timed[0][0] - now) if self._timed else None
            for key, events in self._selector.select(timeout):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(64)
                else:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if events & selectors.EVENT_WRITE:
                        self._flush(self._pipes[sock])
                    if events & selectors.EVENT_READ and sock in self._peer:
                        self._receive(sock)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        self.connections += 1
        for sock in (client, server):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._selector.register(sock, selectors.EVENT_READ, "data")
        self._peer[client], self._peer[server] = server, client
        self._clients.add(client)
        self._pipes[server], self._pipes[client] = _Pipe(server), _Pipe(client)

    def _receive(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        dst = self._peer[sock]
        if data:
            if sock in self._clients:
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
        else:  # the source is done sending: stop listening to it
            self._modify(sock, read=False)
        entry = (time.monotonic() + self.delay, next(self._order), self._pipes[dst], data or None)
        heapq.heappush(self._timed, entry)

    def _deliver(self, pipe: _Pipe, data: bytes | None) -> None:
        if pipe.dst not in self._peer:
            return  # the connection is gone
        if data is None:
            pipe.eof = True
        else:
            pipe.pending += data
        self._flush(pipe)

    def _flush(self, pipe: _Pipe) -> None:
        dst = pipe.dst
        if dst not in self._peer:
            return
        try:
            while pipe.pending:
                sent = dst.send(pipe.pending)
                del pipe.pending[:sent]
        except BlockingIOError:
            pass
        except OSError:
            self._close(dst)
            return
        self._modify(dst, write=bool(pipe.pending))
        if not pipe.pending and pipe.eof:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            src = self._peer[dst]
            if self._pipes[src].eof and not self._pipes[src].pending:
                self._close(dst)

    def _modify(
        self, sock: socket.socket, *, read: bool | None = None, write: bool | None = None
    ) -> None:
        try:
            key = self._selector.get_key(sock)
        except (KeyError, ValueError):
            return
        events = key.events
        if read is not None:
            events = events | selectors.EVENT_READ if read else events & ~selectors.EVENT_READ
        if write is not None:
            events = events | selectors.EVENT_WRITE if write else events & ~selectors.EVENT_WRITE
        if events == key.events:
            return
        if events:
            self._selector.modify(sock, events, "data")
        else:
            self._selector.unregister(sock)

    def _close(self, sock: socket.socket) -> None:
        """Close both sides of the connection *sock* belongs to."""
        other = self._peer.pop(sock, None)
        pair = [sock] if other is None else [sock, other]
        if other is not None:
            self._peer.pop(other, None)
        for s in pair:
            self._pipes.pop(s, None)
            self._clients.discard(s)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            with contextlib.suppress(OSError):
                s.close()


@contextlib.contextmanager
def delay_proxy(target: tuple[str, int], delay_ms: float) -> Iterator[DelayProxy]:
    """A running `DelayProxy` to *target* adding *delay_ms* each way (RTT + 2 x
    *delay_ms*); stopped, every connection closed, on exit."""
    proxy = DelayProxy(target, delay_ms)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@contextlib.contextmanager
def delay_proxy_process(target: tuple[str, int], delay_ms: float) -> Iterator[tuple[str, int]]:
    """`delay_proxy` in a process of its own (the bench's: a proxy thread in a
    process whose other threads keep the GIL busy would add its own waits);
    yields where it listens. Killed on exit."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "tests.servers.delayproxy", target[0], str(target[1]),
               str(delay_ms)]  # fmt: skip
    root = str(Path(__file__).resolve().parents[2])
    process = subprocess.Popen(
        command, cwd=root, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield "127.0.0.1", port
    finally:
        process.kill()
        process.wait(timeout=10)


def _main() -> None:
    """``python -m tests.servers.delayproxy HOST PORT DELAY_MS``: prints the
    proxy's port, then serves until killed."""
    import sys

    host, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    with delay_proxy((host, port), delay) as proxy:
        print(proxy.port, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    _main()
