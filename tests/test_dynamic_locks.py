"""Locked and slow dynamics: fill leases that outlast the loader, waiters that give up at their
``lock_timeout``, memcached TTLs that never expire a lock or value early (or at once), and an owner
killed (or outrun) mid-loader, whose lease no longer keeps the next owner from caching."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import at_once, volatile_url_for

from dal import DataObject, Dynamic, Property, configure
from dal.backends import open_volatile
from dal.backends.memcached.cache import RELATIVE_TTL_LIMIT, expiry
from dal.config import Context
from dal.exceptions import InvalidValueError
from dal.testing.fixtures import memcached_servers
from dal.testing.servers import RunningServer
from dal.tools import cache

#: loader calls, by (dynamic, guid)
CALLS: Counter[tuple[str, str]] = Counter()
#: how long the slow loaders run: longer than the fill lease the tests set, within lock_timeout
SLOW = 0.4
#: the cache's default fill lease, made short so a slow loader outlasts it quickly
SHORT_LEASE = 0.1
TWENTY_YEARS = 20 * 365 * 86400


class Latch(DataObject):
    """Dynamics whose loaders take longer than a short fill lease."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __dynamics = [Dynamic("report", str, 60, locked=True, lock_timeout=2),
                  Dynamic("digest", str, 60, lock_timeout=2),
                  Dynamic("quick", int, 60, locked=True, lock_timeout=0.5),
                  Dynamic("forever", int, TWENTY_YEARS)]

    def _report(self) -> str:
        CALLS["report", self.guid] += 1
        time.sleep(SLOW)
        return uuid.uuid4().hex

    def _digest(self) -> str:
        CALLS["digest", self.guid] += 1
        time.sleep(SLOW)
        return uuid.uuid4().hex

    def _quick(self) -> int:
        CALLS["quick", self.guid] += 1
        return 1

    def _forever(self) -> int:
        CALLS["forever", self.guid] += 1
        return 5


def _configure(kind: str, request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Context:
    volatile = volatile_url_for(kind, request)
    return configure(f"sqlite:///{tmp_path / 'd.sqlite3'}", volatile, namespace=namespace)


@pytest.fixture
def memory(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Context:
    return _configure("memory", request, tmp_path, namespace)


def latch() -> Latch:
    obj = Latch(data={"name": f"l{uuid.uuid4().hex[:6]}"})
    obj.save()
    return obj


def test_a_locked_loader_longer_than_the_fill_lease_is_cached_and_computed_once(
        memory: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    # a fill lease shorter than the loader used to be outlived: the value was never stored, and
    # each waiter in turn took the lock and computed again
    monkeypatch.setattr(memory.dynamics, "lease_ttl", SHORT_LEASE)
    obj = latch()
    results = at_once(4, lambda: Latch(obj.guid).report)
    assert len(results) == 4 and len(set(results)) == 1
    assert Latch(obj.guid).report == results[0], "the value was not cached"
    assert CALLS["report", obj.guid] == 1
    assert memory.stats["dynamic_fill_conflicts"] == 0 and memory.stats["dynamic_fills"] == 1


def test_an_unlocked_loader_within_its_lock_timeout_is_cached(memory: Context,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory.dynamics, "lease_ttl", SHORT_LEASE)
    obj = latch()
    first = obj.digest
    assert Latch(obj.guid).digest == first and CALLS["digest", obj.guid] == 1


@pytest.mark.parametrize("kind", ["memory", pytest.param("memcached", marks=pytest.mark.memcached)])
def test_a_waiter_computes_for_itself_at_its_lock_timeout_while_the_lock_lives_on(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> None:
    """A live owner's lock, taken with a TTL longer than this reader's ``lock_timeout`` (0.5 s),
    does not expire first: only the waiter's own deadline ends its wait."""
    context = _configure(kind, request, tmp_path, namespace)
    obj = latch()
    lock_key = context.keys.cached_dynamic("latch", obj.guid, "quick") + "/lock"
    assert context.volatile.add(lock_key, b"a live owner's token", 5)
    started = time.monotonic()
    assert obj.quick == 1
    waited = time.monotonic() - started
    assert 0.5 <= waited < 1.5, f"waited {waited:.2f} s with lock_timeout 0.5 s"
    assert context.stats["dynamic.latch.quick.lock_timeouts"] == 1
    assert CALLS["quick", obj.guid] == 1
    assert context.volatile.get(lock_key) == b"a live owner's token", "the owner's lock is not the waiter's"


def test_memcached_expiry_is_never_shorter_than_the_ttl() -> None:
    assert [expiry(ttl) for ttl in (0, -1, 0.001, 1, 1.5, 60)] == [0, -1, 2, 2, 3, 61]
    month = expiry(RELATIVE_TTL_LIMIT)
    assert month >= time.time() + RELATIVE_TTL_LIMIT, "above 30 days memcached reads a unix time"
    # past 2**31 - 1 memcached would store the item already expired: it never expires instead
    assert expiry(TWENTY_YEARS) == 0 and expiry(1e12) == 0


@pytest.mark.memcached
def test_memcached_keeps_an_item_at_least_its_ttl(memcached_server: Any, namespace: str) -> None:
    # memcached's clock ticks once a second: items added at three points of a tick, so that an
    # early expiry shows whatever the tick's phase
    store = open_volatile(memcached_server.url)
    added: dict[str, float] = {}
    for n in range(3):
        key = f"{namespace}/lock{n}"
        assert store.add(key, b"x", 1.0)
        added[key] = time.monotonic()
        time.sleep(0.33)
    lived: dict[str, float] = {}
    while len(lived) < len(added):
        for key, at in added.items():
            if key not in lived and store.get(key) is None:
                lived[key] = time.monotonic() - at
        time.sleep(0.005)
    assert all(0.95 <= seconds <= 2.1 for seconds in lived.values()), f"lifetimes {sorted(lived.values())}"


@pytest.mark.memcached
def test_memcached_keeps_items_whose_ttl_reaches_past_2038(
        request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> None:
    context = _configure("memcached", request, tmp_path, namespace)
    assert context.volatile.set(f"{namespace}/far", b"v", TWENTY_YEARS)
    assert context.volatile.get(f"{namespace}/far") == b"v", "stored already expired"
    assert context.volatile.add(f"{namespace}/lock", b"v", TWENTY_YEARS)
    assert not context.volatile.add(f"{namespace}/lock", b"w", TWENTY_YEARS), "a lock never held"
    obj = latch()
    assert [Latch(obj.guid).forever for _ in range(3)] == [5, 5, 5]
    assert CALLS["forever", obj.guid] == 1
    context.volatile.delete_many([f"{namespace}/far", f"{namespace}/lock"])  # they would never expire


@pytest.mark.parametrize("kind", ["memory", "memcached", "redis"])
def test_a_reader_that_takes_the_lock_after_the_owner_stored_serves_that_value(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reader B misses just before owner A stores its value; B's lock `add` comes after A released the
    lock, so B owns it: it must find A's value, not compute a second one (the interleaving injected
    by holding B between its miss and its lock until A is done)."""
    context = _configure(kind, request, tmp_path, namespace)
    obj = latch()
    key = context.keys.cached_dynamic(Latch._meta.name, obj.guid, "quick")
    b_missed, a_done = threading.Event(), threading.Event()
    real_get = context.dynamics.get

    def get(wanted: str) -> Any:
        found = real_get(wanted)
        if threading.current_thread().name == "B" and wanted == key and found is None \
                and not b_missed.is_set():
            b_missed.set()
            a_done.wait(5)  # B missed: A computes, stores and releases the lock meanwhile
        return found

    monkeypatch.setattr(context.dynamics, "get", get)
    values: dict[str, int] = {}

    def read(name: str) -> None:
        values[name] = Latch(obj.guid).quick

    b = threading.Thread(target=read, args=("B",), name="B")
    b.start()
    assert b_missed.wait(5)
    read("A")  # misses too, takes the free lock, computes, stores, releases
    a_done.set()
    b.join(10)
    assert CALLS["quick", obj.guid] == 1, "one computation for the one miss"
    assert values == {"A": 1, "B": 1}


def test_a_lock_the_cache_never_holds_ends_the_wait_at_the_lock_timeout(
        memory: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache that refuses the lock (add answers False) and holds none: the caller used to take
    every refusal for another owner's lock gone since, and try again without end."""
    obj = latch()
    monkeypatch.setattr(memory.volatile, "add", lambda key, value, ttl: False)
    outcome: list[int] = []
    reader = threading.Thread(target=lambda: outcome.append(Latch(obj.guid).quick), daemon=True)
    reader.start()
    reader.join(10)
    assert outcome == [1], "the read never ended: it kept trying to take a lock the cache refuses"
    assert memory.stats["dynamic.latch.quick.lock_timeouts"] == 1


#: holds Gate's loader until the test lets it end
RELEASE = threading.Event()
#: Gate loaders running now, and the most that ever ran at once
RUNNING = Counter[str]()


class Gate(DataObject):
    """A locked dynamic whose loader runs until the test releases it, counting how many run at once."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __dynamics = [Dynamic("held", int, 60, locked=True, lock_timeout=30)]

    def _held(self) -> int:
        RUNNING["now"] += 1
        RUNNING["most"] = max(RUNNING["most"], RUNNING["now"])
        try:
            RELEASE.wait(10)
            return 1
        finally:
            RUNNING["now"] -= 1


@pytest.mark.parametrize("max_size", [500, 200_000])
def test_a_bounded_memory_cache_keeps_a_lock_while_its_holder_computes(
        tmp_path: Path, namespace: str, max_size: int) -> None:
    """500 bytes: smaller than any entry, so the lock was refused (and the read never ended);
    200 kB: the process's other reads filled the cache and evicted the lock while its holder
    computed, and a second caller computed the same dynamic at once."""
    context = configure(f"sqlite:///{tmp_path / 'd.sqlite3'}", f"memory://?max_size={max_size}",
                        namespace=namespace)
    RELEASE.clear()
    RUNNING.clear()
    gate, others = Gate(data={"name": "g"}), [latch().guid for _ in range(300)]
    gate.save()
    lock_key = context.keys.cached_dynamic("gate", gate.guid, "held") + "/lock"
    readers = [threading.Thread(target=lambda: Gate(gate.guid).held, daemon=True) for _ in range(2)]
    readers[0].start()
    deadline = time.monotonic() + 5
    while not RUNNING["now"] and time.monotonic() < deadline:
        time.sleep(0.005)
    assert RUNNING["now"] == 1, "the first reader never started computing"
    for guid in others:  # ordinary reads of this process, each cached: far past 200 kB
        assert Latch(guid).name
    assert context.volatile.get(lock_key) is not None, "the lock was evicted while its holder computes"
    readers[1].start()
    while context.stats["dynamic.gate.held.lock_waits"] < 1 and RUNNING["most"] < 2 and (
            time.monotonic() < deadline + 5):
        time.sleep(0.005)
    RELEASE.set()
    for reader in readers:
        reader.join(10)
    assert RUNNING["most"] == 1, "a second caller computed while the lock's holder did"
    assert context.stats["dynamic.gate.held.lock_waits"] == 1


#: the name of the thread whose Crash loader outruns its lock_timeout (until OUTRUN_END is set)
OUTRUNNER = "outrunner"
OUTRUN_START, OUTRUN_END = threading.Event(), threading.Event()
#: how the Crash loaders run (tests set them): whether the outrunner's raises once let go, and how
#: long any other caller's takes
OUTRUN: dict[str, Any] = {"raises": False, "next": 0.0}
SPAWN = multiprocessing.get_context("spawn")


def _late_or_fresh(obj: DataObject) -> str:
    """The loader of Crash and Overrun: the OUTRUNNER thread's runs until OUTRUN_END is set."""
    CALLS["value", obj.guid] += 1
    if os.environ.get("DAL_TEST_DIE"):  # it holds the lock and the fill's lease: both left behind
        os._exit(9)
    if threading.current_thread().name == OUTRUNNER:
        OUTRUN_START.set()
        OUTRUN_END.wait(30)
        if OUTRUN["raises"]:
            raise RuntimeError("the late owner's loader failed")
        return "late"
    time.sleep(OUTRUN["next"])
    return "fresh"


class Crash(DataObject):
    """A locked dynamic whose owner dies (a spawned child) or outruns its lock_timeout (a thread)."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __dynamics = [Dynamic("value", str, 600, locked=True, lock_timeout=1)]

    def _value(self) -> str:
        return _late_or_fresh(self)


class Overrun(DataObject):
    """Crash's dynamic locked for 2 s: its fill lease (the cache's 10 s floor shrunk) lasts 3 s, so
    what a next owner finds left of it after the lock_timeout is 1 s (less than 3 s on memcached,
    which counts whole seconds: a TTL of 3 s lives less than 5 s)."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __dynamics = [Dynamic("value", str, 600, locked=True, lock_timeout=2)]

    def _value(self) -> str:
        return _late_or_fresh(self)


def _die_holding_the_lock(persistent: str, volatile: str, namespace: str, guid: str) -> None:
    os.environ["DAL_TEST_DIE"] = "1"
    configure(persistent, volatile, namespace=namespace)
    assert Crash(guid).value, "never returns: the loader ends the process"


def _crash_context(kind: str, request: pytest.FixtureRequest, tmp_path: Path, namespace: str,
                   hybrid: type[Crash] | type[Overrun] = Crash) -> tuple[Context, Any, str]:
    if kind == "replicated":  # three memcached servers of this test's own, each key on all three
        servers = request.getfixturevalue("replicas")
        hosts = ",".join(f"127.0.0.1:{server.port}" for server in servers)
        context = configure(f"sqlite:///{tmp_path / 'd.sqlite3'}", f"memcached://{hosts}?replicas=3&timeout=2",
                            namespace=namespace)
    else:
        context = _configure(kind, request, tmp_path, namespace)
    obj = hybrid(data={"name": "c"})
    obj.save()
    return context, obj, context.keys.cached_dynamic(obj._meta.name, obj.guid, "value")


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_a_lock_owner_killed_mid_loader_delays_caching_by_its_lock_timeout_only(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> None:
    """The owner's fill lease (10 s: the cache's own) outlived its lock (1 s): each later reader took
    the lock, found the lease, and computed without caching for 10 s (every read a computation)."""
    context, obj, key = _crash_context(kind, request, tmp_path, namespace)
    child = SPAWN.Process(target=_die_holding_the_lock,
                          args=(f"sqlite:///{tmp_path / 'd.sqlite3'}", volatile_url_for(kind, request),
                                namespace, obj.guid))
    child.start()
    child.join(30)
    assert child.exitcode == 9, f"the owner exited {child.exitcode}"
    raw = context.volatile.get(key)
    assert raw is not None and context.dynamics.is_lease(key, raw), "the killed owner left its lease"
    started = time.monotonic()
    assert Crash(obj.guid).value == "fresh"  # after lock_timeout: computed, under the lease left
    waited = time.monotonic() - started
    assert [Crash(obj.guid).value for _ in range(3)] == ["fresh"] * 3
    assert CALLS["value", obj.guid] == 1, "computed once, then served from the cache"
    assert waited < 1 + 2.5, f"waited {waited:.2f} s with lock_timeout 1 s"  # memcached: whole seconds


@pytest.mark.parametrize("kind", ["memory", "memcached", "redis"])
def test_an_owner_that_outruns_its_lock_timeout_leaves_the_next_owner_to_cache(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> None:
    """A live owner past its lock_timeout looks like a dead one: the next owner computes once and
    caches; the late value, returned to its own caller, is not stored over that one."""
    context, obj, key = _crash_context(kind, request, tmp_path, namespace)
    OUTRUN_START.clear()
    OUTRUN_END.clear()
    late: list[str] = []
    outrunner = threading.Thread(target=lambda: late.append(Crash(obj.guid).value), name=OUTRUNNER)
    outrunner.start()
    try:
        assert OUTRUN_START.wait(10), "the first owner never started its loader"
        assert [Crash(obj.guid).value for _ in range(3)] == ["fresh"] * 3
        assert CALLS["value", obj.guid] == 2, "the next owner computed once, and cached"
        assert context.dynamics.get(key) is not None
    finally:
        OUTRUN_END.set()
        outrunner.join(10)
    assert late == ["late"]
    assert Crash(obj.guid).value == "fresh" and CALLS["value", obj.guid] == 2
    assert context.stats["dynamic_fills"] == 1 and context.stats["dynamic_fill_conflicts"] == 1


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[RunningServer]]:
    with memcached_servers(tmp_path / "replicas") as started:
        yield started


def _outrun(obj: Any) -> tuple[threading.Thread, list[str]]:
    """Start an owner whose loader runs until OUTRUN_END is set; return its thread and its outcome."""
    OUTRUN_START.clear()
    OUTRUN_END.clear()
    outcome: list[str] = []

    def read() -> None:
        try:
            outcome.append(type(obj)(obj.guid).value)
        except RuntimeError as exc:
            outcome.append(str(exc))

    outrunner = threading.Thread(target=read, name=OUTRUNNER)
    outrunner.start()
    assert OUTRUN_START.wait(10), "the first owner never started its loader"
    return outrunner, outcome


@pytest.mark.parametrize("kind", ["memory", "memcached", "redis", "replicated"])
def test_steady_reads_of_a_loader_longer_than_its_lock_timeout_cache_its_value_within_the_lease(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A loader of 1.5 s, locked for 1 s (its lease: 10 s), read every 0.2 s: each owner after the
    lock's expiry and each waiter at its deadline took the lease over from the fill before it, whose
    loader had not returned yet, so while the reads went on nothing was ever cached. Shared, the
    lease lets the first owner store, and every read from then on is served."""
    context, obj, key = _crash_context(kind, request, tmp_path, namespace)
    monkeypatch.setitem(OUTRUN, "next", 1.5)
    results: list[str] = []
    readers: list[threading.Thread] = []
    started = time.monotonic()
    computed = -1
    for n in range(20):  # a read every 0.2 s for 4 s
        time.sleep(max(0.0, started + 0.2 * n - time.monotonic()))
        if computed < 0 and time.monotonic() - started >= 3:  # 1.5 s after the first owner's return
            computed = CALLS["value", obj.guid]
        readers.append(threading.Thread(target=lambda: results.append(Crash(obj.guid).value)))
        readers[-1].start()
    cached = context.dynamics.get(key)
    for reader in readers:
        reader.join(10)
    assert results == ["fresh"] * 20
    assert cached is not None, "nothing was cached while the reads went on"
    assert CALLS["value", obj.guid] == computed, "a read 3 s on computed: the value was not cached"
    assert context.stats["dynamic_fills"] == 1


@pytest.mark.parametrize("kind", ["memory", "memcached", "redis", "replicated"])
def test_a_next_owner_outlasting_what_is_left_of_the_lease_caches_nothing_and_the_next_miss_does(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound of sharing: the next owner, taking the lock after lock_timeout (2 s), shares what
    is left of the first owner's 3 s lease (see Overrun), which its loader outlasts: it caches
    nothing, and the next read, the lease expired, computes once more and caches."""
    context, obj, key = _crash_context(kind, request, tmp_path, namespace, Overrun)
    monkeypatch.setattr(context.dynamics, "lease_ttl", SHORT_LEASE)  # the lease: lock_timeout + 1 s
    monkeypatch.setitem(OUTRUN, "next", 3.5 if kind in ("memcached", "replicated") else 1.5)
    outrunner, late = _outrun(obj)
    try:
        assert Overrun(obj.guid).value == "fresh"
        assert context.dynamics.get(key) is None, "stored after the lease it shared expired"
        assert context.stats["dynamic_fill_conflicts"] == 1 and CALLS["value", obj.guid] == 2
        monkeypatch.setitem(OUTRUN, "next", 0.0)
        assert [Overrun(obj.guid).value for _ in range(3)] == ["fresh"] * 3
        assert CALLS["value", obj.guid] == 3, "computed once more after the lease expired, then cached"
        assert context.dynamics.get(key) is not None and context.stats["dynamic_fills"] == 1
    finally:
        OUTRUN_END.set()
        outrunner.join(10)
    assert late == ["late"] and Overrun(obj.guid).value == "fresh" and CALLS["value", obj.guid] == 3
    assert context.stats["dynamic_fills"] == 1 and context.stats["dynamic_fill_conflicts"] == 2


@pytest.mark.parametrize("kind", ["memory", "memcached", "redis"])
def test_a_late_owner_whose_loader_raises_leaves_the_next_owners_value_cached(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fill whose loader raises gave its lease up with an unconditional delete: once the next
    owner, sharing that lease, had stored, that delete removed the value, computed again at the next read."""
    context, obj, key = _crash_context(kind, request, tmp_path, namespace)
    monkeypatch.setitem(OUTRUN, "raises", True)
    outrunner, late = _outrun(obj)
    try:
        assert Crash(obj.guid).value == "fresh" and context.dynamics.get(key) is not None
    finally:
        OUTRUN_END.set()
        outrunner.join(10)
    assert late == ["the late owner's loader failed"]
    assert context.dynamics.get(key) is not None, "the late owner's failure removed the value"
    assert Crash(obj.guid).value == "fresh" and CALLS["value", obj.guid] == 2


@pytest.mark.parametrize("kind", ["memory", "memcached", "redis"])
def test_a_late_owner_whose_loader_raises_first_leaves_the_next_owner_to_cache(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The late owner's loader raises while the next owner, sharing its lease, still computes: had
    it given that lease up (even by a conditional delete: the token is still the one both hold), the
    next owner's store would find it gone and cache nothing."""
    context, obj, key = _crash_context(kind, request, tmp_path, namespace)
    monkeypatch.setitem(OUTRUN, "raises", True)
    monkeypatch.setitem(OUTRUN, "next", 1.0)
    outrunner, late = _outrun(obj)
    nxt: list[str] = []
    reader = threading.Thread(target=lambda: nxt.append(Crash(obj.guid).value))
    reader.start()
    try:
        for _ in range(100):  # the next owner starts its loader after lock_timeout (1 s)
            if CALLS["value", obj.guid] == 2:
                break
            time.sleep(0.05)
        assert CALLS["value", obj.guid] == 2, "the next owner never started its loader"
    finally:
        OUTRUN_END.set()
        outrunner.join(10)
        reader.join(10)
    assert late == ["the late owner's loader failed"] and nxt == ["fresh"]
    assert context.dynamics.get(key) is not None, "the late owner gave up the lease the next one shared"
    assert Crash(obj.guid).value == "fresh" and CALLS["value", obj.guid] == 2
    assert context.stats["dynamic_fills"] == 1


class Flaky(DataObject):
    """A locked dynamic whose loader raises while ``FAILING`` holds its object's guid."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __dynamics = [Dynamic("value", int, 60, locked=True, lock_timeout=0.5)]

    def _value(self) -> int:
        CALLS["flaky", self.guid] += 1
        if self.guid in FAILING:
            raise RuntimeError("the loader failed")
        return 7


FAILING: set[str] = set()


def test_a_locked_loader_that_raised_leaves_its_lease_listed_until_it_expires(
        memory: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """What docs/caching.md says of is_being_cached: a locked fill whose loader raised leaves its lease
    (another caller may share it), so the dynamic reads as being cached until the lease expires; the
    next read still computes once and caches, within what is left of it."""
    monkeypatch.setattr(memory.dynamics, "lease_ttl", 1.5)  # the lease: max(1.5, 0.5 + 1 s)
    obj = Flaky(data={"name": "f"})
    obj.save()
    FAILING.add(obj.guid)
    with pytest.raises(RuntimeError, match="the loader failed"):
        _ = Flaky(obj.guid).value
    assert cache.is_being_cached(obj, "value"), "the lease a failed locked fill leaves is listed"
    FAILING.discard(obj.guid)
    assert Flaky(obj.guid).value == 7 and cache.is_cached(obj, "value")  # shared what was left of it
    assert Flaky(obj.guid).value == 7 and CALLS["flaky", obj.guid] == 2
    obj.invalidate_dynamics(["value"])
    FAILING.add(obj.guid)
    with pytest.raises(RuntimeError):
        _ = Flaky(obj.guid).value
    time.sleep(1.7)
    assert not cache.is_being_cached(obj, "value"), "gone once its lease expired"


@pytest.mark.parametrize("timeout", [0, 0.0])
def test_a_locked_dynamic_that_is_never_cached_is_refused_when_declared(timeout: float) -> None:
    """``timeout=0`` caches nothing, so a lock would share nothing: every reader computes anyway (it was
    accepted, and took no lock). Refused, in the list form and the annotated one, saying how to fix it."""
    with pytest.raises(InvalidValueError, match=r"locked=True with timeout=0.*timeout > 0.*drop locked=True"):
        Dynamic("probe", bool, timeout, locked=True)
    with pytest.raises(InvalidValueError, match=r"locked=True with timeout=0"):
        class Never(DataObject, hybrid_name=f"never{uuid.uuid4().hex[:8]}"):
            probe: bool = Dynamic(timeout=timeout, locked=True)

            def _probe(self) -> bool:
                return True
    assert not Dynamic("probe", bool, timeout).locked and Dynamic("probe", bool, 1, locked=True).locked


#: the size of what Bulky.body returns: over memcached's 1 MiB item limit, or small
BULK = {"size": 1_100_000}
#: Bulky.body loaders running now, and the most at once
BULKY = {"now": 0, "most": 0}
BULKY_LOCK = threading.Lock()


class Bulky(DataObject):
    """A locked dynamic whose value may be too large for the cache to take."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __dynamics = [Dynamic("body", str, 60, locked=True, lock_timeout=3)]  # longer than 6 runs of SLOW

    def _body(self) -> str:
        CALLS["body", self.guid] += 1
        with BULKY_LOCK:
            BULKY["now"] += 1
            BULKY["most"] = max(BULKY["most"], BULKY["now"])
        time.sleep(SLOW)
        with BULKY_LOCK:
            BULKY["now"] -= 1
        return "x" * BULK["size"]


@pytest.mark.parametrize("kind", ["memory", pytest.param("memcached", marks=pytest.mark.memcached)])
def test_waiters_on_a_value_too_large_to_cache_compute_at_once_not_one_after_another(
        request: pytest.FixtureRequest, tmp_path: Path, namespace: str, kind: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner's value is refused as too large (memcached's 1 MiB item, a ``memory://`` store's
    ``max_size``), so nothing is cached: the callers that waited for it used to take the lock and
    compute one after another (6 readers: 6 loader runs in a row). The owner leaves a mark in the lock
    for ``lock_timeout``, and they compute at once; after it, a value that fits is computed once and
    cached again."""
    volatile = volatile_url_for(kind, request) + ("?max_size=1000000" if kind == "memory" else "")
    context = configure(f"sqlite:///{tmp_path / 'd.sqlite3'}", volatile, namespace=namespace)
    obj = Bulky(data={"name": "b"})
    obj.save()
    BULKY.update(now=0, most=0)
    values = at_once(6, lambda: Bulky(obj.guid).body)
    assert all(len(value) == BULK["size"] for value in values) and CALLS["body", obj.guid] == 6
    assert BULKY["most"] >= 3, "the waiters computed one after another"
    label = "dynamic.bulky.body."
    assert context.stats[label + "too_large"] == 1 and context.stats[label + "lock_timeouts"] == 0
    # the mark holds the lock's key, but nothing computes: dal cache tools must not say otherwise
    assert not cache.is_being_cached(Bulky(obj.guid), "body")
    if kind == "memory":  # whole seconds elsewhere: the mark may live up to 2 s longer
        monkeypatch.setitem(BULK, "size", 10)
        time.sleep(3.1)  # the mark expired
        assert set(at_once(4, lambda: Bulky(obj.guid).body)) == {"x" * 10}
        assert CALLS["body", obj.guid] == 7, "cached again, computed once"
