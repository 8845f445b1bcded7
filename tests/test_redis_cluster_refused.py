"""A cluster-mode redis-server is refused in either role: dal's scripts and multi-key commands span
slots (a commit's cache evictions, the cache's MGET and invalidations), which cluster mode refuses
even with one node owning every slot, and a node that does not own a key answers MOVED."""

from __future__ import annotations

import socket
import subprocess
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
from dal.testing.servers import RunningServer, find_binary, free_port, start_redis

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


def _refused_in_either_role(url: str, tmp_path: Path, pattern: str) -> None:
    with pytest.raises(ConfigurationError, match=pattern):
        open_volatile(url)
    with pytest.raises(ConfigurationError, match=pattern):
        configure(f"sqlite:///{tmp_path}/durable.db", url, namespace=f"mode{uuid.uuid4().hex[:8]}")
    with pytest.raises(ConfigurationError, match=pattern):
        configure(url, "memory://", namespace=f"mode{uuid.uuid4().hex[:8]}")
    for first in ("identity", "commit", "change_token"):
        store = open_persistent(url)
        with pytest.raises(ConfigurationError, match=pattern):
            if first == "identity":
                store.identity()
            elif first == "commit":
                store.commit([], [Put("k", b"v")])
            else:
                store.change_token()


def test_a_cluster_mode_server_named_with_another_database_is_refused_in_either_role(
        cluster_node: RunningServer, tmp_path: Path) -> None:
    """Cluster mode refuses the SELECT of a database other than 0 while the connection is set up,
    before INFO is read: the error reply does not hide the mode (the cache was taken and read
    around forever, the durable store failed with a plain BackendError)."""
    url = f"{cluster_node.url}/1"
    _refused_in_either_role(url, tmp_path, REFUSED)
    cluster_node.pause()
    try:
        cache = open_volatile(f"{url}?timeout=0.2")  # no answer: checked by its first connection
    finally:
        cluster_node.resume()
    with pytest.raises(BackendError, match=REFUSED):
        cache.get("a")


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Sentinel (monitoring nothing): the URL of it."""
    binary = start_or_skip("redis", lambda: find_binary("redis-server", "DAL_REDIS_BIN", "redis-server"))
    workdir = tmp_path_factory.mktemp("sentinel")
    port = free_port()
    (workdir / "sentinel.conf").write_text(f"port {port}\nbind 127.0.0.1\ndir {workdir}\n")
    with (workdir / "log").open("wb") as log:
        process = subprocess.Popen([binary, str(workdir / "sentinel.conf"), "--sentinel"], stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the Sentinel did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


@pytest.mark.parametrize("db", [0, 1])
def test_a_sentinel_is_refused_in_either_role_whatever_the_database(
        sentinel: str, db: int, tmp_path: Path) -> None:
    """A Sentinel has no SELECT: named with database 1, the connection's setup fails before INFO."""
    _refused_in_either_role(f"{sentinel}/{db}", tmp_path, r"sentinel mode.*point the URL at the primary")


def test_opening_a_cache_on_a_frozen_server_waits_a_tenth_of_a_second_not_its_timeout(
        own_redis: RunningServer, tmp_path: Path) -> None:
    """The check made when the cache is opened waits 0.1 s for each answer, whatever the cache's
    timeout: a frozen cache server holds configure() up that long, then is checked by its first
    connection (a cache failing is a miss: nothing raises)."""
    own_redis.pause()
    try:
        started = time.monotonic()
        open_volatile(f"{own_redis.url}?timeout=2")
        configure(f"sqlite:///{tmp_path}/durable.db", f"{own_redis.url}?timeout=2",
                  namespace=f"frozen{uuid.uuid4().hex[:8]}")
        assert time.monotonic() - started < 1, "waited for the cache's timeout (2 s)"
    finally:
        own_redis.resume()


def test_the_check_made_when_a_cache_is_opened_leaves_no_connection_open(own_redis: RunningServer) -> None:
    admin: Any = redis.Redis(port=own_redis.port)
    cache = open_volatile(own_redis.url)
    assert len(admin.client_list()) == 1, "the connection of the check is closed"
    assert cache.set("a", b"1", 60) and cache.get("a") == b"1"
