"""Origins from their settings: `OriginConfig` + credentials → an `Origin`.

The client library of a remote type (boto3, paramiko, smbprotocol) is imported
only when an origin of that type is configured. Secrets are looked up in the
credentials store by origin id (``password``, ``secret_key``, ``access_key``)
and handed to the origin; they never pass through the configuration.
"""

from __future__ import annotations

from musicfs.core.config.origins import OriginConfig
from musicfs.core.extensions import Extensions
from musicfs.core.origins.base import Origin
from musicfs.core.origins.federation import OriginLimits
from musicfs.core.origins.local import LocalOrigin
from musicfs.core.secrets.credentials import Credentials


def build_origin(
    config: OriginConfig, credentials: Credentials, extensions: Extensions | None = None
) -> Origin:
    """The origin *config* describes (nothing is contacted yet). Types the core
    does not know are built by the plugin that provides them."""
    if config.from_plugin:
        maker = (extensions or Extensions()).origin_maker(config.type)
        if maker is None:
            raise ValueError(
                f"origin {config.id!r}: no plugin provides origin type {config.type!r}; "
                "add the plugin to [plugins] paths (see docs/plugins.md)"
            )
        try:
            origin = maker.create(config.id, dict(config.options, path=config.path))
        except Exception as exc:  # plugin code: any failure is a configuration problem
            raise ValueError(
                f"origin {config.id!r}: plugin {maker.name!r} refused its settings: {exc}"
            ) from None
        if not isinstance(origin, Origin):
            raise ValueError(
                f"origin {config.id!r}: plugin {maker.name!r} returned "
                f"{type(origin).__name__}, not an Origin"
            )
        return origin
    if config.mounted:
        return LocalOrigin(config.id, config.path, kind=config.type)
    timeout = config.timeout
    if config.type == "s3":
        from musicfs.core.origins.s3 import S3Origin

        return S3Origin(
            config.id,
            config.bucket,
            config.path,
            endpoint_url=config.endpoint_url or None,
            region=config.region or None,
            access_key=credentials.get(config.id, "access_key"),
            secret_key=credentials.get(config.id, "secret_key"),
            timeout=timeout,
            # A scan reads a file with three GETs at once (one request slot):
            max_connections=3 * max(1, config.max_requests),
        )
    if config.type == "sftp":
        from musicfs.core.origins.sftp import SFTPOrigin

        return SFTPOrigin(
            config.id,
            config.host,
            config.path,
            port=config.port or 22,
            user=config.user or None,
            key_file=config.key_file or None,
            password=credentials.get(config.id, "password"),
            known_hosts=config.known_hosts or None,
            timeout=timeout,
            ssh_client=config.ssh_client,
            max_connections=max(1, min(config.max_requests, 8)),
        )
    if config.type == "smbclient":
        from musicfs.core.origins.smb import SMBOrigin

        return SMBOrigin(
            config.id,
            config.host,
            config.share,
            config.path,
            port=config.port or 445,
            user=config.user or None,
            password=credentials.get(config.id, "password"),
            timeout=timeout,
        )
    raise ValueError(f"origin {config.id!r}: unknown type {config.type!r}")


def limits_of(config: OriginConfig) -> OriginLimits:
    return OriginLimits(
        priority=config.priority,
        max_requests=max(1, config.max_requests),
        bandwidth=config.bandwidth,
        timeout=config.timeout,
    )
