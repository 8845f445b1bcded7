"""The hit paths of cached reads, written out for speed (issue 16): each must still do what the
general path does, which these tests pin down by the cases where a shortcut would differ."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Iterator

import pytest
from harness import lines_of, periodic_signal, stand_in_server
from hybrids import Kind

from dal.backends.memcached import MemcachedCache
from dal.backends.memcached.multiget import MultiGet
from dal.backends.memcached.text import TextConnection
from dal.backends.memory import MemoryCache
from dal.backends.url import parse_url
from dal.cache.counters import Stats
from dal.cache.leases import LeasedCache
from dal.cache.signing import Signer
from dal.exceptions import BackendError, ConfigurationError, InvalidValueError
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


def test_a_get_from_a_silent_server_fails_in_time(silent_server: tuple[str, int]) -> None:
    connection = TextConnection(silent_server, 0.2, 1.0)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # an OSError: the cache reports it as a BackendError
            connection.get(b"key")
        assert 0.15 < time.monotonic() - started < 2.0
    finally:
        connection.close()


@pytest.fixture
def slow_server() -> Iterator[tuple[tuple[str, int], dict[str, bytes]]]:
    """A memcached stand-in answering every get after 0.3 s with the value it holds when asked."""
    state = {"value": b"v1"}

    def serve(client: socket.socket) -> None:
        with contextlib.suppress(OSError), client:
            for line in lines_of(client):
                key, value = line.split()[1], state["value"]
                time.sleep(0.3)
                client.sendall(b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value))

    with stand_in_server(serve) as address:
        yield address, state


def test_a_periodic_signal_does_not_stretch_the_timeout(silent_server: tuple[str, int]) -> None:
    # a signal whose handler returns makes the interrupted call start again: with the kernel's
    # SO_RCVTIMEO it restarted its full timeout each time, so a signal every 50 ms kept a get
    # against a silent server waiting for ever; the deadline is the connection's own
    timeout = 0.2
    connection = TextConnection(silent_server, timeout, 1.0)
    started = time.monotonic()

    def tick(*_: object) -> None:
        # a watchdog: the signals stop after 2 s, so that a get they stretch fails the assertion
        # below (a get waiting ~2.2 s) instead of waiting for ever
        if time.monotonic() - started > 2.0:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)

    try:
        with periodic_signal(0.05, tick):
            with pytest.raises(TimeoutError):
                connection.get(b"key")
            took = time.monotonic() - started
            # twice the timeout plus 0.2 s of a loaded machine's slack: a timeout stretched even
            # fourfold (0.8 s) fails, as one restarted by a signal would
            assert took < 2 * timeout + 0.2, f"a get with a {timeout} s timeout failed after {took:.2f} s"
    finally:
        connection.close()


class SoftTimeLimit(Exception):
    """What a task runner raises from a signal handler (Celery's soft time limit)."""


def test_a_get_interrupted_by_a_signal_handler_leaves_no_answer_for_the_next(
        slow_server: tuple[tuple[str, int], dict[str, bytes]]) -> None:
    (host, port), state = slow_server
    cache = MemcachedCache.from_url(parse_url(f"memcached://{host}:{port}?timeout=2"))
    try:
        assert cache.get("k") == b"v1"  # opens this thread's connection

        def interrupt(*_: object) -> None:
            # once: a second signal 0.1 s later, were the process descheduled while the first
            # unwinds, would land in the drop of the stream or in the test itself
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            raise SoftTimeLimit()

        with periodic_signal(0.1, interrupt), pytest.raises(SoftTimeLimit):
            cache.get("k")  # its answer (v1) arrives after the handler raised
        state["value"] = b"v2"
        time.sleep(0.4)
        # the interrupted get's answer must not be read as this one's: the stream was dropped
        assert cache.get("k") == b"v2"
        assert not cache._dead_until  # an interruption is no failure of the server
    finally:
        cache.close()


def test_a_quorum_read_interrupted_by_a_signal_handler_leaves_no_answer_for_the_next(
        slow_server: tuple[tuple[str, int], dict[str, bytes]]) -> None:
    address, state = slow_server
    reads = MultiGet({"m1": address}, timeout=2.0, connect_timeout=1.0, dead_timeout=30.0)
    try:
        assert reads.get_many({"m1": [b"k"]}) == {"m1": {b"k": b"v1"}}

        def interrupt(*_: object) -> None:
            # once: a second signal 0.1 s later, were the process descheduled while the first
            # unwinds, would land in the drop of the stream or in the test itself
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            raise SoftTimeLimit()

        with periodic_signal(0.1, interrupt), pytest.raises(SoftTimeLimit):
            reads.get_many({"m1": [b"k"]})
        state["value"] = b"v2"
        time.sleep(0.4)
        assert reads.get_many({"m1": [b"k"]}) == {"m1": {b"k": b"v2"}}
        assert not reads._dead_until.get("m1")  # an interruption is no failure of the server
    finally:
        reads.close()


@pytest.mark.parametrize("timeout", ["inf", "1e300", "3601", "0", "-1", "nan"])
def test_a_timeout_option_out_of_bounds_is_refused(timeout: str) -> None:
    with pytest.raises(ConfigurationError, match="at most 3600"):
        MemcachedCache.from_url(parse_url(f"memcached://127.0.0.1:11211?timeout={timeout}"))


def test_a_silent_memcached_fails_a_get_in_time_then_is_skipped(silent_server: tuple[str, int]) -> None:
    host, port = silent_server
    cache = MemcachedCache.from_url(parse_url(f"memcached://{host}:{port}?timeout=0.5&dead_timeout=30"))
    try:
        with pytest.raises(BackendError, match="memcached get"):
            cache.get("a")  # opens this thread's connection, then times out
        started = time.monotonic()
        with pytest.raises(BackendError, match="skipped"):
            cache.get("a")
        # less than one timeout: it never waited on the server (a tighter bound timed the host)
        assert time.monotonic() - started < 0.5
        cache._dead_until = 0.0  # as after the server answered a write
        with pytest.raises(BackendError, match="memcached get"):
            cache.get("b")  # a new connection, failing in time again
    finally:
        cache.close()
