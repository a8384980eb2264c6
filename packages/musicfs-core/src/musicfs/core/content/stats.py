"""What a cache tier holds and how it has been used: the one counter type of
every tier (L1 `hotcache`, L2 headers in `cache`, L3 `cas`), read by status and metrics.

A plain value with no dependencies, so a tier reports through it without
importing another tier.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TierStats:
    """What a cache tier holds and how it has been used."""

    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    corrupt: int = 0

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
