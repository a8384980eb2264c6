"""An SFTP server that answers reads with at most *CAP* bytes, as some servers
do: OpenSSH's sftp-server behind a filter that lowers the length of every
``SSH_FXP_READ`` it passes on, and appends each read's asked length to *LOG*
(one per line). Replies go from sftp-server to the client untouched.

    python sftpcap.py CAP LOG SFTP-SERVER [ARG ...]

Run by sshd as the sftp subsystem (`tests.servers.sshd.sshd_server` *wrapper*).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys

SSH_FXP_READ = 5


def _read_exact(fd: int, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        part = os.read(fd, n - len(data))
        if not part:
            return None
        data += part
    return data


def main() -> int:
    cap, log_path, command = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    server = subprocess.Popen(command, stdin=subprocess.PIPE)  # its stdout is ours
    assert server.stdin is not None
    with open(log_path, "a", buffering=1) as log:
        while (head := _read_exact(0, 4)) is not None:
            body = _read_exact(0, struct.unpack(">I", head)[0])
            if body is None:
                break
            if body[0] == SSH_FXP_READ:  # type, id, handle (string), offset, length
                at = 5 + 4 + struct.unpack(">I", body[5:9])[0] + 8
                (asked,) = struct.unpack(">I", body[at : at + 4])
                log.write(f"{asked}\n")
                body = body[:at] + struct.pack(">I", min(asked, cap)) + body[at + 4 :]
            server.stdin.write(head + body)
            server.stdin.flush()
    server.stdin.close()
    return server.wait()


if __name__ == "__main__":
    sys.exit(main())
