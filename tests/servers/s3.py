"""A real S3 server (moto_server) on 127.0.0.1 for the S3 origin tests.

`s3_server` runs ``moto_server -H 127.0.0.1 -p PORT`` on a free port in a
temporary directory and waits until it answers HTTP. The yielded `S3Server`
gives the endpoint and test credentials, a boto3 client, `S3Server.put` to fill
buckets, `S3Server.require_signatures` to make moto check request signatures
(it accepts any key until then), and `S3Server.stop` / `S3Server.freeze` to play
a server that is gone or hangs. moto keeps its buckets in memory: a stopped
server that is started again is empty. The server is killed on exit, even on
failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.servers import free_port

_START_TIMEOUT = 30.0
_REGION = "us-east-1"


def moto_server_executable() -> str | None:
    """``moto_server`` next to this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("moto_server")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("moto_server")


class S3Server:
    """One moto_server: where it listens, test credentials, and how to stop it."""

    access_key = "musicfs-test-access"
    secret_key = "musicfs-test-secret"  # moto accepts any key until require_signatures
    region = _REGION

    def __init__(self, directory: Path, executable: str) -> None:
        self.directory = directory
        self.executable = executable
        self.host = "127.0.0.1"
        self.port = free_port()
        self.log_file = directory / "moto_server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._buckets: set[str] = set()
        self._client: Any = None

    def __repr__(self) -> str:
        return f"S3Server({self.endpoint_url})"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Run moto_server (again, on the same port) and wait until it answers."""
        if self.running:
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                [self.executable, "-H", self.host, "-p", str(self.port)],
                cwd=self.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._buckets.clear()
        self._client = None
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise RuntimeError(f"moto_server exited with {code}:\n{self.log()}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"moto_server did not answer in {_START_TIMEOUT}s:\n{self.log()}"
                )
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answered, if not with 200
        except OSError:
            return False

    def stop(self) -> None:
        """Kill moto_server: new connections are refused until `start`."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)  # in case it is frozen
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP moto_server: the port still accepts connections, nothing
        answers (a hung server)."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Undo `freeze`."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGCONT)

    def client(self, service: str = "s3", **credentials: Any) -> Any:
        """A boto3 client of *service* on this server (test credentials unless
        ``aws_access_key_id``/``aws_secret_access_key`` are given)."""
        import boto3  # type: ignore[import-untyped]

        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
        }
        kwargs.update(credentials)
        return boto3.session.Session().client(service, **kwargs)

    @property
    def default_client(self) -> Any:
        """One S3 client with the test credentials, shared (boto3 clients are
        thread-safe)."""
        if self._client is None:
            self._client = self.client()
        return self._client

    def make_bucket(self, bucket: str) -> None:
        """Create *bucket* unless this server already has it."""
        if bucket not in self._buckets:
            self.default_client.create_bucket(Bucket=bucket)
            self._buckets.add(bucket)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        """Store one object (the bucket is created on first use)."""
        self.make_bucket(bucket)
        self.default_client.put_object(Bucket=bucket, Key=key, Body=data)

    def put_many(self, bucket: str, objects: dict[str, bytes], threads: int = 4) -> None:
        """Store many objects at once (moto takes a few ms per request)."""
        self.make_bucket(bucket)
        client = self.default_client
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(
                lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1]),
                objects.items(),
            ):
                pass

    def require_signatures(self) -> tuple[str, str]:
        """Make moto check every request's signature from now on (it accepts any
        key until then), and return the access key and secret key of an IAM user
        that may do anything on S3."""
        iam = self.client("iam")
        user = "musicfs-reader"
        iam.create_user(UserName=user)
        allow_s3 = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        policy = {"Version": "2012-10-17", "Statement": [allow_s3]}
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},  # moto reads the raw body
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        return str(key["AccessKeyId"]), str(key["SecretAccessKey"])

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """A running moto_server on 127.0.0.1; killed on exit, even on failure.

    Raises `FileNotFoundError` if there is no ``moto_server`` (``pip install
    'moto[server]'``).
    """
    executable = moto_server_executable()
    if executable is None:
        raise FileNotFoundError("moto_server not found (pip install 'moto[server]')")
    with tempfile.TemporaryDirectory(prefix="musicfs-s3-") as directory:
        server = S3Server(Path(directory), executable)
        try:
            # The free port may be taken between free_port() and the bind: retry.
            for attempt in range(3):
                try:
                    server.start()
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise
                    server.port = free_port()
            yield server
        finally:
            server.stop()
