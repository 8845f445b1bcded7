"""query_indexed: an indexed EQUALS query returning 100 of 100,000 objects, vs loading those 100 by guid.

Run on SQLite (``sqlite:///<tmp>/query_indexed.sqlite3`` + ``memory://``) and on etcd +
memcached. 100,000 ``BenchRecord`` objects are stored, 100 in each of 1,000 groups
(``group`` is indexed, ``name`` unique). The dal side runs the query and loads its objects,
``list(DataList(BenchRecord, {'type': 'AND', 'items': [('group', 'EQUALS', g)]}))``: one
index-entry scan (``scan_keys``), then the verification load of the 100 candidates
(``Context.load_documents``: an object cache multi-get, then a durable multi-get), whose
documents the iteration reuses on SQLite; on etcd, ``list()``'s ``len()`` and its iteration each
read them (docs/benchmarks.md says why). The raw side is "loading those 100 objects by guid" as dal
does it in one batch, ``list(DataList(BenchRecord, guids=guids))`` over the same group's
guids, known in advance (``DataObject._load_many``: the same two multi-gets).

Two rows per store:

- ``query_indexed_<store>``: the planner path. Before every pass of either side, untimed,
  the query's cached result entry is dropped (``context.objects.invalidate`` of
  ``keys.cached_result``), so every dal pass is a result cache miss (asserted from
  ``context.stats``: as many ``query_misses`` as dal passes, no hit). Its version token
  stays, as after an expiry; a miss after a write would also store a fresh token.
- ``query_indexed_<store>_hit``: the same queries with their results cached: the guids come
  from the volatile store (asserted: every dal pass a ``query_hit``), then the same batched
  load as the raw side.

Both rows run with a cold object cache on both sides: nothing fills it (batched loads never
do, see ``Context.load_documents``), asserted (no object cache hit). Passes cycle through
200 groups; each group's query runs once, untimed, before timing, which creates its version
token and checks (``explain()``) that it is answered by an index lookup, not a scan.

The objects are written with raw commits, each holding many objects' writes as
``dal.objects.transaction.plan_write`` plans them (document, unique key, index entry, and the
"absent" checks), after one real ``save()`` that records the hybrid's schema (so its
indexes count as ready). Rates are queries (passes of 100 objects) per second; the target
is the issue's "within 3x of loading those 100 objects by guid", a ratio >= 1/3.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench.benchmarks.common import compare_sides
from bench.env import ETCD, MEMCACHED, Environment, Settings
from bench.hybrids import BenchRecord, group_name, record_data
from bench.report import Result
from bench.timing import Measurement, Operation, progress
from dal import configure
from dal.backends.base import Check, Op
from dal.backends.etcd import TXN_OPS
from dal.config import Context
from dal.objects.schema import ready_indexes
from dal.objects.transaction import plan_write
from dal.query.datalist import DataList
from dal.query.grammar import compile_query, digest

NAME = "query_indexed"
SERVERS = (ETCD, MEMCACHED)
TARGET = 1 / 3
OBJECTS = 100_000
#: a quick run only checks that everything works: fewer objects, still RESULT per group
QUICK_OBJECTS = 10_000
#: objects per group, so objects a query returns
RESULT = 100
#: groups the passes cycle through (each queried once before timing)
USED_GROUPS = 200
FULL_OPS = 200
QUICK_OPS = 20
#: objects per populating commit: SQLite takes thousands of writes in one transaction; etcd's
#: --max-txn-ops (128) bounds each list of a txn, and an object is 3 puts (and 2 compares)
PER_COMMIT = {"sqlite": 2000, "etcd": TXN_OPS // 3}


@dataclass(frozen=True)
class Records:
    """The stored records by group (guids in guid order, as a query returns them)."""

    groups: dict[str, list[str]]
    seconds: float


def store_records(context: Context, count: int, groups: int, per_commit: int) -> Records:
    """Store ``count`` records, ``count // groups`` per group, many per raw commit.

    The first is saved with ``save()`` into the empty namespace, which records the schema with
    every index ready (checked); the others are written with commits holding the checks and
    ops ``plan_write`` gives for a new object, exactly what their ``save()`` would commit.
    """
    began = time.perf_counter()
    meta = BenchRecord._meta
    first = BenchRecord(data=record_data(0, groups))
    first.save()
    if ready_indexes(context, meta) != {"name", "group"}:
        raise AssertionError(f"{NAME}: the first save did not record BenchRecord's indexes as ready")
    template = first._document()  # every stored field, in the order a save writes them
    by_group: dict[str, list[str]] = {group_name(number): [] for number in range(groups)}
    by_group[first.group].append(first.guid)
    checks: list[Check] = []
    ops: list[Op] = []
    for number in range(1, count):
        document: dict[str, Any] = dict(template)
        document.update(record_data(number, groups))
        guid = str(uuid.uuid4())
        plan = plan_write(context.keys, meta, guid, None, 0, document)
        checks += plan.checks
        ops += plan.ops
        by_group[document["group"]].append(guid)
        if number % per_commit == 0 or number == count - 1:
            if not context.commit(checks, ops).ok:
                raise AssertionError(f"{NAME}: a populating commit failed its checks")
            checks, ops = [], []
    return Records({group: sorted(guids) for group, guids in by_group.items()}, time.perf_counter() - began)


def run(env: Environment, settings: Settings) -> list[Result]:
    etcd, memcached = env.need_etcd(), env.need_memcached()
    stores = (("sqlite", f"sqlite:///{env.workdir / 'query_indexed.sqlite3'}", "memory://"),
              ("etcd", etcd.url, memcached.url))
    count = QUICK_OBJECTS if settings.quick else OBJECTS
    results: list[Result] = []
    for store, persistent, volatile in stores:
        context = configure(persistent, volatile, namespace=env.namespace())
        if not context.caches_objects:
            raise AssertionError(f"{NAME}_{store}: query results would not be cached on {persistent}")
        records = store_records(context, count, count // RESULT, PER_COMMIT[store])
        progress(f"{NAME}_{store}: stored {count:,} records in {records.seconds:.1f} s")
        results += measure_store(f"{NAME}_{store}", context, records, settings)
    return results


def measure_store(name: str, context: Context, records: Records, settings: Settings) -> list[Result]:
    meta = BenchRecord._meta
    used = sorted(records.groups)[:USED_GROUPS]
    queries = [{"type": "AND", "items": [("group", "EQUALS", group)]} for group in used]
    result_keys = [context.keys.cached_result(meta.name, digest(meta, compile_query(meta, spec)))
                   for spec in queries]
    guid_lists = [records.groups[group] for group in used]
    for spec in queries:  # untimed: creates each query's version token, and checks its plan
        check_plan(name, DataList(BenchRecord, spec))

    def query(index: int) -> object:
        objects = list(DataList(BenchRecord, queries[index % len(queries)]))
        if len(objects) != RESULT:
            raise AssertionError(f"{name}: the query returned {len(objects)} objects, expected {RESULT}")
        return objects

    def load(index: int) -> object:
        objects = list(DataList(BenchRecord, guids=guid_lists[index % len(guid_lists)]))
        if len(objects) != RESULT:
            raise AssertionError(f"{name}: the load returned {len(objects)} objects, expected {RESULT}")
        return objects

    def forget_result(index: int) -> object:
        context.objects.invalidate(result_keys[index % len(result_keys)])
        return None

    miss, miss_events = measured(name, context, query, load, settings, forget_result, "query_misses")
    for index in range(len(queries)):  # the raw side's untimed prepare dropped results too: recompute
        query(index)
    hit, hit_events = measured(f"{name}_hit", context, query, load, settings, None, "query_hits")
    notes = {"objects": sum(map(len, records.groups.values())), "groups": len(records.groups),
             "result": RESULT, "groups_used": len(used), "populate_seconds": round(records.seconds, 1),
             "unit": f"queries (or loads) of {RESULT} objects per second"}
    return [Result(name, miss, TARGET, {**notes, **miss_events}),
            Result(f"{name}_hit", hit, TARGET, {**notes, **hit_events})]


def check_plan(name: str, result: DataList[BenchRecord]) -> None:
    """Raise unless ``result`` was answered by an index lookup of RESULT candidates, without a scan."""
    plan = result.explain()
    lookups = [step for step in plan.steps if step.how == "index lookup on BenchRecord"]
    if (plan.cache != "miss" or plan.count != RESULT or len(lookups) != 1 or lookups[0].count != RESULT
            or any("scan" in step.how for step in plan.steps)):
        raise AssertionError(f"{name}: expected a result cache miss answered by one index lookup of "
                             f"{RESULT} objects, got:\n{plan}")


def measured(name: str, context: Context, dal: Operation, raw: Operation, settings: Settings,
             prepare: Operation | None, expected: str, *, full_ops: int = FULL_OPS,
             quick_ops: int = QUICK_OPS) -> tuple[Measurement, dict[str, int]]:
    """Compare ``dal`` with ``raw``; raise unless every dal pass was an ``expected`` result cache
    event (``query_misses`` or ``query_hits``) and no load hit the object cache."""
    before = context.stats.snapshot()
    measurement, dal_side, _ = compare_sides(name, dal, raw, settings, full_ops, quick_ops=quick_ops,
                                             prepare=prepare)
    after = context.stats.snapshot()
    events = {event: int(count - before.get(event, 0)) for event, count in after.items()
              if event.startswith(("object_", "query_")) and count != before.get(event, 0)}
    other = "query_hits" if expected == "query_misses" else "query_misses"
    if events.get(expected, 0) != dal_side.done or events.get(other, 0):
        raise AssertionError(f"{name}: {dal_side.done} dal passes, expected each to be one of {expected}; "
                             f"result cache events: {events}")
    if events.get("object_hits", 0) or events.get("object_local_flushes", 0):
        raise AssertionError(f"{name}: the object cache was not cold for both sides: {events}")
    return measurement, events
