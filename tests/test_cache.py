"""The object cache: hits, signed entries, a dead volatile store, and processes sharing SQLite."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import PairURLs, persistent_url_for
from harness import run_spawned
from hybrids import Kind, Widget

import dal
from dal.backends.base import DeletePrefix, Entry, Put
from dal.backends.memcached import MemcachedCache, wire_key
from dal.backends.memory import MemoryCache
from dal.backends.url import parse_url
from dal.cache.leases import LeasedCache, Signer, Stats
from dal.config import Context
from dal.exceptions import BackendError, ObjectNotFoundError
from dal.testing.servers import closed_port

HMAC_KEY = b"0123456789abcdef-test-key"


def make_kind(name: str = "a kind") -> Kind:
    kind = Kind(data={"name": name, "code": uuid.uuid4().hex[:8]})
    kind.save()
    return kind


def count_gets(context: Context, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every key read from the durable store from now on."""
    reads: list[str] = []
    original: Callable[[str], Entry | None] = context.persistent.get

    def counting(key: str) -> Entry | None:
        reads.append(key)
        return original(key)

    monkeypatch.setattr(context.persistent, "get", counting)
    return reads


def test_second_load_is_a_cache_hit(context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    kind = make_kind()
    stats = context.stats
    reads = count_gets(context, monkeypatch)
    assert Kind(kind.guid).name == "a kind"
    assert (stats["object_misses"], stats["object_hits"]) == (1, 0)
    assert reads == [context.keys.doc("kind", kind.guid)]
    assert Kind(kind.guid).code == kind.code
    assert Kind(kind.guid).code == kind.code
    snapshot = context.stats.snapshot()
    assert (snapshot["object_misses"], snapshot["object_hits"]) == (1, 2)
    assert len(reads) == 1  # the hits never touched the durable store


def test_missing_object_is_not_cached_as_present(context: Context) -> None:
    guid = str(uuid.uuid4())
    for _ in range(2):
        with pytest.raises(ObjectNotFoundError):
            Kind(guid)
    assert context.stats["object_hits"] == 0


def test_save_and_delete_invalidate_the_cached_document(context: Context) -> None:
    kind = make_kind()
    Kind(kind.guid)  # fill
    cache_key = context.keys.cached_doc("kind", kind.guid)
    assert context.volatile.get(cache_key) is not None
    kind.name = "renamed"
    kind.save()
    assert context.volatile.get(cache_key) is None
    assert Kind(kind.guid).name == "renamed"
    kind.delete()
    assert context.volatile.get(cache_key) is None
    with pytest.raises(ObjectNotFoundError):
        Kind(kind.guid)


# --- signed entries -------------------------------------------------------------------------


@pytest.fixture
def signed_pair(pair_urls: PairURLs) -> Context:
    return pair_urls.configure(hmac_key=HMAC_KEY)


def _cached(context: Context, kind: Kind) -> tuple[str, bytes]:
    """Load ``kind`` twice (fill, then hit) and return its cache key and raw cache entry."""
    Kind(kind.guid)
    hits = context.stats["object_hits"]
    Kind(kind.guid)
    assert context.stats["object_hits"] == hits + 1
    key = context.keys.cached_doc("kind", kind.guid)
    raw = context.volatile.get(key)
    assert raw is not None
    return key, raw


def test_signed_entries_are_used(signed_pair: Context) -> None:
    kind = make_kind()
    key, raw = _cached(signed_pair, kind)
    assert Signer(HMAC_KEY).open(key, raw) is not None
    assert Signer(None).open(key, raw) is None  # not stored in the clear
    assert signed_pair.stats["object_rejected"] == 0


def test_tampered_entry_is_rejected(signed_pair: Context) -> None:
    kind = make_kind("a kind")
    key, raw = _cached(signed_pair, kind)
    assert b'"name":"a kind"' in raw
    tampered = raw.replace(b'"name":"a kind"', b'"name":"EVIL!!"')
    assert len(tampered) == len(raw) and tampered != raw
    assert signed_pair.volatile.set(key, tampered, 60)
    assert Kind(kind.guid).name == "a kind"
    assert signed_pair.stats["object_rejected"] == 1
    # a single flipped byte anywhere (here in the digest) is rejected as well
    key, raw = _cached(signed_pair, kind)
    flipped = raw[:5] + bytes([raw[5] ^ 0x01]) + raw[6:]
    assert signed_pair.volatile.set(key, flipped, 60)
    assert Kind(kind.guid).name == "a kind"
    assert signed_pair.stats["object_rejected"] == 2


def test_unsigned_entry_is_rejected(signed_pair: Context) -> None:
    kind = make_kind("a kind")
    key, raw = _cached(signed_pair, kind)
    payload = Signer(HMAC_KEY).open(key, raw)
    assert payload is not None and b'"name":"a kind"' in payload
    forged = Signer(None).seal(key, payload.replace(b'"name":"a kind"', b'"name":"forged"'))
    assert signed_pair.volatile.set(key, forged, 60)
    assert Kind(kind.guid).name == "a kind"
    assert signed_pair.stats["object_rejected"] == 1
    assert signed_pair.volatile.set(key, payload, 60)  # no marker at all
    assert Kind(kind.guid).name == "a kind"
    assert signed_pair.stats["object_rejected"] == 2


def test_entry_copied_from_another_object_is_rejected(signed_pair: Context) -> None:
    mine, theirs = make_kind("mine"), make_kind("theirs")
    my_key, _ = _cached(signed_pair, mine)
    _, their_raw = _cached(signed_pair, theirs)
    assert signed_pair.volatile.set(my_key, their_raw, 60)
    loaded = Kind(mine.guid)
    assert (loaded.name, loaded.code) == ("mine", mine.code)
    assert signed_pair.stats["object_rejected"] == 1
    # the durable value was cached again, properly signed
    assert Kind(mine.guid).name == "mine"
    assert signed_pair.stats["object_rejected"] == 1


def test_dynamic_copied_from_another_object_is_rejected(signed_pair: Context) -> None:
    # a dynamic's entry is as authentic as any, so only the key being part of what is signed
    # tells that it belongs to another object: a's value must not be served as b's
    kind = make_kind()
    mine = Widget(data={"name": "mine", "kind": kind, "count": 2})
    theirs = Widget(data={"name": "theirs", "kind": kind, "count": 7})
    mine.save()
    theirs.save()
    assert (Widget(mine.guid).doubled, Widget(theirs.guid).doubled) == (4, 14)  # both cached
    my_key, their_key = (signed_pair.keys.cached_dynamic("widget", w.guid, "doubled") for w in (mine, theirs))
    their_raw = signed_pair.volatile.get(their_key)
    assert their_raw is not None
    assert signed_pair.volatile.set(my_key, their_raw, 60)
    assert signed_pair.stats["dynamic_rejected"] == 0
    assert Widget(mine.guid).doubled == 4
    assert signed_pair.stats["dynamic_rejected"] == 1
    # the recomputed value was cached again, properly signed, and is served from then on
    assert Widget(mine.guid).doubled == 4
    assert signed_pair.stats["dynamic_rejected"] == 1


# --- a dead volatile store ------------------------------------------------------------------------


@pytest.mark.parametrize("persistent_kind", ["sqlite", "etcd"])
def test_dead_volatile_store_never_fails_a_load_or_save(
        persistent_kind: str, request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> None:
    persistent = persistent_url_for(persistent_kind, request, tmp_path)
    context = dal.configure(persistent, f"memcached://127.0.0.1:{closed_port()}?timeout=0.1",
                            namespace=namespace)
    try:
        kind = make_kind("k")
        w = Widget(data={"name": "w", "kind": kind, "count": 2})
        w.save()
        assert Widget(w.guid).count == 2
        assert w.doubled == 4
        w.count = 3
        w.save()
        assert Widget(w.guid).count == 3
        assert w.doubled == 6
        assert Widget(w.guid).kind.name == "k"
        w.delete()
        with pytest.raises(ObjectNotFoundError):
            Widget(w.guid)
        snapshot = context.stats.snapshot()
        # the first failure is counted; after it the cache is not trusted, so reads skip it
        assert snapshot.get("object_errors", 0) + snapshot.get("object_invalidation_errors", 0) > 0
        assert snapshot.get("object_hits", 0) == 0
    finally:
        context.persistent.commit([], [DeletePrefix(context.keys.root)])


# --- two processes sharing one SQLite file ------------------------------------------------------


def _rename_in_child(persistent: str, volatile: str, namespace: str, guid: str, name: str) -> None:
    dal.configure(persistent, volatile, namespace=namespace)
    kind = Kind(guid)
    kind.name = name
    kind.save()


def test_other_process_update_is_seen_at_once(tmp_path: Path, namespace: str) -> None:
    persistent = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    volatile = f"memory://{uuid.uuid4().hex[:8]}"
    context = dal.configure(persistent, volatile, namespace=namespace)
    kind = make_kind("before")
    assert Kind(kind.guid).name == "before"
    assert Kind(kind.guid).name == "before"
    assert context.stats["object_hits"] == 1  # process A has it cached
    for round_name in ("after", "again"):
        run_spawned(_rename_in_child, persistent, volatile, namespace, kind.guid, round_name)
        assert Kind(kind.guid).name == round_name
        assert Kind(kind.guid).name == round_name
    kind.refresh()
    assert kind.name == "again"


def test_a_forked_child_never_reads_through_its_parents_connections(context: Context) -> None:
    kind = Kind(data={"name": "k", "code": "fork"})
    kind.save()
    parent = Widget(data={"name": "parent-side", "count": 1, "kind": kind})
    child = Widget(data={"name": "child-side", "count": 50, "kind": kind})
    parent.save()
    child.save()
    assert parent.doubled == 2  # the parent now holds open connections to both stores
    pid = os.fork()
    if pid == 0:
        loaded = Widget(child.guid)
        wrong = sum(loaded.doubled != 100 or Widget(child.guid).name != "child-side" for _ in range(200))
        # a socket shared with the parent shows up as cache errors (crossed answers are refused)
        stats = dal.config.current().stats.snapshot()
        errors = stats.get("object_errors", 0) + stats.get("dynamic_errors", 0)
        os._exit(0 if wrong == 0 and errors == 0 else 1)
    loaded = Widget(parent.guid)
    wrong = sum(loaded.doubled != 2 or Widget(parent.guid).name != "parent-side" for _ in range(200))
    _, status = os.waitpid(pid, 0)
    assert wrong == 0 and os.waitstatus_to_exitcode(status) == 0


def test_an_invalidation_the_cache_refused_is_resent_and_read_around(
        tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache of this process's own keeps what it could not invalidate, and resends it.

    (A shared cache leaves that to the commit journal: ``tests/test_journal.py``.)
    """
    context = dal.configure(f"sqlite:///{tmp_path / 'own.sqlite3'}", f"memory://{uuid.uuid4().hex[:8]}",
                            namespace=namespace)
    kind = Kind(data={"name": "v1", "code": "resend"})
    kind.save()
    assert Kind(kind.guid).name == "v1"  # cached now
    cache_key = context.keys.cached_doc("kind", kind.guid)
    real_delete_many = context.volatile.delete_many

    def refuse(keys: Any) -> None:
        raise BackendError("simulated: the cache server is marked dead in this process")

    monkeypatch.setattr(context.volatile, "delete_many", refuse)
    kind.name = "v2"
    kind.save()
    assert cache_key in context.objects.pending
    assert context.volatile.get(cache_key) is not None, "the old entry is still on the server"
    assert Kind(kind.guid).name == "v2", "this process reads around a pending invalidation"
    monkeypatch.setattr(context.volatile, "delete_many", real_delete_many)
    deadline = time.monotonic() + 10
    while context.objects.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not context.objects.pending, "the invalidation was never resent"
    assert context.volatile.get(cache_key) is None, "other processes no longer see the old entry"
    assert Kind(kind.guid).name == "v2"


def test_two_stores_sharing_a_cache_and_namespace_never_see_each_others_entries(
        tmp_path: Path, namespace: str) -> None:
    cache = f"memory://{uuid.uuid4().hex[:8]}"
    first = dal.configure(f"sqlite:///{tmp_path}/a.sqlite3", cache, namespace=namespace)
    kind = Kind(data={"name": "in a", "code": "same-guid"})
    kind.save()
    assert Kind(kind.guid).name == "in a"  # cached
    document = first.persistent.get(first.keys.doc("kind", kind.guid))
    assert document is not None
    second = dal.configure(f"sqlite:///{tmp_path}/b.sqlite3", cache, namespace=namespace)
    copied = document.value.replace(b"in a", b"in b")  # the same object restored into another file
    second.persistent.commit([], [Put(second.keys.doc("kind", kind.guid), copied)])
    assert Kind(kind.guid).name == "in b"


# --- one store, however it is named ------------------------------------------------------------------


@pytest.mark.memcached
def test_a_file_reached_through_a_symlink_shares_cache_keys_and_invalidations(
        tmp_path: Path, namespace: str, memcached_server: Any) -> None:
    real = tmp_path / "data" / "dal.sqlite3"
    real.parent.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real.parent, target_is_directory=True)
    linked_url = f"sqlite:///{link / 'dal.sqlite3'}"
    through_link = dal.configure(linked_url, memcached_server.url, namespace=namespace)
    try:
        kind = make_kind("before")
        assert Kind(kind.guid).name == "before" and Kind(kind.guid).name == "before"  # cached
        root = through_link.keys.cache_root
        direct = dal.configure(f"sqlite:///{real}", memcached_server.url, namespace=namespace)
        assert direct.keys.cache_root == root  # named by the file's identity, not by its path
        renamed = Kind(kind.guid)
        renamed.name = "after"
        renamed.save()
        # back to the first name, as a process that never saw the save: its cached copy is gone
        dal.configure(linked_url, memcached_server.url, namespace=namespace)
        assert Kind(kind.guid).name == "after"
    finally:
        dal.config.current().persistent.commit([], [DeletePrefix(f"{namespace}/")])


@pytest.mark.etcd
def test_etcd_is_named_by_its_cluster_whatever_the_host_is_called(etcd_server: Any) -> None:
    from dal.backends.etcd import EtcdStore
    from dal.backends.url import parse_url
    from dal.config import store_digest

    names = [EtcdStore.from_url(parse_url(f"etcd://{host}:{etcd_server.port}")) for host in ("127.0.0.1",
                                                                                          "localhost")]
    try:
        assert names[0].identity() == names[1].identity()
        assert store_digest(names[0]) == store_digest(names[1])
    finally:
        for store in names:
            store.close()


def test_redis_with_and_without_tls_is_one_store_for_the_cache_keys() -> None:
    """``rediss://`` reaches the same data as ``redis://``: one digest, so one set of cache keys
    (else a process on TLS would miss the invalidations of one without); other kinds stay apart."""
    from dal.backends.redis import RedisStore, SecureRedisStore
    from dal.config import store_digest

    class Named:
        def __init__(self, scheme: str) -> None:
            self.scheme = scheme

        def identity(self) -> str:
            return "redis-0f3a-db0"

    assert RedisStore.scheme == "redis" and SecureRedisStore.scheme == "rediss"
    plain, tls = store_digest(Named(RedisStore.scheme)), store_digest(Named(SecureRedisStore.scheme))  # type: ignore[arg-type]
    assert plain == tls
    assert store_digest(Named("etcd")) != plain  # type: ignore[arg-type]


# --- invalidations the cache did not take ------------------------------------------------------------


class _ScriptedDeletes(MemoryCache):
    """A cache whose delete_many fails, blocks or succeeds as a test scripts it."""

    def __init__(self) -> None:
        super().__init__(parse_url("memory://scripted"))
        self.script: list[str] = []  # per call: "fail", "block" or "ok" (the default)
        self.blocked = threading.Semaphore(0)  # released once per call that blocks
        self.gates: list[threading.Event] = []  # one per blocking call, in order: set it to let it go

    def delete_many(self, keys: Sequence[str]) -> list[str]:
        step = self.script.pop(0) if self.script else "ok"
        if step == "fail":
            return list(keys)
        if step == "block":
            gate = self.gates.pop(0)
            self.blocked.release()
            assert gate.wait(10)
        return super().delete_many(keys)


def test_a_resend_never_drops_an_invalidation_that_failed_again_meanwhile() -> None:
    store = _ScriptedDeletes()
    cache = LeasedCache(store, Signer(None), Stats())
    store.script = ["fail", "block", "fail", "block"]
    first, second = threading.Event(), threading.Event()
    store.gates = [first, second]
    assert cache.invalidate("k") == ["k"]  # refused: pending, a resend is scheduled
    assert store.blocked.acquire(timeout=5)  # the resend is sending "k"...
    assert cache.invalidate("k") == ["k"]  # ...when a second invalidation of "k" is refused too
    first.set()  # the resend's delete lands: it delivered the first, not the second
    assert store.blocked.acquire(timeout=5)  # the next resend is under way: look before it lands
    assert "k" in cache.pending, "the second, undelivered invalidation was dropped"
    second.set()
    deadline = time.monotonic() + 5
    while cache.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not cache.pending


@pytest.mark.memcached
def test_one_dead_memcached_server_keeps_only_its_own_share_of_an_invalidation(memcached_server: Any) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    cache = MemcachedCache.from_url(parse_url(f"memcached://{memcached_server.host}:{memcached_server.port},"
                                              f"{dead}?timeout=0.2"))
    keys = [f"share-{uuid.uuid4().hex[:6]}-{n}" for n in range(40)]
    live = [key for key in keys if cache._client.hasher.get_node(wire_key(key)).endswith(
        f":{memcached_server.port}")]
    assert 0 < len(live) < len(keys)  # rendezvous hashing spreads them over both servers
    for key in live:
        assert cache.set(key, b"old", 0)
    for _ in range(2):  # a failed read marks the dead server dead, as in production
        with contextlib.suppress(BackendError):
            cache.get_many(keys)
    undelivered = cache.delete_many(keys)
    assert sorted(undelivered) == sorted(set(keys) - set(live))
    assert cache.get_many(live) == {}, "the live server's share must be invalidated"
    cache.close()


@pytest.mark.memcached
def test_a_refused_invalidation_outside_a_commit_is_resent_with_a_shared_cache(
        tmp_path: Path, namespace: str, memcached_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """invalidate_dynamics() writes no journal record: the process itself must resend it."""
    context = dal.configure(f"sqlite:///{tmp_path / 'dyn.sqlite3'}", memcached_server.url,
                            namespace=namespace)
    try:
        widget = Widget(data={"name": "w", "kind": make_kind("k"), "count": 2})
        widget.save()
        assert widget.doubled == 4  # cached on the server
        key = context.keys.cached_dynamic("widget", widget.guid, "doubled")
        assert context.volatile.get(key) is not None
        real = context.volatile.delete_many
        monkeypatch.setattr(context.volatile, "delete_many", lambda keys: list(keys))
        widget.invalidate_dynamics(["doubled"])
        assert key in context.dynamics.pending
        monkeypatch.setattr(context.volatile, "delete_many", real)
        deadline = time.monotonic() + 5
        while context.dynamics.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not context.dynamics.pending, "the invalidation was never resent"
        assert context.volatile.get(key) is None
    finally:
        context.close()
