"""Real servers on 127.0.0.1 for the tests: S3 (moto_server), SFTP (OpenSSH
sshd), SMB (Samba smbd), PostgreSQL (the shared catalog). Each module starts one
in a temporary directory, waits until it answers, and stops it (and everything
it started) on exit."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on just now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
