"""query_path: a dotted-path query walked back through link keys, vs the same reads with raw pyetcd.

Run on etcd + memcached. 10 ``BenchPool`` objects (``name`` unique) each have 100
``BenchVolume`` children (mandatory relation ``pool``), 1,000 volumes in all, saved with
``save()``. The dal side is ``list(DataList(BenchVolume, {'type': 'AND', 'items':
[('pool.name', 'EQUALS', name)]}))``: a unique-key read on ``BenchPool``, one link scan to
walk ``pool`` back, then the verification load of the 100 volumes and of their pool (for
each, an object cache multi-get, then an etcd multi-get); ``list()``'s ``len()`` and its
iteration each read them on etcd (docs/benchmarks.md says why). Before every pass of either
side, untimed, the query's cached result entry is dropped (asserted: every dal pass a
``query_miss``); the object cache is cold on both sides (asserted: no object cache hit).

The "raw equivalent" reads what the walk needs with pyetcd and trusts it, verifying
nothing: ``get`` of the unique key (the pool's guid), a keys-only prefix ``get`` of its link
keys (the volumes' guids), one transaction of 100 ``get``s and ``json.loads`` of each: three
round trips. The row reports times only: there is **no target** (printed ``>= 0.00x``); the
bound on dal's round trips is asserted by ``tests/test_queries.py``. The store calls of one
dal pass, counted once outside the timing, are in the footnote and the JSON notes.
"""

from __future__ import annotations

import json

import pyetcd

from bench.benchmarks.common import counted_calls
from bench.benchmarks.query_indexed import measured
from bench.env import ETCD, MEMCACHED, Environment, Settings
from bench.hybrids import BenchPool, BenchVolume, volume_data
from bench.report import Result
from bench.timing import progress
from dal import configure
from dal.query.datalist import DataList
from dal.query.grammar import compile_query, digest

NAME = "query_path"
SERVERS = (ETCD, MEMCACHED)
TARGET = 0.0
POOLS = 10
PER_POOL = 100
FULL_OPS = 200
QUICK_OPS = 20

def pool_name(number: int) -> str:
    return f"pool-{number:04d}"


def run(env: Environment, settings: Settings) -> Result:
    etcd, memcached = env.need_etcd(), env.need_memcached()
    context = configure(etcd.url, memcached.url, namespace=env.namespace())
    pools = []
    for number in range(POOLS):
        pool = BenchPool(data={"name": pool_name(number), "backend": "ceph", "capacity_gb": 1 << 20})
        pool.save()
        pools.append(pool)
    for number in range(POOLS * PER_POOL):
        BenchVolume(data={**volume_data(number), "pool": pools[number % POOLS]}).save()
    progress(f"{NAME}: stored {POOLS} pools and {POOLS * PER_POOL} volumes")

    queries = [{"type": "AND", "items": [("pool.name", "EQUALS", pool.name)]} for pool in pools]
    meta = BenchVolume._meta
    result_keys = [context.keys.cached_result(meta.name, digest(meta, compile_query(meta, spec)))
                   for spec in queries]
    for spec in queries:  # untimed: creates each query's version tokens, and checks its plan
        check_plan(DataList(BenchVolume, spec))

    raw = pyetcd.client(host=etcd.host, port=etcd.port, timeout=5)
    txn = raw.transactions
    unique_keys = [context.keys.unique(BenchPool._meta.name, "name", pool.name) for pool in pools]

    def query(index: int) -> object:
        volumes = list(DataList(BenchVolume, queries[index % POOLS]))
        if len(volumes) != PER_POOL:
            raise AssertionError(f"{NAME}: the query returned {len(volumes)} volumes, expected {PER_POOL}")
        return volumes

    def raw_walk(index: int) -> object:
        value, _ = raw.get(unique_keys[index % POOLS])
        prefix = context.keys.links(BenchPool._meta.name, value.decode(), meta.name, "pool")
        doc_keys = [context.keys.doc(meta.name, metadata.key.decode()[len(prefix):])
                    for _, metadata in raw.get_prefix(prefix, keys_only=True)]
        _, responses = raw.transaction(compare=[], success=[txn.get(key) for key in doc_keys], failure=[])
        documents = [json.loads(value) for response in responses for value, _ in response]
        if len(documents) != PER_POOL:
            raise AssertionError(f"{NAME}: the raw walk read {len(documents)} volumes, expected {PER_POOL}")
        return documents

    def forget_result(index: int) -> object:
        context.objects.invalidate(result_keys[index % POOLS])
        return None

    with counted_calls(context) as calls:
        forget_result(0)
        calls.clear()
        query(0)
    per_pass = dict(sorted(calls.items()))
    measurement, events = measured(NAME, context, query, raw_walk, settings, forget_result, "query_misses",
                                   full_ops=FULL_OPS, quick_ops=QUICK_OPS)
    raw.close()
    total = sum(per_pass.values())
    footnote = (f"{NAME}: no target; one dal pass made {total} store calls "
                f"({', '.join(f'{name} {count}' for name, count in per_pass.items())}), the raw walk 3")
    return Result(NAME, measurement, TARGET, {"pools": POOLS, "volumes_per_pool": PER_POOL,
                                              "dal_store_calls_per_pass": per_pass, **events}, footnote)


def check_plan(result: DataList[BenchVolume]) -> None:
    """Raise unless ``result`` missed the result cache and walked back from a unique lookup (no scan)."""
    plan = result.explain()
    hows = [step.how for step in plan.steps]
    walked = [step for step in plan.steps if step.how == "walked back through link keys"]
    if (plan.cache != "miss" or plan.count != PER_POOL or "unique lookup on BenchPool" not in hows
            or len(walked) != 1 or walked[0].count != PER_POOL or any("scan" in how for how in hows)):
        raise AssertionError(f"{NAME}: expected a result cache miss answered by a unique lookup and a walk "
                             f"back through link keys, got:\n{plan}")
