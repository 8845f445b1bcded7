"""MemoryCache behaviour beyond the volatile contract: LRU by bytes, statistics, pruning."""

from __future__ import annotations

import random
import threading
import time

import pytest

from dal.backends import open_volatile
from dal.backends.memory import CacheEntryInfo, MemoryCache
from dal.backends.url import parse_url
from dal.exceptions import ConfigurationError


def make(max_size: int = 0) -> MemoryCache:
    return MemoryCache.from_url(parse_url(f"memory://c?max_size={max_size}" if max_size else "memory://c"))


def size_of(key: str, value: bytes) -> int:
    return len(key.encode()) + len(value)


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
    assert make().max_size == 0


def test_entry_size_counts_utf8_key_and_value() -> None:
    cache = make()
    cache.set("ключ", b"12345", 0)
    assert cache.total_size == len("ключ".encode()) + 5 == 13
    cache.set("ключ", b"1", 0)  # overwriting replaces the charge, it does not add to it
    assert cache.total_size == 9


def test_lru_eviction_by_bytes() -> None:
    cache = make(30)
    for key in "abc":
        assert cache.set(key, b"x" * 9, 0)  # 10 bytes each: exactly full
    assert cache.total_size == 30
    cache.get("a")  # a becomes the most recently used, so b goes first
    assert cache.set("d", b"x" * 9, 0)
    assert cache.get("b") is None
    assert [record.key for record in cache.entries()] == ["c", "a", "d"]
    assert cache.set("e", b"x" * 19, 0)  # 20 bytes: evicts c and a
    assert [record.key for record in cache.entries()] == ["d", "e"]
    assert cache.total_size == 30


def test_entry_larger_than_max_size_is_refused_and_drops_old_value() -> None:
    cache = make(20)
    assert cache.set("k", b"old", 0)
    assert cache.set("other", b"o", 0)
    assert cache.set("k", b"x" * 50, 0) is False
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
    assert records["a"].size == 2 and records["b"].size == 3
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


def test_negative_ttl_stores_nothing() -> None:
    cache = make()
    cache.set("k", b"old", 0)
    cache.set("k", b"new", -1)
    assert cache.get("k") is None
    assert cache.total_size == 0


def test_prune_removes_least_recently_used_first() -> None:
    cache = make()
    for key in "abcde":
        cache.set(key, b"123456789", 0)  # 10 bytes each
    cache.get("a")
    cache.get("c")
    assert cache.prune(25) == ["b", "d", "e"]
    assert cache.total_size == 20
    assert [record.key for record in cache.entries()] == ["a", "c"]
    assert cache.prune(100) == []
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
    cache = make(rng.choice([0, 200, 1000]))
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
            cache.prune(rng.randrange(500))
        elif action == 7:
            cache.get(key)
        elif rng.random() < 0.05:
            cache.clear()
        assert cache.total_size == sum(record.size for record in cache.entries())
        if cache.max_size:
            assert cache.total_size <= cache.max_size
    assert_consistent(cache)


def test_thread_safety_smoke() -> None:
    cache = make(5000)
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
                    cache.prune(2000)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert cache.total_size <= 5000
    assert_consistent(cache)
