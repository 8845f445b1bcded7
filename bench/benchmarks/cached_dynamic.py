"""cached_dynamic: ``obj.<dynamic>`` served by the memcached dynamics cache, vs a raw memcached get.

dal runs on etcd (persistent) + memcached (volatile). ``OBJECTS`` ``BenchServer`` objects are
loaded once, before timing, and the value of their dynamic ``health`` (a dict of six fields,
about 140 bytes of JSON) is already in memcached, so each read of ``server.health`` is one
memcached ``get`` plus dal's unwrapping and decoding; the loader never runs. The raw side is
pymemcache's plain ``Client.get`` of the same values, JSON-encoded and stored under keys of
their own, plus ``json.loads``. Asserted from ``context.stats``: every dal read (warm-up,
rounds and ``--profile`` batch alike) was a hit (``dynamic.benchserver.health.hits`` grew by
exactly the number of reads), with no miss and no computation.
"""

from __future__ import annotations

import json

from pymemcache.client.base import Client

from bench.benchmarks.common import OBJECTS, cached_health, compare_sides
from bench.env import ETCD, MEMCACHED, Environment, Settings
from bench.hybrids import BenchServer
from bench.report import Result
from dal import configure

NAME = "cached_dynamic"
SERVERS = (ETCD, MEMCACHED)
TARGET = 0.8
FULL_OPS = 5000


def run(env: Environment, settings: Settings) -> Result:
    etcd, memcached = env.need_etcd(), env.need_memcached()
    context = configure(etcd.url, memcached.url, namespace=env.namespace())
    guids, servers, values = cached_health(OBJECTS)
    label = f"dynamic.{BenchServer._meta.name}.health."
    filled = context.stats.snapshot()
    if filled.get(label + "computations", 0) != OBJECTS:
        raise AssertionError(f"{NAME}: expected {OBJECTS} computations while filling, got "
                             f"{filled.get(label + 'computations', 0)}")

    raw = Client((memcached.host, memcached.port))
    raw_keys = [f"{context.keys.root}raw/{guid}" for guid in guids]
    documents = [json.dumps(value).encode() for value in values]
    for key, document in zip(raw_keys, documents, strict=True):
        raw.set(key, document, expire=0, noreply=False)
    hybrid = BenchServer._meta.name
    cached = context.dynamics.store.get(context.keys.cached_dynamic(hybrid, guids[0], "health"))
    assert cached is not None
    count = len(servers)

    def dal_read(index: int) -> object:
        return servers[index % count].health

    def raw_read(index: int) -> object:
        return json.loads(raw.get(raw_keys[index % count]))

    before = context.stats.snapshot()
    measurement, dal_side, _ = compare_sides(NAME, dal_read, raw_read, settings, FULL_OPS)
    after = context.stats.snapshot()
    raw.close()
    delta = {event: int(after.get(label + event, 0) - before.get(label + event, 0))
             for event in ("hits", "misses", "computations")}
    reads = dal_side.done
    if delta["hits"] != reads or delta["misses"] or delta["computations"]:
        raise AssertionError(f"{NAME}: {reads} dynamic reads gave {delta['hits']} hits, "
                             f"{delta['misses']} misses and {delta['computations']} computations; "
                             "the benchmark must measure cache hits only")
    return Result(NAME, measurement, TARGET, {
        "reads": reads, **delta, "value_bytes": len(documents[0]), "cached_entry_bytes": len(cached)})
