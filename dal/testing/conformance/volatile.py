"""The conformance suite of volatile stores, the caches (see :mod:`dal.testing.conformance`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from dal.backends.base import (
    VolatileStore,
)
from dal.exceptions import BackendError
from dal.testing.conformance.values import MEGABYTE, ODD_VALUES

#: values that are not bytes, which every store refuses rather than store something else (memcached's
#: client would store a bytearray's repr, a memoryview's, and a str encoded)
NOT_BYTES = (bytearray(b"abc"), memoryview(b"abc"), "abc", 5)
R = TypeVar("R")


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

    # The cas contract: a token names one write, the one ``gets`` read. ``cas`` stores only while
    # that write is still the key's entry: never after another write, even of the same bytes, nor
    # after a delete, nor (VolatileRestartContract) over an entry written after the server
    # restarted, whose own token may be spelled the same (memcached counts from 1 again): a
    # memcached token names the connection it was read on, refused once that connection is gone.

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

    def test_cas_fails_on_an_entry_added_again_after_a_delete(self, store: VolatileStore,
                                                              prefix: str) -> None:
        assert store.add(f"{prefix}k", b"lease", 60) is True
        _, token = store.gets(f"{prefix}k")
        store.delete(f"{prefix}k")
        assert store.add(f"{prefix}k", b"lease", 60) is True  # another writer's, the same bytes
        assert store.cas(f"{prefix}k", b"stale", token, 60) is False
        assert store.get(f"{prefix}k") == b"lease"

    @pytest.mark.parametrize("ttl", [0, 60, -1, math.nan])
    @pytest.mark.parametrize("value", NOT_BYTES, ids=["bytearray", "memoryview", "str", "int"])
    def test_a_value_that_is_not_bytes_is_refused_and_nothing_changes(
            self, store: VolatileStore, prefix: str, value: object, ttl: float) -> None:
        assert store.set(f"{prefix}k", b"v1", 0) is True
        _, token = store.gets(f"{prefix}k")
        refused = "cache values must be bytes, not"
        with pytest.raises(TypeError, match=refused):
            store.set(f"{prefix}k", value, ttl)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=refused):
            store.add(f"{prefix}new", value, ttl)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=refused):
            store.cas(f"{prefix}k", value, token, ttl)  # type: ignore[arg-type]
        assert store.get_many([f"{prefix}k", f"{prefix}new"]) == {f"{prefix}k": b"v1"}
        assert store.cas(f"{prefix}k", b"v2", token, 0) is True  # nothing was written: the token holds

    def test_a_nan_ttl_stores_an_entry_expired_at_once(self, store: VolatileStore, prefix: str) -> None:
        assert store.set(f"{prefix}k", b"old", 0) is True
        assert store.set(f"{prefix}k", b"new", math.nan) is True  # NaN is no TTL: expired, as a negative one
        assert store.add(f"{prefix}added", b"a", math.nan) is True
        time.sleep(0.05)
        assert store.get_many([f"{prefix}k", f"{prefix}added"]) == {}
        assert store.gets(f"{prefix}added") == (None, None)

    @pytest.mark.parametrize("ttl", [math.inf, 10**400, 2**63], ids=["inf", "10**400", "2**63"])
    def test_a_ttl_past_any_clock_never_expires(self, store: VolatileStore, prefix: str, ttl: float) -> None:
        assert store.set(f"{prefix}k", b"v1", ttl) is True
        assert store.add(f"{prefix}added", b"a", ttl) is True
        _, token = store.gets(f"{prefix}k")
        assert store.cas(f"{prefix}k", b"v2", token, ttl) is True
        found = store.get_many([f"{prefix}k", f"{prefix}added"])
        assert found == {f"{prefix}k": b"v2", f"{prefix}added": b"a"}

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


class VolatileRestartContract:
    """The cas contract across a restart of the store's server. Provide ``store`` and ``prefix``
    (as for :class:`VolatileStoreContract`) and ``restart``: a callable that restarts the server
    behind ``store`` on the same address, every entry lost, and returns once it answers. The
    store's ``dead_timeout`` (a server skipped after it failed) should be short: the test calls
    it again until it answers."""

    def test_a_cas_token_from_before_a_restart_never_replaces_a_later_entry(
            self, store: VolatileStore, prefix: str, restart: Callable[[], None]) -> None:
        key = f"{prefix}lease"
        assert store.add(key, b"lease A", 60) is True
        _, token = store.gets(key)
        restart()
        # another process takes its own lease after the restart, again and again: on memcached, one
        # of those has the very cas unique A read (memcached numbers writes from 1 when it starts)
        for attempt in range(30):
            assert _answered(lambda: store.add(key, b"lease B", 60)) is True
            assert _answered(lambda: store.gets(key), lambda held: held[0] is not None)[0] == b"lease B"
            try:
                stored = store.cas(key, b"A's stale value", token, 60)
            except BackendError:  # may say the connection it was read on is gone
                stored = False
            assert stored is False, attempt
            assert _answered(lambda: store.get(key)) == b"lease B"
            _answered(lambda: store.delete(key))


def _answered(call: Callable[[], R], found: Callable[[R], bool] = lambda _: True) -> R:
    """Return what ``call`` returns once the restarted servers answer it (10 s at most): a call that
    raises ``BackendError`` is made again, and so is one whose answer is not ``found`` (a replicated
    store's read that too few replicas answered finds nothing)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            answer = call()
        except BackendError:
            if time.monotonic() > deadline:
                raise
        else:
            if found(answer) or time.monotonic() > deadline:
                return answer
        time.sleep(0.05)
