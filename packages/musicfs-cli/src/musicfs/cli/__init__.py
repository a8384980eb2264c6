"""The ``musicfs`` command line. `musicfs.cli.entry.main` is the entry point
(it imports `musicfs.cli.main`, whose `build_parser` holds the arguments).

Nothing is imported here: the entry point forks a mount's daemon before the
command line's modules load (see `musicfs.cli.launch`).
"""
