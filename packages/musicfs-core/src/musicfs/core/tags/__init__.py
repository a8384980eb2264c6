"""Reading tags and finding where a file's audio payload starts.

`reader` reads tags with mutagen (or a plugin); `headers` finds the header /
payload split of each format (DESIGN §5). Neither touches the catalog.
"""
