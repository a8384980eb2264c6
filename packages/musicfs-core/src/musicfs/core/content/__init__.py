"""Bytes: the caches and the read side of an open file.

`cas` is the content-addressed chunk store (L3), with `chunks` (a chunk's name,
place and verified reader), `packfiles` (its bytes on disk) and `chunkcheck`
(checking it in use); `cache` keeps headers (L2), manifests and cached copies,
read back by `cachedfile`, described by `manifests`; `hotcache` is the
in-memory L1; `stats` the counters every tier reports; `library` serves an
open file's bytes (origin, replica or cached copy); `overlay` builds rewritten
headers; `verify` and `backup` check and save the cache.
"""
