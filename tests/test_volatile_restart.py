"""A cas token across a server restart, and memcached's listed expiry against its clock.

memcached numbers its writes (cas uniques) from 1 again when it restarts, so a token read before a
restart could match an entry written after it: a fill that read the durable store before the
restart would replace another process's lease with its stale value. Each store here runs the
restart contract (:class:`~dal.testing.conformance.volatile.VolatileRestartContract`) on servers of
its own.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dal.backends.base import VolatileStore
from dal.backends.memcached import Memcached, MemcachedCache, dumps
from dal.backends.redis.cache import RedisCache
from dal.backends.url import parse_url
from dal.testing.conformance.volatile import VolatileRestartContract
from dal.testing.fixtures import memcached_servers, start_or_skip
from dal.testing.servers import RunningServer, start_memcached, start_redis

#: a server that failed is skipped this long: the contract calls the restarted one until it answers
OPTIONS = "?timeout=2&dead_timeout=0.1"


def _restarter(servers: list[RunningServer], start: Callable[..., RunningServer]) -> Callable[[], None]:
    """Return a callable that stops every server of ``servers`` and starts it again on its port (the
    list then holds the new ones, for the fixture to stop)."""
    def restart() -> None:
        for index, server in enumerate(servers):
            server.stop()  # waits until the process is gone, so the new one can take its port
            servers[index] = start(server.workdir, port=server.port)
    return restart


class _Restarted(VolatileRestartContract):
    @pytest.fixture
    def prefix(self) -> str:
        return f"r{uuid.uuid4().hex[:12]}/"


@pytest.mark.memcached
class TestMemcachedRestart(_Restarted):
    #: memcached servers the store is given
    count = 1

    @pytest.fixture
    def servers(self, tmp_path: Path) -> Iterator[list[RunningServer]]:
        with memcached_servers(tmp_path, self.count) as started:
            servers = list(started)
            yield servers
            for server in servers:
                server.stop()

    @pytest.fixture
    def store(self, servers: list[RunningServer]) -> VolatileStore:
        return Memcached.from_url(parse_url(f"memcached://127.0.0.1:{servers[0].port}{OPTIONS}"))

    @pytest.fixture
    def restart(self, servers: list[RunningServer]) -> Callable[[], None]:
        return _restarter(servers, start_memcached)


@pytest.mark.memcached
class TestReplicatedMemcachedRestart(TestMemcachedRestart):
    count = 3

    @pytest.fixture
    def store(self, servers: list[RunningServer]) -> VolatileStore:
        hosts = ",".join(f"127.0.0.1:{server.port}" for server in servers)
        return Memcached.from_url(parse_url(f"memcached://{hosts}{OPTIONS}&replicas=3"))


@pytest.mark.redis
class TestRedisRestart(_Restarted):
    @pytest.fixture
    def servers(self, tmp_path: Path) -> Iterator[list[RunningServer]]:
        servers = [start_or_skip("redis", lambda: start_redis(tmp_path / "redis"))]
        yield servers
        for server in servers:
            server.stop()

    @pytest.fixture
    def store(self, servers: list[RunningServer]) -> VolatileStore:
        return RedisCache.from_url(parse_url(servers[0].url))

    @pytest.fixture
    def restart(self, servers: list[RunningServer]) -> Callable[[], None]:
        return _restarter(servers, start_redis)


@pytest.mark.memcached
def test_a_cas_takes_its_token_from_any_thread_and_concurrent_fills_are_never_refused(
        memcached_server: RunningServer) -> None:
    """A token names the connection its gets used, not a thread: a cas from another thread (a
    replicated cache's pool threads) stores; and a cas is refused only after that connection
    reconnected, never because other threads hold other connections."""
    store = Memcached.from_url(parse_url(f"{memcached_server.url}{OPTIONS}"))
    prefix = f"t{uuid.uuid4().hex[:12]}/"
    assert store.set(f"{prefix}k", b"v1", 60)
    _, token = store.gets(f"{prefix}k")
    with ThreadPoolExecutor(1) as other:
        assert other.submit(store.cas, f"{prefix}k", b"v2", token, 60).result() is True
    assert store.get(f"{prefix}k") == b"v2"

    def fills(worker: int) -> list[bool]:
        stored = []
        for n in range(40):
            key = f"{prefix}{worker}/{n}"
            assert store.add(key, b"lease", 60)
            _, lease = store.gets(key)
            stored.append(store.cas(key, b"value", lease, 60))
        return stored

    with ThreadPoolExecutor(8) as pool:
        assert all(all(stored) for stored in pool.map(fills, range(8)))
    _, token = store.gets(f"{prefix}k")
    store.close()  # every connection closed: the next one is another, which the token does not name
    assert store.cas(f"{prefix}k", b"v3", token, 60) is False
    assert store.get(f"{prefix}k") == b"v2"


@pytest.mark.memcached
def test_a_cas_token_read_before_a_fork_never_stores_in_the_child(memcached_server: RunningServer) -> None:
    """The child's connection of a token read before fork() is the parent's socket: a cas there would
    interleave with the parent's commands (each reading the other's answer). Refused, nothing sent."""
    store = Memcached.from_url(parse_url(f"{memcached_server.url}{OPTIONS}"))
    key = f"t{uuid.uuid4().hex[:12]}/k"
    assert store.set(key, b"v1", 60)
    _, token = store.gets(key)
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if the cas was refused without a word on the wire
        os._exit(0 if store.cas(key, b"child", token, 60) is False else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's cas with the parent's token was sent"
    assert store.get(key) == b"v1"
    assert store.cas(key, b"parent", token, 60) is True  # the parent's connection, still in step
    store.close()


def _play(listener: socket.socket, server_now: int, exp: int) -> None:
    """Answer one connection as a memcached whose clock reads ``server_now``: its metadump lists one
    item expiring at ``exp`` (the server's time), its stats say the time."""
    connection, _ = listener.accept()
    with connection, connection.makefile("rb") as requests:
        for request in requests:
            if request.startswith(b"lru_crawler metadump"):
                connection.sendall(f"key=k exp={exp} la={server_now} cas=1 fetch=no cls=1 size=70\r\n"
                                   "END\r\n".encode())
            elif request.startswith(b"stats"):
                connection.sendall(f"STAT pid 1\r\nSTAT time {server_now}\r\nEND\r\n".encode())


def test_a_listing_reads_expiry_on_the_servers_clock() -> None:
    """A server whose clock is 3 s behind this host's still serves an item for 2 s whose ``exp``
    this host's clock has passed: it is listed, expiring when the server drops it, or at most 2 s
    later; before, it was left out as expired."""
    server_now = int(time.time()) - 3
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=_play, args=(listener, server_now, server_now + 2))
        server.start()
        listed = dumps.metadump(listener.getsockname(), 2.0, lambda key: True)
        server.join()
    assert [entry.key for entry in listed] == ["k"]
    expires_at = listed[0].expires_at
    assert expires_at is not None
    assert time.time() + 1 <= expires_at <= time.time() + 4.1


@pytest.mark.memcached
def test_an_entry_is_listed_until_memcached_stops_serving_it(memcached_server: RunningServer) -> None:
    """``dal cache ls`` never leaves out an entry memcached still serves, nor says it expired:
    its listed expiry is no earlier than the moment reads stop finding it, and under 2 s later."""
    store = MemcachedCache.from_url(parse_url(memcached_server.url))
    prefix = f"l{uuid.uuid4().hex[:12]}/"
    for n, ttl in enumerate((1, 1.5, 2)):
        time.sleep(0.3 * n)  # at other phases of memcached's clock
        key = f"{prefix}{n}"
        assert store.set(key, b"v", ttl)
        expires_at = [entry.expires_at for entry in store.list_entries(key)]
        assert len(expires_at) == 1 and expires_at[0] is not None
        while store.get(key) is not None:
            now = time.time()
            assert now <= expires_at[0], (ttl, expires_at[0] - now)
            assert [entry.key for entry in store.list_entries(key)] == [key], ttl
            time.sleep(0.02)
        assert expires_at[0] - time.time() < 2.1
