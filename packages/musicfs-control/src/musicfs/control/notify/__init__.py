"""Media servers learn of changes: ``[[notify]]`` entries (MPD, Jellyfin, Plex,
Navidrome) told which folders of the mount changed, from ``tree.changed`` events.

`config` parses the entries, `collapse` makes the folders of a round few,
`senders` speaks each server's protocol, `notifier` runs the debounced,
retried rounds in threads of their own.
"""
