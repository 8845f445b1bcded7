"""A cached dynamic is tagged with the revision it was computed from, and only a stored revision fills it.

An object loaded before a save (here, or in another process), one with unsaved changes and a new
object compute their own value; none of them may leave it in the shared cache for an object
loaded after the save, or for anyone else. See docs/dynamics.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import at_once, persistent_url_for, volatile_url_for
from dynamic_hybrids import CALLS, Gauge

from dal import DataObject, Dynamic, Property, configure
from dal.backends.base import DeletePrefix, Put
from dal.cache.seen import FRESH, STALE, UNSURE, Seen
from dal.config import Context
from dal.exceptions import ConfigurationError
from dal.objects.dynamics_tags import dumps

#: (durable store, volatile store, signed): each volatile store, memory:// both signed and not
STORES = [("sqlite", "memory", False), ("sqlite", "memory", True), ("etcd", "memcached", True),
          ("redis", "redis", False)]
HMAC_KEY = "revision-tests-hmac-key-0123456789"
TESTS = Path(__file__).parent


class RevisionBasket(DataObject):
    """A list property, to change in place without assigning it."""

    __properties: list[Property[Any]] = [Property("items", list, default=[], mandatory=False)]
    __dynamics = [Dynamic("total", int, 60)]

    def _total(self) -> int:
        CALLS["total", self.guid] += 1
        return sum(self.items)


class RevisionSpelt(DataObject):
    """Typed fields whose stored spelling may not be the one this version writes."""

    __properties: list[Property[Any]] = [
        Property("tags", set[str], default=set()), Property("when", datetime, mandatory=False),
        Property("samples", list[float], default=[])]
    __dynamics = [Dynamic("summary", str, 60, locked=True)]

    def _summary(self) -> str:
        CALLS["summary", self.guid] += 1
        time.sleep(0.2)  # long enough for every concurrent reader to miss before it is stored
        return f"{sorted(self.tags)} {self.when} {sum(self.samples)}"


@pytest.fixture(params=STORES, ids=[f"{p}+{v}{'+signed' if s else ''}" for p, v, s in STORES])
def stores(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Any:
    persistent, volatile, signed = request.param
    context = configure(persistent_url_for(persistent, request, tmp_path),
                        volatile_url_for(volatile, request), namespace=namespace,
                        hmac_key=HMAC_KEY if signed else None)
    yield context
    context.persistent.commit([], [DeletePrefix(context.keys.root)])


def gauge(level: int) -> Gauge:
    obj = Gauge(data={"name": f"g{uuid.uuid4().hex[:6]}", "level": level})
    obj.save()
    return obj


def cached(context: Context, obj: DataObject, name: str) -> tuple[Any, ...] | None:
    """Return the ``(value, revision)`` cached for ``obj``'s dynamic ``name``, or None."""
    payload = context.dynamics.get(context.keys.cached_dynamic(obj._meta.name, obj.guid, name))
    return None if payload is None else tuple(json.loads(payload))[:2]


def stat(context: Context, obj: DataObject, name: str, event: str) -> float:
    return context.stats[f"dynamic.{obj._meta.name}.{name}.{event}"]


def test_an_out_of_date_object_never_fills_what_a_fresh_load_reads(stores: Context) -> None:
    old = gauge(1)
    writer = Gauge(old.guid)
    writer.level = 2
    writer.save()
    assert old.plain == 10, "an object computes from its own fields"
    assert cached(stores, old, "plain") is None, "a revision older than one seen here fills nothing"
    fresh = Gauge(old.guid)
    assert fresh.plain == 20 and cached(stores, old, "plain") == (20, fresh._revision)
    assert old.plain == 20, "a value of a newer revision is served to an older object"
    assert CALLS["plain", old.guid] == 2


def test_a_save_in_another_process_is_never_hidden_by_a_value_of_the_older_revision(
        stores: Context) -> None:
    old = gauge(1)
    script = ("import sys; from dal import configure; from dynamic_hybrids import Gauge\n"
              "configure(sys.argv[1], sys.argv[2], namespace=sys.argv[3], hmac_key=sys.argv[4] or None)\n"
              "obj = Gauge(sys.argv[5]); obj.level = 2; obj.save()\n")
    url = stores.volatile_url
    volatile = "memory://other" if url.scheme == "memory" else url.render(hide_password=False)
    subprocess.run([sys.executable, "-c", script, stores.persistent_url.render(hide_password=False), volatile,
                    stores.namespace,
                    HMAC_KEY if stores.dynamics.signer.signing else "", old.guid],
                   check=True, env={**os.environ, "PYTHONPATH": str(TESTS)}, timeout=60)
    # this process has not seen revision 2: its old object's value is cached, tagged revision 1
    assert old.plain == 10 and cached(stores, old, "plain") == (10, old._revision)
    fresh = Gauge(old.guid)
    assert fresh._revision > old._revision
    assert fresh.plain == 20, "a value older than the object reading it is a miss"
    assert stat(stores, old, "plain", "outdated") == 1
    assert cached(stores, old, "plain") == (20, fresh._revision), "and is replaced"
    assert Gauge(old.guid).plain == 20 and CALLS["plain", old.guid] == 2


def test_unsaved_changes_compute_a_value_no_one_else_reads(stores: Context) -> None:
    obj = gauge(3)
    edited = Gauge(obj.guid)
    edited.level = 99
    assert edited.plain == 990
    assert cached(stores, obj, "plain") is None and stat(stores, obj, "plain", "unshared") == 1
    assert Gauge(obj.guid).plain == 30 and cached(stores, obj, "plain") == (30, obj._revision)


def test_a_list_changed_in_place_is_an_unsaved_change(stores: Context) -> None:
    basket = RevisionBasket(data={"items": [1, 2]})
    basket.save()
    basket.items.append(40)  # never assigned, never saved
    assert basket.total == 43
    assert cached(stores, basket, "total") is None
    assert RevisionBasket(basket.guid).total == 3


def test_a_new_object_caches_nothing(stores: Context) -> None:
    obj = Gauge(data={"name": "new", "level": 4})
    assert obj.plain == 40 and obj.reading  # the locked one neither caches nor takes its lock
    assert cached(stores, obj, "plain") is None and cached(stores, obj, "reading") is None
    assert stores.volatile.get(stores.keys.cached_dynamic("gauge", obj.guid, "reading") + "/lock") is None
    obj.save()
    assert obj.plain == 40 and cached(stores, obj, "plain") == (40, obj._revision)


@pytest.mark.parametrize("entry", [b"[5]", b"5", b"not json", b"[5,true]", b'[5,"7"]'])
def test_an_entry_of_an_earlier_dal_or_no_tag_is_a_miss_not_an_error(stores: Context, entry: bytes) -> None:
    obj = gauge(2)
    key = stores.keys.cached_dynamic("gauge", obj.guid, "plain")
    assert stores.dynamics.put(key, entry, 60)
    assert obj.plain == 20 and stat(stores, obj, "plain", "outdated") == 1
    assert cached(stores, obj, "plain") == (20, obj._revision), "replaced by a tagged value"
    assert Gauge(obj.guid).plain == 20 and CALLS["plain", obj.guid] == 1


def test_an_older_value_written_back_is_not_served(stores: Context) -> None:
    """A replay of an authentic entry (signed with the right key) is caught by its revision."""
    obj = gauge(1)
    assert obj.plain == 10
    key = stores.keys.cached_dynamic("gauge", obj.guid, "plain")
    raw = stores.volatile.get(key)
    assert raw is not None
    obj.level = 2
    obj.save()
    stores.volatile.set(key, raw, 60)
    assert Gauge(obj.guid).plain == 20 and obj.plain == 20


def test_a_locked_dynamic_replaces_an_older_value(stores: Context) -> None:
    obj = gauge(1)
    key = stores.keys.cached_dynamic("gauge", obj.guid, "reading")
    # tagged as dal tags it: only its revision tells it is not obj's (an untagged one is refused anyway)
    assert stores.dynamics.put(key, planted_older(stores, obj, "reading"), 60)
    value = obj.reading
    assert value != "old" and cached(stores, obj, "reading") == (value, obj._revision)
    assert Gauge(obj.guid).reading == value and CALLS["reading", obj.guid] == 1


def test_a_newer_value_is_served_to_an_older_object(stores: Context) -> None:
    old = gauge(1)
    writer = Gauge(old.guid)
    writer.level = 5
    writer.save()
    assert writer.plain == 50
    assert old.plain == 50 and CALLS["plain", old.guid] == 1
    assert stat(stores, old, "plain", "hits") == 1


def planted_older(context: Context, obj: DataObject, name: str) -> bytes:
    """Return a payload of ``obj``'s dynamic ``name`` tagged exactly as dal tags one (this type's digest)
    but computed from the revision before ``obj``'s: only its revision tells it is not ``obj``'s."""
    return dumps("old", obj._revision - 1, type(obj)._meta.dynamics[name].validator.digest)


def test_a_locked_waiter_never_takes_a_value_of_an_older_revision(stores: Context) -> None:
    """A lock holder computing for an older object (another process that has not seen the last save)
    stores its value while a reader of the newer revision waits on the lock: the waiter must not take
    it, though its type's digest is the waiter's own."""
    obj = gauge(1)
    key = stores.keys.cached_dynamic("gauge", obj.guid, "reading")
    lock_key = key + "/lock"
    assert stores.volatile.add(lock_key, b"the older object's owner", 5)
    values: list[str] = []
    waiter = threading.Thread(target=lambda: values.append(Gauge(obj.guid).reading), daemon=True)
    waiter.start()
    deadline = time.monotonic() + 5
    while stat(stores, obj, "reading", "lock_waits") < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert stat(stores, obj, "reading", "lock_waits") == 1, "the reader never waited on the lock"
    assert stores.dynamics.put(key, planted_older(stores, obj, "reading"), 60)  # the owner stores, then
    stores.volatile.delete(lock_key)  # releases its lock
    waiter.join(10)
    assert values and values[0] != "old", "a waiter took a value computed from an older revision"
    assert cached(stores, obj, "reading") == (values[0], obj._revision), "and it was replaced"
    assert CALLS["reading", obj.guid] == 1


def test_a_lock_owner_never_serves_a_value_of_an_older_revision_stored_before_it_took_the_lock(
        stores: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader misses, and before its lock's ``add`` an owner computing for an older object stores
    its value and releases the lock: the reader, now the owner, finds that value when it looks again,
    and must compute its own."""
    obj = gauge(1)
    key = stores.keys.cached_dynamic("gauge", obj.guid, "reading")
    store = stores.dynamics.store
    real_add = store.add

    def add(wanted: str, value: bytes, ttl: float) -> bool:
        if wanted == key + "/lock":  # the older owner's value lands between the miss and the lock
            assert stores.dynamics.put(key, planted_older(stores, obj, "reading"), 60)
        return bool(real_add(wanted, value, ttl))

    monkeypatch.setattr(store, "add", add)
    value = Gauge(obj.guid).reading
    assert value != "old", "the lock's owner served a value computed from an older revision"
    monkeypatch.setattr(store, "add", real_add)
    # and replaced it, as a waiter that finds it does (its fill cannot take a lease over a value)
    assert cached(stores, obj, "reading") == (value, obj._revision)


def test_an_object_saved_at_a_revision_not_known_caches_nothing(
        stores: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit applied whose revision could not be learnt (an answer lost, its journal record swept
    into a marker naming none) leaves its object at revision -1: a value it computes is not tagged
    with any stored revision, so it is its own (cached, it would be served to any other object whose
    revision is not known either, whatever its fields)."""
    real_commit = stores.commit

    def commit(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(real_commit(*args, **kwargs), revision=0)

    monkeypatch.setattr(stores, "commit", commit)
    obj = gauge(2)
    assert obj._revision == -1
    assert obj.plain == 20 and obj.reading
    assert cached(stores, obj, "plain") is None and cached(stores, obj, "reading") is None
    assert stat(stores, obj, "plain", "unshared") == 1


#: a field, and how a document stored by an earlier version or another client spells its value
SPELLINGS = {"a set not sorted": ("tags", ["c", "b", "a"]),
             "a datetime ending +00:00": ("when", "2024-01-01T00:00:00+00:00"),
             "ints before the list was widened to floats": ("samples", [1, 2, 3])}


@pytest.mark.parametrize(("field", "spelt"), list(SPELLINGS.values()), ids=list(SPELLINGS))
def test_a_stored_document_spelt_otherwise_than_dal_writes_it_still_fills_the_cache(
        stores: Context, field: str, spelt: Any) -> None:
    """An object only loaded is its stored revision, however the document spells its values: its value
    is cached, and computed once by concurrent locked readers. It used to be compared with the stored
    text, as a save does, so it counted as changed and computed on every read."""
    obj = RevisionSpelt(data={"tags": {"a", "b", "c"}, "when": datetime(2024, 1, 1, tzinfo=timezone.utc),
                              "samples": [1.0, 2.0, 3.0]})
    obj.save()
    doc_key = stores.keys.doc("revisionspelt", obj.guid)
    entry = stores.persistent.get(doc_key)
    assert entry is not None
    document = json.loads(entry.value)
    assert json.dumps(document[field]) != json.dumps(spelt), "dal writes it otherwise"
    raw = json.dumps({**document, field: spelt}).encode()
    assert stores.persistent.commit([], [Put(doc_key, raw)]).ok
    stores.volatile.delete(stores.keys.cached_doc("revisionspelt", obj.guid))  # dal's spelling, cached
    loaded = RevisionSpelt(obj.guid)
    assert loaded._raw == raw and loaded.summary == "['a', 'b', 'c'] 2024-01-01 00:00:00+00:00 6.0"
    assert cached(stores, loaded, "summary") == (loaded.summary, loaded._revision)
    loaded.invalidate_dynamics()
    assert set(at_once(4, lambda: RevisionSpelt(obj.guid).summary)) == {loaded.summary}
    assert CALLS["summary", obj.guid] == 2 and stat(stores, obj, "summary", "unshared") == 0
    loaded.samples.append(4.0)  # a change in place is still a change
    loaded.invalidate_dynamics()
    assert loaded.summary.endswith(" 10.0") and cached(stores, obj, "summary") is None
    assert stat(stores, obj, "summary", "unshared") == 1


@pytest.mark.parametrize("volatile", ["memory", pytest.param("memcached", marks=pytest.mark.memcached)])
def test_an_object_loaded_under_another_store_never_reads_nor_fills_its_cache(
        request: pytest.FixtureRequest, tmp_path: Path, namespace: str, volatile: str) -> None:
    """An object loaded from store A and kept, read after configure() switched to B (which holds a copy
    of it, as ``dal copy`` makes): it computes from its own fields, and leaves nothing in B's cache. It
    used to cache A's value there, tagged with A's revision (ahead of the copy's), which B's own
    readers were then served."""
    cache = volatile_url_for(volatile, request)
    first = configure(f"sqlite:///{tmp_path / 'a.sqlite3'}", cache, namespace=namespace)
    kept = gauge(1)
    for level in (2, 3, 4):  # A's revisions run ahead of the copy's
        kept.level = level
        kept.save()
    entry = first.persistent.get(first.keys.doc("gauge", kept.guid))
    assert entry is not None
    second = configure(f"sqlite:///{tmp_path / 'b.sqlite3'}", cache, namespace=namespace)
    copied = json.dumps({**json.loads(entry.value), "level": 7}).encode()
    assert second.persistent.commit([], [Put(second.keys.doc("gauge", kept.guid), copied)]).ok
    assert kept.plain == 40 and kept.reading, "its own fields"
    assert cached(second, kept, "plain") is None and cached(second, kept, "reading") is None
    assert second.volatile.get(second.keys.cached_dynamic("gauge", kept.guid, "reading") + "/lock") is None
    assert stat(second, kept, "plain", "unshared") == 1
    fresh = Gauge(kept.guid)
    assert fresh._revision < kept._revision and fresh.plain == 70
    assert cached(second, kept, "plain") == (70, fresh._revision)
    assert kept.plain == 40, "nor is it served this store's value"
    assert CALLS["plain", kept.guid] == 3


@pytest.mark.parametrize("volatile", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_invalidate_dynamics_of_an_object_loaded_under_another_store_is_refused(
        request: pytest.FixtureRequest, tmp_path: Path, namespace: str, volatile: str) -> None:
    """``invalidate_dynamics()`` of an object loaded under store A, called while B is configured, is
    refused as its save is: it used to drop B's value of that guid (B's object, a copy) and return,
    while A's value, the one it meant to drop, stayed cached and served."""
    cache = volatile_url_for(volatile, request)
    first_url = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    first = configure(first_url, cache, namespace=namespace)
    kept = gauge(1)
    assert kept.plain == 10 and cached(first, kept, "plain") == (10, kept._revision)
    entry = first.persistent.get(first.keys.doc("gauge", kept.guid))
    assert entry is not None
    second = configure(f"sqlite:///{tmp_path / 'b.sqlite3'}", cache, namespace=namespace)
    copied = json.dumps({**json.loads(entry.value), "level": 7}).encode()
    assert second.persistent.commit([], [Put(second.keys.doc("gauge", kept.guid), copied)]).ok
    assert Gauge(kept.guid).plain == 70 and cached(second, kept, "plain") is not None
    for names in (None, "plain", ["plain"]):
        with pytest.raises(ConfigurationError, match=r"invalidate_dynamics\(\).*configure\(\)"):
            kept.invalidate_dynamics(names)
    assert cached(second, kept, "plain") is not None, "B's value is B's object's, not this one's"
    first = configure(first_url, cache, namespace=namespace)
    assert cached(first, kept, "plain") == (10, kept._revision)
    kept.invalidate_dynamics("plain")  # under its own store, as ever
    assert cached(first, kept, "plain") is None


def forgotten(context: Context, held: DataObject) -> None:
    """Make this process's record of seen revisions forget ``held`` into a slot a later revision of
    another object reached, as a process that went on to read more objects than the record holds does."""
    for level in range(3):
        gauge(level)  # later objects: later revisions, which the one slot keeps
    assert context.seen.verdict("gauge", held.guid, held._revision) is UNSURE


def test_a_long_held_object_the_record_forgot_still_caches_and_locks_its_dynamics(stores: Context) -> None:
    """An unchanged object held while its process read more objects than its record of seen revisions
    holds is judged UNSURE (maybe older than one seen). It used to compute for itself on every miss,
    neither caching nor locking (8 concurrent reads, 8 loader calls): its stored revision is read once,
    as a cached document so judged is, and found its own it is as any fresh object."""
    stores.seen = Seen(capacity=2, buckets=1)
    held = Gauge(gauge(1).guid)
    forgotten(stores, held)
    values = at_once(6, lambda: held.reading)
    assert len(set(values)) == 1 and CALLS["reading", held.guid] == 1, "computed once, the others waited"
    assert cached(stores, held, "reading") == (values[0], held._revision)
    assert stat(stores, held, "reading", "unshared") == 0
    assert stores.seen.verdict("gauge", held.guid, held._revision) is FRESH, "noted: judged exactly again"
    held.invalidate_dynamics()
    assert held.reading != values[0] and CALLS["reading", held.guid] == 2


def test_a_forgotten_object_older_than_its_stored_revision_still_computes_its_own_value(
        stores: Context) -> None:
    """The same, when another process saved the object since it was loaded here: the read of its stored
    revision finds a newer one, so its value stays its own (``unshared``) and a fresh load's is cached."""
    record = stores.seen = Seen(capacity=2, buckets=1)
    held = Gauge(gauge(1).guid)
    stores.seen = Seen()  # another process, with a record of its own, saves it
    other = Gauge(held.guid)
    other.level = 2
    other.save()
    stores.seen = record
    forgotten(stores, held)
    assert held.plain == 10 and stat(stores, held, "plain", "unshared") == 1
    assert cached(stores, held, "plain") is None, "its value, of an older revision, is not everyone's"
    assert stores.seen.verdict("gauge", held.guid, held._revision) is STALE, "the newer revision is noted"
    assert held.plain == 10 and CALLS["plain", held.guid] == 2, "its own again, judged without a read"
    fresh = Gauge(held.guid)
    assert fresh.plain == 20 and cached(stores, fresh, "plain") == (20, other._revision)
