"""reverse_list: all 1,000 children of one parent through the reverse list, vs a loop of ``Child(guid)``.

dal runs on etcd (persistent) + memcached (volatile). One ``BenchPool`` has 1,000
``BenchVolume`` children (a mandatory relation, reverse list ``pool.volumes``). One operation
loads every child and reads one property of each. The dal side iterates the reverse list,
``[v.name for v in pool.volumes]``: its guids (a query, ``pool_guid`` equal to the pool's guid)
come from the cached query result (one memcached multi-get of the result and its version token;
a link scan on etcd only after a write changed the pool's children), then
``DataObject._load_many`` batches of 500 (one memcached multi-get per batch, one etcd
multi-get for the batch's cache misses). The "raw" side is the naive loop it replaces,
``[BenchVolume(g).name for g in guids]`` over the same guids (known in advance, which the
reverse list has to find out): one object load, so at least one round trip, per child.

Two rows, in two cache states:

- ``reverse_list_cold``: no child is in the object cache. Before every timed pass of either
  side the children's cached documents are invalidated (``context.objects.invalidate``,
  untimed). The loop then misses on each child (memcached get, lease add and gets, etcd
  get, cas fill); the reverse list misses its multi-gets and reads etcd. Asserted: no cache
  hit during the timing.
- ``reverse_list_warm``: every child is in the object cache (filled by one ``BenchVolume(g)``
  each before timing; the reverse list never fills the cache, see
  ``Context.load_documents``). The loop costs one memcached get per child; the reverse list
  memcached multi-gets only, no etcd read at all. Asserted: no cache miss during the timing,
  neither of a child's document nor of the guid list.

Rates are children loaded per second (passes per second x children), so the ratio is
"times faster than the loop"; the issue's target is >= 20x.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.benchmarks.common import compare
from bench.env import ETCD, MEMCACHED, Environment, Settings
from bench.hybrids import BenchPool, BenchVolume, volume_data
from bench.report import Result
from bench.timing import Measurement, progress
from dal import configure

NAME = "reverse_list"
SERVERS = (ETCD, MEMCACHED)
TARGET = 20.0
CHILDREN = 1000
#: a quick run only checks that everything works: fewer children keep the slow loop short
QUICK_CHILDREN = 100
#: passes per round and side; measure() runs at least one pass per slice (10 per round)
FULL_PASSES = 10


def run(env: Environment, settings: Settings) -> list[Result]:
    etcd, memcached = env.need_etcd(), env.need_memcached()
    context = configure(etcd.url, memcached.url, namespace=env.namespace())
    children = QUICK_CHILDREN if settings.quick else CHILDREN
    pool = BenchPool(data={"name": "pool-0001", "backend": "ceph", "capacity_gb": 1 << 20})
    pool.save()
    for number in range(children):
        volume = BenchVolume(data={**volume_data(number), "pool": pool})
        volume.save()
    guids = list(pool.volumes_guids)
    if len(guids) != children:
        raise AssertionError(f"{NAME}: the pool has {len(guids)} linked volumes, expected {children}")
    progress(f"{NAME}: stored 1 pool and {children} volumes")
    hybrid = BenchVolume._meta.name
    cache_keys = [context.keys.cached_doc(hybrid, guid) for guid in guids]

    def reverse(index: int) -> object:
        names = [volume.name for volume in pool.volumes]
        if len(names) != children:
            raise AssertionError(f"{NAME}: the reverse list gave {len(names)} volumes, expected {children}")
        return names

    def loop(index: int) -> object:
        return [BenchVolume(guid).name for guid in guids]

    def uncache(index: int) -> object:
        context.objects.invalidate(*cache_keys)
        return None

    def measured(state: str, prepare: Callable[[int], object] | None) -> tuple[Measurement, dict[str, int]]:
        before = context.stats.snapshot()
        passes = compare(f"{NAME}_{state}", reverse, loop, settings, FULL_PASSES,
                         quick_ops=FULL_PASSES, prepare=prepare)
        after = context.stats.snapshot()
        events = {event: int(count - before.get(event, 0)) for event, count in after.items()
                  if event.startswith(("object_", "query_")) and count != before.get(event, 0)}
        # report children per second: the ratio is the same, the rates read like the other rows'
        per_child = Measurement(passes.ops_per_round * children,
                                tuple(rate * children for rate in passes.dal_rates),
                                tuple(rate * children for rate in passes.raw_rates))
        return per_child, events

    uncache(0)
    cold, cold_events = measured("cold", uncache)
    if cold_events.get("object_hits", 0):
        raise AssertionError(f"{NAME}_cold: {cold_events['object_hits']} loads hit the object cache; "
                             "the cold row must measure uncached loads only")

    for guid in guids:  # fill the cache: the first load of each misses and fills it
        BenchVolume(guid)
    warm, warm_events = measured("warm", None)
    if warm_events.get("object_misses", 0) or warm_events.get("query_misses", 0):
        raise AssertionError(f"{NAME}_warm: {warm_events.get('object_misses', 0)} loads missed the object "
                             f"cache, {warm_events.get('query_misses', 0)} reverse lists the result cache; "
                             "the warm row must measure cached reads only")

    def notes(measurement: Measurement, events: dict[str, int]) -> dict[str, object]:
        return {"children": children, "unit": "children loaded per second",
                "passes_per_round": measurement.ops_per_round // children, **events}

    return [Result(f"{NAME}_cold", cold, TARGET, notes(cold, cold_events)),
            Result(f"{NAME}_warm", warm, TARGET, notes(warm, warm_events))]
