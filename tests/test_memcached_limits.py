"""memcached at its limits: hit counters of keys near 250 bytes, host names the socket layer cannot
look up, and a value over a server's own item size limit (``-I``), against real servers."""

from __future__ import annotations

import getpass
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dal
from dal.backends.base import HIT_SUFFIX
from dal.backends.memcached import Memcached, MemcachedCache, ReplicatedCache, wire_key
from dal.backends.memcached.keys import KEY_LIMIT
from dal.backends.url import parse_url
from dal.exceptions import BackendError, ConfigurationError
from dal.testing import servers as testing_servers
from dal.testing.servers import RunningServer, start_memcached

pytestmark = pytest.mark.memcached

#: a plain key's wire form is itself: 244 and 250 bytes bracket the range whose counter key
#: ``<key>/#hits`` was over 250 bytes (245 to 250), 300 is hashed
LENGTHS = (244, 245, 247, 250, 300)


@pytest.fixture
def second_server(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_memcached(tmp_path / "second")
    yield server
    server.stop()


@pytest.mark.parametrize("servers", [1, 2])
def test_counted_hits_of_keys_up_to_and_over_250_bytes_keep_the_connection_and_add_up(
        memcached_server: Any, second_server: RunningServer, namespace: str, servers: int) -> None:
    hosts = f"{memcached_server.host}:{memcached_server.port}"
    if servers == 2:
        hosts += f",{second_server.host}:{second_server.port}"
    cache = Memcached.from_url(parse_url(f"memcached://{hosts}?hits=1&timeout=5"))
    assert isinstance(cache, MemcachedCache)
    keys = [f"{namespace}/" + "k" * (length - len(namespace) - 1) for length in LENGTHS]
    assert [len(wire_key(key)) for key in keys[:-1]] == list(LENGTHS[:-1])
    assert all(len(wire_key(key + HIT_SUFFIX)) <= KEY_LIMIT for key in keys)  # the counters
    for key in keys:
        assert cache.set(key, b"v", 60)
    for _ in range(2):
        for key in keys:  # one hit each, then a read of another key on the same connection
            assert cache.get(key) == b"v"
            assert cache.get(f"{namespace}/short") is None
    assert cache.get_many(keys) == dict.fromkeys(keys, b"v")  # a third hit of each
    # counted where they are read: every key, the hashed one too, 3 hits
    assert cache.hit_counts(keys) == dict.fromkeys(keys, 3)
    # a server before 1.6.9 is walked by its LRUs, where an item just fetched may be moving between
    # them and go unlisted for about a second (docs/caching.md): the listing is asked again, 5 s at most
    deadline = time.monotonic() + 5
    listed = cache.list_entries(namespace)
    while len(listed) < len(keys) and time.monotonic() < deadline:
        time.sleep(0.2)
        listed = cache.list_entries(namespace)
    assert not [entry for entry in listed if entry.key.endswith(HIT_SUFFIX)]  # counters are no entries
    assert sorted(entry.hits for entry in listed if not entry.hashed) == [3] * (len(keys) - 1)
    assert [entry.hashed for entry in listed].count(True) == 1  # the 300-byte key, its counter not listed
    cache.close()


@pytest.mark.parametrize("host", ["cache..example", "x" * 64 + ".example", ".example"])
def test_a_host_name_the_socket_layer_cannot_look_up_is_refused_at_configure(
        memcached_server: Any, tmp_path: Path, host: str) -> None:
    live = f"{memcached_server.host}:{memcached_server.port}"
    for url in (f"memcached://{host}:11211", f"memcached://{live},{host}:11211",
                f"memcached://{live},{host}:11211,127.0.0.1:1?replicas=2"):
        with pytest.raises(ConfigurationError, match=r"not a valid host name.*label"):
            Memcached.from_url(parse_url(url))
    with pytest.raises(ConfigurationError, match="not a valid host name"):
        dal.configure(f"sqlite:///{tmp_path}/d.sqlite3", f"memcached://{host}:11211", namespace="badhost")
    # names of in-process stores are no host names: left as they were
    dal.configure("memory://", f"memory://{host}", namespace="badhost")


def test_a_host_name_the_socket_layer_refuses_is_a_backend_error_never_a_unicode_error(
        memcached_server: Any) -> None:
    """Opened past the URL parser (a direct constructor): every call fails typed, as a dead server."""
    bad, live = ("cache..example", 11211), (memcached_server.host, memcached_server.port)
    url = parse_url(f"memcached://{live[0]}:{live[1]}")
    single = MemcachedCache(url, [bad], timeout=1, connect_timeout=1, dead_timeout=0.01)
    for call in (lambda: single.get("k"), lambda: single.set("k", b"v", 5), lambda: single.get_many(["k"]),
                 lambda: single.list_entries("k")):
        with pytest.raises(BackendError):
            call()
    assert single.delete_many(["k"]) == ["k"]
    several = MemcachedCache(url, [bad, live], timeout=1, connect_timeout=1, dead_timeout=0.01)
    keys = [f"k{i}" for i in range(20)]  # some on each server
    failed = 0
    for key in keys:
        try:
            several.set(key, b"v", 5)
        except BackendError:
            failed += 1
    assert 0 < failed < len(keys)
    replicated = ReplicatedCache(url, [bad, live], replicas=2, timeout=1, connect_timeout=1,
                                 dead_timeout=0.01)
    assert replicated.get("k") is None  # too few replies: a miss
    for cache in (single, several, replicated):
        cache.close()


def _small_item_server(workdir: Path) -> RunningServer:
    """A memcached whose item size limit is 64 KiB, not the default 1 MiB."""
    binary = testing_servers.find_binary("memcached", "DAL_MEMCACHED_BIN", "memcached")

    def command(port: int) -> list[str]:
        return [binary, "-u", getpass.getuser(), "-l", testing_servers.LOOPBACK, "-p", str(port), "-U", "0",
                "-m", "64", "-I", "64k", "-o", "slab_chunk_max=32768"]

    return testing_servers._start("memcached", workdir, command, testing_servers._memcached_ready, None)


def test_an_add_over_the_servers_item_limit_is_refused_as_a_set_is(tmp_path: Path) -> None:
    started = [_small_item_server(tmp_path / f"s{index}") for index in range(3)]
    try:
        hosts = ",".join(f"{server.host}:{server.port}" for server in started)
        big = b"x" * 200_000  # under dal's 1 MiB check, over the servers' 64 KiB
        for url in (f"memcached://{hosts.split(',')[0]}", f"memcached://{hosts}",
                    f"memcached://{hosts}?replicas=3"):
            cache = Memcached.from_url(parse_url(url + ("&" if "?" in url else "?") + "timeout=5"))
            failures: list[list[str]] = []
            if isinstance(cache, ReplicatedCache):
                cache.on_failure = failures.append
            assert cache.set("held", b"old", 60)
            assert cache.add("held", big, 60) is False and cache.get("held") == b"old"  # left as it was
            assert cache.add("absent", big, 60) is False and cache.get("absent") is None
            assert cache.set("held", big, 60) is False and cache.get("held") is None  # set: removed
            assert cache.add("absent", b"small", 60) is True  # the servers still answer
            assert failures == []  # a refusal is an answer: no replica counted as failed
            cache.delete_many(["held", "absent"])
            cache.close()
    finally:
        for server in started:
            server.stop()
