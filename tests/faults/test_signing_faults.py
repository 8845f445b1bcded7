"""Signed cache entries (``hmac_key``) against entries written straight into memcached.

Someone who can write to memcached (but does not hold the key) writes under an object's
cached-document key: a forged entry, a real entry with one byte flipped, another object's real
entry. Every load must return the durable value and count the entry in ``object_rejected``.

A *replay* (a real, older signed entry written back) passes the signature: what stops it is
the per-process record of the highest revision seen (``dal/cache/seen.py``), so a process that has
seen the newer revision drops it (``object_stale``), and a process that has not may serve it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymemcache.client.base import Client

from dal import DataList, configure
from dal.backends.base import DeletePrefix
from dal.backends.memcached import wire_key
from dal.cache.journal import RECORD
from dal.cache.leases import Signer
from dal.config import Context
from dal.testing.servers import RunningServer
from faults import kill_workers
from faults.fault_hybrids import Counter

JOIN = 30.0


@pytest.fixture
def raw_memcached(memcached_alone: RunningServer) -> Iterator[Client]:
    """A plain pymemcache client on the test's memcached: what an intruder on the cache network has."""
    # with replies: a write has landed when set() returns (pymemcache does not wait by default)
    client = Client(("127.0.0.1", memcached_alone.port), connect_timeout=5, timeout=5, default_noreply=False)
    try:
        yield client
    finally:
        client.close()


def stored(context: Context, guid: str) -> tuple[dict[str, Any], int]:
    """Return a Counter's durable document and revision, read around every cache."""
    entry = context.persistent.get(context.keys.doc("counter", guid))
    assert entry is not None
    return json.loads(entry.value), entry.revision


def flip(raw: bytes, index: int) -> bytes:
    """Return ``raw`` with the byte at ``index`` changed (its lowest bit flipped)."""
    return raw[:index] + bytes([raw[index] ^ 1]) + raw[index + 1:]


@pytest.mark.faults
@pytest.mark.etcd
@pytest.mark.memcached
def test_forged_tampered_moved_and_replayed_entries(
        etcd_server: RunningServer, memcached_alone: RunningServer, raw_memcached: Client,
        fault_namespace: str, figures: Callable[..., None]) -> None:
    hmac_key = os.urandom(32).hex()
    context = configure(etcd_server.url, memcached_alone.url, namespace=fault_namespace, hmac_key=hmac_key)
    try:
        _scenario(context, etcd_server, memcached_alone, raw_memcached, fault_namespace, hmac_key, figures)
    finally:
        context = configure(etcd_server.url, memcached_alone.url, namespace=fault_namespace)
        context.persistent.commit([], [DeletePrefix(context.keys.root)])
        context.close()


def _scenario(context: Context, etcd_server: RunningServer, memcached_alone: RunningServer,
              raw: Client, namespace: str, hmac_key: str, figures: Callable[..., None]) -> None:
    signer = Signer(hmac_key.encode())
    b = Counter(data={"label": "b", "count": 2, "note": "bee"})
    b.save()
    a = Counter(data={"label": "a", "count": 1, "note": "ay"})
    a.save()
    a.count = 10  # a's revision above b's: a moved entry is no older than b, only the signature can tell
    a.save()

    def wire(guid: str) -> str:
        return wire_key(context.keys.cached_doc("counter", guid))

    def genuine(guid: str) -> bytes:
        """Load the object twice (a fill, then a hit) and return its real signed entry."""
        Counter(guid)
        Counter(guid)
        entry = raw.get(wire(guid))
        assert entry is not None and entry[:1] == b"S", f"no signed entry cached for {guid}: {entry!r}"
        return bytes(entry)

    accepted = 0
    rejected = {"forged": 0, "tampered": 0, "moved": 0}
    #: every way a step went wrong; asserted empty after the figures are recorded
    problems: list[str] = []

    def attack(category: str, guid: str, planted: bytes) -> None:
        """Plant ``planted`` under the object's key; one load must reject it and return the stored object."""
        nonlocal accepted
        assert raw.set(wire(guid), planted, expire=600)
        assert raw.get(wire(guid)) == planted
        document, revision = stored(context, guid)
        before = context.stats["object_rejected"]
        loaded = Counter(guid)
        counted = int(context.stats["object_rejected"] - before)
        rejected[category] += counted
        got = (loaded.label, loaded.count, loaded.note, loaded._revision)
        if got != (document["label"], document["count"], document["note"], revision):
            accepted += 1
            problems.append(f"{category}: a load returned {got} instead of the stored object")
        if counted != 1:
            problems.append(f"{category}: object_rejected went up by {counted}, not 1")
        # rejected and deleted, then refilled by that load with the real, signed entry
        now = raw.get(wire(guid))
        if now == planted:
            problems.append(f"{category}: the planted entry is still cached")
        elif now is not None and signer.open(context.keys.cached_doc("counter", guid), bytes(now)) is None:
            problems.append(f"{category}: the entry cached after the load is not a genuine one")

    # forged: no key, so no valid signature; each says "count 999" at a newer revision
    document, revision = stored(context, a.guid)
    lie = b"V%d " % (revision + 1000) + json.dumps({**document, "count": 999}).encode()
    attack("forged", a.guid, b"U" + lie)  # unsigned, as a store without hmac_key writes them
    attack("forged", a.guid, b"S" + os.urandom(32) + lie)  # a made-up signature
    attack("forged", a.guid, Signer(os.urandom(32)).seal(context.keys.cached_doc("counter", a.guid), lie))

    # tampered: a real entry with one byte flipped, in the signature, the revision, the value
    real = genuine(a.guid)
    payload_at = 1 + 32  # type byte, 32-byte HMAC-SHA256, then b"V<revision> <json>"
    assert real[payload_at:payload_at + 1] == b"V"
    # the last digit of "count":10 (dal stores compact JSON): flipped, it reads 11, still valid JSON
    value_at = real.index(b'"count":10') + len(b'"count":1')
    for index in (5, payload_at + 1, value_at):
        attack("tampered", a.guid, flip(real, index))
        real = genuine(a.guid)

    # moved: a's real entry copied under b's key (the key is part of what is signed)
    genuine(b.guid)
    attack("moved", b.guid, genuine(a.guid))

    # batch loads check signatures too: a forged entry met by a query's multi-get
    assert raw.set(wire(b.guid), b"U" + lie, expire=600)
    before = context.stats["object_rejected"]
    listed = {counter.guid: counter.count for counter in _all_counters()}
    batch_rejected = int(context.stats["object_rejected"] - before)
    if listed != {a.guid: 10, b.guid: 2}:
        accepted += 1
        problems.append(f"batch: a query returned {listed}")
    if batch_rejected != 1:
        problems.append(f"batch: object_rejected went up by {batch_rejected}, not 1")

    # dynamics are signed too: a forged cached value of Counter.doubled
    dynamic_key = context.keys.cached_dynamic("counter", a.guid, "doubled")
    assert raw.set(wire_key(dynamic_key), b"UV12345", expire=600)
    before = context.stats["dynamic_rejected"]
    doubled = Counter(a.guid).doubled
    dynamic_rejected = int(context.stats["dynamic_rejected"] - before)
    if doubled != 20:
        accepted += 1
        problems.append(f"dynamic: read {doubled} instead of 20")
    if dynamic_rejected != 1:
        problems.append(f"dynamic: dynamic_rejected went up by {dynamic_rejected}, not 1")

    # replay: a real signed entry of revision N, written back after N+1 was saved and seen here
    x = Counter(data={"label": "x", "count": 1})
    x.save()
    old = genuine(x.guid)
    old_revision = x._revision
    x.count = 2
    x.save()
    assert raw.get(wire(x.guid)) is None, "the save did not invalidate the cached entry"
    assert Counter(x.guid).count == 2  # this process has seen N+1 (the save noted it, so did this load)
    assert raw.set(wire(x.guid), old, expire=600)
    before_replay = context.stats.snapshot()
    replayed = Counter(x.guid)
    after_replay = context.stats.snapshot()
    stale_counted = int(after_replay.get("object_stale", 0) - before_replay.get("object_stale", 0))
    replay_rejected = int(after_replay.get("object_rejected", 0) - before_replay.get("object_rejected", 0))
    served_to_seer = int(replayed.count != 2 or replayed._revision == old_revision)
    if served_to_seer:
        problems.append(f"replay: a process that saw revision N+1 was served N (count {replayed.count})")
    if stale_counted != 1:
        problems.append(f"replay: object_stale went up by {stale_counted}, not 1")
    if replay_rejected:
        problems.append("replay: a replayed entry carries a valid signature, yet it was counted as rejected")
    if raw.get(wire(x.guid)) == old:
        problems.append("replay: the replayed entry stayed in the cache")

    # The per-process scope, shown honestly: a process that never saw N+1 cannot tell the replayed,
    # authentically signed entry of revision N from a current one, so it may serve it. That is the
    # documented limit of monotonic reads per process (dal/cache/seen.py): recorded, not asserted either way.
    # A new process first catches up with the commit journal (re-delivering every recorded
    # invalidation), so while the record of x's save is still there (its writer retires it within
    # about a second) the catch-up would delete the replayed entry: wait until it is retired, so
    # what is shown is the steady state, long after the save.
    pending_records = _journal_records(context)
    for _ in range(100):
        if not pending_records:
            break
        time.sleep(0.05)
        pending_records = _journal_records(context)
    assert raw.set(wire(x.guid), old, expire=600)
    fresh = _fresh_process_load(etcd_server.url, memcached_alone.url, namespace, hmac_key, x.guid)
    fresh_count, fresh_revision, fresh_hits, fresh_stale, fresh_rejected = fresh
    served_to_fresh = int(fresh_count == 1 and fresh_revision == old_revision)

    figures(forged_rejected=rejected["forged"], tampered_rejected=rejected["tampered"],
            moved_rejected=rejected["moved"], batch_forged_rejected=batch_rejected,
            dynamic_forged_rejected=dynamic_rejected, accepted=accepted,
            replay_stale_counted=stale_counted, replay_served_to_process_that_saw_newer=served_to_seer,
            replay_served_to_fresh_process=served_to_fresh, journal_records_left=pending_records,
            fresh_process=f"count {fresh_count} rev {fresh_revision} (N={old_revision}) hits {fresh_hits} "
                          f"stale {fresh_stale} rejected {fresh_rejected}")
    assert not problems, "\n".join(problems)
    assert accepted == 0
    assert rejected == {"forged": 3, "tampered": 3, "moved": 1}


def _journal_records(context: Context) -> int:
    """Return how many commit records (not yet retired) the namespace's journal holds."""
    return sum(1 for _, entry in context.persistent.scan(context.keys.journal(), limit=1000)
               if entry.value[:1] == RECORD)


def _all_counters() -> list[Counter]:
    """Query the counters through the index of ``count``: candidates are verified against their
    documents, loaded in one batch through the object cache (a multi-get)."""
    query = {"type": DataList.where_operator.AND, "items": [("count", DataList.operator.IN, [2, 10])]}
    return list(DataList(Counter, query))


def _fresh_process_load(persistent: str, volatile: str, namespace: str, hmac_key: str,
                        guid: str) -> tuple[int, int, float, float, float]:
    """Load a Counter in a newly spawned process; return what it got and its counters."""
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    process = spawn.Process(target=kill_workers.fresh_reader, daemon=True,
                            args=(persistent, volatile, namespace, hmac_key, guid, results))
    process.start()
    try:
        got: tuple[int, int, float, float, float] = results.get(timeout=JOIN)
        process.join(JOIN)
        assert process.exitcode == 0, f"the fresh reader exited with {process.exitcode}"
        return got
    finally:
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
        process.join(JOIN)
        results.close()
