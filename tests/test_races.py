"""Races, made deterministic by injecting the interleaving, plus a multi-process stress test.

Each injected test stops one operation at its most dangerous point (between reading the
durable store and filling the cache, or between loading and committing) and runs the
competing write right there.
"""

from __future__ import annotations

import multiprocessing
import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from race_hybrids import Tally
from relation_hybrids import Owner, Passport, Pet

from dal import DataObject, configure
from dal.backends.base import Entry, Put
from dal.cache.leases import LeasedCache
from dal.cache.seen import Seen
from dal.config import Context
from dal.exceptions import (
    ConcurrencyError,
    LinkedObjectError,
    ObjectNotFoundError,
    OneToOneError,
    UniqueConstraintError,
)


def _pause_durable_read(monkeypatch: pytest.MonkeyPatch, context: Context, key: str,
                        competing: Callable[[], None]) -> None:
    """Run ``competing`` right after the next durable read of ``key``, before it returns.

    ``competing`` runs as another process would: its writes are not noted in this process's
    record of revisions seen (which would make the paused read return the newer revision;
    ``tests/test_monotonic.py`` covers that).
    """
    real_get = context.persistent.get
    fired = []

    def get(wanted: str) -> Entry | None:
        entry = real_get(wanted)
        if wanted == key and not fired:
            fired.append(True)
            mine, context.seen = context.seen, Seen()
            try:
                competing()
            finally:
                context.seen = mine
        return entry

    monkeypatch.setattr(context.persistent, "get", get)


def _cached_count(context: Context, tally: Tally) -> int | None:
    payload = context.objects.get(context.keys.cached_doc("tally", tally.guid))
    if payload is None:
        return None
    import json

    return int(json.loads(payload.partition(b" ")[2])["count"])


def test_load_racing_save_never_caches_the_older_revision(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tally = Tally(data={"label": "a", "count": 1})
    tally.save()

    def save_newer() -> None:
        other = Tally(tally.guid)
        other.count = 2
        other.save()

    _pause_durable_read(monkeypatch, context, context.keys.doc("tally", tally.guid), save_newer)
    stale = Tally(tally.guid)
    assert stale.count == 1  # read before the competing commit: fine to return
    assert _cached_count(context, tally) in (None, 2)
    assert Tally(tally.guid).count == 2


def test_control_without_the_lease_the_stale_set_happens(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prove the test above can fail: a cache that fills with a plain set caches the old revision."""
    tally = Tally(data={"label": "b", "count": 1})
    tally.save()

    def unguarded_fill(self: LeasedCache, key: str, load: Callable[[], bytes | None], ttl: float,
                       **_: Any) -> Any:
        payload = load()
        if payload is not None:
            self.store.set(key, self.signer.seal(key, b"V" + payload), ttl)
        return payload

    def save_newer() -> None:
        monkeypatch.undo()
        other = Tally(tally.guid)
        other.count = 2
        other.save()

    monkeypatch.setattr(LeasedCache, "fill", unguarded_fill)  # what a load fills through
    _pause_durable_read(monkeypatch, context, context.keys.doc("tally", tally.guid), save_newer)
    Tally(tally.guid)
    assert _cached_count(context, tally) == 1  # the ghost a lease prevents


def test_load_racing_delete_leaves_no_ghost(context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tally = Tally(data={"label": "c", "count": 1})
    tally.save()
    _pause_durable_read(monkeypatch, context, context.keys.doc("tally", tally.guid),
                        lambda: Tally(tally.guid).delete())
    Tally(tally.guid)
    with pytest.raises(ObjectNotFoundError):
        Tally(tally.guid)


@pytest.mark.parametrize("same_field", [False, True])
def test_save_racing_save_merges_or_follows_policy(
        context: Context, monkeypatch: pytest.MonkeyPatch, same_field: bool) -> None:
    tally = Tally(data={"label": "d", "count": 1})
    tally.save()
    mine = Tally(tally.guid)
    real_commit = context.persistent.commit
    commits: list[bool] = []

    def commit(checks: Any, ops: Any) -> Any:
        if not commits:  # the competing writer commits between our load and our commit
            theirs = Tally(tally.guid)
            theirs.count = 10
            if not same_field:
                theirs.note = "theirs"
            monkeypatch.setattr(context.persistent, "commit", real_commit)
            theirs.save()
            monkeypatch.setattr(context.persistent, "commit", commit)
        result = real_commit(checks, ops)
        commits.append(result.ok)
        return result

    monkeypatch.setattr(context.persistent, "commit", commit)
    if same_field:
        mine.count = 5
        before = dict(mine.__dict__)
        with pytest.raises(ConcurrencyError):
            mine.save(datastore_wins=None)
        assert mine.__dict__ == before
        mine.save(datastore_wins=True)
        assert Tally(tally.guid).count == 10 and mine.count == 10
    else:
        mine.note = "mine"
        mine.save()
        stored = Tally(tally.guid)
        assert (stored.count, stored.note) == (10, "mine")
        assert (mine.count, mine.note) == (10, "mine")
    assert commits[0] is False and commits[-1] is True


def _increment_worker(persistent: str, volatile: str, namespace: str, guids: list[str],
                      rounds: int, seed: int, start: Any) -> int:
    """Increment random counters ``rounds`` times, retrying on conflicts; return the retries."""
    configure(persistent, volatile, namespace=namespace)
    start.wait()  # every worker starts together, so they really contend
    rng = random.Random(seed)
    retries = 0
    for _ in range(rounds):
        guid = rng.choice(guids)
        while True:
            tally = Tally(guid)
            tally.count += 1
            try:
                tally.save(datastore_wins=None)
                break
            except ConcurrencyError:
                retries += 1
    return retries


@pytest.mark.slow
@pytest.mark.parametrize("servers", [
    pytest.param(("etcd_server", "memcached_server"), id="etcd+memcached",
                 marks=[pytest.mark.etcd, pytest.mark.memcached]),
    pytest.param(("redis_server", "redis_server"), id="redis+redis", marks=pytest.mark.redis)])
def test_processes_incrementing_counters_lose_nothing(
        request: pytest.FixtureRequest, servers: tuple[str, str]) -> None:
    persistent, volatile = (request.getfixturevalue(name).url for name in servers)
    namespace = f"t{uuid.uuid4().hex[:12]}"
    configure(persistent, volatile, namespace=namespace)
    tallies = [Tally(data={"label": f"n{i}"}) for i in range(3)]
    for tally in tallies:
        tally.save()
    guids = [tally.guid for tally in tallies]
    workers, rounds = 6, 40
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, spawn.Pool(workers) as pool:
        start = manager.Barrier(workers)
        retries = pool.starmap(_increment_worker, [
            (persistent, volatile, namespace, guids, rounds, seed, start)
            for seed in range(workers)], chunksize=1)
    total = sum(Tally(guid).count for guid in guids)
    assert total == workers * rounds, f"lost {workers * rounds - total} increments"
    assert sum(retries) > 0, "the workers never collided; the test proved nothing"


def _stale_cached_tally(context: Context) -> Tally:
    """Return a tally whose cached copy is one revision behind the store (an invalidation lost)."""
    tally = Tally(data={"label": f"stale-{uuid.uuid4().hex[:6]}", "count": 0})
    tally.save()
    assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0  # cached now
    doc_key = context.keys.doc("tally", tally.guid)
    entry = context.persistent.get(doc_key)
    assert entry is not None
    newer = entry.value.replace(b'"count":0', b'"count":1')
    assert context.persistent.commit([], [Put(doc_key, newer)]).ok  # behind dal's back: no invalidation
    assert Tally(tally.guid).count == 0  # the cache lags
    return tally


def _increment_until_saved(guid: str, attempts: int) -> int:
    """Run the counter recipe; return the attempts it took, or 0 when it never got through."""
    for attempt in range(1, attempts + 1):
        tally = Tally(guid)
        tally.count += 1
        try:
            tally.save(datastore_wins=None)
            return attempt
        except ConcurrencyError:
            continue
    return 0


def test_a_conflict_drops_the_stale_cached_copy_so_reload_and_retry_converges(context: Context) -> None:
    tally = _stale_cached_tally(context)
    assert _increment_until_saved(tally.guid, attempts=10) == 2  # one conflict, then the fresh copy
    assert Tally(tally.guid).count == 2


def test_control_without_that_invalidation_the_recipe_livelocks(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prove the test above can fail: a conflict that leaves the stale copy cached never converges."""
    tally = _stale_cached_tally(context)
    monkeypatch.setattr(context, "invalidate", lambda *keys: None)
    assert _increment_until_saved(tally.guid, attempts=10) == 0


def _refused_write(refusal: str) -> tuple[DataObject, Callable[[DataObject], None], type[Exception]]:
    """Return a stored object, a write of (a copy of) it that the store refuses (``refusal``), and the
    error it raises."""
    tag = uuid.uuid4().hex[:6]
    if refusal == "unique":
        Tally(data={"label": f"taken-{tag}"}).save()
        tally = Tally(data={"label": f"mine-{tag}"})
        tally.save()
        return tally, lambda obj: (setattr(obj, "label", f"taken-{tag}"), obj.save()), UniqueConstraintError
    if refusal == "onetoone":
        holder = Owner(data={"name": tag})
        holder.save()
        Passport(data={"number": "1", "holder": holder}).save()
        passport = Passport(data={"number": "2"})
        passport.save()
        return passport, lambda obj: (setattr(obj, "holder", holder), obj.save()), OneToOneError
    owner, pet = Owner(data={"name": tag}), Pet(data={"name": tag})
    owner.save()
    if refusal == "referrer":  # a delete refused: a pet points at its owner
        pet.owner = owner
    pet.save()
    if refusal == "referrer":
        return owner, lambda obj: obj.delete(), LinkedObjectError

    def link_to_a_lost_target(obj: DataObject) -> None:
        obj.owner = owner  # type: ignore[attr-defined]
        Owner(owner.guid).delete()  # by another writer, before this save: its commit finds no target
        obj.save()

    return pet, link_to_a_lost_target, ObjectNotFoundError


@pytest.mark.parametrize("refusal", ["unique", "onetoone", "target", "referrer"])
def test_a_commit_refused_on_a_unique_value_or_a_link_keeps_the_cached_copy(
        context: Context, refusal: str) -> None:
    """Such a refusal changed nothing stored: the cached copy, still current, serves the next load
    (dropping it, as after a conflict, would cost every such refusal a durable read). The save's
    refusals come from its commit's checks; the delete's (its referrers) from its scan before it."""
    stored, refused, error = _refused_write(refusal)
    kind = type(stored)
    kind(stored.guid)  # cached now
    with pytest.raises(error):
        refused(kind(stored.guid))
    hits, misses = context.stats["object_hits"], context.stats["object_misses"]
    again = kind(stored.guid)
    assert (context.stats["object_hits"] - hits, context.stats["object_misses"] - misses) == (1, 0), \
        "the load after the refusal was not served from the cache"
    assert again._revision == stored._revision and again._raw == stored._raw
