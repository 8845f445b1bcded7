"""Dynamic properties: TTL caching, invalidation, single-flight locks, statistics, faults."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import at_once
from dynamic_hybrids import CALLS, HOOKS, Gauge

from dal import configure
from dal.config import Context
from dal.exceptions import InvalidValueError
from dal.testing.servers import closed_port


def gauge(level: int = 1) -> Gauge:
    obj = Gauge(data={"name": f"g{uuid.uuid4().hex[:6]}", "level": level})
    obj.save()
    return obj


def counter(context: Context, obj: Gauge, name: str, event: str) -> float:
    return context.stats[f"dynamic.gauge.{name}.{event}"]


def test_value_is_cached_for_its_timeout_and_shared(stores: Context) -> None:
    obj = gauge(3)
    assert obj.plain == 30 and Gauge(obj.guid).plain == 30
    assert CALLS["plain", obj.guid] == 1
    assert counter(stores, obj, "plain", "hits") == 1 and counter(stores, obj, "plain", "misses") == 1
    assert counter(stores, obj, "plain", "computations") == 1
    assert counter(stores, obj, "plain", "compute_seconds") > 0


def test_none_is_cached_and_timeout_zero_never_is(stores: Context) -> None:
    obj = gauge()
    assert obj.nothing is None and obj.nothing is None
    assert CALLS["nothing", obj.guid] == 1
    assert [obj.uncached for _ in range(3)] == [1, 2, 3]


def test_a_failing_or_wrong_loader_caches_nothing_and_the_error_is_unchanged(stores: Context) -> None:
    obj = gauge()
    for _ in range(2):
        with pytest.raises(RuntimeError, match=r"^sensor offline$"):
            _ = obj.failing
        with pytest.raises(InvalidValueError, match=r"Gauge\.wrong must be int"):
            _ = obj.wrong
    assert CALLS["failing", obj.guid] == 2 and CALLS["wrong", obj.guid] == 2
    key = stores.keys.cached_dynamic("gauge", obj.guid, "failing")
    assert stores.volatile.get(key) is None, "a failed computation must not leave its lease behind"


def test_save_delete_and_invalidate_drop_cached_values(stores: Context) -> None:
    obj = gauge(1)
    assert obj.plain == 10
    obj.level = 2
    obj.save()
    assert obj.plain == 20
    obj.invalidate_dynamics(["plain"])
    assert obj.plain == 20 and CALLS["plain", obj.guid] == 3
    with pytest.raises(InvalidValueError, match="no dynamic"):
        obj.invalidate_dynamics(["nope"])
    key = stores.keys.cached_dynamic("gauge", obj.guid, "plain")
    assert stores.volatile.get(key) is not None
    obj.delete()
    assert stores.volatile.get(key) is None


def test_an_invalidation_during_a_computation_wins(stores: Context) -> None:
    """The value computed from the old state must not be cached after the save that changed it."""
    obj = gauge(1)

    def save_meanwhile() -> None:
        other = Gauge(obj.guid)
        other.level = 5
        other.save()

    HOOKS["plain"] = save_meanwhile
    assert obj.plain == 10  # computed from the state it started with
    assert Gauge(obj.guid).plain == 50, "the older value was cached after the invalidation"


def test_locked_dynamic_computes_once_for_concurrent_threads(stores: Context) -> None:
    obj = gauge()
    results = at_once(8, lambda: Gauge(obj.guid).reading)
    assert len(results) == 8 and len(set(results)) == 1
    assert CALLS["reading", obj.guid] == 1
    assert counter(stores, obj, "reading", "lock_waits") >= 1


def test_a_crashed_lock_owner_blocks_nobody_past_the_lock_timeout(stores: Context) -> None:
    obj = gauge()
    lock_key = stores.keys.cached_dynamic("gauge", obj.guid, "slow_lock") + "/lock"
    assert stores.volatile.add(lock_key, b"a crashed owner's token", 0.5)  # never released
    started = time.monotonic()
    value = obj.slow_lock
    waited = time.monotonic() - started
    assert value and CALLS["slow_lock", obj.guid] == 1
    assert waited < 0.5 + 1.5 + 2.0, f"waited {waited:.1f} s for an abandoned lock"


def test_a_waiter_computes_for_itself_after_the_lock_timeout(stores: Context) -> None:
    obj = gauge()
    owner_value: list[str] = []
    owner = threading.Thread(target=lambda: owner_value.append(Gauge(obj.guid).slow_lock))
    owner.start()
    time.sleep(0.1)  # the owner holds the lock and computes for 1.5 s; the lock lasts 0.5 s
    mine = Gauge(obj.guid).slow_lock
    owner.join()
    assert mine and owner_value
    assert CALLS["slow_lock", obj.guid] == 2


def test_only_the_owner_releases_the_lock(stores: Context) -> None:
    from dal.objects.dynamics_locks import release as _release

    key = f"{stores.keys.root}c/lock-test"
    assert stores.volatile.add(key, b"owner-token", 30)
    _release(stores, key, b"someone-else")
    assert stores.volatile.get(key) == b"owner-token"
    _release(stores, key, b"owner-token")
    assert stores.volatile.get(key) is None


def test_with_memcached_down_dynamics_compute_every_time_and_never_wait(
        tmp_path: Path, namespace: str) -> None:
    url = f"memcached://127.0.0.1:{closed_port()}?timeout=0.1&connect_timeout=0.1&dead_timeout=1"
    context = configure(f"sqlite:///{tmp_path}/d.sqlite3", url, namespace=namespace)
    obj = gauge(2)
    started = time.monotonic()
    assert [obj.plain for _ in range(3)] == [20, 20, 20]
    assert obj.reading  # locked: no lock server, so no waiting either
    assert CALLS["plain", obj.guid] == 3
    assert time.monotonic() - started < 0.3 * 3 + 3 * 0.3 + 2, "a dead cache must not slow reads down"
    assert context.stats["dynamic.gauge.reading.lock_errors"] >= 1


@pytest.mark.memcached
def test_caching_resumes_when_memcached_returns(tmp_path: Path, namespace: str) -> None:
    from dal.testing.servers import start_memcached

    server = start_memcached(tmp_path / "mc")
    url = f"{server.url}?timeout=0.1&connect_timeout=0.1&dead_timeout=0.5"
    configure(f"sqlite:///{tmp_path}/d.sqlite3", url, namespace=namespace)
    obj = gauge(1)
    try:
        server.stop()
        assert obj.plain == 10 and obj.plain == 10
        assert CALLS["plain", obj.guid] == 2  # no cache: computed each time
        server = start_memcached(tmp_path / "mc", port=server.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            before = CALLS["plain", obj.guid]
            obj.invalidate_dynamics(["plain"])
            _ = obj.plain
            _ = obj.plain
            if CALLS["plain", obj.guid] == before + 1:
                break  # the second read was a cache hit again
            time.sleep(0.2)
        else:
            pytest.fail("caching never resumed after memcached came back")
    finally:
        server.stop()


def _read_reading(persistent: str, volatile: str, namespace: str, guid: str,
                  start: Any) -> tuple[set[str], int]:
    configure(persistent, volatile, namespace=namespace)
    obj = Gauge(guid)
    values: list[str] = []
    local = threading.Barrier(4)

    def read() -> None:
        local.wait()
        values.append(Gauge(guid).reading)

    start.wait()
    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return set(values), CALLS["reading", obj.guid]


@pytest.mark.slow
@pytest.mark.etcd
@pytest.mark.memcached
def test_locked_dynamic_single_flight_across_16_processes_of_4_threads(
        etcd_server: Any, memcached_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    configure(etcd_server.url, memcached_server.url, namespace=namespace)
    obj = gauge()
    monkeypatch.setenv("DAL_TEST_READING_SECONDS", "0.5")
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, spawn.Pool(16) as pool:
        start = manager.Barrier(16)
        results = pool.starmap(_read_reading, [(etcd_server.url, memcached_server.url, namespace, obj.guid,
                                                start)] * 16, chunksize=1)
    values = set().union(*(found for found, _ in results))
    computations = sum(calls for _, calls in results)
    assert computations == 1, f"{computations} computations for one cold locked dynamic"
    assert len(values) == 1, "every caller got the one computed value"
    assert os.environ["DAL_TEST_READING_SECONDS"] == "0.5"
