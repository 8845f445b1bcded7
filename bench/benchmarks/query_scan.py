"""query_scan: a query no index answers over 10,000 objects, vs a raw prefix scan + ``json.loads``.

``run_stores`` is shared with ``query_scan_20k`` (20,000 objects, SQLite only, target 0.8).

Run on SQLite (``sqlite:///<tmp>/query_scan.sqlite3`` + ``memory://``) and on etcd +
memcached. 10,000 ``BenchRecord`` objects are stored (as in ``query_indexed``: raw commits
planned by ``plan_write`` after one real ``save()``); ``size`` is not indexed and spread
evenly over 0..9,999. The dal side is ``DataList(BenchRecord, {'type': 'AND', 'items':
[('size', 'GE', 9000)]}).guids`` (1,000 of the 10,000): the planner scans the documents in
batches of 500 (``dal.backends.paging.scan_batches``), decodes each and tests the condition
(``dal.query.planner.Planner._matching``). Before every pass of either side, untimed, the query's cached
result entry is dropped (``context.objects.invalidate`` of ``keys.cached_result``), so every
dal pass computes (asserted: as many ``query_misses`` as passes, no hit; ``explain()``
shows the scan of every document).

The raw side is the driver itself, with the same batch size and the same end-of-scan rule
(stop at a batch shorter than 500): on SQLite ``SELECT key, value FROM kv WHERE key >= ? AND
key < ? AND key > ? ORDER BY key LIMIT 500`` on a connection of its own to the same file; on
etcd pyetcd ``get_range_response(start, end, limit=500)``; then ``json.loads`` of every
document and the same test in Python (``size >= 9000``), keeping the guids. Both sides are
checked to return the same guids.

Rates are documents scanned per second (passes per second x 10,000); the issue's target is
a throughput of at least half the raw scan's, a ratio >= 0.5.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import pyetcd

from bench.benchmarks.query_indexed import measured, store_records
from bench.env import ETCD, MEMCACHED, Environment, Settings
from bench.hybrids import BenchRecord
from bench.report import Result
from bench.timing import Measurement, progress
from dal import configure
from dal.backends.etcd import TXN_OPS, prefix_range
from dal.backends.sqlite import prefix_end
from dal.config import Context
from dal.query.datalist import DataList
from dal.query.grammar import compile_query, digest
from dal.query.planner import BATCH

NAME = "query_scan"
SERVERS = (ETCD, MEMCACHED)
TARGET = 0.5
OBJECTS = 10_000
QUICK_OBJECTS = 2_000
#: the query's bound: sizes are spread evenly over 0..9,999, so a tenth of the objects match
AT_LEAST = 9000
QUERY: dict[str, Any] = {"type": "AND", "items": [("size", "GE", AT_LEAST)]}
#: passes (scans of every object) per round and side; at least one per slice
FULL_PASSES = 20
QUICK_PASSES = 10
PER_COMMIT = {"sqlite": 2000, "etcd": TXN_OPS // 3}

#: one raw pass: the guids of the matching documents
RawScan = Callable[[int], list[str]]


def matches(document: dict[str, Any]) -> bool:
    """The raw side's version of the query's test."""
    size = document.get("size")
    return isinstance(size, int) and size >= AT_LEAST


def sqlite_scan(path: str, prefix: str) -> tuple[RawScan, Callable[[], None]]:
    """Return a raw scan of ``prefix`` with ``sqlite3`` on ``path``, and what closes it."""
    raw = sqlite3.connect(path, isolation_level=None)
    end = prefix_end(prefix)
    sql = "SELECT key, value FROM kv WHERE key >= ? AND key < ? AND key > ? ORDER BY key LIMIT ?"
    skip = len(prefix)

    def scan(index: int) -> list[str]:
        matched: list[str] = []
        after = prefix  # a document key is longer than its prefix, so key > prefix holds for all
        while True:
            rows = raw.execute(sql, (prefix, end, after, BATCH)).fetchall()
            matched += [key[skip:] for key, value in rows if matches(json.loads(value))]
            if len(rows) < BATCH:
                return matched
            after = rows[-1][0]

    return scan, raw.close


def etcd_scan(host: str, port: int, prefix: str) -> tuple[RawScan, Callable[[], None]]:
    """Return a raw scan of ``prefix`` with pyetcd, and what closes it."""
    raw = pyetcd.client(host=host, port=port, timeout=5)
    first, end = prefix_range(prefix)
    skip = len(prefix)

    def scan(index: int) -> list[str]:
        matched: list[str] = []
        start = first
        while True:
            kvs = raw.get_range_response(start, end, limit=BATCH).kvs
            matched += [kv.key.decode()[skip:] for kv in kvs if matches(json.loads(kv.value))]
            if len(kvs) < BATCH:
                return matched
            start = kvs[-1].key + b"\0"

    return scan, raw.close


def run(env: Environment, settings: Settings) -> list[Result]:
    return run_stores(env, settings, NAME, ("sqlite", "etcd"), QUICK_OBJECTS if settings.quick else OBJECTS,
                      TARGET)


def run_stores(env: Environment, settings: Settings, name: str, stores: tuple[str, ...], count: int,
               target: float) -> list[Result]:
    """Measure the scan of ``count`` records on each of ``stores``: one row ``<name>_<store>`` each."""
    path = env.workdir / f"{name}.sqlite3"
    results: list[Result] = []
    for store in stores:
        if store == "sqlite":
            context = configure(f"sqlite:///{path}", "memory://", namespace=env.namespace())
        else:
            etcd, memcached = env.need_etcd(), env.need_memcached()
            context = configure(etcd.url, memcached.url, namespace=env.namespace())
        records = store_records(context, count, max(count // 100, 1), PER_COMMIT[store])
        progress(f"{name}_{store}: stored {count:,} records in {records.seconds:.1f} s")
        prefix = context.keys.docs(BenchRecord._meta.name)
        scan, close = sqlite_scan(str(path), prefix) if store == "sqlite" else \
            etcd_scan(env.need_etcd().host, env.need_etcd().port, prefix)
        try:
            measurement, events = measure_store(f"{name}_{store}", context, count, scan, settings)
        finally:
            close()
        results.append(Result(f"{name}_{store}", measurement, target,
                              {"objects": count, "matched": events.pop("matched"), "batch": BATCH,
                               "populate_seconds": round(records.seconds, 1),
                               "unit": "documents scanned per second", **events}))
    return results


def measure_store(name: str, context: Context, count: int, scan: RawScan,
                  settings: Settings) -> tuple[Measurement, dict[str, int]]:
    meta = BenchRecord._meta
    result_key = context.keys.cached_result(meta.name, digest(meta, compile_query(meta, QUERY)))
    first = DataList(BenchRecord, QUERY)
    plan = first.explain()
    if plan.cache != "miss" or not any(step.how == f"scanned {count} documents" for step in plan.steps):
        raise AssertionError(f"{name}: expected a result cache miss answered by a scan of {count} "
                             f"documents, got:\n{plan}")
    matched = first.guids
    if matched != scan(0):
        raise AssertionError(f"{name}: dal and the raw scan found different objects")

    def query(index: int) -> object:
        return DataList(BenchRecord, QUERY).guids

    def forget_result(index: int) -> object:
        context.objects.invalidate(result_key)
        return None

    passes, events = measured(name, context, query, scan, settings, forget_result, "query_misses",
                              full_ops=FULL_PASSES, quick_ops=QUICK_PASSES)
    # report documents per second: the ratio is the same, the rates read as a scan's throughput
    return Measurement(passes.ops_per_round * count, tuple(rate * count for rate in passes.dal_rates),
                       tuple(rate * count for rate in passes.raw_rates)), {**events, "matched": len(matched)}
