"""A running mount: assembling the parts, the background loops, the prefetcher,
and the operations the control API and the CLI ask for.
"""
