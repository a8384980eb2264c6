"""OpenSSH's ssh as an SFTP origin's wire, without a server: the command line
an origin's settings make (`ssh_argv`), what ssh's complaints become
(`explain`), and which set-ups stay on paramiko (`why_not_openssh`). The same
client against a real sshd is tests/origins/test_sftp.py."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from musicfs.core.origins.openssh import explain, ssh_argv, why_not_openssh

# What OpenSSH 9.2 prints (LogLevel ERROR), as captured from it.
UNKNOWN = (
    "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict "
    "checking.\r\nHost key verification failed.\r\n"
)
CHANGED = (
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
    "The fingerprint for the ED25519 key sent by the remote host is\n"
    "SHA256:YURydaBH6Q+nfTht+8i6MmiR4Wo6KQAw2GMnuhIBysA.\r\nPlease contact your system "
    "administrator.\r\nHost key for [127.0.0.1]:2222 has changed and you have requested "
    "strict checking.\r\nHost key verification failed.\r\n"
)
DENIED = "me@nas: Permission denied (publickey,password).\r\n"
OPEN_KEY = (
    "@         WARNING: UNPROTECTED PRIVATE KEY FILE!          @\r\n"
    "Permissions 0644 for '/k/id' are too open.\r\n"
    'Load key "/k/id": bad permissions\r\n' + DENIED
)
NO_KEY = "Warning: Identity file /k/missing not accessible: No such file or directory.\n" + DENIED
REFUSED = "ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n"


def explained(said: str, known_hosts: str | None = "/k/known_hosts") -> tuple[str, int]:
    refusal = explain(said, 255, host_label="127.0.0.1", port=2222, known_hosts=known_hosts,
                      user="me")  # fmt: skip
    return refusal.message, refusal.code


def test_what_ssh_says_becomes_the_origins_message_with_the_fix() -> None:
    message, code = explained(UNKNOWN)
    assert code == errno.EACCES
    assert "host key of [127.0.0.1]:2222 is unknown" in message
    assert "`ssh-keyscan -p 2222 127.0.0.1 >> /k/known_hosts`" in message
    assert "~/.ssh/known_hosts" in explained(UNKNOWN, known_hosts=None)[0]
    message, code = explained(CHANGED)
    assert "has changed" in message
    assert "SHA256:YURydaBH6Q" in message
    assert "ssh-keygen -R [127.0.0.1]:2222" in message
    assert explained(DENIED) == (
        "authentication failed for me: the server accepts publickey,password",
        errno.EACCES,
    )
    message, _ = explained(OPEN_KEY)
    assert "did not use the key file /k/id (bad permissions; chmod 600 it" in message
    assert "did not use the key file /k/missing (No such file or directory" in explained(NO_KEY)[0]
    assert explained(REFUSED) == ("cannot connect: Connection refused", errno.ECONNREFUSED)
    assert explained("kex_exchange_identification: read: Connection reset\r\n")[0] == (
        "ssh failed: kex_exchange_identification: read: Connection reset"
    )
    assert explained("")[0] == "ssh failed: no message, exit status 255"


def test_the_command_line_checks_host_keys_as_paramiko_does(tmp_path: Path) -> None:
    known = tmp_path / "known hosts %h"
    known.write_text("")
    key = tmp_path / "key %d"
    argv = ssh_argv("/usr/bin/ssh", host="-oProxyCommand=x", port=2222, user="me",
                    key_file=str(key), known_hosts=str(known), timeout=2.5)  # fmt: skip
    assert argv[:3] == ["/usr/bin/ssh", "-F", "/dev/null"]  # no config file: same as paramiko
    assert argv[-4:] == ["-s", "--", "-oProxyCommand=x", "sftp"]  # a host is never an option
    options = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"]
    # Paths quoted and "%" doubled: ssh splits option values on blanks and expands "%".
    assert f'UserKnownHostsFile="{tmp_path}/known hosts %%h"' in options
    assert f'IdentityFile="{tmp_path}/key %%d"' in options
    assert "-i" not in argv  # ssh looks for a -i file before it expands "%"
    for option in ("StrictHostKeyChecking=yes", "GlobalKnownHostsFile=/dev/null",
                   "IdentitiesOnly=yes", "BatchMode=yes", "ConnectTimeout=2"):  # fmt: skip
        assert option in options
    ignoring = ssh_argv("ssh", host="h", port=22, user=None, key_file=None,
                        known_hosts="insecure-ignore", timeout=10)  # fmt: skip
    assert "StrictHostKeyChecking=no" in ignoring
    assert "-l" not in ignoring


def test_a_missing_known_hosts_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"cannot read known_hosts file .*nowhere"):
        ssh_argv("ssh", host="h", port=22, user=None, key_file=None,
                 known_hosts=str(tmp_path / "nowhere"), timeout=10)  # fmt: skip


def test_what_ssh_cannot_do_stays_on_paramiko(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("a key")
    key.chmod(0o600)
    assert why_not_openssh(password=None, known_hosts=None, key_file=str(key)) is None
    assert "password" in str(why_not_openssh(password="x", known_hosts=None, key_file=str(key)))
    assert "accept-new" in str(
        why_not_openssh(password=None, known_hosts="accept-new", key_file=str(key))
    )
    key.chmod(0o644)
    if os.geteuid() == key.stat().st_uid:
        why = str(why_not_openssh(password=None, known_hosts=None, key_file=str(key)))
        assert "readable by others (mode 644)" in why
        assert "chmod 600" in why
    missing = str(why_not_openssh(password=None, known_hosts=None, key_file=str(tmp_path / "no")))
    assert "cannot read key file" in missing
    assert "cannot be given" in str(
        why_not_openssh(password=None, known_hosts='/a"b', key_file=str(key))
    )
