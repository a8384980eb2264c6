"""The plugin API version and the rule for which plugins a host accepts."""

from __future__ import annotations

import re

from musicfs.core.errors import MusicFSError

#: The plugin API this host implements (semver MAJOR.MINOR).
API_VERSION = "1.0"

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.\d+)?$")


class IncompatiblePlugin(MusicFSError):
    """A plugin targets an API version this host cannot serve."""


def _parse(version: str, what: str) -> tuple[int, int]:
    m = _VERSION.match(version.strip())
    if not m:
        raise IncompatiblePlugin(f"{what} {version!r} is not a MAJOR.MINOR version")
    return int(m.group(1)), int(m.group(2))


def check_api_version(plugin_api: str, plugin_name: str, host_api: str = API_VERSION) -> None:
    """Raise `IncompatiblePlugin` unless a plugin built for *plugin_api* can run here.

    The major versions must match, and the plugin's minor must not be newer than
    the host's (it may use things this host does not have).
    """
    want = _parse(plugin_api, f"plugin {plugin_name!r} declares API version")
    have = _parse(host_api, "host API version")
    if want[0] != have[0] or want[1] > have[1]:
        raise IncompatiblePlugin(
            f"plugin {plugin_name!r} targets plugin API {plugin_api}, but this MusicFS "
            f"provides API {host_api}; use a plugin release built for API {have[0]}.x "
            f"(x <= {have[1]})"
        )
