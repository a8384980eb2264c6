"""Origins: where the audio files really are. MusicFS only ever reads them.

`base` defines the interface every origin implements; `local` has local
folders and mounted shares; `s3`, `sftp` and `smb` talk to remote stores
(their client libraries are imported only when such an origin is configured);
`sessions` is the session pool and deadline watchdog that `sftp` and `smb`
share (`ssh` and `smbconn` hold their connection code); `federation` puts
priority, health, retries and bounds over all of them (the drivers never import it).
"""

from musicfs.core.origins.base import (
    DirListing,
    FileChanged,
    Origin,
    OriginFile,
    OriginUnavailable,
    RangeReader,
)
from musicfs.core.origins.local import LocalFile, LocalOrigin

__all__ = [
    "DirListing",
    "FileChanged",
    "LocalFile",
    "LocalOrigin",
    "Origin",
    "OriginFile",
    "OriginUnavailable",
    "RangeReader",
]
