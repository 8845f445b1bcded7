"""The hit paths of cached reads, written out for speed (issue 16): each must still do what the
general path does, which these tests pin down by the cases where a shortcut would differ."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import pytest
from hybrids import Kind

from dal.backends.memcached import MemcachedCache
from dal.backends.memcached import text as memcached_text
from dal.backends.memcached.text import TextConnection, kernel_timeouts
from dal.backends.memory import MemoryCache
from dal.backends.url import parse_url
from dal.cache.counters import Stats
from dal.cache.leases import LeasedCache
from dal.cache.signing import Signer
from dal.exceptions import BackendError, InvalidValueError
from dal.objects import dynamics
from dal.objects.dataobject import DataObject

KEY = "dal/test/o/kind/00000000-0000-4000-8000-000000000000"


def leased(hmac_key: bytes | None) -> tuple[LeasedCache, MemoryCache, Stats]:
    store = MemoryCache.from_url(parse_url("memory://cached-reads"))
    stats = Stats()
    return LeasedCache(store, Signer(hmac_key), stats, prefix="object_"), store, stats


def test_an_unsigned_cache_reads_values_and_refuses_what_is_not_a_plain_value() -> None:
    cache, store, stats = leased(None)
    store.set(KEY, b"UVdocument", 60)
    assert cache.get(KEY) == b"document"
    store.set(KEY, b"ULowner", 60)  # a lease: a fill under way, a miss
    assert cache.get(KEY) is None
    assert stats.snapshot().get("object_rejected", 0) == 0
    signed = Signer(b"k" * 32).seal(KEY, b"Vdocument")  # not what this process writes: refused
    store.set(KEY, signed, 60)
    assert cache.get(KEY) is None
    assert stats.snapshot()["object_rejected"] == 1
    assert store.get(KEY) is None  # a rejected entry is deleted


def test_a_signing_cache_never_takes_a_plain_value_for_a_signed_one() -> None:
    """The plain shortcut (``UV`` then the payload) must be off when entries are signed."""
    cache, store, stats = leased(b"k" * 32)
    store.set(KEY, b"UVforged", 60)
    assert cache.get(KEY) is None
    assert stats.snapshot()["object_rejected"] == 1
    store.set(KEY, Signer(b"k" * 32).seal(KEY, b"Vdocument"), 60)
    assert cache.get(KEY) == b"document"


def test_fetch_counts_hits_and_misses_under_its_prefix() -> None:
    cache, _, stats = leased(None)
    assert cache.fetch(KEY, lambda: b"document", 60) == b"document"
    assert cache.fetch(KEY, lambda: b"other", 60) == b"document"
    counts = stats.snapshot()
    assert (counts["object_misses"], counts["object_hits"]) == (1, 1)


def test_a_memory_get_that_raises_releases_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """``get`` takes the lock with acquire/release, not ``with``: an error must not leave it held."""
    store = MemoryCache.from_url(parse_url("memory://cached-reads-lock"))
    store.set("short", b"x", 0.001)
    store.set("kept", b"y", 60)
    time.sleep(0.01)

    def broken(now: float) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(store, "_drop_expired", broken)
    with pytest.raises(RuntimeError, match="injected"):
        store.get("kept")
    assert not store._lock.locked()
    monkeypatch.undo()
    assert store.get("kept") == b"y"
    assert store.get("short") is None


def test_a_dynamic_is_read_by_the_object_itself() -> None:
    assert DataObject._dynamic is dynamics.read


@pytest.mark.parametrize("guid", ["not-a-guid", 42, "0E5C1F6A-0000-4000-8000-000000000000"])
def test_loading_by_something_that_is_not_a_guid_is_a_typed_error(guid: object) -> None:
    with pytest.raises(InvalidValueError, match=r"Kind\(guid\) must be a guid"):
        Kind(guid)  # type: ignore[arg-type]


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A TCP server that accepts connections (the kernel does) and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        yield listener.getsockname()[:2]
    finally:
        listener.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kernel socket timeouts: Linux only")
def test_the_text_connection_is_blocking_with_kernel_timeouts(silent_server: tuple[str, int]) -> None:
    connection = TextConnection(silent_server, 0.2, 1.0)
    try:
        assert connection._socket.gettimeout() is None  # no poll before each send and recv
        started = time.monotonic()
        with pytest.raises(OSError):
            connection.get(b"key")
        assert 0.15 < time.monotonic() - started < 2.0
    finally:
        connection.close()


def test_without_kernel_timeouts_the_socket_keeps_its_own(
        silent_server: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memcached_text.sys, "platform", "darwin")
    probe = socket.socket()
    try:
        probe.settimeout(0.5)
        assert not kernel_timeouts(probe, 0.2)
        assert probe.gettimeout() == 0.5  # left as it was
    finally:
        probe.close()
    connection = TextConnection(silent_server, 0.2, 1.0)
    try:
        assert connection._socket.gettimeout() == 0.2
        started = time.monotonic()
        with pytest.raises(OSError):
            connection.get(b"key")
        assert time.monotonic() - started < 2.0
    finally:
        connection.close()


def test_a_silent_memcached_fails_a_get_in_time_then_is_skipped(silent_server: tuple[str, int]) -> None:
    host, port = silent_server
    cache = MemcachedCache.from_url(parse_url(f"memcached://{host}:{port}?timeout=0.2&dead_timeout=30"))
    try:
        with pytest.raises(BackendError, match="memcached get"):
            cache.get("a")  # opens this thread's connection, then times out
        started = time.monotonic()
        with pytest.raises(BackendError, match="skipped"):
            cache.get("a")
        assert time.monotonic() - started < 0.1
        cache._dead_until = 0.0  # as after the server answered a write
        with pytest.raises(BackendError, match="memcached get"):
            cache.get("b")  # a new connection, failing in time again
    finally:
        cache.close()
