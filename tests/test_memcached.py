"""memcached-only behaviour: the hit path's own get connection, against a real server."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any

import pytest

from dal.backends import open_volatile

pytestmark = pytest.mark.memcached


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 200_000, 900_000])
def test_get_returns_values_of_every_size_exactly(memcached_server: Any, namespace: str, size: int) -> None:
    cache = open_volatile(memcached_server.url)
    value = os.urandom(size)
    assert cache.set(f"{namespace}/v{size}", value, 60)
    assert cache.get(f"{namespace}/v{size}") == value


def test_get_of_a_value_that_looks_like_the_protocol(memcached_server: Any, namespace: str) -> None:
    cache = open_volatile(memcached_server.url)
    tricky = b"END\r\nVALUE x 0 3\r\nabc\r\nEND\r\n"
    assert cache.set(f"{namespace}/tricky", tricky, 60)
    for _ in range(3):  # the connection stays in step across answers
        assert cache.get(f"{namespace}/tricky") == tricky
        assert cache.get(f"{namespace}/absent") is None


def test_get_after_fork_uses_the_childs_own_connection(memcached_server: Any, namespace: str) -> None:
    cache = open_volatile(memcached_server.url)
    assert cache.set(f"{namespace}/k", b"parent", 60)
    assert cache.get(f"{namespace}/k") == b"parent"  # the parent now holds a get connection
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a fresh client, not the parent's socket
        child = open_volatile(memcached_server.url)
        ok = child is not cache and child.get(f"{namespace}/k") == b"parent"
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    assert cache.get(f"{namespace}/k") == b"parent"


def test_a_dead_server_keeps_its_keys_instead_of_moving_them(tmp_path: Any) -> None:
    """Its keys must fail (a miss), not move to the live server, where an invalidation sent
    meanwhile would leave the returning server with stale entries."""
    from dal.backends.memcached import MemcachedCache
    from dal.backends.url import parse_url
    from dal.exceptions import BackendError
    from dal.testing.servers import start_memcached

    first, second = start_memcached(tmp_path / "a"), start_memcached(tmp_path / "b")
    try:
        # a stopped server refuses at once: the timeout only bounds the live one, which a loaded
        # host can hold up past a fraction of a second (its keys would then count as failed)
        url = f"memcached://127.0.0.1:{first.port},127.0.0.1:{second.port}?dead_timeout=30&timeout=5"
        cache = MemcachedCache.from_url(parse_url(url))
        keys = [f"k{i}" for i in range(40)]
        for key in keys:
            assert cache.set(key, key.encode(), 0)
        first.stop()
        failed, served = [], []
        for key in keys:
            try:
                value = cache.get(key)
            except BackendError:
                failed.append(key)
                continue
            served.append(key)
            assert value == key.encode()
        assert failed and served, "both servers should own some of 40 keys"
        for key in failed:  # still failing: not quietly re-routed to the live server
            with pytest.raises(BackendError):
                cache.delete(key)
        cache.close()
    finally:
        first.stop()
        second.stop()


class _MalformedServer:
    """A server that answers every ``get`` with a header whose length is not a number."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            buffer = b""
            while True:
                try:
                    chunk = connection.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    key = line.split(b" ")[1] if line.startswith(b"get ") else b"x"
                    connection.sendall(self.reply.replace(b"KEY", key))

    def close(self) -> None:
        # close() alone does not wake the thread blocked in accept(): it would outlive the test,
        # listening, with its fd number reused by the next socket; shutdown() wakes it (on Linux)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)


@pytest.mark.parametrize("reply", [b"VALUE KEY 0 abc\r\nabc\r\nEND\r\n", b"VALUE KEY 0 -3\r\nabc\r\nEND\r\n",
                                   b"VALUE KEY 0 \xff\r\nabc\r\nEND\r\n"])
def test_a_malformed_reply_is_a_miss_not_a_failed_read(reply: bytes) -> None:
    from dal.backends.memcached import MemcachedCache
    from dal.backends.url import parse_url
    from dal.cache.leases import LeasedCache, Signer, Stats
    from dal.exceptions import BackendError

    server = _MalformedServer(reply)
    try:
        cache = MemcachedCache.from_url(parse_url(f"memcached://127.0.0.1:{server.port}?dead_timeout=0.01"))
        with pytest.raises(BackendError, match="memcached get on"):
            cache.get("k")
        time.sleep(0.02)
        with pytest.raises(BackendError, match="memcached get_many on"):
            cache.get_many(["k", "j"])
        time.sleep(0.02)
        stats = Stats()
        leased = LeasedCache(cache, Signer(None), stats)
        assert leased.get_many(["k", "j"]) == {}  # counted as misses, never raised
        assert stats["misses"] == 2 and stats["errors"] == 1
        time.sleep(0.02)
        assert leased.fetch("k", lambda: b"loaded", 60) == b"loaded"
        cache.close()
    finally:
        server.close()


def test_an_infinite_ttl_never_expires_and_a_nan_one_is_expired_at_once(memcached_server: Any,
                                                                        namespace: str) -> None:
    from dal.backends.memcached import expiry
    from dal.backends.redis.cache import EXPIRED, milliseconds

    assert expiry(float("inf")) == 0  # as a TTL past 2038 is: 0 is memcached's "never"
    assert expiry(float("-inf")) == expiry(float("nan")) == -1  # stored expired, as a negative TTL
    assert milliseconds(float("nan")) == EXPIRED  # the Redis backend's meaning of NaN, the same
    cache = open_volatile(memcached_server.url)
    key = f"{namespace}infinite"
    assert cache.set(key, b"kept", float("inf"))
    assert cache.get(key) == b"kept"
    assert cache.set(key, b"gone", float("nan"))  # replaces, and expires at once
    assert cache.get(key) is None
