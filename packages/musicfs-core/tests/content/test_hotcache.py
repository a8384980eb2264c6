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


def rows(n: int, start: int = 1) -> list[tuple[int, bytes, int, int]]:
    """A listing's rows: even ids are folders (size -1)."""
    return [
        (i, f"é{i}".encode(), -1 if i % 2 == 0 else i * 10, i * 1000) for i in range(start, n + 1)
    ]


def list_once(
    cache: DirectoryCache, parent: int, pages: list[list[tuple[int, bytes, int, int]]]
) -> None:
    builder = cache.listing_builder(parent)
    for page in pages:
        if builder is not None:
            builder.add(page)
    if builder is not None:
        cache.keep_listing(builder)


def test_a_listing_is_kept_from_its_second_complete_reading() -> None:
    cache = DirectoryCache()
    # Pages overlap by one row, as readdir's do (one row more than the buffer took).
    pages = [rows(40)[:21], rows(40)[20:]]
    list_once(cache, 1, pages)
    assert cache.listing(1) is None  # one walk of a library keeps nothing
    list_once(cache, 1, pages)
    kept = cache.listing(1)
    assert kept is not None
    assert list(kept.ids) == list(range(1, 41))
    assert kept.names(0, 40) == [f"é{i}".encode() for i in range(1, 41)]
    assert kept.names(5, 7) == [b"\xc3\xa96", b"\xc3\xa97"]
    assert list(kept.sizes)[:2] == [10, -1]
    assert kept.index_after(0) == 0
    assert kept.index_after(20) == 20


def test_a_change_while_a_listing_is_read_keeps_it_out() -> None:
    cache = DirectoryCache()
    list_once(cache, 1, [rows(10)])
    builder = cache.listing_builder(1)
    assert builder is not None
    builder.add(rows(10))
    cache.drop([1])  # the folder changed: the rows read may be stale
    cache.keep_listing(builder)
    assert cache.listing(1) is None
    list_once(cache, 1, [rows(11)])  # the next complete reading is kept
    kept = cache.listing(1)
    assert kept is not None
    assert len(kept) == 11


def test_a_change_of_another_folder_does_not_keep_a_listing_out() -> None:
    # Listing a folder of tracks looks for its cover art in the background, and
    # finding it changes that folder: a big folder listed meanwhile is kept all the same.
    cache = DirectoryCache()
    list_once(cache, 1, [rows(10)])
    builder = cache.listing_builder(1)
    assert builder is not None
    builder.add(rows(10))
    cache.drop([2])
    cache.keep_listing(builder)
    assert cache.listing(1) is not None


def test_listings_are_bounded_and_dropped_with_their_folder() -> None:
    cache = DirectoryCache(max_listed=100)
    for parent in (1, 2, 3):
        list_once(cache, parent, [rows(40)])
        list_once(cache, parent, [rows(40)])
    assert cache.listing(1) is None  # the least recently used went
    assert cache.listing(2) is not None
    assert cache.listing(3) is not None
    cache.drop([3])
    assert cache.listing(3) is None
    cache.clear()
    assert cache.listing(2) is None
