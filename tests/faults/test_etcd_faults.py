"""etcd faults: members killed under a counter run, answers lost on the wire, no quorum, two spellings.

Each scenario runs against its own 3-member etcd cluster (``etcd_cluster``) and checks the
promises of ``dal/cache/journal.py`` and ``dal/cache/leases.py``: an increment is applied exactly once
whatever happens to its answer, a conflict is never reported for a writer's own commit, and
no cache entry older than the durable store survives a save.

Sizes: quick by default, long with ``DAL_CHAOS=1`` (``make chaos``).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

import dal.objects.schema
from dal import configure
from dal.backends.base import Check, CommitResult, Op
from dal.cache.seen import Seen
from dal.config import Context
from dal.exceptions import BackendError, CommitOutcomeUnknownError, ConcurrencyError, ObjectNotFoundError
from dal.testing.cluster import EtcdCluster, Member
from dal.testing.proxy import DropHandle, LoopbackProxy
from dal.testing.servers import RunningServer
from faults.etcd_workers import (
    LOST,
    collect_tallies,
    count_worker,
    cut_answer,
    cutting_etcd_worker,
    spelling_peer,
    stop_workers,
    sum_tallies,
    wait_for_first_increments,
)
from faults.fault_hybrids import Counter

LONG = os.environ.get("DAL_CHAOS") == "1"
HYBRID = Counter._meta.name
#: seconds anything that should happen at once may take on a loaded machine
SOON = 10.0
#: a key nobody writes: reading it shows which endpoint the client uses
PROBE_KEY = "dal-fault-probe"

pytestmark = [pytest.mark.faults, pytest.mark.etcd, pytest.mark.memcached]


# --- helpers -------------------------------------------------------------------------------


def durable_count(context: Context, guid: str) -> int | None:
    """Return the count stored in etcd (read directly, never through a cache), or None when absent."""
    entry = context.persistent.get(context.keys.doc(HYBRID, guid))
    return None if entry is None else int(json.loads(entry.value)["count"])


def durable_revision(context: Context, guid: str) -> int:
    entry = context.persistent.get(context.keys.doc(HYBRID, guid))
    return 0 if entry is None else entry.revision


def cached_entry(context: Context, guid: str) -> tuple[int, int] | None:
    """Return (revision, count) of the raw cached document in memcached; None when absent or a lease."""
    key = context.keys.cached_doc(HYBRID, guid)
    raw = context.volatile.get(key)
    if raw is None:
        return None
    payload = context.objects.signer.open(key, raw)
    assert payload is not None, f"a cache entry dal does not accept sits under {key}"
    if payload[:1] != b"V":
        return None  # a fill's lease
    revision, _, document = payload[1:].partition(b" ")
    return int(revision), int(json.loads(document)["count"])


def load_as_stranger(context: Context, guid: str) -> int:
    """Load the counter through the cache as a process that has seen none of its revisions would."""
    mine, context.seen = context.seen, Seen()
    try:
        return Counter(guid).count
    finally:
        context.seen = mine


def assert_nothing_stale(context: Context, guid: str) -> int:
    """Assert no cache entry older than the durable document is left; return the durable count."""
    count = durable_count(context, guid)
    revision = durable_revision(context, guid)
    assert count is not None, f"counter {guid} is not stored"
    cached = cached_entry(context, guid)
    assert cached is None or cached == (revision, count), (
        f"stale cache entry {cached} for counter {guid}; the store holds revision {revision}, count {count}")
    assert context.objects.trust.trusted, "the test process stopped trusting memcached, which stayed up"
    assert load_as_stranger(context, guid) == count
    cached = cached_entry(context, guid)
    assert cached is None or cached == (revision, count), f"the load cached {cached}, not {(revision, count)}"
    return count


def new_counter(label: str | None = None) -> Counter:
    counter = Counter(data={"label": label or f"c-{uuid.uuid4().hex[:10]}"})
    counter.save()
    return counter


def stop_sweeper(context: Context) -> None:
    """Stop this process's journal sweeps, so only the scenario's own requests reach etcd."""
    sweeper = context.sweeper
    assert sweeper is not None, "etcd + memcached must have a journal sweeper"
    sweeper.stop()
    sweeper._thread.join(SOON)
    assert not sweeper._thread.is_alive(), "the journal sweeper did not stop"


def save_with_recipe(counter: Counter, tally: dict[str, int], *, within: float = 30.0) -> None:
    """Save as dal documents for a counter (bounded): ConcurrencyError is counted and re-raised."""
    deadline = time.monotonic() + within
    while True:
        try:
            counter.save(datastore_wins=None)
            return
        except ConcurrencyError:
            tally["conflicts"] += 1
            raise
        except CommitOutcomeUnknownError:
            tally["unknown_outcomes"] += 1
            if time.monotonic() >= deadline:
                raise
        except BackendError:
            tally["backend_errors"] += 1
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


class AnswerDropper:
    """Arm the proxy of the endpoint in use right before the next commit goes out.

    Wraps the store's ``commit`` (the journal sends every commit through it), so the fault
    is claimed by the commit itself, never by a read a save or a delete makes first. The
    endpoint in use is the proxy whose ``bytes_to_server`` grows on a read made just before.
    """

    def __init__(self, context: Context, proxies: Sequence[LoopbackProxy],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.context = context
        self.proxies = list(proxies)
        self.handles: list[DropHandle] = []
        self.armed_on: list[LoopbackProxy] = []
        self._pending: tuple[str, float] | None = None
        self._real = context.persistent.commit
        monkeypatch.setattr(context.persistent, "commit", self._commit)

    def arm(self, mode: str = "hold", hold: float = 0.3) -> None:
        self._pending = (mode, hold)

    @property
    def last(self) -> DropHandle:
        return self.handles[-1]

    def endpoint_in_use(self) -> LoopbackProxy:
        before = [proxy.bytes_to_server for proxy in self.proxies]
        self.context.persistent.get(PROBE_KEY)
        grown = [proxy for proxy, sent in zip(self.proxies, before, strict=True)
                 if proxy.bytes_to_server > sent]
        assert len(grown) == 1, f"one read went through {len(grown)} proxies; cannot tell the endpoint in use"
        return grown[0]

    def _commit(self, checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        if self._pending is not None:
            (mode, hold), self._pending = self._pending, None
            proxy = self.endpoint_in_use()
            self.handles.append(proxy.drop_next_answer(mode, hold=hold))
            self.armed_on.append(proxy)
        return self._real(checks, ops)


@pytest.fixture
def proxies(etcd_cluster: EtcdCluster) -> Iterator[list[LoopbackProxy]]:
    """One loopback proxy in front of each member of the test's cluster."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(LoopbackProxy(member.endpoint)) for member in etcd_cluster.members]


@pytest.fixture
def contexts() -> Iterator[list[Context]]:
    """Contexts a test configured, closed at its end (before its servers stop)."""
    opened: list[Context] = []
    yield opened
    for context in opened:
        context.close()


def proxied(proxies: Sequence[LoopbackProxy], memcached: RunningServer, namespace: str, timeout: float,
            contexts: list[Context]) -> Context:
    """Configure dal on the proxies, warm it up (identity, schema record) and stop its sweeper."""
    url = "etcd://" + ",".join(proxy.netloc for proxy in proxies) + f"?timeout={timeout:g}"
    context = configure(url, memcached.url, namespace=namespace)
    contexts.append(context)
    new_counter()  # learns the cluster's identity and records the hybrid's schema
    stop_sweeper(context)
    return context


def answers_lost(context: Context) -> int:
    return int(context.stats["commit_answers_lost"])


# --- 1. a counter run while members are killed ------------------------------------------------

WORKERS = 6 if LONG else 4
INCREMENTS = 150 if LONG else 25
#: seconds between two increments of a worker while faults are still being injected
PACE = 0.1 if LONG else 0.15
#: seconds a killed member stays down
DOWN = 1.0
#: seconds between a restart and the next kill (long mode: a kill every ~2 s)
GAP = 1.0 if LONG else 0.3
MAX_KILLS = 40 if LONG else 2
#: kills aimed at a held answer, at most, until one was an applied commit's (a held answer may be a
#: refusal: another writer's commit came first)
MAX_AIMED = 30 if LONG else 6
#: seconds a worker may run at most
WORKER_BUDGET = 600.0 if LONG else 120.0


def kill_and_restart(cluster: EtcdCluster, victim: Member) -> None:
    assert all(member.running for member in cluster.members), "two members would be down at once"
    cluster.kill(victim)
    time.sleep(DOWN)
    cluster.restart(victim)


def pick_victim(cluster: EtcdCluster, leader_turn: bool, last: Member | None) -> tuple[Member, bool]:
    """Return the member to kill next and whether it is the leader."""
    leader = cluster.leader(timeout=SOON)
    if leader_turn:
        return leader, True
    others = [member for member in cluster.members if member is not leader]
    fresh = [member for member in others if member is not last]
    return (fresh or others)[0], False


def member_on(cluster: EtcdCluster, port: int) -> Member | None:
    """Return the member serving clients on ``port`` (None for 0: no answer was held)."""
    return next((member for member in cluster.members if port and member.client_port == port), None)


def cutter_busy(process: Any, progress: Any) -> bool:
    """Tell whether the cutting worker (worker 0) still commits: it is alive and not at its last increment."""
    return bool(process.is_alive()) and progress[0] < INCREMENTS - 1


def test_counter_survives_member_kills(etcd_cluster: EtcdCluster, memcached_alone: RunningServer,
                                       fault_namespace: str, contexts: list[Context],
                                       figures: Callable[..., None]) -> None:
    """Kills alternate between the leader and another member; the first ones (every other one in long
    mode) are aimed: worker 0 reaches etcd through proxies of its own, which hold the answer to its next
    commit, and the member that answered is killed while the answer is held (then it is dropped), until
    that worker's journal has found at least one applied commit whose answer was lost."""
    url = etcd_cluster.url + "?timeout=2"
    context = configure(url, memcached_alone.url, namespace=fault_namespace)
    contexts.append(context)
    guid = new_counter().guid
    spawn = multiprocessing.get_context("spawn")
    faults_done = spawn.Event()
    progress = spawn.Array("i", WORKERS)
    shared: Any = spawn.RawArray("i", 3)
    results = spawn.Queue()
    processes = [spawn.Process(target=cutting_etcd_worker if index == 0 else count_worker,
                               name=f"counter-{index}",
                               args=(*((shared,) if index == 0 else ()), index, url, memcached_alone.url,
                                     fault_namespace, guid, INCREMENTS, PACE, WORKER_BUDGET, faults_done,
                                     progress, results))
                 for index in range(WORKERS)]
    started = time.monotonic()
    kills = leader_kills = aimed = cut = 0
    tallies: list[dict[str, Any]] = []
    try:
        for process in processes:
            process.start()
        wait_for_first_increments(processes, progress, results, faults_done)
        fault_deadline = time.monotonic() + (WORKER_BUDGET - 60 if LONG else 60)
        last: Member | None = None
        while time.monotonic() < fault_deadline:
            want_cut = shared[LOST] < 1 and aimed < MAX_AIMED
            if kills >= MAX_KILLS and leader_kills >= 1 and not want_cut:
                break
            if LONG and min(progress) >= INCREMENTS - 1:
                break  # every worker waits for its last increment: nothing left to disturb
            victim = None
            if want_cut or (LONG and kills % 2 == 0):
                aimed += 1
                held = cut_answer(shared, lambda: cutter_busy(processes[0], progress))
                victim = member_on(etcd_cluster, held)
                cut += victim is not None
            if victim is None:
                victim, _ = pick_victim(etcd_cluster, leader_kills == 0 or kills % 2 == 0, last)
            is_leader = victim is etcd_cluster.leader(timeout=SOON)
            kill_and_restart(etcd_cluster, victim)
            kills += 1
            leader_kills += is_leader
            last = victim
            time.sleep(GAP)
        faults_done.set()
        tallies = collect_tallies(processes, results, WORKERS, WORKER_BUDGET)
    finally:
        stop_workers(processes, faults_done)
    seconds = round(time.monotonic() - started, 1)
    errors = [tally["error"] for tally in tallies if tally["error"]]
    counted = sum(tally["done"] for tally in tallies)
    final = durable_count(context, guid)
    assert final is not None
    total = sum_tallies(tallies)
    figures(workers=WORKERS, increments=counted, final=final, lost=max(0, counted - final),
            extra=max(0, final - counted), kills=kills, leader_kills=leader_kills, aimed_kills=aimed,
            kills_while_an_answer_was_held=cut,
            conflicts=total["conflicts"], unknown_outcomes=total["unknown_outcomes"],
            answers_lost=total["answers_lost"], backend_errors=total["backend_errors"],
            load_errors=total["load_errors"], nothing_written=total["nothing_written"],
            slowest_increment=round(max((tally["slowest"] for tally in tallies), default=0.0), 2),
            seconds=seconds)
    assert not errors, "a worker failed:\n" + "\n".join(errors)
    assert len(tallies) == WORKERS and all(tally["finished"] for tally in tallies), (
        f"not every worker finished: {tallies}")
    assert kills >= (2 if not LONG else 4) and leader_kills >= 1, (kills, leader_kills)
    assert final == counted == WORKERS * INCREMENTS, (
        f"stored {final}, workers counted {counted}, expected {WORKERS * INCREMENTS}")
    assert cut >= 1, f"none of {aimed} aimed kills came while a commit's answer was held"
    # the check above could fail: an applied commit lost its answer to a kill, and was counted once
    assert total["answers_lost"] >= 1, f"no applied commit lost its answer in {cut} aimed kills: {total}"
    assert total["races"] == 0
    assert assert_nothing_stale(context, guid) == final


# --- 2. a loopback proxy drops the answer to a chosen commit ------------------------------------


def test_answer_lost_before_the_deadline_is_recognised(
        proxies: list[LoopbackProxy], memcached_server: RunningServer, fault_namespace: str,
        contexts: list[Context], monkeypatch: pytest.MonkeyPatch, figures: Callable[..., None]) -> None:
    context = proxied(proxies, memcached_server, fault_namespace, 2.0, contexts)
    guid = new_counter().guid
    dropper = AnswerDropper(context, proxies, monkeypatch)
    counter = Counter(guid)
    Counter(guid)  # a hit: the cache holds the document the save will outdate
    assert cached_entry(context, guid) is not None
    before, lost_before = durable_count(context, guid), answers_lost(context)
    assert before is not None
    counter.count += 1
    dropper.arm("hold", hold=0.3)
    started = time.monotonic()
    counter.save(datastore_wins=None)  # no ConcurrencyError for our own commit
    seconds = round(time.monotonic() - started, 2)
    fired = dropper.last.wait(SOON)
    after = durable_count(context, guid)
    lost = answers_lost(context) - lost_before
    figures(before=before, after=after, fired=fired, discarded_bytes=dropper.last.discarded_bytes,
            answers_lost=lost, save_seconds=seconds)
    assert fired, f"the proxy dropped no answer: {dropper.last!r}"
    assert after == before + 1
    assert counter.count == before + 1
    assert lost >= 1, "dal did not notice that the answer to its commit was lost"
    assert assert_nothing_stale(context, guid) == before + 1


def test_answer_lost_past_the_deadline_is_settled_by_the_next_save(
        proxies: list[LoopbackProxy], memcached_server: RunningServer, fault_namespace: str,
        contexts: list[Context], monkeypatch: pytest.MonkeyPatch, figures: Callable[..., None]) -> None:
    context = proxied(proxies, memcached_server, fault_namespace, 1.0, contexts)
    guid = new_counter().guid
    dropper = AnswerDropper(context, proxies, monkeypatch)
    counter = Counter(guid)
    before = durable_count(context, guid)
    assert before is not None
    counter.count += 1
    dropper.arm("hold", hold=2.5)
    outcome = "returned"
    started = time.monotonic()
    try:
        counter.save(datastore_wins=None)
    except CommitOutcomeUnknownError:
        outcome = "CommitOutcomeUnknownError"
        counter.save(datastore_wins=None)  # learns the outcome first; never applies it twice
    seconds = round(time.monotonic() - started, 2)
    fired = dropper.last.wait(SOON)
    after = durable_count(context, guid)
    figures(outcome=outcome, before=before, after=after, fired=fired,
            answers_lost=answers_lost(context), seconds=seconds)
    assert fired, f"the proxy dropped no answer: {dropper.last!r}"
    assert after == before + 1
    assert counter.count == before + 1
    assert assert_nothing_stale(context, guid) == before + 1


def test_every_third_answer_lost_loses_and_doubles_nothing(
        proxies: list[LoopbackProxy], memcached_server: RunningServer, fault_namespace: str,
        contexts: list[Context], monkeypatch: pytest.MonkeyPatch, figures: Callable[..., None]) -> None:
    increments = 60 if LONG else 20
    context = proxied(proxies, memcached_server, fault_namespace, 2.0, contexts)
    guid = new_counter().guid
    dropper = AnswerDropper(context, proxies, monkeypatch)
    tally = {"conflicts": 0, "unknown_outcomes": 0, "backend_errors": 0}
    started = time.monotonic()
    deadline = started + (600 if LONG else 90)
    done = 0
    for index in range(increments):
        assert time.monotonic() < deadline, f"only {done} increments within the time bound"
        counter = Counter(guid)
        counter.count += 1
        if index % 3 == 2:
            dropper.arm("hold", hold=0.3)
        try:
            save_with_recipe(counter, tally)
        except ConcurrencyError:
            break  # a single writer conflicting with itself: asserted below
        done += 1
    seconds = round(time.monotonic() - started, 1)
    fired = sum(handle.wait(SOON) for handle in dropper.handles)
    final = durable_count(context, guid)
    used = sorted({proxy.port for proxy in dropper.armed_on})
    figures(increments=done, final=final, drops=len(dropper.handles), fired=fired,
            answers_lost=answers_lost(context), conflicts=tally["conflicts"],
            unknown_outcomes=tally["unknown_outcomes"], endpoints_dropped=len(used), seconds=seconds)
    assert tally["conflicts"] == 0, "the single writer was told its own commit conflicted"
    assert final == done == increments
    assert len(dropper.handles) == increments // 3 and fired == len(dropper.handles)
    assert answers_lost(context) >= 1
    assert assert_nothing_stale(context, guid) == increments


def test_create_whose_answer_is_lost_stores_one_object(
        proxies: list[LoopbackProxy], memcached_server: RunningServer, fault_namespace: str,
        contexts: list[Context], monkeypatch: pytest.MonkeyPatch, figures: Callable[..., None]) -> None:
    context = proxied(proxies, memcached_server, fault_namespace, 2.0, contexts)
    dropper = AnswerDropper(context, proxies, monkeypatch)
    label = f"created-{uuid.uuid4().hex[:8]}"
    counter = Counter(data={"label": label, "count": 7})
    lost_before = answers_lost(context)
    dropper.arm("hold", hold=0.3)
    counter.save(datastore_wins=None)
    fired = dropper.last.wait(SOON)
    documents = [(key, json.loads(entry.value))
                 for key, entry in context.persistent.scan(context.keys.docs(HYBRID))]
    labelled = [key for key, document in documents if document["label"] == label]
    owner = context.persistent.get(context.keys.unique(HYBRID, "label", label))
    figures(fired=fired, stored_with_label=len(labelled), answers_lost=answers_lost(context) - lost_before)
    assert fired, f"the proxy dropped no answer: {dropper.last!r}"
    assert labelled == [context.keys.doc(HYBRID, counter.guid)]
    assert owner is not None and owner.value.decode() == counter.guid
    assert answers_lost(context) - lost_before >= 1
    assert assert_nothing_stale(context, counter.guid) == 7


def test_delete_whose_answer_is_lost_removes_the_object(
        proxies: list[LoopbackProxy], memcached_server: RunningServer, fault_namespace: str,
        contexts: list[Context], monkeypatch: pytest.MonkeyPatch, figures: Callable[..., None]) -> None:
    context = proxied(proxies, memcached_server, fault_namespace, 2.0, contexts)
    label = f"deleted-{uuid.uuid4().hex[:8]}"
    guid = new_counter(label).guid
    dropper = AnswerDropper(context, proxies, monkeypatch)
    counter = Counter(guid)
    Counter(guid)
    assert cached_entry(context, guid) is not None
    lost_before = answers_lost(context)
    dropper.arm("hold", hold=0.3)
    counter.delete()
    fired = dropper.last.wait(SOON)
    gone = durable_count(context, guid) is None
    cached = cached_entry(context, guid)
    figures(fired=fired, gone=gone, cached_after=cached, answers_lost=answers_lost(context) - lost_before)
    assert fired, f"the proxy dropped no answer: {dropper.last!r}"
    assert gone
    assert context.persistent.get(context.keys.unique(HYBRID, "label", label)) is None
    assert cached is None, f"the deleted counter is still cached: {cached}"
    assert answers_lost(context) - lost_before >= 1
    with pytest.raises(ObjectNotFoundError):
        Counter(guid)
    with pytest.raises(ObjectNotFoundError):
        load_as_stranger(context, guid)


def test_control_without_the_commit_token_a_lost_answer_is_misreported(
        proxies: list[LoopbackProxy], memcached_server: RunningServer, fault_namespace: str,
        contexts: list[Context], monkeypatch: pytest.MonkeyPatch, figures: Callable[..., None]) -> None:
    """Prove the lost-answer scenario can fail: commits outside the journal carry no token."""
    context = proxied(proxies, memcached_server, fault_namespace, 2.0, contexts)
    guid = new_counter().guid
    dropper = AnswerDropper(context, proxies, monkeypatch)
    monkeypatch.setattr(context, "journal", None)
    counter = Counter(guid)
    before = durable_count(context, guid)
    assert before is not None
    counter.count += 1
    dropper.arm("hold", hold=0.3)
    outcome = "returned"
    try:
        counter.save(datastore_wins=None)
    except ConcurrencyError:
        outcome = "ConcurrencyError"
    fired = dropper.last.wait(SOON)
    after = durable_count(context, guid)
    figures(outcome=outcome, before=before, after=after, fired=fired)
    assert fired, f"the proxy dropped no answer: {dropper.last!r}"
    assert outcome == "ConcurrencyError" or after == before + 2, (
        f"without the commit token the lost answer went unnoticed ({outcome}, {before} -> {after}): "
        "this control proves nothing")


# --- 3. no quorum ---------------------------------------------------------------------------


def test_no_quorum_fails_in_bounded_time_and_says_why(
        etcd_cluster: EtcdCluster, memcached_server: RunningServer, fault_namespace: str,
        contexts: list[Context], monkeypatch: pytest.MonkeyPatch, figures: Callable[..., None]) -> None:
    timeout = 2.0
    context = configure(etcd_cluster.url + f"?timeout={timeout:g}", memcached_server.url,
                        namespace=fault_namespace)
    contexts.append(context)
    guid = new_counter().guid
    # the save must go straight to its commit, not first re-read the hybrid's schema record
    monkeypatch.setattr(dal.objects.schema, "READY_TTL", 3600.0)
    counter = Counter(guid)
    before = durable_count(context, guid)
    assert before is not None
    counter.count += 1
    leader = etcd_cluster.leader(timeout=SOON)
    victims = [member for member in etcd_cluster.members if member is not leader]
    for member in victims:
        etcd_cluster.kill(member)
    started = time.monotonic()
    with pytest.raises(BackendError) as raised:
        counter.save(datastore_wins=None)
    failed_after = round(time.monotonic() - started, 2)
    message = str(raised.value)
    for member in victims:
        etcd_cluster.restart(member)
    retries = 0
    recover_deadline = time.monotonic() + 30
    while True:
        try:
            counter.save(datastore_wins=None)
            break
        except BackendError:
            retries += 1
            if time.monotonic() >= recover_deadline:
                raise
            time.sleep(0.2)
    after = durable_count(context, guid)
    figures(error=type(raised.value).__name__, failed_after=failed_after, retries_after_restart=retries,
            settled_as_applied=answers_lost(context) > 0, before=before, after=after)
    print(f"no-quorum message: {message}")
    assert failed_after < 4 * timeout + 4, f"the save took {failed_after} s to fail"
    # no member answered in time, or the leader, stepping down without a majority, answered that
    assert "did not answer within" in message or "did not confirm the request" in message, message
    assert "majority" in message or "quorum" in message, message
    for grpc_text in ("context deadline exceeded", "UNKNOWN:", "UNAVAILABLE:", "StatusCode",
                      "DEADLINE_EXCEEDED"):
        assert grpc_text not in message, f"gRPC text {grpc_text!r} in: {message}"
    assert after == before + 1
    assert counter.count == before + 1
    assert assert_nothing_stale(context, guid) == before + 1


# --- 4. one store, however it is spelled -----------------------------------------------------


def test_one_store_however_it_is_spelled(etcd_cluster: EtcdCluster, memcached_server: RunningServer,
                                         fault_namespace: str, contexts: list[Context],
                                         figures: Callable[..., None]) -> None:
    first, second, third = etcd_cluster.members
    here_url = f"etcd://127.0.0.1:{second.client_port},127.0.0.1:{third.client_port}"
    there_url = f"etcd://localhost:{first.client_port}"
    context = configure(here_url, memcached_server.url, namespace=fault_namespace)
    contexts.append(context)
    guid = new_counter().guid
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe()
    peer = spawn.Process(target=spelling_peer, name="spelling-peer",
                         args=(there_url, memcached_server.url, fault_namespace, theirs, 120.0))

    def ask(*message: Any) -> Any:
        if message:
            ours.send(message)
        assert ours.poll(60), f"the peer did not answer {message} within 60 s"
        kind, value = ours.recv()
        assert kind != "error", f"the peer failed:\n{value}"
        return value

    try:
        peer.start()
        theirs.close()
        their_root = ask()
        # A loads (so it is cached), B saves, A loads again: the new value
        assert Counter(guid).count == 0
        hits = context.stats["object_hits"]
        assert Counter(guid).count == 0
        assert context.stats["object_hits"] == hits + 1, "the second load was not served by the cache"
        ask("save", guid, 5)
        misses = context.stats["object_misses"]
        here_after = Counter(guid).count
        missed = context.stats["object_misses"] - misses
        # and the other way: B loads (cached), A saves, B loads again
        assert ask("load", guid) == 5
        assert ask("load", guid) == 5
        counter = Counter(guid)
        counter.count = 9
        counter.save()
        there_after = ask("load", guid)
        ours.send(("stop",))
        peer.join(timeout=30)
    finally:
        if peer.is_alive():
            peer.kill()
            peer.join(timeout=5)
        ours.close()
    figures(here=here_url, there=there_url, same_cache_root=their_root == context.keys.cache_root,
            seen_here=here_after, seen_there=there_after)
    assert their_root == context.keys.cache_root, (their_root, context.keys.cache_root)
    assert here_after == 5, "a save by the other spelling left this process's cached document in place"
    assert missed == 1, "the other process's save did not invalidate the key this process reads"
    assert there_after == 9
    assert peer.exitcode == 0
