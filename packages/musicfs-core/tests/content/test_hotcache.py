"""Cache tier L1: whole directories in memory, bounded, dropped when they change."""

from __future__ import annotations

from musicfs.core.catalog.store import Node
from musicfs.core.content.hotcache import BIG_DIRECTORY, DirectoryCache


def folder(parent: int, n: int) -> list[Node]:
    return [Node(parent * 100_000 + i, parent, f"f{i}", i, 10, 0) for i in range(n)]


class Loader:
    def __init__(self, sizes: dict[int, int]) -> None:
        self.sizes = sizes
        self.calls: list[int] = []

    def __call__(self, parent: int, limit: int) -> list[Node]:
        self.calls.append(parent)
        return folder(parent, self.sizes[parent])[:limit]


def test_one_load_answers_every_name_of_a_folder() -> None:
    cache, load = DirectoryCache(), Loader({1: 50})
    assert cache.lookup(1, "f3", load) == folder(1, 50)[3]
    assert cache.lookup(1, "f49", load) == folder(1, 50)[49]
    assert cache.lookup(1, "nope", load) is None
    assert load.calls == [1]
    assert (cache.stats.hits, cache.stats.misses, cache.stats.entries) == (2, 1, 50)


def test_huge_folders_are_not_held() -> None:
    cache, load = DirectoryCache(), Loader({1: BIG_DIRECTORY + 10})
    assert cache.lookup(1, "f1", load) is False
    assert cache.stats.entries == 0


def test_least_recently_used_folders_go_first() -> None:
    cache, load = DirectoryCache(max_entries=100), Loader({1: 40, 2: 40, 3: 40})
    cache.lookup(1, "f0", load)
    cache.lookup(2, "f0", load)
    cache.lookup(1, "f1", load)  # 1 is now more recent than 2
    cache.lookup(3, "f0", load)
    assert cache.stats.entries <= 100
    load.calls.clear()
    cache.lookup(1, "f2", load)
    cache.lookup(2, "f2", load)
    assert load.calls == [2]


def test_dropped_folders_are_loaded_again() -> None:
    cache, load = DirectoryCache(), Loader({1: 5})
    cache.lookup(1, "f0", load)
    load.sizes[1] = 6
    cache.drop([1, 99])
    assert cache.lookup(1, "f5", load) == folder(1, 6)[5]
    assert load.calls == [1, 1]
