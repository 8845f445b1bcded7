"""The replicated memcached (issue 14) under the whole stack: ``configure(..., "memcached://a,b,c?replicas=3")``.

Three memcached servers of each test's own, etcd as the durable store, DataObjects on top:
a tampered replica is outvoted and repaired; a server killed -9 during a read-heavy run fails no
read and keeps the object-cache hit ratio; a server paused while writers change objects makes
no read stale, nor does one back with copies older than the others' (its invalidations lost);
a locked dynamic is computed once by 8 processes with one server dead.
"""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dynamic_hybrids import CALLS, Gauge

from dal import configure
from dal.backends import open_volatile
from dal.backends.base import DeletePrefix
from dal.backends.memcached import ReplicatedCache, replicated
from dal.cache import sweeps
from dal.cache.stats import collect, report
from dal.config import Context
from dal.quorum import Kind, Outcome, vote
from dal.testing.fixtures import memcached_servers
from dal.testing.proxy import LoopbackProxy
from dal.testing.servers import RunningServer
from faults.fault_hybrids import Counter
from faults.test_cache_faults import histories, judge, plans, run_crew, setup, stored_count

pytestmark = [pytest.mark.faults, pytest.mark.etcd, pytest.mark.memcached]

#: a failed server is skipped this long (dal's default is 5 s)
DEAD_TIMEOUT = 1.0
#: a read-heavy phase: at most this many rounds over the objects, or this many seconds
ROUNDS, PHASE_SECONDS = 200, 5.0
HMAC_KEY = b"replicated-fault-suite"


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[list[RunningServer]]:
    """Three memcached servers of this test alone (free to kill and pause)."""
    with memcached_servers(tmp_path) as started:
        yield started


def replicated_url(servers: list[RunningServer], replicas: int = 3) -> str:
    hosts = ",".join(f"{server.host}:{server.port}" for server in servers)
    return f"memcached://{hosts}?replicas={replicas}&dead_timeout={DEAD_TIMEOUT:g}"


def name_of(server: RunningServer) -> str:
    return f"{server.host}:{server.port}"


@pytest.fixture
def stack(etcd_server: RunningServer, trio: list[RunningServer], fault_namespace: str) -> Iterator[Context]:
    context = configure(etcd_server.url, replicated_url(trio), namespace=fault_namespace, hmac_key=HMAC_KEY)
    try:
        yield context
    finally:
        try:
            context.persistent.commit([], [DeletePrefix(context.keys.root)])
        finally:
            context.close()


def test_the_url_selects_the_replicated_cache(stack: Context) -> None:
    assert isinstance(stack.volatile, ReplicatedCache) and stack.volatile.replicas == 3


def test_a_tampered_replica_is_outvoted_and_repaired(stack: Context, trio: list[RunningServer]) -> None:
    counter = Counter(data={"label": f"c-{uuid.uuid4().hex[:8]}", "count": 7})
    counter.save()
    assert Counter(counter.guid).count == 7  # fills every replica
    store = stack.volatile
    assert isinstance(store, ReplicatedCache)
    key = stack.keys.cached_doc(Counter._meta.name, counter.guid)
    one, two, three = store.replicas_of(key)
    good = store.server(one).get(key)
    assert good is not None and store.server(three).get(key) == good
    # a forged copy (a valid-looking entry, wrong signature) on one replica: counts as no reply
    assert store.server(two).set(key, good[:-1] + bytes([good[-1] ^ 1]), 60)
    before = stack.stats.snapshot()
    assert Counter(counter.guid).count == 7
    after = stack.stats.snapshot()

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert grew("quorum_rejected") == 1 and grew("quorum_hits") == 1 and grew("object_hits") == 1
    assert store.server(two).get(key) is None, "the forged copy was deleted"
    assert grew("object_rejected") == 0, "the cache layer never saw the forged bytes"
    # a replica that missed an invalidation (an older, validly signed entry where the others
    # hold nothing): a disagreement, served from the durable store, the copy deleted, the fill
    # rewrites every replica
    stale = store.server(one).get(key)
    counter.count = 8
    counter.save()
    assert stale is not None and store.server(one).set(key, stale, 60)
    before = stack.stats.snapshot()
    assert Counter(counter.guid).count == 8
    after = stack.stats.snapshot()
    assert grew("quorum_disagreements") == 1 and grew("quorum_repairs") == 1 and grew("object_fills") == 1
    held = {name: store.server(name).get(key) for name in (one, two, three)}
    assert None not in held.values() and len(set(held.values())) == 1, "every replica refilled alike"
    assert Counter(counter.guid).count == 8
    # the counters are published with the others, and `dal stats` shows them
    assert stack.publisher is not None
    stack.publisher.flush()
    line = next(line for line in report(stack, collect(stack), None) if "replicated cache reads" in line)
    assert "1 disagreements" in line and "1 rejected replies" in line and "0 short reads" in line, line


def _read_all(guids: list[str], context: Context, rounds: int, seconds: float,
              halfway: Callable[[], object] | None = None) -> tuple[float, int, int]:
    """Load every object ``rounds`` times (at most ``seconds``), calling ``halfway`` after half the
    rounds; return the hit ratio, the loads and the failed loads."""
    before = context.stats.snapshot()
    loads = failures = 0
    deadline = time.monotonic() + seconds
    for number in range(rounds):
        if time.monotonic() > deadline:
            break
        if number == rounds // 2 and halfway is not None:
            halfway()
        for guid in guids:
            try:
                Counter(guid)
                loads += 1
            except Exception:
                failures += 1
    after = context.stats.snapshot()
    hits = after.get("object_hits", 0) - before.get("object_hits", 0)
    misses = after.get("object_misses", 0) - before.get("object_misses", 0)
    return hits / max(1.0, hits + misses), loads, failures


def test_one_server_killed_during_reads(stack: Context, trio: list[RunningServer],
                                        figures: Callable[..., None]) -> None:
    guids = []
    for number in range(40):
        counter = Counter(data={"label": f"k-{number}-{uuid.uuid4().hex[:6]}", "count": number})
        counter.save()
        guids.append(counter.guid)
    _read_all(guids, stack, 2, PHASE_SECONDS)  # warm: every object on every replica
    ratio_before, _, failed_before = _read_all(guids, stack, ROUNDS, PHASE_SECONDS)
    killed: list[float] = []
    began = time.monotonic()
    ratio_during, loads, failed_during = _read_all(
        guids, stack, ROUNDS, PHASE_SECONDS,
        halfway=lambda: (trio[1].kill(), killed.append(time.monotonic())))
    ended = time.monotonic()
    quorum_hits = stack.stats["quorum_hits"]
    ratio_after, loads_after, failed_after = _read_all(guids, stack, ROUNDS, PHASE_SECONDS)
    failures = [failed_before, failed_during, failed_after]
    ratios = [ratio_before, ratio_during, ratio_after]
    figures(hit_ratio_before=round(ratio_before, 3), during=round(ratio_during, 3),
            after=round(ratio_after, 3), killed_at=round(killed[0] - began, 3) if killed else None,
            phase=round(ended - began, 3), loads=loads + loads_after, failed=sum(failures),
            quorum_hits=stack.stats["quorum_hits"], short_reads=stack.stats["quorum_short_reads"])
    assert killed and began < killed[0] < ended, "the server was killed during the read phase"
    assert stack.stats["quorum_hits"] > quorum_hits, "the hits after the kill were quorum reads"
    assert sum(failures) == 0, "no read failed"
    assert ratio_during >= 0.9 * ratio_before and ratio_after >= 0.9 * ratio_before, ratios


# --- a paused server, a timed reader/writer history --------------------------------------------


PAUSE = 3.0
SETTLE = 2.0


@pytest.mark.parametrize("sabotage", [False, True], ids=["real", "control"])
def test_one_server_paused_while_writers_change_objects(
        etcd_server: RunningServer, trio: list[RunningServer], fault_namespace: str,
        parent: list[Context], tmp_path: Path, figures: Callable[..., None], sabotage: bool) -> None:
    """No read older than a save that returned before it began; the control run (writers send no
    invalidations, nobody sweeps) shows the check does catch stale reads on this setup."""
    volatile = replicated_url(trio)
    context, guids = setup(parent, etcd_server.url, volatile, fault_namespace, 2)
    if sabotage and context.sweeper is not None:
        context.sweeper.stop()
    paused = trio[2]
    bound = 1.0 + PAUSE + SETTLE

    def script() -> None:
        time.sleep(1.0)
        paused.pause()
        try:
            time.sleep(PAUSE)
        finally:
            paused.resume()
        time.sleep(SETTLE)

    members = plans(tmp_path, "paused", etcd_server.url, volatile, fault_namespace, guids,
                    # one writer in the control run: two would conflict forever on stale cached copies
                    writers=1 if sabotage else 2, readers=3, bound=bound,
                    writer={"sabotage": sabotage}, reader={"sabotage": sabotage})
    crew = run_crew("paused", members, script, bound)
    found = histories(crew, guids)
    stale = reads = hits = 0
    for guid, history in found.items():
        verdict = judge(history, stored_count(context, guid))
        stale += len(verdict.stale)
        reads += len(history.reads)
        hits += sum(1 for hit in history.hit.values() if hit)
        assert sabotage or (verdict.lost == 0 and verdict.duplicates == 0), verdict
    writes = sum(len(history.writes) for history in found.values())
    figures(reads=reads, cache_hits=hits, writes=writes, stale=stale,
            disagreements=crew.stat("reader", "quorum_disagreements"),
            repairs=crew.stat("reader", "quorum_repairs") + crew.stat("writer", "quorum_repairs"))
    assert writes > 0 and reads > 0 and hits > 0, "the run exercised the cache"
    if sabotage:
        assert stale > 0, "the control run's stale reads were caught"
    else:
        assert stale == 0, f"{stale} stale reads"


# --- a server that lost invalidations comes back: only the vote stands ---------------------------


#: seconds after the go: the third server's traffic is lost from LOSE_AT for LOSS s; the writers
#: work in WRITING and are gone before it comes back; the early readers read until EARLY_STOP,
#: the late ones (who never saw a newer revision) from LATE_START until AFTER s past its return
LOSE_AT, LOSS, AFTER = 0.5, 3.0, 1.7
WRITING, EARLY_STOP, LATE_START = (0.7, 2.0), 3.1, 3.8


def _counters_led_by(parent: list[Context], persistent: str, volatile: str, namespace: str,
                     server: str, count: int) -> tuple[Context, list[str]]:
    """``count`` new counters whose cached copy has ``server`` as its first replica (the one a vote
    that trusts the first entry it finds takes), and the context that saved them."""
    context = configure(persistent, volatile, namespace=namespace)
    parent.append(context)
    store = context.volatile
    assert isinstance(store, ReplicatedCache)
    guids: list[str] = []
    for number in range(60):  # one chance in 3 each: 60 tries find 2 but once in 10**8
        counter = Counter(data={"label": f"lost-{number}"})
        counter.save()
        if store.replicas_of(context.keys.cached_doc(Counter._meta.name, counter.guid))[0] == server:
            guids.append(counter.guid)
            if len(guids) == count:
                return context, guids
    pytest.fail(f"{server} led {len(guids)} of 60 counters")


@pytest.mark.parametrize("sabotage", [False, True], ids=["real", "control"])
def test_a_server_back_with_lost_invalidations_makes_no_read_stale(
        etcd_server: RunningServer, trio: list[RunningServer], fault_namespace: str,
        parent: list[Context], tmp_path: Path, figures: Callable[..., None], sabotage: bool) -> None:
    """The third server's traffic is lost (a loopback proxy throws it away, connections stay open)
    while 2 writers change objects; they are gone and no process sweeps the journal when it comes
    back, holding the copies of before the writes. Late readers, who never saw a newer revision,
    then reach it first: each vote meets its older copy, and only the vote keeps them from serving
    it. The control's readers decide a disagreement for the first replica holding an entry (the
    third server leads every counter's replicas): they read stale."""
    with LoopbackProxy((trio[2].host, trio[2].port)) as lossy:
        hosts = ",".join((name_of(trio[0]), name_of(trio[1]), lossy.netloc))
        volatile = f"memcached://{hosts}?replicas=3&dead_timeout={DEAD_TIMEOUT:g}"
        context, guids = _counters_led_by(parent, etcd_server.url, volatile, fault_namespace, lossy.netloc, 2)
        if context.sweeper is not None:
            context.sweeper.stop()
        reader = {"no_sweeps": True, "watch": lossy.netloc, "first_held": sabotage, "stop": EARLY_STOP}
        members = plans(tmp_path, "lost", etcd_server.url, volatile, fault_namespace, guids,
                        writers=2, readers=4, bound=LOSE_AT + LOSS + AFTER, reader=reader,
                        writer={"start": WRITING[0], "stop": WRITING[1]})
        members[-2:] = [(role, replace(plan, start=LATE_START, stop=0.0)) for role, plan in members[-2:]]

        def script() -> None:
            time.sleep(LOSE_AT)
            lossy.lose(True)
            try:
                time.sleep(LOSS)
            finally:
                lossy.lose(False)
            time.sleep(AFTER)

        crew = run_crew("lost", members, script, LOSE_AT + LOSS + AFTER)
    found = histories(crew, guids)
    stale = reads = 0
    for guid, history in found.items():
        verdict = judge(history, stored_count(context, guid))
        stale += len(verdict.stale)
        reads += len(history.reads)
        assert sabotage or (verdict.lost == 0 and verdict.duplicates == 0), verdict
    writes = [write for history in found.values() for write in history.writes]
    late = sum(len(result["reads"]) for result in crew.of("reader")[-2:])
    behind = sum(result["votes"].get("behind", 0) for result in crew.of("reader"))
    alone = sum(result["votes"].get("alone", 0) for result in crew.of("reader"))
    figures(reads=reads, late_reads=late, writes=len(writes), stale=stale, behind_votes=behind,
            alone_votes=alone, bytes_lost=lossy.bytes_lost,
            last_write=round(max(write.returned for write in writes) - crew.started, 3))
    assert writes and late and lossy.bytes_lost, "writers wrote, the third server lost it, late readers read"
    assert behind > 0, "a vote met the third server's copy older than another replica's"
    if sabotage:
        assert stale > 0, "the control's first-held vote served the older copies"
    else:
        assert stale == 0, f"{stale} stale reads"


# --- a locked dynamic, 8 processes, one server dead --------------------------------------------


def _read_reading(persistent: str, volatile: str, namespace: str, guid: str,
                  start: Any) -> tuple[str, int, dict[str, float]]:
    context = configure(persistent, volatile, namespace=namespace, hmac_key=HMAC_KEY)
    start.wait()
    value = Gauge(guid).reading
    return value, CALLS["reading", guid], context.stats.snapshot()


def test_a_locked_dynamic_is_computed_once_by_8_processes_with_one_server_dead(
        stack: Context, etcd_server: RunningServer, trio: list[RunningServer], fault_namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    volatile = replicated_url(trio)
    obj = Gauge(data={"name": f"g{uuid.uuid4().hex[:6]}", "level": 1})
    obj.save()
    trio[0].kill()
    monkeypatch.setenv("DAL_TEST_READING_SECONDS", "0.5")
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, spawn.Pool(8) as pool:
        start = manager.Barrier(8)
        results = pool.starmap(_read_reading, [(etcd_server.url, volatile, fault_namespace, obj.guid,
                                                start)] * 8, chunksize=1)
    computations = sum(calls for _, calls, _ in results)
    assert computations == 1, f"{computations} computations for one cold locked dynamic: {results}"
    assert len({value for value, _, _ in results}) == 1, "every process got the one computed value"


# --- one client cut off from two of the three servers ------------------------------------------


def _counting_vote(asked: Any, replies: Any, needed: int) -> Outcome:
    """The control's vote: confd's weakness, counting agreeing replies and ignoring a miss."""
    held = [value for value in replies.values() if value is not None]
    for value in held:
        if held.count(value) >= needed:
            return Outcome(Kind.HIT, value, len(replies), 0, ())
    return vote(asked, replies, needed)


def _outside(persistent: str, volatile: str, namespace: str, guids: list[str], sabotage: bool,
             requests: Any, answers: Any) -> None:
    """A process that reaches every server. Told ``read``, it reads each counter; ``bump``, it
    then adds one to each; ``stop`` ends it. Its sweeps wait 60 s before delivering another
    process's journal, so within the test only the vote stands between it and a stale copy (and
    in the control, the vote counts agreeing replies and ignores a miss, as confd's did)."""
    sweeps.GRACE = 60.0
    if sabotage:
        replicated.vote = _counting_vote
    context = configure(persistent, volatile, namespace=namespace, hmac_key=HMAC_KEY)
    while (command := requests.get(timeout=60)) != "stop":
        counts = {guid: Counter(guid).count for guid in guids}
        if command == "bump":
            for guid in guids:
                counter = Counter(guid)
                counter.count += 1
                counter.save()
        answers.put((counts, context.stats.snapshot()))


def _cached_copy(context: Context, server: RunningServer, guid: str) -> int | None:
    """The count in one server's cached copy of a counter, read from it directly (``None``: no
    signed copy there)."""
    key = context.keys.cached_doc(Counter._meta.name, guid)
    raw = open_volatile(server.url).get(key)
    payload = None if raw is None else context.objects.signer.open(key, raw)
    if payload is None or payload[:1] != b"V":
        return None
    return int(json.loads(payload[1:].partition(b" ")[2])["count"])


@pytest.mark.parametrize("sabotage", [False, True], ids=["real", "control"])
def test_a_client_cut_off_from_two_of_three_servers_makes_no_read_stale(
        etcd_server: RunningServer, trio: list[RunningServer], fault_namespace: str,
        parent: list[Context], figures: Callable[..., None], sabotage: bool) -> None:
    """The partition the issue names: this process reaches one server; its invalidations miss the
    other two, which keep copies older than its saves (two agreeing stale copies, as many as a
    quorum). A process that reaches all three does not serve them: the one replica that got the
    invalidation answers a miss, so the vote is a disagreement and the read goes to the durable
    store. The control (a vote that ignores the miss) reads the stale copies."""
    spawn = multiprocessing.get_context("spawn")
    direct = replicated_url(trio) + "&timeout=0.3"
    with LoopbackProxy((trio[1].host, trio[1].port)) as second, \
            LoopbackProxy((trio[2].host, trio[2].port)) as third:
        hosts = ",".join((name_of(trio[0]), second.netloc, third.netloc))
        cut_off = f"memcached://{hosts}?replicas=3&dead_timeout={DEAD_TIMEOUT:g}&timeout=0.3"
        context = configure(etcd_server.url, cut_off, namespace=fault_namespace, hmac_key=HMAC_KEY)
        parent.append(context)
        guids = []
        for number in range(4):
            counter = Counter(data={"label": f"cut-{number}"})
            counter.save()
            guids.append(counter.guid)
        requests, answers = spawn.Queue(), spawn.Queue()
        outside = spawn.Process(target=_outside, daemon=True, args=(
            etcd_server.url, direct, fault_namespace, guids, sabotage, requests, answers))
        outside.start()
        try:
            requests.put("read")  # fills every replica
            warm, before = answers.get(timeout=60)
            assert warm == {guid: 0 for guid in guids}
            second.blackhole(True)
            third.blackhole(True)
            for guid in guids:  # saves succeed; their invalidations reach the first server only
                counter = Counter(guid)
                counter.count += 1
                counter.save()
            copies = {guid: [_cached_copy(context, server, guid) for server in trio] for guid in guids}
            assert all(held == [None, 0, 0] for held in copies.values()), (
                f"two replicas agree on a copy older than the save, the third holds none: {copies}")
            requests.put("bump")
            seen, after = answers.get(timeout=60)
            inside = {guid: Counter(guid).count for guid in guids}
            second.blackhole(False)
            third.blackhole(False)
            requests.put("stop")
            outside.join(30)
        finally:
            if outside.is_alive():
                outside.kill()
    stale = sum(1 for count in seen.values() if count != 1)
    disagreements = after.get("quorum_disagreements", 0) - before.get("quorum_disagreements", 0)
    figures(stale_outside=stale, disagreements_outside=disagreements,
            repairs_outside=after.get("quorum_repairs", 0) - before.get("quorum_repairs", 0))
    if sabotage:
        assert stale == len(guids), f"the control's count-only vote served the stale copies: {seen}"
        return
    assert stale == 0, f"the process outside the partition read copies older than a save: {seen}"
    assert disagreements == len(guids), "each read was a disagreement the vote caught"
    assert inside == {guid: 2 for guid in guids}, "the cut-off process read the outside's saves"
