"""The embedded default's object cache is bounded in bytes, and a long run keeps memory flat.

A SQLite file holds 20,000 objects, written with batched raw commits (as
``bench/benchmarks/query_indexed.py`` writes its records). A run loads 12,000 of them, each once,
and runs an indexed query every 100 loads, on ``sqlite:///...`` + ``memory://...?max_size=2 MiB``:
about 1,400 documents fit, so the cache evicts all along. The charge of the cache never exceeds
its bound (checked after every load), and the process's traced memory (``tracemalloc``) in the
last quarter of the run stays within :data:`TOLERANCE` of the first quarter's. Its control,
the same run with ``max_size=0``, grows by megabytes, so the test can fail.

The monotonic-read record (``dal/cache/seen.py``) is bounded on its own, at 100,000 objects;
the runs give it a capacity of 1,000 so that it too is full before the first quarter is
measured, and what is left to grow is the cache.
"""

from __future__ import annotations

import gc
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dal import DataObject, Property, configure
from dal.backends.base import Check, Op
from dal.backends.memory import MemoryCache
from dal.backends.memory_lru import DEFAULT_MAX_SIZE
from dal.cache.seen import Seen
from dal.config import Context
from dal.objects.transaction import plan_write
from dal.query.datalist import DataList

OBJECTS = 20_000
#: objects loaded by a run, each once (more than eight times what the bound holds)
LOADS = 12_000
#: one indexed query every this many loads
QUERY_EVERY = 100
GROUPS = 1_000
PER_COMMIT = 2_000
BOUND = 2 * 1024 * 1024
#: growth allowed between the first and the last quarter of the bounded run
TOLERANCE = 256 * 1024
#: what the unbounded control must grow by at least (it caches every document it loads)
CONTROL_GROWTH = 4 * 1024 * 1024
SAMPLES = 24


class BoundRecord(DataObject, hybrid_name="mbrecord"):
    """A record of about 700 bytes of JSON: a unique name, an indexed group, a note."""

    __properties: list[Property[Any]] = [Property("name", str, unique=True),
                                         Property("group", str, indexed=True),
                                         Property("note", str, mandatory=False)]


def group(number: int) -> str:
    return f"g{number % GROUPS:04d}"


def store_objects(context: Context) -> list[str]:
    """Store OBJECTS records: one ``save()`` (which records the schema), the rest in raw batched commits."""
    first = BoundRecord(data={"name": "r0", "group": group(0), "note": "n" * 600})
    first.save()
    template = first._document()
    guids = [first.guid]
    checks: list[Check] = []
    ops: list[Op] = []
    for number in range(1, OBJECTS):
        document = dict(template, name=f"r{number}", group=group(number))
        guid = str(uuid.uuid4())
        plan = plan_write(context.keys, BoundRecord._meta, guid, None, 0, document)
        checks += plan.checks
        ops += plan.ops
        guids.append(guid)
        if number % PER_COMMIT == 0 or number == OBJECTS - 1:
            assert context.commit(checks, ops).ok
            checks, ops = [], []
    return guids


@dataclass
class Run:
    samples: list[int]  # traced bytes, SAMPLES of them spread over the run
    worst_charge: int  # the most the cache charged after any load
    held: int  # entries the cache held at the end

    def quarter_peaks(self) -> tuple[int, int]:
        quarter = len(self.samples) // 4
        return max(self.samples[:quarter]), max(self.samples[-quarter:])


def run(path: Path, guids: list[str], max_size: int) -> Run:
    """Load LOADS objects and query every QUERY_EVERY loads through a fresh cache bounded at ``max_size``."""
    context = configure(f"sqlite:///{path}", f"memory://{uuid.uuid4().hex[:8]}?max_size={max_size}",
                        namespace="bound")
    cache = context.volatile
    assert isinstance(cache, MemoryCache) and context.caches_objects
    context.seen = Seen(capacity=1_000, buckets=1 << 10)
    stride = 7919  # prime to OBJECTS: LOADS distinct objects, spread over the whole store
    samples, worst = [], 0
    gc.collect()
    tracemalloc.start()
    try:
        for number in range(LOADS):
            guid = guids[number * stride % OBJECTS]
            assert BoundRecord(guid).guid == guid
            if number % QUERY_EVERY == 0:
                spec = {"type": "AND", "items": [("group", "EQUALS", group(number // QUERY_EVERY))]}
                assert len(list(DataList(BoundRecord, spec))) == OBJECTS // GROUPS
            worst = max(worst, cache.total_size)
            if number % (LOADS // SAMPLES) == LOADS // SAMPLES - 1:
                samples.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    held = len(cache.entries())
    cache.clear()
    return Run(samples, worst, held)


@pytest.mark.slow
def test_a_long_run_over_many_objects_keeps_the_charge_bounded_and_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "bound.sqlite3"
    guids = store_objects(configure(f"sqlite:///{path}", f"memory://{uuid.uuid4().hex[:8]}",
                                    namespace="bound"))
    bounded = run(path, guids, BOUND)
    first, last = bounded.quarter_peaks()
    print(f"bounded at {BOUND:,} B: worst charge {bounded.worst_charge:,} B, {bounded.held:,} entries held; "
          f"traced peak {first:,} B in the first quarter, {last:,} B in the last")
    assert bounded.worst_charge <= BOUND
    assert bounded.held < LOADS // 4  # it evicted all along
    assert last - first <= TOLERANCE, bounded.samples

    control = run(path, guids, 0)  # unbounded: every loaded document stays
    first, last = control.quarter_peaks()
    print(f"control, unbounded: {control.held:,} entries held; traced peak {first:,} B in the first "
          f"quarter, {last:,} B in the last")
    assert control.held >= LOADS
    assert last - first >= CONTROL_GROWTH, control.samples


def test_the_embedded_default_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAL_VOLATILE_URL", raising=False)
    context = configure(f"sqlite:///{tmp_path / 'default.sqlite3'}", namespace="bound")
    assert isinstance(context.volatile, MemoryCache)
    assert context.volatile.max_size == DEFAULT_MAX_SIZE == 64 * 1024 * 1024
    monkeypatch.setenv("DAL_VOLATILE_URL", "memory://unbounded?max_size=0")
    unbounded = configure(f"sqlite:///{tmp_path / 'default.sqlite3'}", namespace="bound").volatile
    assert isinstance(unbounded, MemoryCache) and unbounded.max_size == 0
