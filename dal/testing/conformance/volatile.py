"""The conformance suite of volatile stores, the caches (see :mod:`dal.testing.conformance`)."""

from __future__ import annotations

import time

import pytest

from dal.backends.base import (
    VolatileStore,
)
from dal.testing.conformance.values import MEGABYTE, ODD_VALUES


class VolatileStoreContract:
    """Conformance tests for :class:`dal.backends.base.VolatileStore` implementations."""

    def test_satisfies_protocol(self, store: VolatileStore) -> None:
        assert isinstance(store, VolatileStore)
        assert store.url.scheme == store.scheme
        assert isinstance(store.shared, bool)

    def test_get_set(self, store: VolatileStore, prefix: str) -> None:
        assert store.get(f"{prefix}k") is None
        assert store.set(f"{prefix}k", b"v1", 0) is True
        assert store.get(f"{prefix}k") == b"v1"
        assert store.set(f"{prefix}k", b"v2", 60) is True
        assert store.get(f"{prefix}k") == b"v2"

    @pytest.mark.parametrize("value", ODD_VALUES, ids=["empty", "non-utf8", "all-bytes", "json"])
    def test_round_trip_of_arbitrary_bytes(self, store: VolatileStore, prefix: str, value: bytes) -> None:
        assert store.set(f"{prefix}k", value, 0) is True
        stored = store.get(f"{prefix}k")
        assert stored == value and type(stored) is bytes
        assert store.get_many([f"{prefix}k"]) == {f"{prefix}k": value}

    def test_get_many_returns_only_present_keys(self, store: VolatileStore, prefix: str) -> None:
        values = {f"{prefix}{i:03d}": str(i).encode() for i in range(0, 150, 2)}
        for key, value in values.items():
            assert store.set(key, value, 0)
        asked = [f"{prefix}{i:03d}" for i in range(150)]
        assert store.get_many(asked) == values
        assert store.get_many([]) == {}

    def test_get_many_of_thousands_of_keys_and_large_values(self, store: VolatileStore, prefix: str) -> None:
        # one request for a whole batch of objects: long (hashed) keys, empty and 100 KB values
        sizes = {0: 0, 1: 100_000}
        values = {f"{prefix}{'k' * (i % 300)}/{i}": b"x" * sizes.get(i % 500, i % 200) for i in range(3000)}
        for key, value in values.items():
            assert store.set(key, value, 0)
        asked = [*values, *(f"{prefix}missing/{i}" for i in range(100))]
        assert store.get_many(asked) == values

    def test_delete(self, store: VolatileStore, prefix: str) -> None:
        store.set(f"{prefix}a", b"1", 0)
        store.set(f"{prefix}b", b"2", 0)
        store.delete(f"{prefix}a")
        assert store.get(f"{prefix}a") is None
        assert store.get(f"{prefix}b") == b"2"
        store.delete(f"{prefix}never")  # absent: not an error

    def test_delete_many(self, store: VolatileStore, prefix: str) -> None:
        for name in "abcd":
            store.set(f"{prefix}{name}", name.encode(), 0)
        # every deletion confirmed: nothing to resend
        assert store.delete_many([f"{prefix}a", f"{prefix}c", f"{prefix}never"]) == []
        found = store.get_many([f"{prefix}{name}" for name in "abcd"])
        assert found == {f"{prefix}b": b"b", f"{prefix}d": b"d"}
        assert store.delete_many([]) == []

    def test_add_only_when_absent(self, store: VolatileStore, prefix: str) -> None:
        assert store.add(f"{prefix}k", b"first", 0) is True
        assert store.get(f"{prefix}k") == b"first"
        assert store.add(f"{prefix}k", b"second", 0) is False
        assert store.get(f"{prefix}k") == b"first"
        store.delete(f"{prefix}k")
        assert store.add(f"{prefix}k", b"third", 0) is True
        assert store.get(f"{prefix}k") == b"third"

    def test_gets_of_absent_key(self, store: VolatileStore, prefix: str) -> None:
        assert store.gets(f"{prefix}k") == (None, None)

    def test_cas_succeeds_when_unchanged(self, store: VolatileStore, prefix: str) -> None:
        store.set(f"{prefix}k", b"v1", 0)
        value, token = store.gets(f"{prefix}k")
        assert value == b"v1" and token is not None
        assert store.cas(f"{prefix}k", b"v2", token, 0) is True
        assert store.get(f"{prefix}k") == b"v2"
        # The token named the write that cas has just replaced, so it is spent.
        assert store.cas(f"{prefix}k", b"v3", token, 0) is False
        assert store.get(f"{prefix}k") == b"v2"

    def test_cas_fails_after_intervening_set(self, store: VolatileStore, prefix: str) -> None:
        store.set(f"{prefix}k", b"v1", 0)
        _, token = store.gets(f"{prefix}k")
        store.set(f"{prefix}k", b"v1", 0)  # the same bytes still count as a change
        assert store.cas(f"{prefix}k", b"mine", token, 0) is False
        assert store.get(f"{prefix}k") == b"v1"

    def test_cas_fails_after_intervening_delete(self, store: VolatileStore, prefix: str) -> None:
        store.set(f"{prefix}k", b"v1", 0)
        _, token = store.gets(f"{prefix}k")
        store.delete(f"{prefix}k")
        assert store.cas(f"{prefix}k", b"mine", token, 0) is False
        assert store.get(f"{prefix}k") is None

    def test_ttl_expiry(self, store: VolatileStore, prefix: str) -> None:
        assert store.set(f"{prefix}short", b"s", 1)
        assert store.add(f"{prefix}added", b"a", 1)
        assert store.set(f"{prefix}forever", b"f", 0)
        assert store.set(f"{prefix}long", b"l", 600)
        assert store.get(f"{prefix}short") == b"s"
        time.sleep(2.2)
        assert store.get(f"{prefix}short") is None
        assert store.get_many([f"{prefix}short", f"{prefix}added", f"{prefix}forever", f"{prefix}long"]) == {
            f"{prefix}forever": b"f", f"{prefix}long": b"l"}
        assert store.gets(f"{prefix}added") == (None, None)
        assert store.add(f"{prefix}added", b"again", 0) is True  # an expired key counts as absent

    def test_long_keys_work_and_do_not_collide(self, store: VolatileStore, prefix: str) -> None:
        stem = f"{prefix}{'x' * 300}"
        assert len(stem.encode()) > 250
        assert store.set(f"{stem}a", b"A", 0) is True
        assert store.set(f"{stem}b", b"B", 0) is True
        assert store.get(f"{stem}a") == b"A"
        assert store.get(f"{stem}b") == b"B"
        assert store.get_many([f"{stem}a", f"{stem}b", f"{stem}c"]) == {f"{stem}a": b"A", f"{stem}b": b"B"}
        store.delete(f"{stem}a")
        assert store.get(f"{stem}a") is None
        assert store.get(f"{stem}b") == b"B"

    def test_keys_with_spaces_unicode_and_control_characters(self, store: VolatileStore, prefix: str) -> None:
        keys = [f"{prefix}a key with spaces", f"{prefix}ключ 日本 😀", f"{prefix}tab\tnew\nline"]
        for key in keys:
            assert store.set(key, key.encode(), 0) is True
        for key in keys:
            assert store.get(key) == key.encode()
        assert store.get(f"{prefix}a key with") is None
        assert store.get_many(keys) == {key: key.encode() for key in keys}

    def test_value_over_one_megabyte_never_raises(self, store: VolatileStore, prefix: str) -> None:
        value = bytes(i % 253 for i in range(MEGABYTE + MEGABYTE // 2))
        stored = store.set(f"{prefix}big", value, 0)
        assert type(stored) is bool
        assert store.get(f"{prefix}big") in (value, None)
        assert store.get_many([f"{prefix}big"]) in ({f"{prefix}big": value}, {})

    def test_failed_big_set_leaves_no_stale_value(self, store: VolatileStore, prefix: str) -> None:
        assert store.set(f"{prefix}big", b"small", 0) is True
        value = bytes(MEGABYTE * 2)
        store.set(f"{prefix}big", value, 0)
        assert store.get(f"{prefix}big") in (value, None)
