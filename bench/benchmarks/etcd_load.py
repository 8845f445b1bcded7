"""etcd_load: ``Hybrid(guid)`` read from etcd with no object cache, vs a raw pyetcd get.

dal is configured as ``configure(etcd_url, "memory://bench")``: a process-local cache in
front of a shared store that has no cheap change token, which dal refuses to use as an
object cache (``Context.caches_objects`` is False, asserted here), so every load is one
etcd range request. That is the honest uncached path: no invalidation round trips are
added to make a shared cache miss. The raw side is pyetcd's ``client.get`` of the very
same keys plus ``json.loads``.
"""

from __future__ import annotations

import json

import pyetcd

from bench.benchmarks.common import OBJECTS, compare, store_machines
from bench.env import ETCD, Environment, Settings
from bench.hybrids import BenchMachine
from bench.report import Result
from dal import configure

NAME = "etcd_load"
SERVERS = (ETCD,)
TARGET = 0.9  # issue 16 (was 0.8)
FULL_OPS = 800


def run(env: Environment, settings: Settings) -> Result:
    etcd = env.need_etcd()
    context = configure(etcd.url, "memory://bench", namespace=env.namespace())
    if context.caches_objects:
        raise AssertionError(f"{NAME}: dal would cache objects in process memory in front of etcd; "
                             "this benchmark must measure uncached loads")
    guids = [machine.guid for machine in store_machines(OBJECTS, NAME)]
    keys = [context.keys.doc(BenchMachine._meta.name, guid) for guid in guids]
    raw = pyetcd.client(host=etcd.host, port=etcd.port, timeout=5)
    count = len(guids)

    def dal_load(index: int) -> object:
        return BenchMachine(guids[index % count])

    def raw_load(index: int) -> object:
        value, _ = raw.get(keys[index % count])
        return json.loads(value)

    before = context.stats.snapshot()
    measurement = compare(NAME, dal_load, raw_load, settings, FULL_OPS)
    after = context.stats.snapshot()
    raw.close()
    cache_events = {event: count - before.get(event, 0) for event, count in after.items()
                    if event.startswith("object_") and count != before.get(event, 0)}
    if cache_events:
        raise AssertionError(f"{NAME}: the object cache was used during uncached loads: {cache_events}")
    return Result(NAME, measurement, TARGET, {"caches_objects": context.caches_objects})
