"""locked_stampede: 32 threads at once on a cold ``locked=True`` dynamic whose loader takes 100 ms.

dal runs on etcd (persistent) + memcached (volatile). ``WORKERS`` long-lived threads of this
one process (not processes: the tests prove single flight across processes) each load their
own instance of a fresh ``BenchServer``, untimed, then wait on a barrier; the barrier's
action notes the release time, and every worker then reads ``server.inventory``, a
``locked=True`` dynamic never read before, whose loader sleeps ``INVENTORY_SECONDS``
(100 ms). A worker's latency runs from the barrier's release to its answer. Each round is
one such stampede on a new object (so the dynamic is cold); one more round runs first as a
warm-up (every thread opens its connections), checked but not recorded.

Per round: computations (the ``dynamic.benchserver.inventory.computations`` delta of
``context.stats``, checked against the loader's own record of its calls) must be exactly 1,
else the benchmark raises. The row's "raw" rate is ``WORKERS`` / the loader's measured time,
what 32 workers would get if every one answered the moment the one computation ends; the
"dal" rate is ``WORKERS`` / the slowest worker's latency. So ratio = loader time / slowest
latency, and the issue's "every worker answered within 1.5x the loader's time" is
ratio >= 0.667. Rates and ratio are medians over the rounds, like every row; the footnote
under the table gives the worst round and the maximum computations per round.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from bench.env import ETCD, MEMCACHED, Environment, Settings
from bench.hybrids import INVENTORY_CALLS, INVENTORY_SECONDS, BenchServer
from bench.report import Result
from bench.timing import Measurement, progress
from dal import configure

NAME = "locked_stampede"
SERVERS = (ETCD, MEMCACHED)
#: every worker answers within 1.5x the loader's time
TARGET = 1 / 1.5
WORKERS = 32
#: stampedes per ``--rounds`` round in a full run (a quick run does one per round)
STAMPEDES_PER_ROUND = 4
#: no barrier waits longer than this: a stuck worker fails the benchmark instead of hanging it
BARRIER_TIMEOUT = 60.0


def run(env: Environment, settings: Settings) -> Result:
    etcd, memcached = env.need_etcd(), env.need_memcached()
    context = configure(etcd.url, memcached.url, namespace=env.namespace())
    rounds = settings.rounds * (1 if settings.quick else STAMPEDES_PER_ROUND)
    guids = []
    for number in range(rounds + 1):  # round 0 is the warm-up
        server = BenchServer(data={"name": f"stampede-{number:04d}.dc1.example.net", "rack": number})
        server.save()
        guids.append(server.guid)
    label = f"dynamic.{BenchServer._meta.name}.inventory."

    released: list[float] = []  # per round, when the start barrier let the workers go
    latencies = [[0.0] * WORKERS for _ in guids]
    answers: list[list[Any]] = [[None] * WORKERS for _ in guids]
    errors: list[BaseException] = []
    start = threading.Barrier(WORKERS + 1, action=lambda: released.append(time.perf_counter()),
                              timeout=BARRIER_TIMEOUT)
    finish = threading.Barrier(WORKERS + 1, timeout=BARRIER_TIMEOUT)

    def worker(number: int) -> None:
        try:
            for round_number, guid in enumerate(guids):
                server = BenchServer(guid)  # untimed: a request has its object before it asks
                start.wait()
                answer = server.inventory
                latencies[round_number][number] = time.perf_counter() - released[round_number]
                answers[round_number][number] = answer
                finish.wait()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            start.abort()
            finish.abort()

    threads = [threading.Thread(target=worker, args=(number,), name=f"{NAME}-{number}", daemon=True)
               for number in range(WORKERS)]
    for thread in threads:
        thread.start()
    events: list[dict[str, int]] = []
    try:
        for _ in guids:
            before = context.stats.snapshot()
            start.wait()
            finish.wait()
            after = context.stats.snapshot()
            events.append({event: int(after.get(label + event, 0) - before.get(label + event, 0))
                           for event in ("computations", "misses", "hits", "lock_waits", "lock_timeouts",
                                         "lock_errors")})
    except threading.BrokenBarrierError:
        pass
    for thread in threads:
        thread.join(BARRIER_TIMEOUT)
    if errors:
        raise RuntimeError(f"{NAME}: a worker failed: {errors[0]!r}") from errors[0]
    if len(events) != len(guids):
        raise RuntimeError(f"{NAME}: the workers stopped after {len(events)} of {len(guids)} rounds")

    loader_seconds: list[float] = []
    for round_number, (guid, counted) in enumerate(zip(guids, events, strict=True)):
        calls = INVENTORY_CALLS.of(guid)
        if counted["computations"] != len(calls):
            raise AssertionError(f"{NAME}: round {round_number}: context.stats counted "
                                 f"{counted['computations']} computations, the loader {len(calls)}")
        if len(calls) != 1:
            raise AssertionError(f"{NAME}: round {round_number}: {len(calls)} computations of the cold "
                                 f"locked dynamic by {WORKERS} workers; single flight means exactly 1")
        if any(answer != answers[round_number][0] for answer in answers[round_number]):
            raise AssertionError(f"{NAME}: round {round_number}: the workers got different values")
        loader_seconds.append(calls[0])

    # round 0 warmed the threads' connections up: checked above, not recorded
    slowest = [max(per_worker) for per_worker in latencies[1:]]
    loader = loader_seconds[1:]
    for number, (worst, took, counted) in enumerate(zip(slowest, loader, events[1:], strict=True), 1):
        progress(f"{NAME}: round {number}/{rounds}: {counted['computations']} computation, "
                 f"{counted['lock_waits']} lock waits, loader {took * 1e3:.1f} ms, "
                 f"median worker {statistics.median(latencies[number]) * 1e3:.1f} ms, "
                 f"slowest {worst * 1e3:.1f} ms, ratio {took / worst:.2f}x")
    if settings.profile:
        progress(f"--- {NAME}: not profiled (its workers mostly sleep and poll) ---")

    measurement = Measurement(WORKERS, tuple(WORKERS / worst for worst in slowest),
                              tuple(WORKERS / took for took in loader))
    worst_round = min(took / worst for took, worst in zip(loader, slowest, strict=True))
    max_computations = max(counted["computations"] for counted in events)
    totals = {event: sum(counted[event] for counted in events[1:]) for event in events[0]}
    footnote = (f"{NAME}: {WORKERS} threads x {rounds} rounds, each on a cold locked dynamic: "
                f"max {max_computations} computation per round (required: exactly 1); "
                f"loader {statistics.median(loader) * 1e3:.1f} ms, slowest worker "
                f"{statistics.median(slowest) * 1e3:.1f} ms (median of the rounds), "
                f"worst round {max(slowest) * 1e3:.1f} ms, worst ratio {worst_round:.2f}x")
    return Result(NAME, measurement, TARGET, {
        "workers": WORKERS, "rounds": rounds, "loader_target_seconds": INVENTORY_SECONDS,
        "max_computations": max_computations, "loader_seconds": loader, "slowest_seconds": slowest,
        "median_worker_seconds": [statistics.median(per_worker) for per_worker in latencies[1:]],
        "worst_round_ratio": worst_round, **totals}, footnote=footnote)
