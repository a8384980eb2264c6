"""Configuration: the TOML file, its sections and where a mount keeps its files.

`sections` describes a ``[section]`` (a frozen dataclass) or a ``[[list]]`` and
reads file < environment < flags; `settings` holds `Config`, core's sections and
`load_config` (errors name file, key and reason); `origins` and `collections`
parse their lists of tables; `paths` finds the default config, cache and socket
locations. Control's ``[metrics]`` and ``[[webhooks]]`` are `musicfs.control.config`.
"""
