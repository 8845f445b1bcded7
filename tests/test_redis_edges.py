"""The Redis backends at what a full server and other clients leave them: a cache at its maxmemory,
a cache URL the server refuses, values another client wrote without dal's stamp, a cas token that
``gets`` never returned."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from dal import DataObject, Dynamic, Mirror, Property, configure
from dal.backends import open_persistent, open_volatile
from dal.backends.base import CacheFullError, Delete, Exists, PrefixEmpty, PrefixUnchanged, Put, Revision
from dal.backends.redis.connection import SettingRefusedError
from dal.exceptions import BackendError
from dal.testing.servers import RunningServer, closed_port


@pytest.fixture
def url(redis_url_each: str) -> str:
    return redis_url_each


def _fill_up(server: RunningServer) -> Any:
    """Set the server's maxmemory just below what it uses (noeviction): every write that grows it is
    refused with OOM, while reads and deletes still answer. Returns an admin client to lift it."""
    admin = redis.Redis(port=server.port)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) - 1000)
    return admin


# --- a cache at its maxmemory -------------------------------------------------------------------


@pytest.mark.redis
def test_a_full_cache_refuses_writes_as_misses_and_still_answers_counted_reads(
        own_redis: RunningServer) -> None:
    """At maxmemory (noeviction) set and cas store nothing and return false, as over the size limit,
    removing the old value; add raises CacheFullError (a false add would read as a lock another caller
    holds) and leaves it; a read counting hits (``?hits=1``), whose counter is its first write, still
    answers what is there."""
    cache = open_volatile(f"{own_redis.url}/1")
    counted = open_volatile(f"{own_redis.url}/1?hits=1")
    assert cache.set("k", b"v", 60) and cache.set("k2", b"v2", 60) and cache.set("k3", b"v3", 60)
    _, token = cache.gets("k2")
    admin = _fill_up(own_redis)
    try:
        assert counted.get("k") == b"v" and counted.get_many(["k", "k3", "none"]) == {"k": b"v", "k3": b"v3"}
        for key in ("new", "k"):  # refused for the memory limit, not taken by another: not a false add
            with pytest.raises(CacheFullError, match="is at its maxmemory"):
                cache.add(key, b"x", 60)
        assert cache.get("new") is None and cache.get("k") == b"v", "add replaces nothing"
        assert cache.cas("k2", b"x" * 100, token, 60) is False and cache.get("k2") is None
        assert cache.set("k3", b"x" * 100, 60) is False and cache.get("k3") is None
    finally:
        admin.config_set("maxmemory", 0)
    assert cache.add("new", b"x", 60) and counted.get("new") == b"x", "writes go through again"


class _Full(DataObject, hybrid_name="redisedgesfull"):
    __properties = [Property("name", str)]


@pytest.mark.redis
@pytest.mark.parametrize("query", ["", "?hits=1"])
def test_a_full_cache_keeps_serving_what_it_holds_while_fills_are_refused(
        own_redis: RunningServer, query: str) -> None:
    """One refused fill (its lease's add) or counted read must not make the process distrust the
    server: the cached object is served from it throughout, the others are read around it."""
    context = configure(f"fakeredis://{uuid.uuid4().hex[:8]}", f"{own_redis.url}/1{query}",
                        namespace=f"full{uuid.uuid4().hex[:8]}")
    cached = _Full(data={"name": "cached"})
    cached.save()
    _Full(cached.guid)  # filled
    others = [_Full(data={"name": f"o{index}"}) for index in range(10)]
    for other in others:
        other.save()
    time.sleep(0.6)  # the cache's first catch-up (its restart check) has run
    admin = _fill_up(own_redis)
    try:
        before = context.stats.snapshot()
        for other in others:
            assert _Full(cached.guid).name == "cached" and _Full(other.guid).name == other.name
        after = context.stats.snapshot()
    finally:
        admin.config_set("maxmemory", 0)
    counts = {name: after.get(name, 0) - before.get(name, 0) for name in ("object_hits", "object_errors")}
    assert counts == {"object_hits": len(others), "object_errors": 0}


class _Locked(DataObject, hybrid_name="redisedgeslocked"):
    __properties = [Property("name", str)]
    __dynamics = [Dynamic("reading", int, 600, locked=True, lock_timeout=5.0)]
    __mirror = Mirror(timeout=60, lock_timeout=5)

    def _reading(self) -> int:
        return 42

    def _refresh(self) -> dict[str, Any]:
        return {"status": "up"}


@pytest.mark.redis
def test_a_full_cache_never_makes_a_locked_read_or_a_refresh_wait_for_a_lock_nobody_holds(
        own_redis: RunningServer) -> None:
    """The lock of a locked dynamic and of a mirror's refresh is an add: refused at maxmemory, it read as
    a lock another caller held, and each read waited out lock_timeout (5 s here). It is an error of the
    cache now: the read computes at once, as when the cache fails (``lock_errors``)."""
    context = configure(f"fakeredis://{uuid.uuid4().hex[:8]}", f"{own_redis.url}/1",
                        namespace=f"lock{uuid.uuid4().hex[:8]}")
    obj = _Locked(data={"name": "p"})
    obj.save()
    time.sleep(0.6)  # the cache's first catch-up (its restart check) has run
    admin = _fill_up(own_redis)
    try:
        for read in (lambda: _Locked(obj.guid).reading, lambda: _Locked(obj.guid).reading,
                     lambda: _Locked(obj.guid).info):
            started = time.monotonic()
            assert read() in (42, {"status": "up"})
            assert time.monotonic() - started < 2.5, "waited for a lock nobody holds"
    finally:
        admin.config_set("maxmemory", 0)
    # an add refused for memory was not applied: no release of it is queued for the resend thread
    assert not context.dynamics._retries
    assert context.stats["dynamic.redisedgeslocked.reading.lock_errors"] >= 2
    assert context.stats["mirror_lock_errors"] >= 1


# --- a cache URL the server refuses -----------------------------------------------------------


@pytest.mark.redis
def test_a_cache_url_whose_database_or_credentials_the_server_refuses_is_refused_at_configure(
        redis_server: RunningServer) -> None:
    """As the durable store's: a setting to correct, never a cache silently read around."""
    address = f"127.0.0.1:{redis_server.port}"
    with pytest.raises(SettingRefusedError, match=r"no database 16 .*raise `databases`"):
        configure("memory://", f"redis://{address}/16", namespace=f"db{uuid.uuid4().hex[:8]}")
    with pytest.raises(SettingRefusedError, match=r"refuses the credentials .*give its password") as caught:
        configure("memory://", f"redis://nouser:s3cret@{address}/0", namespace=f"db{uuid.uuid4().hex[:8]}")
    assert "s3cret" not in str(caught.value)
    # a server that is down is a miss, as before: configure() takes it
    configure("memory://", f"redis://127.0.0.1:{closed_port()}/0", namespace=f"db{uuid.uuid4().hex[:8]}")


# --- values another client wrote ----------------------------------------------------------------


def test_a_value_without_the_revision_stamp_is_a_backend_error_naming_the_key_and_the_fix(url: str) -> None:
    """A hand fix with redis-cli (SET without dal's ``<revision>:``) is refused by every read and by a
    commit checking it, which writes nothing; a commit that does not read it replaces it."""
    store: Any = open_persistent(url)
    assert store.commit([], [Put("edge/k", b'{"a": 1}'), Put("edge/l", b"1")]).ok
    revision = store.get("edge/l").revision
    store._client.set("{dal}:d:edge/k", b'{"a": 2}')
    calls: list[Callable[[], object]] = [
        lambda: store.get("edge/k"), lambda: store.get_many(["edge/l", "edge/k"]),
        lambda: store.scan("edge/"),
        lambda: store.commit([Revision("edge/k", 1)], [Put("edge/l", b"2")]),
        lambda: store.commit([PrefixUnchanged("edge/", revision)], [Put("edge/l", b"2")])]
    for call in calls:
        with pytest.raises(BackendError, match=r"\{dal\}:d:edge/k' without dal's '<revision>:' stamp.*"
                                               r"redis-cli -n \d+ DEL .*`dal check` then names what else "
                                               "of it is left"):
            call()
    assert store.get("edge/l").value == b"1", "a refused commit wrote nothing"
    assert store.commit([Exists("edge/k"), PrefixEmpty("other/")], [Put("edge/k", b"3")]).ok
    assert store.get("edge/k").value == b"3"
    assert store.commit([], [Delete("edge/k"), Delete("edge/l")]).ok


def test_a_cas_token_gets_never_returned_stores_nothing(url: str) -> None:
    """Only the 8-byte stamp ``gets`` returns compares: an empty token is no prefix of every value."""
    cache = open_volatile(url)
    assert cache.set("tok", b"v", 60)
    _, token = cache.gets("tok")
    assert isinstance(token, bytes)
    for wrong in (b"", token[:4], token + b"v"):
        assert cache.cas("tok", b"w", wrong, 60) is False and cache.get("tok") == b"v"
    assert cache.cas("tok", b"w", token, 60) and cache.get("tok") == b"w"
