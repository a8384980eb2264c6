"""The delaying TCP proxy of the remote-scan tests and bench (tests/servers/delayproxy.py).

Against a real echo server on 127.0.0.1: a round trip through the proxy takes at
least the delay it promises (a lower bound: a busy machine only adds to it),
many connections at once each get their own bytes back intact and in order,
and a client that closes its side sees the server's end (EOF passes through).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.servers.delayproxy import delay_proxy, delay_proxy_process


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """A server that sends back whatever it gets, until the client closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        stopping.set()
        listener.close()


def _exchange(address: tuple[str, int], payload: bytes) -> bytes:
    """Send *payload*, close the sending side, return all that comes back."""
    with socket.create_connection(address, timeout=30) as sock:
        received = bytearray()

        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        while chunk := sock.recv(65536):
            received += chunk
        sender.join()
        return bytes(received)


def test_a_round_trip_takes_twice_the_delay(echo: tuple[str, int]) -> None:
    with delay_proxy(echo, 50) as proxy:
        assert proxy.rtt_ms == 100
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            for _ in range(3):
                started = time.monotonic()
                sock.sendall(b"ping")
                assert sock.recv(16) == b"ping"
                assert time.monotonic() - started >= 0.1


def test_direct_round_trips_are_not_delayed(echo: tuple[str, int]) -> None:
    """The control: without the proxy the same exchange is far quicker than 100 ms
    (so the test above measures the proxy, not the echo server)."""
    with socket.create_connection(echo, timeout=10) as sock:
        best = min(_timed_ping(sock) for _ in range(5))
    assert best < 0.1


def _timed_ping(sock: socket.socket) -> float:
    started = time.monotonic()
    sock.sendall(b"ping")
    assert sock.recv(16) == b"ping"
    return time.monotonic() - started


def test_bytes_pass_intact_on_many_connections(echo: tuple[str, int]) -> None:
    payloads = [os.urandom(size) for size in (1, 1000, 300_000, 3_000_000)] * 4
    with delay_proxy(echo, 5) as proxy, ThreadPoolExecutor(len(payloads)) as pool:
        got = list(pool.map(lambda p: _exchange((proxy.host, proxy.port), p), payloads))
        assert got == payloads
        assert proxy.connections == len(payloads)
        assert proxy.bytes_up == proxy.bytes_down == sum(map(len, payloads))


def test_a_server_that_refuses_closes_the_client(echo: tuple[str, int]) -> None:
    """Nothing listens at the target: the client's connection ends at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = probe.getsockname()
    with (
        delay_proxy(nobody, 5) as proxy,
        socket.create_connection((proxy.host, proxy.port), timeout=10) as sock,
    ):
        assert sock.recv(16) == b""


def test_the_proxy_in_a_process_of_its_own_delays_and_passes_bytes(echo: tuple[str, int]) -> None:
    payload = os.urandom(1_000_000)
    with delay_proxy_process(echo, 50) as where:
        with socket.create_connection(where, timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"ping")
            assert sock.recv(16) == b"ping"
            assert time.monotonic() - started >= 0.1
        assert _exchange(where, payload) == payload
