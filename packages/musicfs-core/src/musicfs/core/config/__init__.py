"""Configuration: the TOML file, its sections and where a mount keeps its files.

`settings` loads and checks the file (errors name file, key and reason);
`origins`, `collections` and `webhooks` parse their sections; `paths` finds the
default config, cache and socket locations.
"""
