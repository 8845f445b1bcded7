"""Monotonic reads: a process never returns an older revision of an object than one it has seen.

The cache is made to lag on purpose: a write whose invalidation is held back (as between a
commit and its invalidation, or while the cache is unreachable), and an older entry written
back into the cache (a replay). Multi-process histories with real faults are in
``tests/faults/test_cache_faults.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from harness import exit_code_of
from hybrids import Kind
from relation_hybrids import Owner, Pet

from dal import DataList, configure
from dal.cache.leases import LeasedCache
from dal.cache.seen import Seen, Verdict
from dal.config import Context, current
from dal.exceptions import ObjectNotFoundError


def _kind(name: str) -> Kind:
    kind = Kind(data={"name": name, "code": name})
    kind.save()
    assert Kind(kind.guid).name == name and Kind(kind.guid).name == name  # cached now
    return kind


def _lagging(kind: Kind) -> Callable[[], None]:
    """Return what puts the cached document of ``kind`` as it is now back into the cache.

    Holding the invalidation back leaves it there, except where the commit itself evicts it
    (Redis for both roles, one database): there it is written back, as a replay of the old
    entry would, so the cache lags on every store pair.
    """
    context = current()
    key = context.keys.cached_doc(Kind._meta.name, kind.guid)
    old = context.volatile.get(key)

    def restore() -> None:
        if old is not None and context.volatile.get(key) is None:
            assert context.volatile.set(key, old, 60)

    return restore


def _save_without_invalidating(monkeypatch: pytest.MonkeyPatch, kind: Kind, name: str) -> None:
    """Save a new name while the cache keeps the old document (its invalidation held back)."""
    restore = _lagging(kind)
    with monkeypatch.context() as patch:
        patch.setattr(LeasedCache, "invalidate", lambda self, *keys, recorded=False: [])
        kind.name = name
        kind.save()
    restore()


def test_a_cached_document_older_than_one_written_here_is_not_served(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    kind = _kind("v1")
    _save_without_invalidating(monkeypatch, kind, "v2")
    assert Kind(kind.guid).name == "v2"
    assert context.stats["object_stale"] == 1
    assert Kind(kind.guid).name == "v2"  # and the stale entry was replaced: served from the cache now
    assert context.stats["object_stale"] == 1


def test_a_cached_document_older_than_one_read_here_is_not_served(context: Context) -> None:
    """A revision this process only read (another process wrote it) bounds what it serves too.

    The other tests have this process write or delete the object, which records the revision
    whatever a load does; here only the load of v2 can record it.
    """
    kind = _kind("v1")
    key = context.keys.cached_doc(Kind._meta.name, kind.guid)
    old = context.volatile.get(key)
    assert old is not None
    mine = context.seen
    context.seen = Seen()  # another process, with a record of its own, writes v2 (evicting v1)
    other = Kind(kind.guid)
    other.name = "v2"
    other.save()
    context.seen = mine
    assert Kind(kind.guid).name == "v2"  # read here: the only way this process learns of v2
    assert context.volatile.set(key, old, 60)  # then the older entry comes back (a replay, a lag)
    context.seen = Seen()
    assert Kind(kind.guid).name == "v1"  # control: the cache does lag, for a process that never read v2
    context.seen = mine
    assert Kind(kind.guid).name == "v2"
    assert context.stats["object_stale"] >= 1


def test_batch_loads_refuse_older_cached_documents_too(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = [_kind(f"k{n}") for n in range(3)]
    _save_without_invalidating(monkeypatch, kinds[1], "renamed")
    loaded = {kind.guid: kind.name for kind in DataList(Kind, guids=[kind.guid for kind in kinds])}
    assert loaded == {kinds[0].guid: "k0", kinds[1].guid: "renamed", kinds[2].guid: "k2"}
    assert context.stats["object_stale"] == 1


def test_a_delete_seen_here_hides_a_cached_ghost(context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    kind = _kind("ghost")
    restore = _lagging(kind)
    with monkeypatch.context() as patch:
        patch.setattr(LeasedCache, "invalidate", lambda self, *keys, recorded=False: [])
        Kind(kind.guid).delete()
    restore()
    assert list(DataList(Kind, guids=[kind.guid])) == []  # the batch path skips it as deleted
    with pytest.raises(ObjectNotFoundError):
        Kind(kind.guid)
    assert context.stats["object_stale"] >= 1


def test_control_a_process_that_forgot_what_it_saw_serves_the_old_entry(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prove the tests above can fail: without the record, the lagging cache is served."""
    kind = _kind("old")
    _save_without_invalidating(monkeypatch, kind, "new")
    context.seen = Seen()  # as another process that never saw the new revision
    assert Kind(kind.guid).name == "old"


def test_a_bounded_record_checks_forgotten_objects_against_the_store(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    kind = _kind("first")
    _save_without_invalidating(monkeypatch, kind, "second")
    context.seen = Seen(capacity=4)
    context.seen.note("kind", kind.guid, 10**9)  # seen (and about to be forgotten)
    for n in range(4):  # fill the record: the oldest quarter goes, into the slots
        context.seen.note("other", f"g{n}", 1)
    assert context.seen.verdict("kind", kind.guid, 1) is Verdict.UNSURE
    assert Kind(kind.guid).name == "second"  # unsure: read from the store, never the old entry
    assert context.stats["object_unsure"] >= 1


def test_verdicts() -> None:
    seen = Seen(capacity=8)
    assert seen.verdict("h", "a", 5) is Verdict.FRESH  # never seen: anything goes
    seen.note("h", "a", 5)
    seen.note("h", "a", 3)  # an older revision read later never lowers the record
    assert seen.verdict("h", "a", 4) is Verdict.STALE
    assert seen.verdict("h", "a", 5) is Verdict.FRESH
    assert seen.verdict("h", "a", 6) is Verdict.FRESH
    for n in range(8):
        seen.note("h", f"b{n}", 100 + n)
    assert len(seen) <= 8  # "a" was forgotten first, into its slot
    assert seen.verdict("h", "a", 4) is Verdict.UNSURE
    assert seen.verdict("h", "a", 5) is Verdict.FRESH  # the revision it was forgotten at


def test_forgetting_spreads_over_slots_so_few_objects_become_unsure() -> None:
    """Past its capacity, the record keeps a maximum per slot, not one floor for all."""
    seen = Seen(capacity=1000, buckets=1 << 14)
    for n in range(5000):  # each object read once, at a revision growing with every commit
        seen.note("h", f"g{n}", n + 1)
    remembered = [n for n in range(5000) if seen.verdict("h", f"g{n}", n) is Verdict.STALE]
    assert len(remembered) == len(seen)  # the objects still recorded know exactly
    forgotten = [n for n in range(5000) if n not in set(remembered)]
    # read again at the revision it was seen at, a forgotten object needs a durable read only
    # when another object of its slot was forgotten at a higher revision: few, where one floor
    # for all would have made nearly every one of them unsure
    unsure = sum(seen.verdict("h", f"g{n}", n + 1) is Verdict.UNSURE for n in forgotten)
    assert unsure < len(forgotten) // 4, f"{unsure} of {len(forgotten)} forgotten objects"
    assert all(seen.verdict("h", f"g{n}", n) is Verdict.UNSURE for n in forgotten)  # never fresh


def test_the_record_outlives_configure(context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    kind = _kind("before")
    _save_without_invalidating(monkeypatch, kind, "after")
    again = configure(str(context.persistent_url.render(hide_password=False)),
                      str(context.volatile_url.render(hide_password=False)), namespace=context.namespace)
    assert again.seen is context.seen  # one record per store and namespace, for the process
    assert Kind(kind.guid).name == "after"


def test_a_forked_child_never_inherits_a_held_lock(context: Context) -> None:
    kind = _kind("forked")
    held = context.seen._lock
    assert held.acquire(timeout=5)  # as another thread of the parent would, at fork() time
    try:
        pid = os.fork()
        if pid == 0:
            ok = Kind(kind.guid).name == "forked" and Kind(_kind("in child").guid).name == "in child"
            os._exit(0 if ok else 1)
    finally:
        held.release()
    assert exit_code_of(pid, "the child hung on a lock it inherited") == 0


def test_a_referrer_rewritten_by_an_abandoning_delete_is_never_served_older(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """``delete(abandon=...)`` rewrites the referrers it unlinks: a process that did so never reads one
    back from before, even when the invalidation lags and the older authentic entry is written back."""
    owner = Owner(data={"name": "o"})
    owner.save()
    pet = Pet(data={"name": "p"})
    pet.owner = owner
    pet.save()
    assert Pet(pet.guid).owner_guid == owner.guid and Pet(pet.guid).owner_guid == owner.guid  # cached
    key = context.keys.cached_doc(Pet._meta.name, pet.guid)
    old = context.volatile.get(key)
    assert old is not None
    with monkeypatch.context() as patch:  # the invalidation held back (a lag)
        patch.setattr(LeasedCache, "invalidate", lambda self, *keys, recorded=False: [])
        Owner(owner.guid).delete(abandon=["pets"])
    if context.volatile.get(key) is None:
        assert context.volatile.set(key, old, 60)  # a replay of the older authentic entry
    assert Pet(pet.guid).owner_guid is None, "served the referrer as it was before this process's delete"
