"""Bytes: the caches and the read side of an open file.

`cas` is the content-addressed chunk store (L3); `cache` keeps headers (L2),
manifests and cached copies; `hotcache` the in-memory L1; `library` serves an
open file's bytes (origin, replica or cached copy); `overlay` builds rewritten
headers; `verify` and `backup` check and save the cache.
"""
