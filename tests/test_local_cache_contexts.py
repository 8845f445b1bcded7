"""Two contexts of one process, each with a local cache of its own, over one durable store.

A commit invalidates the cache of the context it went through only. Back in the other context,
nothing its cache held from before may be served: not an object, not a query result, not a
reverse list, not a dynamic (``dal.cache.ledger``). The store's change token cannot tell: both
contexts write through one client of the store.

Another process's commit reaches a local cache through that token; etcd has none, so in front of
etcd a local cache is bypassed for objects and for dynamics alike.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from harness import run_spawned

from dal import DataList, DataObject, Dynamic, Property, Relation, configure
from dal.backends.base import DeletePrefix
from dal.config import Context, current


class LcRack(DataObject):
    __properties = [Property("name", str)]
    __dynamics = [Dynamic("load", int, timeout=600)]

    def _load(self) -> int:
        return sum(server.cores for server in self.servers)


class LcServer(DataObject):
    __properties = [Property("name", str), Property("status", str, indexed=True), Property("cores", int)]
    __relations = [Relation("rack", LcRack, "servers", mandatory=False)]


RUNNING = {"type": "AND", "items": [("status", "EQUALS", "RUNNING")]}


def _read_all(rack: LcRack, server: LcServer) -> tuple[object, ...]:
    """Everything a context may hold cached about the rack and its server, read through it."""
    return (LcServer(server.guid).status, len(DataList(LcServer, RUNNING)),
            sorted(LcRack(rack.guid).servers_guids), LcRack(rack.guid).load)


@pytest.mark.parametrize("durable", ["sqlite", "memory"])
def test_a_commit_through_another_context_is_never_hidden_by_this_ones_cache(
        tmp_path: Path, durable: str) -> None:
    tag = uuid.uuid4().hex[:8]
    store = f"sqlite:///{tmp_path}/db.sqlite3" if durable == "sqlite" else f"memory://lc{tag}"
    one = configure(store, f"memory://one{tag}", namespace="lc")
    rack = LcRack(data={"name": "r1"})
    rack.save()
    server = LcServer(data={"name": "s1", "status": "NEW", "cores": 4, "rack": rack})
    server.save()
    assert _read_all(rack, server) == ("NEW", 0, [server.guid], 4)  # now cached in memory://one
    assert _read_all(rack, server) == ("NEW", 0, [server.guid], 4)

    configure(store, f"memory://two{tag}", namespace="lc")
    moved = LcServer(server.guid)
    moved.status, moved.cores, moved.rack = "RUNNING", 8, None
    moved.save()

    configure(one.persistent_url.settings(), one.volatile_url.settings(), namespace="lc")
    assert _read_all(rack, server) == ("RUNNING", 1, [], 0)


def test_contexts_sharing_one_local_cache_do_not_drop_it(tmp_path: Path) -> None:
    """Control: a commit through a context in front of the same cache invalidated it by key, so
    nothing is dropped wholesale; and a commit through another cache is what drops it."""
    tag = uuid.uuid4().hex[:8]
    store, cache = f"sqlite:///{tmp_path}/db.sqlite3", f"memory://same{tag}"
    first: Context = configure(store, cache, namespace="lc")
    rack = LcRack(data={"name": "r1"})
    rack.save()
    LcRack(rack.guid)
    second = configure(store, cache, namespace="lc")
    again = LcRack(rack.guid)
    again.name = "r2"
    again.save()
    third = configure(store, cache, namespace="lc")
    assert LcRack(rack.guid).name == "r2"
    flushes = [context.stats.snapshot().get("object_local_flushes", 0) for context in (first, second, third)]
    assert flushes == [0, 0, 0]
    configure(store, f"memory://other{tag}", namespace="lc")
    LcRack(rack.guid).save()  # nothing changed: no commit
    elsewhere = LcRack(rack.guid)
    elsewhere.name = "r3"
    elsewhere.save()
    back = configure(store, cache, namespace="lc")
    assert LcRack(rack.guid).name == "r3"
    assert back.stats.snapshot().get("object_local_flushes", 0) == 1
    assert current() is back


def test_a_commit_through_a_context_with_a_shared_cache_reaches_a_local_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other context's cache is shared: its commits count against local caches too. fakeredis
    stands for a shared cache here (it is process-local, ``shared = False``, so it is told to be
    shared: a real server's would be, and this test needs none)."""
    from dal.backends.redis.fake import FakeRedisCache

    monkeypatch.setattr(FakeRedisCache, "shared", True)
    tag = uuid.uuid4().hex[:8]
    store, local = f"sqlite:///{tmp_path}/db.sqlite3", f"memory://local{tag}"
    configure(store, local, namespace="lc")
    rack = LcRack(data={"name": "r1"})
    rack.save()
    server = LcServer(data={"name": "s1", "status": "NEW", "cores": 4, "rack": rack})
    server.save()
    assert _read_all(rack, server) == ("NEW", 0, [server.guid], 4)
    shared = configure(store, f"fakeredis://lc{tag}", namespace="lc")
    assert shared.volatile.shared
    moved = LcServer(server.guid)
    moved.status, moved.cores, moved.rack = "RUNNING", 8, None
    moved.save()
    configure(store, local, namespace="lc")
    assert _read_all(rack, server) == ("RUNNING", 1, [], 0)


def _rack_with_a_server() -> tuple[LcRack, LcServer]:
    rack = LcRack(data={"name": "r1"})
    rack.save()
    server = LcServer(data={"name": "s1", "status": "NEW", "cores": 4, "rack": rack})
    server.save()
    return rack, server


def _add_cores(store: str, namespace: str, guid: str) -> None:
    """Another process, with a cache of its own, commits."""
    configure(store, "memory://", namespace=namespace)
    server = LcServer(guid)
    server.cores += 4
    server.save()


@pytest.mark.etcd
def test_a_local_cache_of_etcd_serves_no_dynamic_from_before_another_processs_commit(
        etcd_server: Any, namespace: str) -> None:
    """etcd tells no other process's commits cheaply, so a local cache could not drop what they
    outdate: objects were read around it, dynamics were served from it (the rack's load stayed 4)."""
    context = configure(etcd_server.url, "memory://", namespace=namespace)
    try:
        assert not context.caches_objects
        rack, server = _rack_with_a_server()
        assert LcRack(rack.guid).load == 4 and LcRack(rack.guid).load == 4
        run_spawned(_add_cores, etcd_server.url, namespace, server.guid)
        assert LcServer(server.guid).cores == 8
        assert LcRack(rack.guid).load == 8, "a dynamic computed before another process's commit"
        assert context.stats["dynamic.lcrack.load.computations"] == 3, "computed at each read"
    finally:
        context.persistent.commit([], [DeletePrefix(context.keys.root)])


@pytest.mark.etcd
def test_a_local_cache_of_etcd_serves_no_object_from_before_another_processs_commit(
        etcd_server: Any, namespace: str) -> None:
    """The objects half: a server read twice before another process's commit (so that a cache in
    front of etcd would hold its document) reads as that commit left it."""
    context = configure(etcd_server.url, "memory://", namespace=namespace)
    try:
        _, server = _rack_with_a_server()
        assert LcServer(server.guid).cores == 4 and LcServer(server.guid).cores == 4
        run_spawned(_add_cores, etcd_server.url, namespace, server.guid)
        assert LcServer(server.guid).cores == 8, "an object cached before another process's commit"
    finally:
        context.persistent.commit([], [DeletePrefix(context.keys.root)])
