"""The Redis stores at the edges of what a server takes: its memory settings, refusals, long
argument lists, TTLs past Redis's clock and keys UTF-8 cannot encode."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from dal import DataObject, Property, configure
from dal.backends import open_persistent, open_volatile
from dal.backends.base import Delete, Evict, Exists, Put, Revision
from dal.backends.redis import RedisCache, RedisStore
from dal.backends.redis.connection import COUNTER, INDEX
from dal.backends.url import parse_url
from dal.exceptions import BackendError, CommitOutcomeUnknownError, ConfigurationError, InvalidValueError
from dal.testing.servers import RunningServer, closed_port


@pytest.fixture
def url(redis_url_each: str) -> str:
    return redis_url_each


def _admin(server: RunningServer) -> Any:
    return redis.Redis(port=server.port)


# --- a server that may evict ---------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-random", "allkeys-lfu"])
def test_a_server_that_may_evict_keys_is_refused_as_the_durable_store(
        own_redis: RunningServer, policy: str) -> None:
    """allkeys-* would evict committed documents, the key index and the counter."""
    admin = _admin(own_redis)
    admin.config_set("maxmemory", 64 * 1024 * 1024)
    admin.config_set("maxmemory-policy", policy)
    for first in ("identity", "commit"):
        store = RedisStore.from_url(parse_url(own_redis.url))
        with pytest.raises(ConfigurationError, match=rf"{policy}.*maxmemory-policy noeviction.*own"):
            store.identity() if first == "identity" else store.commit([], [Put("k", b"v")])
    assert not admin.exists(COUNTER), "refused before the first commit wrote anything"
    with pytest.raises(ConfigurationError, match=rf"{policy}.*maxmemory-policy noeviction"):
        configure(own_redis.url, "memory://", namespace=f"evict{uuid.uuid4().hex[:8]}")  # at once
    cache = RedisCache.from_url(parse_url(own_redis.url))
    assert cache.set("k", b"v", 0) and cache.get("k") == b"v", "the cache may be evicted: it is a cache"


@pytest.mark.redis
@pytest.mark.parametrize(("limit", "policy"), [(64 * 1024 * 1024, "noeviction"), (0, "allkeys-lru"),
                                               (64 * 1024 * 1024, "volatile-lru"),
                                               (64 * 1024 * 1024, "volatile-ttl")])
def test_a_server_that_evicts_no_data_is_taken(own_redis: RunningServer, limit: int, policy: str) -> None:
    admin = _admin(own_redis)
    admin.config_set("maxmemory", limit)
    admin.config_set("maxmemory-policy", policy)
    store = RedisStore.from_url(parse_url(own_redis.url))
    assert store.identity() and store.commit([], [Put("k", b"v")]).ok


# --- refusals: nothing written ----------------------------------------------------------------


class _Gizmo(DataObject, hybrid_name="redislimitgizmo"):
    __properties = [Property("name", str)]


@pytest.mark.redis
def test_a_save_over_maxmemory_fails_at_once_as_written_nothing(own_redis: RunningServer) -> None:
    """Redis refuses a script's first write over maxmemory (noeviction), and lets it finish once it has
    written: so an OOM reply means nothing was written, and the save says so at once, not after the
    timeout as a commit that may have been applied."""
    context = configure(f"{own_redis.url}?timeout=3", "memory://", namespace="oom")
    _Gizmo(data={"name": "first"}).save()
    admin = _admin(own_redis)
    revision = admin.get(COUNTER)
    admin.config_set("maxmemory", 1)  # below what the server uses: every write that grows it is refused
    try:
        began = time.monotonic()
        with pytest.raises(BackendError, match=r"maxmemory.*Nothing was written: retrying is safe") as caught:
            _Gizmo(data={"name": "second"}).save()
        assert time.monotonic() - began < 1.5
        assert not isinstance(caught.value, CommitOutcomeUnknownError)
        assert context.journal is not None and context.journal.unknown == {}
        with pytest.raises(BackendError) as direct:
            context.persistent.commit([], [Put("oom/k", b"v")])
        assert getattr(direct.value, "nothing_written", False)
    finally:
        admin.config_set("maxmemory", 0)
    assert admin.get(COUNTER) == revision, "no commit was applied"
    assert len(context.persistent.scan("oom/o/")) == 1, "the first gizmo alone"


@pytest.mark.redis
def test_a_read_only_replica_refuses_the_commit_before_it_writes(own_redis: RunningServer) -> None:
    store = RedisStore.from_url(parse_url(own_redis.url))
    assert store.commit([], [Put("k", b"v")]).ok
    admin = _admin(own_redis)
    admin.execute_command("REPLICAOF", "127.0.0.1", closed_port())  # a primary it never reaches
    try:
        with pytest.raises(BackendError, match="read-only replica") as caught:
            store.commit([], [Put("k", b"w")])
        assert getattr(caught.value, "nothing_written", False)
    finally:
        admin.execute_command("REPLICAOF", "NO", "ONE")
    assert store.get("k") is not None and store.get("k").value == b"v"  # type: ignore[union-attr]


@pytest.mark.redis
def test_a_script_failing_after_its_first_write_stays_uncertain(own_redis: RunningServer) -> None:
    """Redis does not roll a script back: an error after the counter's INCR left writes behind."""
    store = RedisStore.from_url(parse_url(own_redis.url))
    admin = _admin(own_redis)
    admin.set(INDEX, b"not a sorted set")  # the ZADD after the INCR and the SET fails
    with pytest.raises(BackendError, match="WRONGTYPE") as caught:
        store.commit([Revision("k", 0)], [Put("k", b"v")])
    assert not getattr(caught.value, "nothing_written", False)
    assert admin.get(COUNTER) == b"1", "the INCR happened"


@pytest.mark.redis
def test_a_busy_server_refuses_the_commit_before_it_runs(own_redis: RunningServer) -> None:
    admin = _admin(own_redis)
    admin.config_set("busy-reply-threshold", 50)
    store = RedisStore.from_url(parse_url(own_redis.url))
    assert store.commit([], [Put("k", b"v")]).ok
    spinner = redis.Redis(port=own_redis.port)
    looping = threading.Thread(target=lambda: _swallow(lambda: spinner.execute_command(
        "EVAL", "local i = 0 while true do i = i + 1 end", 0)))
    looping.start()
    time.sleep(0.3)
    try:
        with pytest.raises(BackendError, match="long script") as caught:
            store.commit([], [Put("k", b"w")])
        assert getattr(caught.value, "nothing_written", False)
    finally:
        admin.script_kill()
        looping.join()
    assert store.get("k").value == b"v"  # type: ignore[union-attr]


def _swallow(call: Any) -> None:
    with contextlib.suppress(redis.RedisError):  # killed: what the test wanted
        call()


# --- long argument lists, long TTLs, unencodable keys ------------------------------------------


def test_counted_hits_of_many_keys_are_read_in_one_call(url: str) -> None:
    """Lua's unpack takes a few thousand values: the counting script reads its keys in pages."""
    counted: Any = open_volatile(f"{url}?hits=1")
    keys = [f"many/{index}" for index in range(10_000)]
    for key in keys[::1000]:
        assert counted.set(key, key.encode(), 60)
    found = counted.get_many(keys)
    assert found == {key: key.encode() for key in keys[::1000]}
    listed = {entry.key: entry.hits for entry in counted.list_entries("many/")}
    assert listed == dict.fromkeys(keys[::1000], 1)
    counted.delete_many(keys[::1000])


def test_a_commit_of_many_writes_and_evicts_is_sent_in_pages(url: str) -> None:
    """Lua's unpack takes a few thousand values: the commit script deletes the evicted cache keys a
    page at a time, and a commit of ten thousand writes and checks applies whole."""
    store = open_persistent(url)
    prefix = f"bulk{uuid.uuid4().hex[:8]}/"
    keys = [f"{prefix}{index:05d}" for index in range(10_000)]
    evicts = [Evict(f"{prefix}cached/{index}") for index in range(10_000)]
    assert store.commit([Revision(key, 0) for key in keys], [*(Put(key, b"v") for key in keys), *evicts]).ok
    assert [key for key, _ in store.scan(prefix)] == keys
    assert store.commit([Exists(key) for key in keys], [*(Delete(key) for key in keys), *evicts]).ok
    assert store.scan(prefix) == [] and store.scan_keys([prefix]) == {prefix: []}


@pytest.mark.parametrize("ttl", [float("inf"), 1e16, 1e300])
def test_a_ttl_past_redis_clock_never_expires(url: str, ttl: float) -> None:
    cache = open_volatile(url)
    assert cache.set("long/set", b"v", ttl) and cache.get("long/set") == b"v"
    assert cache.add("long/add", b"v", ttl) and cache.get("long/add") == b"v"
    _, token = cache.gets("long/set")
    assert cache.cas("long/set", b"w", token, ttl) and cache.get("long/set") == b"w"
    if url.startswith("redis:"):
        parsed = parse_url(url)
        raw = redis.Redis(port=parsed.hosts[0][1] or 6379, db=int(parsed.path.strip("/")))
        assert raw.pttl("dal:c:long/set") == -1 and raw.pttl("dal:c:long/add") == -1
    cache.delete_many(["long/set", "long/add"])


def test_a_lease_past_redis_clock_is_taken(url: str) -> None:
    store = open_persistent(url)
    lease = store.acquire_leadership(f"role-{uuid.uuid4().hex[:6]}", "me", 1e300)
    assert lease.acquired and store.renew_leadership(lease)
    store.release_leadership(lease)


def test_a_key_utf8_cannot_encode_is_refused_by_name(url: str) -> None:
    store = open_persistent(url)
    cache = open_volatile(url)
    calls: list[Callable[[], object]] = [lambda: store.get("a\ud800"), lambda: store.get_many(["a\ud800"]),
             lambda: store.commit([], [Put("a\ud800", b"v")]), lambda: store.scan("a\ud800"),
             lambda: store.scan("a", start_after="a\ud800"), lambda: store.scan_keys(["a\ud800"]),
             lambda: cache.get("a\ud800"), lambda: cache.set("a\ud800", b"v", 0),
             lambda: cache.get_many(["a\ud800"])]
    for call in calls:
        with pytest.raises(InvalidValueError, match=r"a\\ud800.*lone surrogate"):
            call()
    assert store.commit([], [Put("fine", b"v")]).ok and cache.set("fine", b"v", 0), "connections still serve"
    assert cache.get("fine") == b"v"


@pytest.mark.redis
def test_a_database_the_server_lacks_is_named_with_the_fix(redis_server: RunningServer) -> None:
    with pytest.raises(BackendError, match=r"no database 99 .*databases.*below it"):
        configure(f"{redis_server.url}/99", "memory://", namespace=f"db{uuid.uuid4().hex[:8]}")


def test_a_database_fakeredis_lacks_is_named_with_its_range() -> None:
    """fakeredis has 16 databases and no redis.conf: the refusal names the range, not a setting; as the
    durable store's URL and as the cache's (which was taken, then failed at every call)."""
    for persistent, volatile in [(f"fakeredis://{uuid.uuid4().hex[:8]}/16", "memory://"),
                                 ("memory://", f"fakeredis://{uuid.uuid4().hex[:8]}/16")]:
        with pytest.raises(ConfigurationError, match=r"no database 16 .*from 0 to 15 in fakeredis://"
                           ) as caught:
            configure(persistent, volatile, namespace="db16")
        assert "redis.conf" not in str(caught.value)
