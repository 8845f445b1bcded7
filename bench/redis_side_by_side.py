"""dal on Redis side by side with raw redis-py and redis-om, on one redis-server, in one run.

``python -m bench.redis_side_by_side [--quick] [--rounds N] [--profile]`` starts its own
``redis-server`` (no persistence) on a free loopback port in a temporary directory, stores the
same records through every side, then measures five operations: a load by primary key, a save of
a new object, an update of one field, a query on an equality and one on a range. Every side of
an operation runs in the same rounds, taking turns in slices (``bench.redis_sides``); rates are
reported as ratios to raw redis-py (``GET`` + ``json.loads`` and friends) measured in the same run,
never as absolute claims: the machines this runs on are small and shared. A side that raises
(redis-om's ``JsonModel`` and ``find()`` need the RedisJSON and RediSearch modules, which a plain
redis-server lacks) is reported as failing, with its exception, not as a zero.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

import dal.config
from bench.redis_sides import (
    RACKS,
    Contender,
    OmHost,
    OmJsonHost,
    Outcome,
    RedisHost,
    host_data,
    measure_sides,
    rack_name,
    table,
)
from bench.timing import Operation, Side, profile, progress
from dal import configure
from dal.backends import close_all
from dal.config import Context
from dal.query.datalist import DataList
from dal.query.grammar import compile_query, digest
from dal.testing.servers import RunningServer, ServerUnavailable, start_redis

RAW = "raw redis-py (JSON string)"
TARGET = ">= 0.90x, > redis-om"
#: (full, quick) operations per round and side
OPS = {"load": (3000, 200), "save new": (1000, 100), "update": (1000, 100),
       "query equality": (300, 40), "query range": (60, 20)}
#: (full, quick) objects stored for the loads and the queries
OBJECTS = (1000, 200)

Redis = Any  # redis.Redis is generic in the types-redis stubs and not in redis-py's own annotations


class Run:
    """One run: the server, the clients of every side, the stored records, the results so far."""

    def __init__(self, server: RunningServer, args: argparse.Namespace) -> None:
        self.server, self.args = server, args
        self.count = OBJECTS[1] if args.quick else OBJECTS[0]
        self.raw: Redis = redis.Redis(host=server.host, port=server.port)
        # what redis-om's own get_redis_connection() gives: decoded answers (without, its get() logs a
        # warning and decodes again on every call)
        self.om: Redis = redis.Redis(host=server.host, port=server.port, decode_responses=True)
        OmHost._meta.database = self.om
        OmJsonHost._meta.database = self.om
        self.results: dict[str, list[Outcome]] = {}
        self.profiles: list[str] = []

    def ops(self, operation: str) -> int:
        full, quick = OPS[operation]
        return quick if self.args.quick else full

    def measure(self, operation: str, contenders: list[Contender]) -> None:
        ops = self.ops(operation)
        if self.args.profile:
            self.raw.config_resetstat()
        self.results[operation] = measure_sides(operation, contenders, ops=ops, rounds=self.args.rounds)
        if self.args.profile:
            self.profiles.append(server_time(operation, self.raw.info("commandstats")))
            for contender in contenders:
                if contender.label.startswith("dal") and not self.results[operation][0].failure:
                    text = profile(contender.side, ops)
                    self.profiles.append(f"--- {operation}: {contender.label}: cProfile of {ops} ---\n{text}")


def server_time(operation: str, stats: dict[str, Any]) -> str:
    """Return the server's own time per command over one operation's rounds (``INFO commandstats``,
    every side's commands together): what a dal commit script costs Redis next to a plain SET, apart
    from the client and the wire."""
    rows = sorted(stats.items(), key=lambda item: -item[1]["usec"])
    lines = [f"  {name.removeprefix('cmdstat_')}: {row['calls']} calls, {row['usec_per_call']:.2f} us/call"
             for name, row in rows if row["calls"] and "config" not in name]
    return f"--- {operation}: redis-server time per command, every side ---\n" + "\n".join(lines)


def side(label: str, what: str, operation: Operation, *, target: str = "",
         prepare: Operation | None = None) -> Contender:
    return Contender(label, what, Side(label, operation, prepare=prepare), target)


def store(run: Run, context: Context) -> tuple[list[str], list[str], list[str]]:
    """Store ``run.count`` records through dal, as raw JSON strings (with a set per rack and a sorted
    set by size: the indexes a raw user keeps), as raw hashes and as redis-om hashes; return the dal
    guids, the raw key of each and the redis-om pks."""
    root = f"{context.keys.root}raw/"
    guids, keys, pks = [], [], []
    pipeline = run.raw.pipeline(transaction=False)
    for number in range(run.count):
        host = RedisHost(data=host_data(number, run.count))
        host.save()
        entry = context.persistent.get(context.keys.doc(RedisHost._meta.name, host.guid))
        assert entry is not None
        key = f"{root}o/{host.guid}"
        pipeline.set(key, entry.value)  # the very document dal stored: both sides read the same bytes
        pipeline.sadd(f"{root}rack/{host.rack}", key)
        pipeline.zadd(f"{root}size", {key: host.size})
        pipeline.hset(f"{root}h/{host.guid}", mapping=host_data(number, run.count))
        om = OmHost(**host_data(number, run.count))
        om.save()
        guids.append(host.guid)
        keys.append(key)
        pks.append(om.pk)
    pipeline.execute()
    return guids, keys, pks


def loads(run: Run, context: Context, guids: list[str], keys: list[str], pks: list[str]) -> None:
    """Load by primary key: dal with its object cache on Redis (every load a hit), dal on its uncached
    path (a second context over the same stores with ``caches_objects`` off: one durable ``GET``)."""
    uncached = Context(context.persistent_url, context.volatile_url, context.namespace, None)
    uncached.caches_objects = False
    count = len(guids)
    for guid in guids:  # the first load of each misses and fills the object cache
        RedisHost(guid)
    hashes = [key.replace("/o/", "/h/") for key in keys]

    def cached(index: int) -> object:
        dal.config._context = context
        return RedisHost(guids[index % count])

    def direct(index: int) -> object:
        dal.config._context = uncached
        return RedisHost(guids[index % count])

    before = context.stats.snapshot()
    run.measure("load", [
        side("dal, object cache", "RedisHost(guid): one GET of the object cache entry on Redis", cached,
             target=TARGET),
        side("dal, uncached", "RedisHost(guid) with caches_objects off: one GET of the document", direct,
             target=TARGET),
        side(RAW, "GET + json.loads", lambda i: json.loads(run.raw.get(keys[i % count]))),
        side("raw redis-py (hash)", "HGETALL (bytes, not converted)",
             lambda i: run.raw.hgetall(hashes[i % count])),
        side("redis-om HashModel", "OmHost.get(pk)", lambda i: OmHost.get(pks[i % count])),
        side("redis-om JsonModel", "OmJsonHost.get(pk)", lambda i: OmJsonHost.get(pks[i % count])),
    ])
    dal.config._context = context
    misses = context.stats.snapshot().get("object_misses", 0) - before.get("object_misses", 0)
    uncached.close()
    if misses:
        raise AssertionError(f"load: {misses} cached dal loads missed the object cache")


def saves(run: Run, context: Context) -> None:
    """Save a new object: dal ``save()`` (one commit script, then its cache invalidations), raw ``SET``
    of ``json.dumps`` and ``HSET`` of the values, redis-om ``save()``."""
    root, count = f"{context.keys.root}raw/new/", run.count

    def dal_save(index: int) -> object:
        host = RedisHost(data=host_data(index, count, "dal"))
        host.save()
        return host

    def raw_set(index: int) -> object:
        return run.raw.set(f"{root}{uuid.uuid4()}", json.dumps(host_data(index, count, "raw")))

    def raw_hset(index: int) -> object:
        return run.raw.hset(f"{root}h/{uuid.uuid4()}", mapping=host_data(index, count, "raw"))

    run.measure("save new", [
        side("dal", "RedisHost(data=...).save()", dal_save, target=TARGET),
        side(RAW, "SET of json.dumps", raw_set),
        side("raw redis-py (hash)", "HSET mapping", raw_hset),
        side("redis-om HashModel", "OmHost(**values).save()",
             lambda i: OmHost(**host_data(i, count, "om")).save()),
        side("redis-om JsonModel", "OmJsonHost(**values).save()",
             lambda i: OmJsonHost(**host_data(i, count, "om")).save()),
    ])


def updates(run: Run, context: Context) -> None:
    """Change one field of an object already in hand, and save it."""
    count = run.count
    hosts = [RedisHost(data=host_data(n, count, "upd")) for n in range(count)]
    for host in hosts:
        host.save()
    documents = [host_data(n, count, "upd") for n in range(count)]
    keys = [f"{context.keys.root}raw/upd/{host.guid}" for host in hosts]
    hash_keys = [f"{context.keys.root}raw/upd/h/{host.guid}" for host in hosts]
    oms = [OmHost(**host_data(n, count, "upd")) for n in range(count)]
    for om in oms:
        om.save()

    def dal_update(index: int) -> object:
        host = hosts[index % count]
        host.cores = index
        host.save()
        return host

    def raw_update(index: int) -> object:
        document = documents[index % count]
        document["cores"] = index
        return run.raw.set(keys[index % count], json.dumps(document))

    def raw_hash(index: int) -> object:
        return run.raw.hset(hash_keys[index % count], "cores", index)

    def om_update(index: int) -> object:
        oms[index % count].update(cores=index)
        return None

    def om_json(index: int) -> object:
        return OmJsonHost(**host_data(index, count, "upd")).update(cores=index)

    run.measure("update", [
        side("dal", "host.cores = n; host.save() on a loaded object", dal_update, target=TARGET),
        side(RAW, "SET of json.dumps of the changed dict", raw_update),
        side("raw redis-py (hash)", "HSET of the one field", raw_hash),
        side("redis-om HashModel", "model.update(cores=n)", om_update),
        side("redis-om JsonModel", "OmJsonHost(**values).update(cores=n)", om_json),
    ])


def query(run: Run, context: Context, operation: str, spec: Callable[[int], dict[str, Any]],
          raw: Operation, om: Callable[[type[Any], int], object]) -> None:
    """One query, dal with its result cached (every pass a hit) and recomputed (the cached result
    dropped before every pass, untimed), against the raw side and redis-om's ``find()``."""
    meta = RedisHost._meta
    specs = [spec(n) for n in range(RACKS)]
    result_keys = [context.keys.cached_result(meta.name, digest(meta, compile_query(meta, s))) for s in specs]

    def dal_query(index: int) -> object:
        return list(DataList(RedisHost, specs[index % RACKS]))

    def forget(index: int) -> object:
        context.objects.invalidate(result_keys[index % RACKS])
        return None

    for number in range(RACKS):  # untimed: every query computed once, so the "cached" side hits
        dal_query(number)
    cached = side("dal, result cached", "list(DataList(RedisHost, query)), its guid list cached", dal_query)
    recomputed = side("dal, recomputed", "the same, its cached guid list dropped first (untimed)", dal_query,
                      prepare=forget)
    before = context.stats.snapshot()
    run.measure(operation, [
        cached, recomputed, side(RAW, "index read + MGET + json.loads (see bench/README.md)", raw),
        side("redis-om HashModel", "OmHost.find(...).all()", lambda i: om(OmHost, i)),
        side("redis-om JsonModel", "OmJsonHost.find(...).all()", lambda i: om(OmJsonHost, i)),
    ])
    after = context.stats.snapshot()
    events = {name: after.get(name, 0) - before.get(name, 0) for name in ("query_hits", "query_misses")}
    if events != {"query_hits": cached.side.done, "query_misses": recomputed.side.done}:
        raise AssertionError(f"{operation}: expected {cached.side.done} result cache hits and "
                             f"{recomputed.side.done} misses, got {events}")


def queries(run: Run, context: Context, keys: list[str]) -> None:
    """An equality on ``rack`` (indexed in dal) and a range on ``size`` (a scan in dal)."""
    root, width = f"{context.keys.root}raw/", run.count // RACKS

    def fetch(found: list[bytes]) -> list[Any]:
        return [json.loads(value) for value in run.raw.mget(found)] if found else []

    def raw_equal(index: int) -> list[Any]:
        return fetch(list(run.raw.smembers(f"{root}rack/{rack_name(index % RACKS)}")))

    def raw_range(index: int) -> list[Any]:
        low = index % RACKS * width
        return fetch(run.raw.zrangebyscore(f"{root}size", low, low + width - 1))

    query(run, context, "query equality",
          lambda n: {"type": "AND", "items": [("rack", "EQUALS", rack_name(n))]}, raw_equal,
          lambda model, i: model.find(model.rack == rack_name(i % RACKS)).all())
    query(run, context, "query range",
          lambda n: {"type": "AND", "items": [("size", "GE", n * width), ("size", "LT", (n + 1) * width)]},
          raw_range,
          lambda model, i: model.find((model.size >= i % RACKS * width)
                                      & (model.size < (i % RACKS + 1) * width)).all())
    assert len(raw_equal(0)) == len(raw_range(0)) == width == len(keys) // RACKS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_side_by_side",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few objects and operations: a smoke test")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every side taking turns (default 5)")
    parser.add_argument("--profile", action="store_true",
                        help="after each operation, profile one more batch of each dal side, and print the "
                             "server's own time per command over the operation's rounds (stderr)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dal-bench-redis-") as scratch:
        try:
            server = start_redis(Path(scratch) / "redis")
        except ServerUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        progress(f"started redis-server at {server.host}:{server.port}")
        try:
            run = Run(server, args)
            execute(run)
        finally:
            close_all()
            server.stop()
    report(run)
    return 0


def execute(run: Run) -> None:
    url = run.server.url
    context = configure(url, url, namespace=f"bench{uuid.uuid4().hex[:10]}")
    guids, keys, pks = store(run, context)
    progress(f"stored {len(guids)} records through every side")
    loads(run, context, guids, keys, pks)
    queries(run, context, keys)
    context = configure(url, url, namespace=f"bench{uuid.uuid4().hex[:10]}")
    saves(run, context)
    updates(run, context)
    context.close()


def report(run: Run) -> None:
    mode = "quick" if run.args.quick else "full"
    print(f"dal on Redis vs raw redis-py and redis-om, one redis-server, same run; median of "
          f"{run.args.rounds} rounds ({mode}, {run.count} objects stored)\n")
    print(table(run.results, RAW))
    failures = {(o.label, o.failure) for outcomes in run.results.values() for o in outcomes if o.failure}
    if failures:
        print("\nFailures, verbatim:\n")
        for operation, outcomes in run.results.items():
            for outcome in outcomes:
                if outcome.failure:
                    print(f"- {operation}, {outcome.label} ({outcome.what}): {outcome.failure}")
    for text in run.profiles:
        progress(text)


if __name__ == "__main__":
    sys.exit(main())
