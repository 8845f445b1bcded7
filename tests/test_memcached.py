"""memcached-only behaviour: the hit path's own get connection, against a real server."""

from __future__ import annotations

import os
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
