"""MusicFS plugin API.

`API_VERSION` is the version of the contract between MusicFS and its plugins
(semver ``MAJOR.MINOR``), separate from the package version. A plugin states the
API version it was built against; the host accepts it when the major versions
are equal and the plugin's minor is not newer than the host's (SPEC §1, §8).
"""

from __future__ import annotations

from musicfs.plugins.version import API_VERSION, IncompatiblePlugin, check_api_version

__all__ = ["API_VERSION", "IncompatiblePlugin", "check_api_version"]
