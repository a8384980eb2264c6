"""A running mount: its lifecycle (`service.MusicFS`), the assembly of its parts,
the background loops, the fill queue, the prefetchers, and the one facade the
control API and the CLI use (`facade.MountControl`).
"""
