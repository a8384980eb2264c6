"""Real servers on 127.0.0.1 for the tests: S3 (moto_server), SFTP (OpenSSH
sshd), SMB (Samba smbd). Each module starts one in a temporary directory, waits
until it answers, and stops it (and everything it started) on exit."""
