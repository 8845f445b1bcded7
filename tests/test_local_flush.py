"""The flush of the process-local cache when another process commits to the SQLite file: values
and fill leases go, single-flight locks stay (a lock holds no data, so none can be stale)."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from dal import DataObject, Dynamic, Property, configure
from dal.backends.base import Put
from dal.backends.memory import MemoryCache
from dal.backends.sqlite import SqliteStore
from dal.backends.url import parse_url
from dal.config import Context
from dal.keys import is_flight_lock

#: (start, end) of every call of the slow loader
RUNS: list[tuple[float, float]] = []
#: set by the test: what the first loader call does before it ends
FIRST_CALL: list[Any] = []


class Flight(DataObject):
    __properties: list[Property[Any]] = [Property("name", str)]
    __dynamics = [Dynamic("slow", int, 60, locked=True, lock_timeout=10)]

    def _slow(self) -> int:
        start = time.monotonic()
        if FIRST_CALL:
            FIRST_CALL.pop()()
        RUNS.append((start, time.monotonic()))
        return 42


def test_a_commit_by_another_process_keeps_a_locked_dynamic_single_flight(
        tmp_path: Path, namespace: str) -> None:
    # the flush used to drop the lock with the values: a second reader, finding no lock, computed
    # the dynamic while the first still did
    path = tmp_path / "d.sqlite3"
    context = configure(f"sqlite:///{path}", "memory://", namespace=namespace)
    obj = Flight(data={"name": "f"})
    obj.save()
    other = SqliteStore.from_url(parse_url(f"sqlite:///{path}"))  # commits as another process would
    RUNS.clear()
    second_started = threading.Event()
    results: list[int] = []

    def first_call() -> None:
        other.commit([], [Put(f"{namespace}/unrelated", b"x")])
        reader.start()
        second_started.set()
        # until the second reader waits for the lock, or (the bug) computes beside this call
        deadline = time.monotonic() + 5
        waits = "dynamic.flight.slow.lock_waits"
        while time.monotonic() < deadline and not context.stats[waits] and len(RUNS) < 1:
            time.sleep(0.005)

    reader = threading.Thread(target=lambda: results.append(Flight(obj.guid).slow))
    FIRST_CALL[:] = [first_call]
    try:
        results.append(Flight(obj.guid).slow)
        assert second_started.wait(5)
        reader.join(10)
    finally:
        other.close()
        FIRST_CALL.clear()
    assert results == [42, 42]
    assert context.stats["object_local_flushes"] >= 1
    # the value the first call computed may predate the other commit, so it is not stored and
    # the waiter computes again; but after the first call, never beside it
    ordered = sorted(RUNS)
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(ordered)), ordered


def test_clear_keeps_only_what_keep_accepts_with_its_expiry() -> None:
    cache = MemoryCache(parse_url(f"memory://{uuid.uuid4().hex[:8]}"))
    cache.set("a/lock", b"1", 0.2)
    cache.set("b/lock", b"2", 0)
    cache.set("a", b"3", 60)
    cache.clear(keep=lambda key: key.endswith("/lock"))
    assert cache.get("a") is None and cache.get("a/lock") == b"1" and cache.get("b/lock") == b"2"
    assert cache.total_size == sum(entry.size for entry in cache.entries())
    assert not cache.add("a/lock", b"x", 60)  # still held
    time.sleep(0.25)
    assert cache.get("a/lock") is None  # its deadline was kept too
    cache.clear()
    assert cache.entries() == [] and cache.total_size == 0


def test_only_single_flight_locks_are_flight_locks(tmp_path: Path, namespace: str) -> None:
    context: Context = configure(f"sqlite:///{tmp_path / 'd.sqlite3'}", "memory://", namespace=namespace)
    keys, guid = context.keys, uuid.uuid4().hex
    assert is_flight_lock(keys.cached_dynamic("H", guid, "slow") + "/lock")
    assert is_flight_lock(keys.cached_doc("H", guid) + "/refresh")
    # the value of a dynamic named ``lock``, or of one named ``refresh``: values, to be dropped
    assert not is_flight_lock(keys.cached_dynamic("H", guid, "lock"))
    assert not is_flight_lock(keys.cached_dynamic("H", guid, "refresh"))
    assert not is_flight_lock(keys.cached_doc("H", guid))
    assert not is_flight_lock(keys.field_version("H", "lock"))
