"""A cluster-mode redis-server is refused in either role: dal's scripts and multi-key commands span
slots (a commit's cache evictions, the cache's MGET and invalidations), which cluster mode refuses
even with one node owning every slot, and a node that does not own a key answers MOVED."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dal import configure
from dal.backends import open_persistent, open_volatile
from dal.backends.base import Evict, Put
from dal.backends.redis.limits import mode_refusal
from dal.exceptions import BackendError, ConfigurationError
from dal.testing.fixtures import start_or_skip
from dal.testing.servers import RunningServer, start_redis

pytestmark = pytest.mark.redis

REFUSED = r"cluster mode.*dal needs a standalone redis-server"


@pytest.fixture(scope="module")
def cluster_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A cluster-mode redis-server owning every slot: a whole, healthy cluster of one node (it
    takes a second or two to say so, hence one for the module)."""
    server = start_or_skip("redis", lambda: start_redis(tmp_path_factory.mktemp("cluster"), cluster=True))
    try:
        admin: Any = redis.Redis(port=server.port)
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 10
        while b"cluster_state:ok" not in admin.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "the one-node cluster never became ok"
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


def test_a_cluster_mode_server_is_refused_as_the_durable_store_before_anything_is_written(
        cluster_node: RunningServer) -> None:
    admin: Any = redis.Redis(port=cluster_node.port)
    admin.set("dal:c:x1", b"c")
    admin.set("dal:c:x2", b"c")
    for first in ("identity", "commit", "change_token"):
        store = open_persistent(cluster_node.url)
        with pytest.raises(ConfigurationError, match=REFUSED):
            if first == "identity":
                store.identity()
            elif first == "commit":  # its evictions span slots: the script would fail after its writes
                store.commit([], [Put("k", b"v"), Evict("x1"), Evict("x2")])
            else:
                store.change_token()
    assert admin.keys("{dal}*") == [], "refused before the first commit wrote anything"
    with pytest.raises(ConfigurationError, match=REFUSED):
        configure(cluster_node.url, "memory://", namespace=f"cluster{uuid.uuid4().hex[:8]}")


def test_a_cluster_mode_server_is_refused_as_the_cache_when_opened(
        cluster_node: RunningServer, tmp_path: Path) -> None:
    """Not taken and then failed call by call (every MGET and every invalidation batch refused,
    reported as an outage that never ends): refused at once, in configure()."""
    with pytest.raises(ConfigurationError, match=REFUSED):
        open_volatile(cluster_node.url)
    with pytest.raises(ConfigurationError, match=REFUSED):
        configure(f"sqlite:///{tmp_path}/durable.db", cluster_node.url,
                  namespace=f"cluster{uuid.uuid4().hex[:8]}")


def test_a_cache_opened_while_its_server_did_not_answer_refuses_it_at_its_first_connection(
        cluster_node: RunningServer) -> None:
    """A cache failing is a miss, so one opened while its server was frozen is not refused then: its
    first connection that reaches the server refuses it, saying why, as a failure (a miss)."""
    cluster_node.pause()
    try:
        cache = open_volatile(f"{cluster_node.url}?timeout=0.2")  # no answer: checked later
    finally:
        cluster_node.resume()
    with pytest.raises(BackendError, match=REFUSED):
        cache.get("a")
    with pytest.raises(BackendError, match=REFUSED):
        cache.set("a", b"1", 60)
    assert cache.delete_many(["a", "b"]) == ["a", "b"]


def test_a_standalone_server_and_a_sentinel_are_told_apart() -> None:
    assert mode_refusal("h:1/0", b"# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n") is None
    assert mode_refusal("h:1/0", "redis_version:7.0.15") is None  # no mode said: taken
    sentinel = mode_refusal("h:1/0", b"redis_mode:sentinel\r\n")
    assert sentinel is not None and "point the URL at the primary it monitors" in sentinel
