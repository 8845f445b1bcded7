"""cached_dynamic_embedded: ``obj.<dynamic>`` cached on SQLite + ``memory://``, vs a dict + json.loads.

dal runs on ``sqlite:///<tmp>/bench.sqlite3`` with the default ``memory://`` volatile store.
``OBJECTS`` ``BenchServer`` objects are loaded once, before timing, and the value of their
dynamic ``health`` (a dict of six fields, about 140 bytes of JSON) is already cached, so each
read of ``server.health`` is the check that no other process committed (SQLite's change
token), one process-local cache lookup and dal's unwrapping and decoding; the loader never
runs. The raw side is a plain ``dict`` lookup of the same values, JSON-encoded, plus
``json.loads``. Asserted from ``context.stats``: every dal read was a hit, with no miss, no
computation and no flush of the local cache.
"""

from __future__ import annotations

import json

from bench.benchmarks.common import OBJECTS, cached_health, compare_sides
from bench.env import Environment, Settings
from bench.hybrids import BenchServer
from bench.report import Result
from dal import configure

NAME = "cached_dynamic_embedded"
SERVERS: tuple[str, ...] = ()
TARGET = 0.8
FULL_OPS = 20000


def run(env: Environment, settings: Settings) -> Result:
    context = configure(f"sqlite:///{env.workdir / 'bench_dynamic.sqlite3'}", "memory://",
                        namespace=env.namespace())
    if not context.caches_objects:
        raise AssertionError(f"{NAME}: dal does not cache on SQLite + memory://")
    guids, servers, values = cached_health(OBJECTS)
    label = f"dynamic.{BenchServer._meta.name}.health."
    raw = {guid: json.dumps(value).encode() for guid, value in zip(guids, values, strict=True)}
    count = len(servers)

    def dal_read(index: int) -> object:
        return servers[index % count].health

    def raw_read(index: int) -> object:
        return json.loads(raw[guids[index % count]])

    before = context.stats.snapshot()
    measurement, dal_side, _ = compare_sides(NAME, dal_read, raw_read, settings, FULL_OPS)
    after = context.stats.snapshot()
    delta = {event: int(after.get(label + event, 0) - before.get(label + event, 0))
             for event in ("hits", "misses", "computations")}
    flushes = int(after.get("object_local_flushes", 0) - before.get("object_local_flushes", 0))
    reads = dal_side.done
    if delta["hits"] != reads or delta["misses"] or delta["computations"] or flushes:
        raise AssertionError(f"{NAME}: {reads} dynamic reads gave {delta['hits']} hits, "
                             f"{delta['misses']} misses, {delta['computations']} computations and "
                             f"{flushes} local flushes; the benchmark must measure cache hits only")
    return Result(NAME, measurement, TARGET, {"reads": reads, **delta, "value_bytes": len(raw[guids[0]])})
