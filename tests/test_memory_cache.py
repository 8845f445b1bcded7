"""MemoryCache behaviour beyond the volatile contract: LRU by bytes, statistics, pruning."""

from __future__ import annotations

import gc
import random
import threading
import time
import tracemalloc
import uuid

import pytest

from dal.backends import memory, open_volatile
from dal.backends.memory import CacheEntryInfo, MemoryCache
from dal.backends.memory_lru import DEFAULT_MAX_SIZE, ENTRY_OVERHEAD
from dal.backends.url import StoreURL, parse_url
from dal.exceptions import ConfigurationError


def make(max_size: int = 0) -> MemoryCache:
    """Return a cache bounded at ``max_size`` bytes, explicitly (0: unbounded)."""
    return MemoryCache.from_url(parse_url(f"memory://c?max_size={max_size}"))


def size_of(key: str, value: bytes) -> int:
    """Return what an entry is charged: its UTF-8 key, its value and the fixed per-entry overhead."""
    return len(key.encode()) + len(value) + ENTRY_OVERHEAD


#: the charge of a one-character key with a 9-byte value
TEN = size_of("a", b"x" * 9)


def assert_consistent(cache: MemoryCache) -> None:
    records = cache.entries()
    assert cache.total_size == sum(record.size for record in records)
    assert all(record.size == size_of(record.key, cache.get(record.key) or b"") for record in records)


def test_registry_gives_one_cache_per_name(namespace: str) -> None:
    first = open_volatile(f"memory://{namespace}a")
    assert isinstance(first, MemoryCache)
    assert open_volatile(f"memory://{namespace}a") is first
    other = open_volatile(f"memory://{namespace}b")
    first.set("k", b"a", 0)
    assert other.get("k") is None


@pytest.mark.parametrize("url", ["memory://c?max_size=-1", "memory://c?max_size=big", "memory://c?size=1",
                                 "memory://c/path", "memory://a,b"])
def test_bad_urls_raise_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        MemoryCache.from_url(parse_url(url))


def test_max_size_option() -> None:
    assert make(1000).max_size == 1000
    assert make().max_size == 0  # max_size=0 lifts the bound, explicitly
    assert MemoryCache.from_url(parse_url("memory://c")).max_size == DEFAULT_MAX_SIZE  # bounded by default
    assert MemoryCache(StoreURL("memory")).max_size == DEFAULT_MAX_SIZE


def test_entry_size_counts_utf8_key_and_value() -> None:
    cache = make()
    cache.set("ключ", b"12345", 0)
    assert cache.total_size == len("ключ".encode()) + 5 + ENTRY_OVERHEAD == 13 + ENTRY_OVERHEAD
    cache.set("ключ", b"1", 0)  # overwriting replaces the charge, it does not add to it
    assert cache.total_size == 9 + ENTRY_OVERHEAD


def test_lru_eviction_by_bytes() -> None:
    cache = make(3 * TEN)
    for key in "abc":
        assert cache.set(key, b"x" * 9, 0)  # TEN bytes each: exactly full
    assert cache.total_size == 3 * TEN
    cache.get("a")  # a becomes the most recently used, so b goes first
    assert cache.set("d", b"x" * 9, 0)
    assert cache.get("b") is None
    assert [record.key for record in cache.entries()] == ["c", "a", "d"]
    assert cache.set("e", b"x" * (19 + ENTRY_OVERHEAD), 0)  # 2 * TEN bytes: evicts c and a
    assert [record.key for record in cache.entries()] == ["d", "e"]
    assert cache.total_size == 3 * TEN


def test_entry_larger_than_max_size_is_refused_and_drops_old_value() -> None:
    cache = make(2 * ENTRY_OVERHEAD + 20)
    assert cache.set("k", b"old", 0)
    assert cache.set("other", b"o", 0)
    assert cache.set("k", b"x" * (ENTRY_OVERHEAD + 50), 0) is False
    assert cache.get("k") is None  # never the old value, as if the set had worked
    assert cache.get("other") == b"o"  # nothing else was evicted for an entry that cannot fit
    assert cache.total_size == size_of("other", b"o")


def test_statistics_track_hits_and_access() -> None:
    cache = make()
    before = time.time()
    cache.set("a", b"1", 0)
    cache.set("b", b"22", 30)
    cache.get("a")
    cache.get_many(["a", "b", "missing"])
    cache.gets("a")
    records = {record.key: record for record in cache.entries()}
    assert records["a"].hits == 3 and records["b"].hits == 1
    assert records["a"].size == size_of("a", b"1") and records["b"].size == size_of("b", b"22")
    assert records["a"].expires_at is None
    assert records["b"].expires_at is not None and before + 29 < records["b"].expires_at < time.time() + 31
    assert before <= records["b"].last_access <= records["a"].last_access <= time.time()
    cache.set("a", b"new", 0)  # a new value starts new statistics
    assert {record.key: record.hits for record in cache.entries()}["a"] == 0


def test_entry_records_are_frozen() -> None:
    cache = make()
    cache.set("a", b"1", 0)
    record = cache.entries()[0]
    assert isinstance(record, CacheEntryInfo)
    with pytest.raises(AttributeError):
        record.hits = 5  # type: ignore[misc]


def test_expired_entries_vanish_from_entries_and_size() -> None:
    cache = make()
    cache.set("short", b"x", 0.05)
    cache.set("long", b"y", 0)
    time.sleep(0.1)
    assert [record.key for record in cache.entries()] == ["long"]
    assert cache.total_size == size_of("long", b"y")


def test_total_size_drops_expired_entries_first() -> None:
    """Read first, before any other call: it used to count an expired entry until another call dropped it."""
    cache = make()
    cache.set("short", b"x", 0.05)
    cache.set("long", b"y", 0)
    time.sleep(0.1)
    assert cache.total_size == size_of("long", b"y")
    assert [record.key for record in cache.entries()] == ["long"]


def test_negative_ttl_stores_nothing() -> None:
    cache = make()
    cache.set("k", b"old", 0)
    cache.set("k", b"new", -1)
    assert cache.get("k") is None
    assert cache.total_size == 0


def test_prune_removes_least_recently_used_first() -> None:
    cache = make()
    for key in "abcde":
        cache.set(key, b"123456789", 0)  # TEN bytes each
    cache.get("a")
    cache.get("c")
    assert cache.prune(2 * TEN + 5) == ["b", "d", "e"]
    assert cache.total_size == 2 * TEN
    assert [record.key for record in cache.entries()] == ["a", "c"]
    assert cache.prune(10 * TEN) == []
    assert cache.prune(0) == ["a", "c"]
    assert cache.total_size == 0 and cache.entries() == []


def test_clear() -> None:
    cache = make()
    cache.set("a", b"1", 0)
    cache.set("b", b"2", 0)
    cache.clear()
    assert cache.total_size == 0
    assert cache.entries() == []
    assert cache.get("a") is None


def test_cas_tokens_differ_per_write() -> None:
    cache = make()
    cache.set("k", b"same", 0)
    _, first = cache.gets("k")
    cache.set("k", b"same", 0)
    _, second = cache.gets("k")
    assert first != second
    assert cache.cas("k", b"x", second, 0) is True
    assert cache.cas("k", b"y", None, 0) is False


@pytest.mark.parametrize("seed", range(5))
def test_total_size_invariant_under_random_operations(seed: int) -> None:
    rng = random.Random(seed)
    cache = make(rng.choice([0, 2 * ENTRY_OVERHEAD + 200, 10 * ENTRY_OVERHEAD + 1000]))
    keys = [f"k{i}" for i in range(30)] + ["ключ", "😀"]
    for _ in range(2000):
        key = rng.choice(keys)
        value = bytes(rng.randrange(120))
        action = rng.randrange(9)
        if action == 0:
            cache.set(key, value, 0)
        elif action == 1:
            cache.add(key, value, 0)
        elif action == 2:
            _, token = cache.gets(key)
            cache.cas(key, value, token, 0)
        elif action == 3:
            cache.delete(key)
        elif action == 4:
            cache.delete_many(rng.sample(keys, 3))
        elif action == 5:
            cache.get_many(rng.sample(keys, 5))
        elif action == 6:
            cache.prune(rng.randrange(5 * ENTRY_OVERHEAD + 500))
        elif action == 7:
            cache.get(key)
        elif rng.random() < 0.05:
            cache.clear()
        assert cache.total_size == sum(record.size for record in cache.entries())
        if cache.max_size:
            assert cache.total_size <= cache.max_size
    assert_consistent(cache)


def test_thread_safety_smoke() -> None:
    bound = 25 * (ENTRY_OVERHEAD + 100)  # about half of the 50 keys
    cache = make(bound)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(3000):
                key = f"k{rng.randrange(50)}"
                if rng.random() < 0.5:
                    cache.set(key, bytes(rng.randrange(200)), 0)
                else:
                    value, token = cache.gets(key)
                    if value is not None:
                        cache.cas(key, value + b"+", token, 0)
                if rng.random() < 0.01:
                    cache.prune(bound // 2)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert cache.total_size <= bound
    assert_consistent(cache)


def _traced_peak_over_bound(cache: MemoryCache, writes: int) -> int:
    """Keep a bounded cache full with entries as dal writes them (key ~60 characters, 600-second
    TTL, no other reference kept); return the most its traced memory exceeded ``max_size`` by."""
    gc.collect()
    tracemalloc.start()
    base, worst = tracemalloc.get_traced_memory()[0], -cache.max_size
    try:
        for number in range(writes):
            cache.set(f"dal/0123456789/o/record/{uuid.uuid4()}", b"%d " % number + bytes(300), 600.0)
            if number % 13 == 0:
                worst = max(worst, tracemalloc.get_traced_memory()[0] - base - cache.max_size)
    finally:
        tracemalloc.stop()
    return worst


def test_the_charge_bounds_the_memory_the_cache_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under constant eviction, what the cache holds (tracemalloc) stays within ``max_size``: each
    entry is charged its measured overhead. Control: charging only key and value bytes, as before,
    lets the cache hold about twice its bound."""
    bound = 2_000 * size_of(f"dal/0123456789/o/record/{uuid.uuid4()}", bytes(305))  # ~2,000 entries
    held = _traced_peak_over_bound(make(bound), 10_000)
    assert held <= bound // 100, f"the cache held {held:,} B over its bound of {bound:,} B"
    assert held >= -bound // 4, "the charge is far above what an entry costs"
    monkeypatch.setattr(memory, "charge", lambda key, value: len(key.encode()) + len(value))
    held = _traced_peak_over_bound(make(bound), 10_000)
    assert held >= bound // 2, f"control: the cache held only {held:,} B over its bound of {bound:,} B"
