"""The plugin API version rule: same major, minor not newer than the host's."""

from __future__ import annotations

import pytest

from musicfs.plugins import API_VERSION, IncompatiblePlugin, check_api_version


def test_api_version_is_semver_starting_at_one() -> None:
    major, minor = (int(p) for p in API_VERSION.split("."))
    assert (major, minor) >= (1, 0)


@pytest.mark.parametrize("plugin_api", ["1.0", "1.0.3"])
def test_compatible_versions_are_accepted(plugin_api: str) -> None:
    check_api_version(plugin_api, "demo", host_api="1.2")


@pytest.mark.parametrize("plugin_api", ["2.0", "0.9", "1.3"])
def test_other_major_or_newer_minor_is_refused_naming_both(plugin_api: str) -> None:
    with pytest.raises(IncompatiblePlugin) as info:
        check_api_version(plugin_api, "demo", host_api="1.2")
    assert plugin_api in str(info.value)
    assert "1.2" in str(info.value)


def test_garbage_version_is_refused() -> None:
    with pytest.raises(IncompatiblePlugin, match=r"not a MAJOR\.MINOR"):
        check_api_version("latest", "demo")
