"""cached_load_replicated: ``Hybrid(guid)`` cached on 3 servers, ``replicas=3``, vs one server.

Both sides are dal on etcd + memcached with every object cached: the dal side's cache is
``memcached://m1,m2,m3?replicas=3`` (each load is a quorum read of three replicas, asked at
once), the raw side's the single server ``cached_load`` uses, read as today. The two contexts
live side by side over one namespace; each operation makes its own current (one assignment,
untimed in effect: it is the same on both sides). The benchmark checks that every timed load
of either side was a cache hit. The extra servers are started here, in the run's directory.
"""

from __future__ import annotations

import dal.config
from bench.benchmarks.common import OBJECTS, compare, store_machines
from bench.env import ETCD, MEMCACHED, Environment, Settings
from bench.hybrids import BenchMachine
from bench.report import Result
from dal.backends.url import parse_url
from dal.config import Context, configure
from dal.testing.servers import start_memcached

NAME = "cached_load_replicated"
SERVERS = (ETCD, MEMCACHED)
TARGET = 0.7
FULL_OPS = 3000


def run(env: Environment, settings: Settings) -> Result:
    etcd, memcached = env.need_etcd(), env.need_memcached()
    extra = [start_memcached(env.workdir / f"replica{n}") for n in range(2)]
    try:
        namespace = env.namespace()
        hosts = ",".join(f"{server.host}:{server.port}" for server in (memcached, *extra))
        single = configure(etcd.url, memcached.url, namespace=namespace)
        guids = [machine.guid for machine in store_machines(OBJECTS, NAME)]
        # a second live context: configure() would close the first
        three = parse_url(f"memcached://{hosts}?replicas=3")
        replicated = Context(parse_url(etcd.url), three, namespace, None)
        for context in (single, replicated):  # the first load of each misses and fills its cache
            dal.config._context = context
            for guid in guids:
                BenchMachine(guid)
        count = len(guids)

        def replicated_load(index: int) -> object:
            dal.config._context = replicated
            return BenchMachine(guids[index % count])

        def single_load(index: int) -> object:
            dal.config._context = single
            return BenchMachine(guids[index % count])

        before = {id(c): c.stats.snapshot() for c in (single, replicated)}
        measurement = compare(NAME, replicated_load, single_load, settings, FULL_OPS)
        details: dict[str, object] = {}
        for label, context in (("replicated", replicated), ("single", single)):
            after = context.stats.snapshot()
            misses = after.get("object_misses", 0) - before[id(context)].get("object_misses", 0)
            if misses:
                raise AssertionError(f"{NAME}: {misses} {label} loads missed the object cache; the "
                                     "benchmark must measure cache hits only")
            details[f"{label}_hits"] = after.get("object_hits", 0) - before[id(context)].get("object_hits", 0)
        quorum = replicated.stats.snapshot()
        details["quorum_hits"] = quorum.get("quorum_hits", 0)
        replicated.close()
        dal.config._context = single
        return Result(NAME, measurement, TARGET, details)
    finally:
        for server in extra:
            server.stop()
