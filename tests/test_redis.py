"""What the conformance suite leaves out of the Redis stores: URLs, Lua commits, paging, scripts, failures."""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import round_trips

from dal import DataObject, Property, configure
from dal.backends import backend_class, close_all, open_persistent, open_volatile
from dal.backends.base import (
    Check,
    Delete,
    DeletePrefix,
    Entry,
    Evict,
    Exists,
    PrefixEmpty,
    PrefixUnchanged,
    Put,
    Revision,
    StoreReplacedError,
)
from dal.backends.redis import RedisCache, RedisStore
from dal.backends.redis import store as redis_store
from dal.backends.redis.connection import COUNTER, DATA, INDEX
from dal.backends.url import parse_url
from dal.cache.journal import Journal
from dal.exceptions import BackendError, ConfigurationError
from dal.testing.servers import RunningServer

SECRET = "s3cr3t-pw"


@pytest.fixture(params=["redis", "fakeredis"])
def url(request: pytest.FixtureRequest, namespace: str) -> str:
    """A Redis URL of each kind: the session's redis-server, or a fake server of this test's own."""
    if request.param == "fakeredis":
        return f"fakeredis://{namespace}"
    server: RunningServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def store(url: str, namespace: str) -> Iterator[RedisStore]:
    opened = open_persistent(url)
    assert isinstance(opened, RedisStore)
    yield opened
    open_persistent(url).commit([], [DeletePrefix(f"{namespace}/")])


def _raw(store: RedisStore | RedisCache) -> Any:
    """The store's own client, to look at what it wrote."""
    client: Any = store._client
    return client


# --- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, complaint", [
    ("redis://127.0.0.1:6379?bogus=1", "unknown option"),
    ("redis://127.0.0.1:6379?timeout=0", "positive number of seconds"),
    ("redis://127.0.0.1:6379?timeout=soon", "is not valid"),
    ("redis://127.0.0.1:1,127.0.0.1:2", "one server"),
    ("redis://127.0.0.1:6379/zero", "database number"),
    ("redis://127.0.0.1:6379?ca_cert=/x.pem", "rediss://"),
    ("redis://someone@127.0.0.1:6379", "without a password"),
    ("redis://", "names no server"),
    ("fakeredis://name:6379", "not a fakeredis URL"),
    ("fakeredis://?bogus=1", "unknown option"),
])
@pytest.mark.parametrize("role", ["persistent", "volatile"])
def test_bad_urls_are_refused_by_name(text: str, complaint: str, role: str) -> None:
    opener = open_persistent if role == "persistent" else open_volatile
    with pytest.raises(ConfigurationError, match=complaint):
        opener(text)


def test_the_password_never_shows(namespace: str) -> None:
    for text in (f"redis://me:{SECRET}@127.0.0.1:6379/2?bogus=1", f"redis://:{SECRET}@127.0.0.1:6379?timeout=x"):
        with pytest.raises(ConfigurationError) as caught:
            open_persistent(text)
        assert SECRET not in str(caught.value)
    store = open_persistent(f"redis://:{SECRET}@127.0.0.1:6379/3")
    cache = open_volatile(f"rediss://me:{SECRET}@h:1")
    for client in (store, cache):
        assert SECRET not in repr(client) and SECRET not in str(client.url)
    assert cache.scheme == "rediss" and store.timeout == 5.0


@pytest.mark.redis
def test_a_refused_password_fails_without_showing_it(redis_server: RunningServer) -> None:
    store = RedisStore.from_url(parse_url(f"redis://nobody:{SECRET}@127.0.0.1:{redis_server.port}?timeout=1"))
    with pytest.raises(BackendError) as caught:
        store.get("k")
    assert SECRET not in str(caught.value) and isinstance(caught.value.__cause__, redis.RedisError)


def test_a_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.startswith("dal.backends.redis")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)  # what `import redis` sees without the package
    with pytest.raises(ConfigurationError, match=r"pip install 'dal\[redis\]'"):
        backend_class("persistent", "redis")
    monkeypatch.setitem(sys.modules, "fakeredis", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'dal\[fakeredis\]'"):
        backend_class("volatile", "fakeredis")


# --- the store --------------------------------------------------------------------------------


def test_keys_live_under_the_stores_prefix_beside_other_data(store: RedisStore, namespace: str) -> None:
    raw = _raw(store)
    raw.set(f"{namespace}/foreign", b"not dal's")
    try:
        result = store.commit([], [Put(f"{namespace}/a", b"A")])
        assert raw.get(f"{DATA}{namespace}/a") == f"{result.revision}:".encode() + b"A"
        assert raw.zscore(INDEX, f"{namespace}/a") == 0
        assert [key for key, _ in store.scan(f"{namespace}/")] == [f"{namespace}/a"]
        assert store.commit([], [DeletePrefix(f"{namespace}/")]).ok
        assert raw.get(f"{namespace}/foreign") == b"not dal's"
    finally:
        raw.delete(f"{namespace}/foreign")


def test_the_commit_script_reports_every_failing_check_and_writes_nothing(
        store: RedisStore, namespace: str) -> None:
    p = f"{namespace}/"
    first = store.commit([], [Put(f"{p}a", b"A"), Put(f"{p}b", b"B"), Put(f"{p}dir/x", b"X")]).revision
    second = store.commit([], [Put(f"{p}b", b"B2")]).revision
    counter = int(_raw(store).get(COUNTER) or 0)
    checks: list[Check] = [
        Revision(f"{p}a", first), Revision(f"{p}b", first), Exists(f"{p}gone"), Revision(f"{p}a", 0),
        PrefixEmpty(f"{p}dir/"), PrefixUnchanged(f"{p}dir/", first - 1), PrefixUnchanged(f"{p}", second),
        Exists(f"{p}b")]
    result = store.commit(checks, [Put(f"{p}new", b"N"), Delete(f"{p}a"), DeletePrefix(f"{p}dir/")])
    assert not result.ok and result.revision == 0
    assert result.failed == (1, 2, 3, 4, 5)
    assert dict(result.current) == {f"{p}a": Entry(b"A", first), f"{p}b": Entry(b"B2", second)}
    assert int(_raw(store).get(COUNTER) or 0) == counter  # no revision spent on a failed commit
    assert store.get(f"{p}new") is None and store.get(f"{p}a") == Entry(b"A", first)
    assert store.scan_keys([f"{p}dir/"]) == {f"{p}dir/": [f"{p}dir/x"]}


def test_scans_and_prefix_work_cross_page_boundaries(
        store: RedisStore, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_store, "PAGE", 3)  # the scripts read three keys per step
    p = f"{namespace}/"
    keys = [f"{p}k{n:02d}" for n in range(10)]
    revisions = [store.commit([], [Put(key, key.encode())]).revision for key in keys]
    assert [key for key, _ in store.scan(p)] == keys
    entries = [(key, Entry(key.encode(), rev)) for key, rev in zip(keys, revisions, strict=True)]
    assert store.scan(p, limit=7) == entries[:7]
    assert [key for key, _ in store.scan(p, start_after=keys[2], limit=4)] == keys[3:7]
    assert [key for key, _ in store.scan(p, start_after=keys[5])] == keys[6:]
    assert store.scan_keys([p]) == {p: keys}
    # the newest key is on the last page: a PrefixUnchanged check must read that far
    assert store.commit([PrefixUnchanged(p, revisions[-2])], []).failed == (0,)
    assert store.commit([PrefixUnchanged(p, revisions[-1])], []).ok
    assert store.commit([], [DeletePrefix(f"{p}k0")]).ok  # ten keys, four pages, all gone
    assert store.scan(p) == []
    assert _raw(store).zrangebylex(INDEX, f"[{p}".encode(), f"({p}".encode() + b"\xff") == []


def test_a_key_that_is_not_utf8_is_a_backend_error_naming_it_and_how_to_delete_it(
        store: RedisStore, namespace: str) -> None:
    p = f"{namespace}/"
    assert store.commit([], [Put(f"{p}a", b"1")]).ok
    odd = p.encode() + b"\xfe'"  # another client wrote it, in dal's layout
    _raw(store).zadd(INDEX, {odd: 0})
    _raw(store).set(DATA.encode() + odd, b"1:")
    shown = f"{p}\\xfe\\x27"
    for read in (lambda: store.scan(p), lambda: store.scan_keys([p])):
        with pytest.raises(BackendError, match=re.escape(f"holds the key $'{shown}' in {INDEX}, which is not "
                                                         "UTF-8 text: another client wrote it")) as raised:
            read()
        assert f"ZREM '{INDEX}' $'{shown}', then redis-cli -n 0 DEL $'{DATA}{shown}'" in str(raised.value)
    _raw(store).zrem(INDEX, odd)
    _raw(store).delete(DATA.encode() + odd)
    assert store.scan_keys([p]) == {p: [f"{p}a"]}


def test_a_flushed_script_cache_is_reloaded(store: RedisStore, namespace: str) -> None:
    p = f"{namespace}/"
    assert store.commit([], [Put(f"{p}a", b"1")]).ok
    _raw(store).script_flush()  # as a restarted server forgets every script
    assert store.commit([Exists(f"{p}a")], [Put(f"{p}b", b"2")]).ok
    _raw(store).script_flush()
    assert [key for key, _ in store.scan(p)] == [f"{p}a", f"{p}b"]
    _raw(store).script_flush()
    lease = store.acquire_leadership(f"{p}role", "me", 5)
    assert lease.acquired and store.renew_leadership(lease)
    store.release_leadership(lease)


def test_identity_names_the_database(url: str, namespace: str) -> None:
    if url.startswith("fakeredis"):
        names = [open_persistent(f"fakeredis://{namespace}{db}").identity() for db in ("", "/0", "/1")]
        assert names[0] == names[1] != names[2]
        assert open_persistent(f"fakeredis://{namespace}-other").identity() != names[0]
        return
    port = parse_url(url).hosts[0][1]
    names = [open_persistent(f"redis://{host}:{port}{db}").identity()
             for host, db in (("127.0.0.1", ""), ("localhost", "/0"), ("127.0.0.1", "/1"))]
    assert names[0] == names[1] != names[2]


def test_the_change_token_moves_for_other_clients_commits_only(url: str, store: RedisStore,
                                                               namespace: str) -> None:
    other = type(store).from_url(parse_url(url))
    try:
        token = store.change_token()
        assert store.commit([], [Put(f"{namespace}/mine", b"")]).ok
        assert store.change_token() == token  # its own commit: a local cache stays valid
        assert other.commit([], [Put(f"{namespace}/theirs", b"")]).ok
        moved = store.change_token()
        assert moved != token and store.change_token() == moved
    finally:
        other.close()


# --- the cache --------------------------------------------------------------------------------


def test_cas_tells_a_rewrite_with_the_same_bytes_apart(url: str, namespace: str) -> None:
    cache = open_volatile(url)
    key = f"{namespace}/k"
    cache.set(key, b"same", 0)
    value, token = cache.gets(key)
    assert value == b"same"
    cache.set(key, b"same", 0)  # ABA: the same bytes, another write
    assert cache.cas(key, b"mine", token, 0) is False
    _, fresh = cache.gets(key)
    assert fresh != token and cache.cas(key, b"mine", fresh, 60) is True
    assert cache.get(key) == b"mine"
    _, token = cache.gets(key)
    assert cache.cas(key, b"", token, -1) is True  # expired at once: a conditional delete
    assert cache.get(key) is None and cache.gets(key) == (None, None)
    assert cache.set(key, b"x", -1) is True and cache.get(key) is None
    assert cache.add(key, b"x", -1) is True and cache.get(key) is None


def test_cache_entries_carry_their_ttl_in_milliseconds(url: str, namespace: str) -> None:
    cache = open_volatile(url)
    assert isinstance(cache, RedisCache)
    raw = _raw(cache)
    cache.set(f"{namespace}/short", b"v", 1.5)
    cache.set(f"{namespace}/forever", b"v", 0)
    assert 1000 < raw.pttl(f"dal:c:{namespace}/short") <= 1500
    assert raw.pttl(f"dal:c:{namespace}/forever") == -1
    assert cache.nodes() == [""] and cache.node("anything") == ""


# --- failures ---------------------------------------------------------------------------------


def _fails_fast(call: Any, limit: float) -> BackendError:
    began = time.monotonic()
    with pytest.raises(BackendError) as caught:
        call()
    assert time.monotonic() - began < limit
    assert isinstance(caught.value.__cause__, redis.RedisError | OSError)
    return caught.value


@pytest.mark.redis
def test_a_stopped_server_fails_fast(own_redis: RunningServer) -> None:
    store = RedisStore.from_url(parse_url(f"{own_redis.url}?timeout=0.5"))
    cache = RedisCache.from_url(parse_url(f"{own_redis.url}?timeout=0.2"))
    assert store.commit([], [Put("k", b"v")]).ok and cache.set("k", b"v", 0)
    own_redis.stop()
    _fails_fast(lambda: store.get("k"), 1.0)
    _fails_fast(lambda: store.commit([], [Put("k", b"w")]), 1.0)
    _fails_fast(lambda: cache.get("k"), 0.5)
    assert cache.delete_many(["k", "j"]) == ["k", "j"]  # never raises: the keys to resend


@pytest.mark.redis
def test_a_paused_server_times_out_within_the_timeout(own_redis: RunningServer) -> None:
    store = RedisStore.from_url(parse_url(f"{own_redis.url}?timeout=0.5"))
    cache = RedisCache.from_url(parse_url(f"{own_redis.url}?timeout=0.2"))
    assert store.get("k") is None and cache.get("k") is None  # connected before the pause
    own_redis.pause()
    try:
        error = _fails_fast(lambda: store.get("k"), 1.5)
        assert "Timeout" in str(error)
        _fails_fast(lambda: cache.get_many(["k"]), 1.0)
        assert cache.delete_many(["k"]) == ["k"]
    finally:
        own_redis.resume()
    close_all()
    assert store.get("k") is None  # a resumed server answers the same client again


def test_fakeredis_counts_hits_when_asked() -> None:
    name = uuid.uuid4().hex[:8]
    counted = open_volatile(f"fakeredis://{name}?hits=1")
    plain = open_volatile(f"fakeredis://{name}/1")
    for cache in (counted, plain):
        assert cache.set("k/a", b"v", 60)
        for _ in range(3):
            assert cache.get("k/a") == b"v"
    listed = {entry.key: entry.hits for entry in counted.list_entries("k/")}  # type: ignore[attr-defined]
    assert listed == {"k/a": 3}
    assert {entry.key: entry.hits for entry in plain.list_entries("k/")} == {"k/a": None}  # type: ignore[attr-defined]


class _Gadget(DataObject, hybrid_name="redisgadget"):
    __properties = [Property("name", str, unique=True), Property("size", int, default=0, indexed=True)]


@pytest.mark.parametrize("kind", ["redis", "fakeredis"])
def test_a_store_that_lost_its_data_refuses_the_commits_of_clients_that_knew_it(
        kind: str, namespace: str, request: pytest.FixtureRequest) -> None:
    """A database wiped under a running process (FLUSHDB, a restart without persistence) gets a new name
    from the next client that opens it, and that client's cache keys derive from it: a commit of the
    older client, whose saves would delete only the keys of the old name, is refused having written
    nothing, and ``configure()`` again opens a client that reads the new name."""
    url = (f"fakeredis://{namespace}" if kind == "fakeredis"
           else request.getfixturevalue("own_redis").url)
    try:
        context = configure(url, url, namespace=namespace)
        gadget = _Gadget(data={"name": "g", "size": 1})
        gadget.save()
        assert _Gadget(gadget.guid).size == 1
        _raw(context.persistent).flushdb()
        later = type(context.persistent).from_url(parse_url(url))  # another process, after the wipe
        assert later.identity() != context.persistent.identity()
        gadget.size = 2
        with pytest.raises(StoreReplacedError, match=r"configure\(\) again.*Nothing was written"):
            gadget.save()
        assert later.scan(f"{namespace}/") == [], "nothing written under the old name"
        assert context.volatile.get(context.keys.cached_doc("redisgadget", gadget.guid)) is None
        again = configure(url, url, namespace=namespace)
        assert again.persistent is not context.persistent
        assert again.persistent.identity() == later.identity()
        assert again.keys.cached_doc("redisgadget", gadget.guid) != context.keys.cached_doc(
            "redisgadget", gadget.guid)
        _Gadget(data={"name": "g", "size": 3}).save()
        assert _Gadget.get_by(name="g").size == 3
        later.close()
        # wiped again: configure() at once (no commit refused first) opens a client of the new name
        _raw(again.persistent).flushdb()
        third = configure(url, url, namespace=namespace)
        assert third.persistent is not again.persistent
        _Gadget(data={"name": "g", "size": 4}).save()
        assert _Gadget.get_by(name="g").size == 4
    finally:
        close_all()


@pytest.mark.redis
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["same", "other-spelling"])
def test_a_save_on_one_redis_evicts_its_cache_entries_in_the_commit(
        redis_server: RunningServer, namespace: str, host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis for both roles, one database: a save's cache entries are deleted by the commit script
    itself (one round trip for the save, none for the invalidation). The cache reached by another
    spelling of the host is not known to be the same database: its entries go as for any cache."""
    persistent = f"redis://127.0.0.1:{redis_server.port}/0"
    volatile = f"redis://{host}:{redis_server.port}/0"
    context = configure(persistent, volatile, namespace=namespace)
    try:
        gadget = _Gadget(data={"name": "g", "size": 1})
        gadget.save()
        assert _Gadget(gadget.guid).size == 1 and _Gadget(gadget.guid).size == 1  # filled, then a hit
        key = context.keys.cached_doc("redisgadget", gadget.guid)
        assert context.volatile.get(key) is not None
        calls = round_trips(context, monkeypatch)
        counted_commit = context.persistent.commit
        sent: list[Any] = []

        def commit(checks: Any, ops: Any) -> Any:
            sent.extend(ops)
            return counted_commit(checks, ops)

        monkeypatch.setattr(context.persistent, "commit", commit)
        gadget.size = 2
        gadget.save()
        assert context.volatile.get(key) is None, "the cached copy is gone once save() returns"
        evicted = [op.key for op in sent if isinstance(op, Evict)]
        assert calls["persistent.commit"] == 1, calls
        if host == "127.0.0.1":
            assert key in evicted, sent
            assert calls["volatile.delete_many"] == 0 and calls["volatile.delete"] == 0, calls
        else:
            assert evicted == [] and calls["volatile.delete_many"] == 1, calls
        assert _Gadget(gadget.guid).size == 2
    finally:
        context.persistent.commit([], [DeletePrefix(context.keys.root)])


@pytest.mark.redis
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["evicting", "control"])
def test_a_writer_dying_after_an_evicting_commit_leaves_nothing_stale(
        redis_server: RunningServer, namespace: str, host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer dies right after its commit (its own delivery never runs): with the cache in the
    store's database, the commit evicted the cached copy already. The control (the cache reached
    by another spelling, so the commit does not evict) shows the stale copy a sweep must remove."""
    context = configure(f"redis://127.0.0.1:{redis_server.port}/0", f"redis://{host}:{redis_server.port}/0",
                        namespace=namespace)
    try:
        if context.sweeper is not None:
            context.sweeper.stop()  # nobody delivers the record: only the commit itself can
        gadget = _Gadget(data={"name": "dies", "size": 1})
        gadget.save()
        assert _Gadget(gadget.guid).size == 1 and _Gadget(gadget.guid).size == 1
        key = context.keys.cached_doc("redisgadget", gadget.guid)
        assert context.volatile.get(key) is not None
        monkeypatch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)
        gadget.size = 2
        gadget.save()
        if host == "127.0.0.1":
            assert context.volatile.get(key) is None
            assert _Gadget(gadget.guid).size == 2
        else:
            assert context.volatile.get(key) is not None, "the control's copy stays until a sweep"
    finally:
        context.persistent.commit([], [DeletePrefix(context.keys.root)])
