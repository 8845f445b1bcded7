"""``fakeredis://`` lives in this process only: both its stores say so (``shared = False``).

Were they shared, the demo would run its refresher in another process, which sees an empty fake
server; ``dal stats`` would publish to a cache no other process reads; and a context would trust
its fake cache to be invalidated by commits that never reach it (another context's, in front of
another fake cache; another process's, to a shared durable store). As a process-local cache, it
is emptied (:meth:`FakeRedisCache.clear`) when its context finds a commit it did not hear of.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dal import DataList, DataObject, Dynamic, Property, configure
from dal.backends import open_persistent, open_volatile
from dal.backends.base import Put

pytest.importorskip("fakeredis")


class FrThing(DataObject):
    __properties = [Property("name", str)]


def test_both_fakeredis_stores_are_process_local() -> None:
    tag = uuid.uuid4().hex[:8]
    assert open_persistent(f"fakeredis://fr{tag}").shared is False
    assert open_volatile(f"fakeredis://fr{tag}").shared is False
    context = configure(f"fakeredis://fr{tag}", f"fakeredis://fr{tag}", namespace="fr")
    assert context.publisher is None  # `dal stats` shows this process's own numbers


def test_a_commit_through_another_fake_cache_is_never_hidden(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    store = f"sqlite:///{tmp_path}/db.sqlite3"
    one = configure(store, f"fakeredis://one{tag}", namespace="fr")
    thing = FrThing(data={"name": "v1"})
    thing.save()
    assert FrThing(thing.guid).name == "v1"
    assert FrThing(thing.guid).name == "v1"  # now cached in fakeredis://one
    configure(store, f"fakeredis://two{tag}", namespace="fr")
    changed = FrThing(thing.guid)
    changed.name = "v2"
    changed.save()  # invalidates fakeredis://two only
    back = configure(one.persistent_url.settings(), one.volatile_url.settings(), namespace="fr")
    assert FrThing(thing.guid).name == "v2"
    assert back.stats.snapshot().get("object_local_flushes", 0) >= 1


def test_clear_removes_cache_entries_only() -> None:
    name = f"fakeredis://fr{uuid.uuid4().hex[:8]}"
    store, cache = open_persistent(name), open_volatile(name)  # one fake database, both roles
    store.commit([], [Put("durable", b"kept")])
    assert cache.set("value", b"v", 60) and cache.set("lock", b"l", 60)
    cache.clear(keep=lambda key: key == "lock", endings=("ck",))  # type: ignore[attr-defined]
    assert cache.get("value") is None and cache.get("lock") == b"l"
    cache.clear()  # type: ignore[attr-defined]
    assert cache.get("lock") is None
    entry = store.get("durable")
    assert entry is not None and entry.value == b"kept"


class FrUpper(DataObject):
    __properties = [Property("name", str)]
    __dynamics = [Dynamic("upper", str, 600)]

    def _upper(self) -> str:
        return str(self.name).upper()


def test_a_commit_through_another_client_of_the_same_fake_server_reaches_a_local_cache() -> None:
    """Two URLs that differ in options are two clients of one fake server: the commits of one must
    empty the local cache in front of the other (counted per fake server, not per client)."""
    tag = uuid.uuid4().hex[:8]
    first = configure(f"fakeredis://fr{tag}", "memory://fr-a", namespace="fr")
    thing = FrUpper(data={"name": "v1"})
    thing.save()
    query = DataList(FrUpper, {"items": [("name", "EQUALS", "v1")]})
    assert len(query) == 1 and FrUpper(thing.guid).upper == "V1"  # both cached now
    configure(f"fakeredis://fr{tag}?timeout=4", "memory://fr-b", namespace="fr")
    other = FrUpper(thing.guid)
    other.name = "v2"
    other.save()
    configure(str(first.persistent_url.settings()), str(first.volatile_url.settings()), namespace="fr")
    assert len(DataList(FrUpper, {"items": [("name", "EQUALS", "v1")]})) == 0
    assert FrUpper(thing.guid).upper == "V2"
