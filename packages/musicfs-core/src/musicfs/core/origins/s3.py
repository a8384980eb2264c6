"""S3 origins: audio files in a bucket of Amazon S3 or any S3-compatible store.

`S3Origin` maps the origin interface onto four S3 calls: ListObjectsV2 with
``Delimiter="/"`` (by pages) for folders, HeadObject for stat and open,
ranged GetObject for reads, HeadBucket as the health probe. Keys under
``prefix/`` are the origin's files; ``/`` in a key separates folders, as the
S3 consoles show them.

What it does not do: write anything, retry beyond botocore's own two
attempts, cache, or fail over. Retries with backoff, health and failover live
in `musicfs.core.origins.federation` (DESIGN §6). Errors are mapped to the three the
layers above act on (see `musicfs.core.origins.base`): a missing object is
`FileNotFoundError`, a refusal `PermissionError`, and everything that means
"the store did not answer" (refused connections, timeouts, 5xx, a missing
bucket) is `OriginUnavailable`, so files go offline rather than vanish.

Credentials: the ones given, else boto3's standard chain (``AWS_*``
variables, ``~/.aws`` files). No secret ever reaches `location`, a log line or
an error message. boto3 is imported when an S3 origin is created, not when
this module is imported.
"""

from __future__ import annotations

import calendar
import concurrent.futures
import contextlib
import errno
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from musicfs.core.model import FileStat
from musicfs.core.origins.base import (
    DirListing,
    FileChanged,
    Origin,
    OriginFile,
    OriginUnavailable,
    extension_set,
    listed_name,
    wanted_file,
)

log = logging.getLogger(__name__)

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_FORBIDDEN = {"403", "AccessDenied", "Forbidden", "SignatureDoesNotMatch", "InvalidAccessKeyId",
              "AllAccessDisabled", "ExpiredToken", "InvalidToken", "AccountProblem"}  # fmt: skip
_CHANGED = {"412", "PreconditionFailed"}


def _mtime_ns(when: datetime) -> int:
    """A LastModified as nanoseconds since the epoch, in whole seconds.

    HeadObject's ``Last-Modified`` header has second precision while
    ListObjectsV2 may give milliseconds: truncating both keeps the stat of a
    listing equal to that of a stat() or open() of the same object.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return calendar.timegm(when.utctimetuple()) * 1_000_000_000


def _public_endpoint(endpoint_url: str) -> str:
    """*endpoint_url* without any ``user:password@`` part."""
    parts = urlsplit(endpoint_url)
    if parts.username is None and parts.password is None:
        return endpoint_url
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc))


_WINDOW_MIN = 1024 * 1024  # first read-ahead of a sequential reader
_WINDOW_MAX = 8 * 1024 * 1024


class S3File(OriginFile):
    """One object, open for ranged reads.

    *size*, *mtime_ns* and the ETag are those of the HeadObject made by
    `S3Origin.open`. Every read is a ranged GetObject conditional on that ETag:
    if the object is replaced while open, reads fail (`OriginUnavailable` with
    ``ESTALE``) instead of mixing bytes of two versions.
    """

    ranges_at_once = True

    def __init__(
        self, origin: S3Origin, relpath: str, head: dict[str, Any], *, listed: bool = False
    ) -> None:
        self._origin = origin
        self.relpath = relpath
        self.key = origin.key(relpath)
        self.size = int(head.get("ContentLength", 0))
        self.mtime_ns = _mtime_ns(head["LastModified"])
        etag = head.get("ETag")
        self.etag: str | None = str(etag) if etag else None
        # Opened from a listing (`S3Origin.open_listed`): no HeadObject was made;
        # the first GET checks the object is still the one listed and pins its ETag.
        self._listed = listed
        self.open_requests = 0 if listed else 1
        # Read-ahead for a sequential reader: one GET per request would cost a
        # round trip per 128 KiB (3 MiB/s at 40 ms each); a window that doubles
        # while reads follow on, like the kernel's readahead, costs a few.
        self._lock = threading.Lock()
        self._window = 0
        self._buffer = b""
        self._buffer_at = 0
        self._next = -1  # where the last read ended

    def read(self, offset: int, size: int) -> bytes:
        if size <= 0 or offset >= self.size:
            return b""
        offset = max(0, offset)
        with self._lock:
            end = min(offset + size, self.size)
            start_in = offset - self._buffer_at
            if start_in >= 0 and end <= self._buffer_at + len(self._buffer):
                self._next = end
                return self._buffer[start_in : start_in + (end - offset)]
            sequential = offset == self._next
            self._window = min(_WINDOW_MAX, max(_WINDOW_MIN, 2 * self._window)) if sequential else 0
            fetch = max(size, self._window)
            data = self._get(offset, fetch)
            if sequential:
                self._buffer, self._buffer_at = data, offset
            self._next = offset + min(size, len(data))
            return data[:size]

    def _get(self, offset: int, size: int) -> bytes:
        last = min(offset + size, self.size) - 1
        params: dict[str, Any] = {
            "Bucket": self._origin.bucket,
            "Key": self.key,
            "Range": f"bytes={offset}-{last}",
        }
        pinned = self.etag  # (read_ranges: a GET of a listed file may set it meanwhile)
        if pinned:
            params["IfMatch"] = pinned
        with self._origin.errors(self.relpath):
            response = self._origin.client.get_object(**params)
            body = response["Body"]
            try:
                data = bytes(body.read())
            finally:
                body.close()
        if self._listed:
            self._pin(response)
        want = last - offset + 1
        if len(data) > want and not response.get("ContentRange"):
            data = data[offset : last + 1]  # a store that ignored Range sent it all
        return data

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """One GET per range, all at once (the origin's helper threads): the
        ranges of a scan cost one round trip. Not kept for read-ahead."""
        ranges = [(max(0, offset), min(size, self.size - offset)) for offset, size in ranges]
        if len(ranges) <= 1:
            return [self._get(o, n) if n > 0 else b"" for o, n in ranges]
        later = [
            self._origin.helpers().submit(self._get, o, n) if n > 0 else None for o, n in ranges[1:]
        ]
        offset, size = ranges[0]
        first = self._get(offset, size) if size > 0 else b""
        return [first, *(b"" if f is None else f.result() for f in later)]

    def _pin(self, response: dict[str, Any]) -> None:
        """After a GET of a file opened from its listing, with no ETag to make it
        conditional: fail if the object is not the one listed (size,
        modification time) or another GET saw another version, else make the
        later GETs conditional on its ETag, as an open's HeadObject would."""
        total = str(response.get("ContentRange") or "").rpartition("/")[2]
        size = int(total) if total.isdigit() else None
        modified = response.get("LastModified")
        etag = response.get("ETag")
        if (
            (size is not None and size != self.size)
            or (modified is not None and _mtime_ns(modified) != self.mtime_ns)
            or (etag and self.etag and str(etag) != self.etag)
        ):
            raise FileChanged(self._origin.id, self.relpath)
        if etag and self.etag is None:
            self.etag = str(etag)


class S3Origin(Origin):
    """The objects of *bucket* under *prefix* (``""`` is the whole bucket).

    *endpoint_url* points at an S3-compatible store (MinIO, Ceph, moto...);
    without it boto3 finds the endpoint itself (``AWS_ENDPOINT_URL`` or AWS).
    *timeout* bounds connecting and each socket read, in seconds;
    *max_connections* sizes the connection pool shared by all threads.
    """

    kind = "s3"

    def __init__(
        self,
        origin_id: str,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        timeout: float = 10.0,
        max_connections: int = 8,
    ) -> None:
        super().__init__(origin_id)
        if (access_key is None) != (secret_key is None):
            raise ValueError(
                f"origin {origin_id!r}: give both access_key and secret_key, or neither"
            )
        import boto3  # type: ignore[import-untyped]
        import botocore.exceptions  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self._secret = secret_key or None
        self._botocore_errors: Any = botocore.exceptions
        config = Config(
            max_pool_connections=max_connections,
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            # Checksums only where S3 requires them: this client never uploads,
            # and several S3-compatible stores reject the newer defaults.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
        )
        # One client for every thread: boto3 clients are thread-safe (sessions
        # are not, hence the session is used only here).
        self.client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)
        self.max_connections = max_connections
        self._helpers: concurrent.futures.ThreadPoolExecutor | None = None
        self._helpers_lock = threading.Lock()

    def helpers(self) -> concurrent.futures.ThreadPoolExecutor:
        """Threads for the GETs `S3File.read_ranges` makes at once (made on first use)."""
        with self._helpers_lock:
            if self._helpers is None:
                self._helpers = concurrent.futures.ThreadPoolExecutor(
                    self.max_connections, thread_name_prefix=f"musicfs-s3-{self.id}"
                )
            return self._helpers

    @property
    def location(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        if self.endpoint_url:
            where += f" at {_public_endpoint(self.endpoint_url)}"
        return where

    def key(self, relpath: str) -> str:
        """The object key of *relpath*."""
        relpath = relpath.strip("/")
        if not self.prefix:
            return relpath
        return f"{self.prefix}/{relpath}" if relpath else self.prefix

    def check(self) -> None:
        """HeadBucket: raise unless the bucket answers (a missing bucket is
        `OriginUnavailable`, 403 is `PermissionError`)."""
        with self.errors("", bucket_level=True):
            self.client.head_bucket(Bucket=self.bucket)

    def list_dir(self, reldir: str, extensions: Iterable[str]) -> DirListing:
        """One "folder": common prefixes are subfolders, objects with a wanted
        extension are files. A folder with no object under it at all does not
        exist (`FileNotFoundError`), except the root, which is empty."""
        wanted = extension_set(extensions)
        reldir = reldir.strip("/")
        prefix = self.key(reldir)
        prefix = f"{prefix}/" if prefix else ""
        listing = DirListing()
        seen_any = False
        with self.errors(reldir, bucket_level=True):
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                for common in page.get("CommonPrefixes", ()):
                    seen_any = True
                    name = str(common["Prefix"])[len(prefix) :].removesuffix("/")
                    if name and listed_name(name, self.include_hidden) and "/" not in name:
                        listing.subdirs.append(name)
                for obj in page.get("Contents", ()):
                    seen_any = True
                    name = str(obj["Key"])[len(prefix) :]
                    # "" is the folder's own marker object ("dir/").
                    if name and "/" not in name and wanted_file(name, wanted, self.include_hidden):
                        stat = FileStat(int(obj["Size"]), _mtime_ns(obj["LastModified"]))
                        listing.files.append((name, stat))
        if reldir and not seen_any:
            raise FileNotFoundError(
                errno.ENOENT, f"origin {self.id!r}: no folder {reldir!r} in {self.location}"
            )
        return listing

    def _head(self, relpath: str) -> dict[str, Any]:
        if not relpath.strip("/"):
            raise IsADirectoryError(errno.EISDIR, f"origin {self.id!r}: the root is a folder")
        with self.errors(relpath):
            head: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=self.key(relpath)
            )
        return head

    def stat(self, relpath: str) -> FileStat:
        head = self._head(relpath)
        return FileStat(int(head.get("ContentLength", 0)), _mtime_ns(head["LastModified"]))

    def open(self, relpath: str) -> S3File:
        return S3File(self, relpath, self._head(relpath))

    def open_listed(self, relpath: str, stat: FileStat) -> S3File:
        """No request: the listing gave the size and modification time; the
        first read checks them (`FileChanged` if the object was replaced)."""
        if not relpath.strip("/"):
            raise IsADirectoryError(errno.EISDIR, f"origin {self.id!r}: the root is a folder")
        modified = datetime.fromtimestamp(stat.mtime_ns // 1_000_000_000, UTC)
        head = {"ContentLength": stat.size, "LastModified": modified}
        return S3File(self, relpath, head, listed=True)

    def close(self) -> None:
        """Close pooled connections; the next request opens new ones."""
        with self._helpers_lock:
            helpers, self._helpers = self._helpers, None
        if helpers is not None:
            helpers.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    @contextlib.contextmanager
    def errors(self, relpath: str, *, bucket_level: bool = False) -> Iterator[None]:
        """Map what boto3 raises inside the block to the interface's errors.

        With *bucket_level* (HeadBucket, listings), a missing bucket means the
        origin is misconfigured or gone as a whole: `OriginUnavailable`, so
        that the tree goes offline instead of empty.
        """
        try:
            yield
        except (OriginUnavailable, FileNotFoundError, PermissionError, IsADirectoryError):
            raise
        except Exception as exc:
            mapped = self._map_error(exc, relpath, bucket_level=bucket_level)
            if mapped is None:
                raise
            raise mapped from None

    def _map_error(self, exc: Exception, relpath: str, *, bucket_level: bool) -> OSError | None:
        found = self._botocore_errors
        where = f"s3://{self.bucket}/{self.key(relpath)}"
        if isinstance(exc, found.ClientError):
            response: dict[str, Any] = getattr(exc, "response", None) or {}
            error = response.get("Error") or {}
            code = str(error.get("Code") or "")
            status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
            detail = self._scrub(f"{code or status}: {error.get('Message') or 'no message'}")
            if bucket_level and (code == "NoSuchBucket" or (code in {"404", "NotFound"})):
                return OriginUnavailable(
                    self.id, f"bucket {self.bucket!r} does not exist ({detail})", errno.ENOENT
                )
            if code in _NOT_FOUND or status == 404:
                return FileNotFoundError(errno.ENOENT, f"origin {self.id!r}: {where}: {detail}")
            if code in _FORBIDDEN or status == 403:
                return PermissionError(errno.EACCES, f"origin {self.id!r}: {where}: {detail}")
            if code == "InvalidRange" or status == 416:
                # Only ranges inside the size we know are asked for: the object shrank.
                return FileChanged(self.id, relpath)
            if code in _CHANGED or status == 412:
                return OriginUnavailable(
                    self.id, f"{where} changed while open ({detail})", errno.ESTALE
                )
            # 5xx, throttling, and whatever else the store answers that is no
            # verdict on the file (a wrong region, a bad request): offline.
            return OriginUnavailable(self.id, f"{where}: {detail}")
        if isinstance(exc, found.NoCredentialsError | found.PartialCredentialsError):
            return OriginUnavailable(self.id, f"no credentials for {self.location}")
        if isinstance(exc, found.ConnectTimeoutError | found.ReadTimeoutError | TimeoutError):
            message = f"{where}: timed out after {self.timeout:g} s ({self._scrub(str(exc))})"
            return OriginUnavailable(self.id, message, errno.ETIMEDOUT)
        if isinstance(exc, found.BotoCoreError | OSError):
            return OriginUnavailable(self.id, f"{where}: {self._scrub(str(exc))}")
        return None

    def _scrub(self, text: str) -> str:
        """*text* without the secret key, should a message ever echo it."""
        if self._secret:
            text = text.replace(self._secret, "***")
        return text
