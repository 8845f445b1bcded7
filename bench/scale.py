"""``python -m bench.scale``: how the cost of a query and of a load grows with the objects stored.

One namespace per store grows through the sizes asked (``--sizes`` on SQLite + ``memory://``,
``--etcd-sizes`` on etcd + memcached), loaded with dal's batched load path
(``bench.scale_store``). At each size, after growing, three operations are timed on their own
(no raw side: the figure compared is the same operation at the first size, in the same run):

- **query**: ``list(DataList(BenchRecord, {'type': 'AND', 'items': [('group', 'EQUALS', g)]}))``,
  100 objects, cycling through 100 groups spread over every stored group; the query's cached
  result entry is dropped before every pass (untimed), so every pass runs the planner: one
  index-entry scan, then the verification load of the 100 candidates (asserted: one
  ``query_misses`` per pass, no object cache hit);
- **cold load**: ``BenchRecord(guid)`` over 1,000 guids sampled uniformly from the whole store;
  the object's cached document is dropped before every load (untimed), so each is a miss
  that reads the store and fills the cache (asserted: one ``object_misses`` per load);
- **warm load**: the same ``BenchRecord(guid)`` with every sampled object cached (asserted: one
  ``object_hits`` per load, no miss).

Each is warmed up, then timed in ``--rounds`` rounds; the table gives the median microseconds
per operation (the rounds' lowest and highest in brackets) and its ratio to the first size's.
Memory is the process's resident set after each size was measured (``/proc/self/statm``, after
``gc.collect()``) and its peak so far (``getrusage`` ``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from bench.benchmarks.query_indexed import check_plan
from bench.env import ETCD, MEMCACHED, Environment, environment
from bench.hybrids import BenchRecord
from bench.scale_store import RESULT, Batching, Store
from bench.timing import Side, profile, progress
from dal import configure
from dal.backends.etcd import TXN_OPS
from dal.query.datalist import DataList
from dal.query.grammar import compile_query, digest
from dal.testing.servers import ServerUnavailable

SIZES = (10_000, 100_000, 1_000_000)
ETCD_SIZES = (10_000, 100_000)
QUICK_SIZES = (1_000, 3_000)
#: groups the query passes cycle through at each size
USED_GROUPS = 100
#: the issue's target: the largest size's cost within this factor of the first's
TARGET = 1.5
#: operations per round (full, quick)
OPS = {"query": (100, 10), "cold load": (1000, 100), "warm load": (2000, 200)}
#: SQLite takes thousands of writes in one commit; etcd's --max-txn-ops bounds each (3 puts a record)
BATCHING = {"sqlite": Batching(2000, 10_000), "etcd": Batching(TXN_OPS // 3, TXN_OPS)}


@dataclass(frozen=True)
class Timing:
    """Microseconds per operation of each round."""

    micros: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.micros)


@dataclass(frozen=True)
class Point:
    """One store at one size: how long growing to it took, what each operation cost, the memory."""

    store: str
    size: int
    step_seconds: float
    total_seconds: float
    commits: int
    timings: dict[str, Timing]
    rss_mib: float
    peak_mib: float


def parse_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    if any(size < RESULT or size % RESULT for size in sizes) or list(sizes) != sorted(set(sizes)):
        raise argparse.ArgumentTypeError(f"sizes must be increasing multiples of {RESULT}: {text!r}")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, help="objects stored on SQLite + memory://, in "
                        "increasing order (default 10000,100000,1000000; --quick: 1000,3000; '' for none)")
    parser.add_argument("--etcd-sizes", type=parse_sizes, help="objects stored on etcd + memcached "
                        "(default 10000,100000; --quick: 1000,3000; '' for none)")
    parser.add_argument("--quick", action="store_true", help="small sizes, few operations: a smoke run")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per operation and size "
                        "(default 5, --quick 3)")
    parser.add_argument("--profile", action="store_true",
                        help="after timing each size, print a cProfile of each operation on stderr")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = QUICK_SIZES if args.quick else SIZES
    if args.etcd_sizes is None:
        args.etcd_sizes = QUICK_SIZES if args.quick else ETCD_SIZES
    args.rounds = args.rounds if args.rounds is not None else 3 if args.quick else 5
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def memory() -> tuple[float, float]:
    """Return the resident set now (``/proc/self/statm``, after a collection) and its peak, in MiB."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return resident / 2**20, peak / 2**20


def timed(label: str, side: Side, ops: int, rounds: int) -> Timing:
    """Warm ``side`` up, then time ``rounds`` rounds of ``ops`` operations; microseconds per operation."""
    side.run(max(ops // 10, 5))
    micros = []
    for number in range(rounds):
        micros.append(side.run(ops) / ops * 1e6)
        progress(f"{label}: round {number + 1}/{rounds}: {micros[-1]:,.0f} us/op")
    return Timing(tuple(micros))


def counted(label: str, store: Store, side: Side, ops: int, args: argparse.Namespace,
            expected: str, forbidden: tuple[str, ...]) -> Timing:
    """``timed``, then (if asked) a profiled batch; raise unless every operation of the side was one
    ``expected`` cache event and none was any of ``forbidden``."""
    before = store.context.stats.snapshot()
    timing = timed(label, side, ops, args.rounds)
    if args.profile:
        progress(f"--- {label}: cProfile of {ops} operations ---\n{profile(side, ops)}")
    after = store.context.stats.snapshot()
    events = {event: int(after[event] - before.get(event, 0)) for event in after
              if event.startswith(("object_", "query_")) and after[event] != before.get(event, 0)}
    if events.get(expected, 0) != side.done or any(events.get(event, 0) for event in forbidden):
        raise AssertionError(f"{label}: {side.done} operations, each expected to be one {expected} and "
                             f"none of {forbidden}; cache events: {events}")
    return timing


def time_query(store: Store, args: argparse.Namespace) -> Timing:
    """Time the indexed query of RESULT objects with its cached result dropped before every pass."""
    context, meta = store.context, BenchRecord._meta
    specs = [{"type": "AND", "items": [("group", "EQUALS", group)]} for group in store.groups(USED_GROUPS)]
    result_keys = [context.keys.cached_result(meta.name, digest(meta, compile_query(meta, spec)))
                   for spec in specs]

    def forget(index: int) -> object:
        return context.objects.invalidate(result_keys[index % len(result_keys)])

    def query(index: int) -> object:
        objects = list(DataList(BenchRecord, specs[index % len(specs)]))
        if len(objects) != RESULT:
            raise AssertionError(f"{store.name}: the query returned {len(objects)} objects, not {RESULT}")
        return objects

    for index, spec in enumerate(specs):  # untimed: a result cache miss answered by an index lookup
        forget(index)
        check_plan(f"scale_{store.name}_{store.count}", DataList(BenchRecord, spec))
    side = Side("query", query, prepare=forget)
    ops = OPS["query"][args.quick]
    return counted(f"{store.name} {store.count:,}: query", store, side, ops, args, "query_misses",
                   ("query_hits", "object_hits"))


def time_loads(store: Store, args: argparse.Namespace) -> tuple[Timing, Timing]:
    """Time ``BenchRecord(guid)`` over the store's sample: cold (cached document dropped first), then warm."""
    context, sample = store.context, list(store.sample)
    cache_keys = [context.keys.cached_doc(BenchRecord._meta.name, guid) for guid in sample]

    def drop(index: int) -> object:
        return context.objects.invalidate(cache_keys[index % len(cache_keys)])

    def load(index: int) -> object:
        return BenchRecord(sample[index % len(sample)])

    label = f"{store.name} {store.count:,}"
    cold = counted(f"{label}: cold load", store, Side("cold", load, prepare=drop),
                   OPS["cold load"][args.quick], args, "object_misses", ("object_hits",))
    for index in range(len(sample)):  # untimed: every sampled object cached
        load(index)
    warm = counted(f"{label}: warm load", store, Side("warm", load), OPS["warm load"][args.quick], args,
                   "object_hits", ("object_misses", "object_local_flushes"))
    return cold, warm


def measure(store: Store, sizes: Sequence[int], args: argparse.Namespace) -> list[Point]:
    """Grow ``store`` through ``sizes``; time the operations and read the memory at each."""
    points = []
    cached: list[str] = []
    for size in sizes:
        progress(f"{store.name}: growing from {store.count:,} to {size:,} records")
        step = store.grow_to(size)
        progress(f"{store.name}: {size:,} records stored ({step:.1f} s this step, {store.seconds:.1f} s "
                 f"in all, {store.commits:,} commits)")
        keys = store.context.keys
        store.context.objects.invalidate(*(keys.cached_doc(BenchRecord._meta.name, guid) for guid in cached))
        query = time_query(store, args)
        cold, warm = time_loads(store, args)
        cached = list(store.sample)
        rss, peak = memory()
        points.append(Point(store.name, size, step, store.seconds, store.commits,
                            {"query": query, "cold load": cold, "warm load": warm}, rss, peak))
        progress(f"{store.name} {size:,}: RSS {rss:,.0f} MiB (peak {peak:,.0f} MiB)")
    return points


def table(points: Sequence[Point]) -> str:
    """Return the Markdown table, each operation's cost also as a ratio to its store's first size."""
    operations = list(OPS)
    header = ("| store | objects | build: this step (s) | build: total (s) | commits | "
              + " | ".join(f"{name} (us) | x first" for name in operations)
              + " | RSS (MiB) | peak RSS (MiB) |")
    lines = [header, "|---|---:|---:|---:|---:|" + "---:|---:|" * len(operations) + "---:|---:|"]
    first: dict[str, Point] = {}
    for point in points:
        base = first.setdefault(point.store, point)
        cells = []
        for name in operations:
            timing = point.timings[name]
            cells.append(f"{timing.median:,.0f} ({min(timing.micros):,.0f}-{max(timing.micros):,.0f}) "
                         f"| {timing.median / base.timings[name].median:.2f}x")
        lines.append(f"| {point.store} | {point.size:,} | {point.step_seconds:,.1f} "
                     f"| {point.total_seconds:,.1f} | {point.commits:,} | {' | '.join(cells)} "
                     f"| {point.rss_mib:,.0f} | {point.peak_mib:,.0f} |")
    return "\n".join(lines)


def verdicts(points: Sequence[Point]) -> list[str]:
    """Say, per store, whether each operation's cost at the largest size is within TARGET of the first's."""
    lines = []
    for store in dict.fromkeys(point.store for point in points):
        mine = [point for point in points if point.store == store]
        first, last = mine[0], mine[-1]
        parts = []
        for name in OPS:
            ratio = last.timings[name].median / first.timings[name].median
            parts.append(f"{name} {ratio:.2f}x ({'met' if ratio <= TARGET else 'NOT met'})")
        lines.append(f"- {store}: {last.size:,} vs {first.size:,} objects, target <= {TARGET}x: "
                     + ", ".join(parts))
    return lines


def run_stores(env: Environment, args: argparse.Namespace) -> list[Point]:
    points: list[Point] = []
    if args.sizes:
        path = env.workdir / "scale.sqlite3"
        context = configure(f"sqlite:///{path}", "memory://", namespace=env.namespace())
        points += measure(Store("sqlite", context, BATCHING["sqlite"]), args.sizes, args)
    if args.etcd_sizes:
        etcd, memcached = env.need_etcd(), env.need_memcached()
        context = configure(etcd.url, memcached.url, namespace=env.namespace())
        points += measure(Store("etcd", context, BATCHING["etcd"]), args.etcd_sizes, args)
    return points


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    servers = {ETCD, MEMCACHED} if args.etcd_sizes else set()
    try:
        with environment(servers) as env:
            points = run_stores(env, args)
    except ServerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "full"
    print(f"cost per operation as the store grows, same run; median of {args.rounds} rounds ({mode}); "
          f"sqlite = SQLite + memory://, etcd = etcd + memcached\n")
    print(table(points))
    print()
    print("\n".join(verdicts(points)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
