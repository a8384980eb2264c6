"""Keeping the catalog in step with the origins: `scanner` (walk, diff, parse),
`watch` (inotify), `changes` (what a watch or poll asks to rescan) and
`progress` (scan progress for people).
"""
