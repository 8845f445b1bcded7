"""Redis faults: a durable redis-server killed -9 under a counter run, a cache redis-server killed and paused.

1. *Durability.* A redis-server of the test's own, with the append-only file and ``appendfsync
   always``, serves both roles (durable store and cache) while counter writers in several
   processes increment one counter with dal's documented recipe (the etcd scenario's workers,
   tests/faults/etcd_workers.py). The parent kills the server with SIGKILL and restarts it on its
   port and directory, which reloads the AOF. Every other kill is aimed: one writer reaches the store
   through a loopback proxy of its own, which holds the answer to its next commit; once the answer
   came, the server is killed, and the answer is dropped; the parent aims again until that writer's
   journal has found an applied commit whose answer was lost (a held answer may be a refusal, when
   another writer's commit came first). Every save that returned was acknowledged by Redis
   after its fsync: the stored count equals the number of saves that returned (nothing lost),
   and no increment is applied twice (nothing extra), whatever the writers were told
   (BackendError, CommitOutcomeUnknownError) during the outage.
2. *The cache tier on Redis.* Redis as the cache (a server of the test's own, with AOF, so a
   restart brings back every entry it held, stale ones included) and as the durable store (the
   session's redis-server): writers and readers record timed histories (the memcached
   scenario's workers, tests/faults/cache_workers.py) while the parent kills the cache server,
   restarts it with its data, and freezes it (SIGSTOP) for two seconds. No read is older than a
   save that returned before it began. The control run, with the writers' invalidations and
   every sweep disabled, does find stale reads: the check can fail.

Sizes: quick by default, long with ``DAL_CHAOS=1`` (``make chaos``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dal import configure
from dal.config import Context
from dal.testing.fixtures import start_or_skip
from dal.testing.servers import RunningServer, start_redis
from faults.etcd_workers import (
    LOST,
    collect_tallies,
    count_worker,
    cut_answer,
    stop_workers,
    sum_tallies,
    wait_for_first_increments,
)
from faults.redis_workers import cutting_redis_worker
from faults.test_cache_faults import (
    _interval,
    assert_clean,
    calm_hits,
    explain,
    histories,
    judge,
    plans,
    run_crew,
    setup,
    stored_count,
)
from faults.test_cache_faults import _steady_run as steady_run
from faults.test_etcd_faults import assert_nothing_stale, durable_count, load_as_stranger, new_counter

LONG = os.environ.get("DAL_CHAOS") == "1"

pytestmark = [pytest.mark.faults, pytest.mark.redis]

#: seconds a restarted server may take to reload its AOF and answer PING (start_redis waits for it)
RESTART_BOUND = 30.0
#: a key of no store of dal's, set on a cache server to see that its restart reloads what it held
PROBE = "fault-probe"


def redis_info(server: RunningServer, section: str) -> dict[str, Any]:
    """Return one section of the server's INFO, read with a client of its own."""
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=5)
    try:
        return dict(client.info(section))
    finally:
        client.close()


def redis_config(server: RunningServer, name: str) -> str:
    """Return one setting of the server (``CONFIG GET``), read with a client of its own."""
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=5, decode_responses=True)
    try:
        return str(client.config_get(name)[name])
    finally:
        client.close()


def probe(server: RunningServer, command: str) -> Any:
    """Set (``set``) or look for (``exists``) a probe key on the server, with a client of its own."""
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=5)
    try:
        return client.set(PROBE, b"1") if command == "set" else client.exists(PROBE)
    finally:
        client.close()


def restart(server: RunningServer) -> RunningServer:
    """Start redis-server again on the port and directory of a killed one (so it reloads its AOF)."""
    return start_redis(server.workdir, port=server.port, appendfsync="always")


@contextlib.contextmanager
def redis_with_aof(workdir: Path) -> Iterator[list[RunningServer]]:
    """A redis-server of this test alone, with AOF and ``appendfsync always``; the list holds it and
    every restart after it (the current one last); each is stopped at the end."""
    servers = [start_or_skip("redis", lambda: start_redis(workdir, appendfsync="always"))]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


# --- 1. a counter run while the durable redis-server is killed -9 and restarted ------------------

WORKERS = 6 if LONG else 3
INCREMENTS = 250 if LONG else 60
#: seconds between two increments of a worker while faults are still being injected
PACE = 0.1
#: seconds a killed server stays down before it is restarted
DOWN = 1.0
#: kills aimed at a held answer, at most, until one was an applied commit's
MAX_AIMED = 30 if LONG else 6
#: seconds between a restart and the next kill
GAP = 0.5
KILLS = 12 if LONG else 3
#: seconds a worker may run at most
WORKER_BUDGET = 600.0 if LONG else 120.0
#: seconds of one request to the durable store: an outage is noticed quickly, and a fence retried
STORE_TIMEOUT = 2.0


def test_counter_survives_kill_9_of_redis_with_appendfsync_always(
        tmp_path: Path, fault_namespace: str, figures: Callable[..., None]) -> None:
    with redis_with_aof(tmp_path / "redis") as servers:
        first = servers[0]
        persistence = redis_info(first, "persistence")
        assert persistence["aof_enabled"] == 1, persistence
        fsync = redis_config(first, "appendfsync")
        assert fsync == "always", fsync  # what the row and docs/backends.md name
        url = f"redis://{first.host}:{first.port}?timeout={STORE_TIMEOUT:g}"
        # one server serves both roles, so both go down together
        context = configure(url, url, namespace=fault_namespace)
        try:
            guid = new_counter().guid
            spawn = multiprocessing.get_context("spawn")
            faults_done = spawn.Event()
            progress: Any = spawn.Array("i", WORKERS)
            shared: Any = spawn.RawArray("i", 3)
            results: Any = spawn.Queue()
            processes = [spawn.Process(target=cutting_redis_worker if index == 0 else count_worker,
                                       name=f"redis-counter-{index}",
                                       args=(*((shared,) if index == 0 else ()), index, url, url,
                                             fault_namespace, guid, INCREMENTS, PACE, WORKER_BUDGET,
                                             faults_done, progress, results))
                         for index in range(WORKERS)]
            started = time.monotonic()
            outages: list[float] = []
            aimed = cut = 0  # aimed kills, and those that came while a commit's answer was held
            tallies: list[dict[str, Any]] = []
            try:
                for process in processes:
                    process.start()
                wait_for_first_increments(processes, progress, results, faults_done)
                fault_deadline = time.monotonic() + (WORKER_BUDGET - 60 if LONG else 60.0)
                while time.monotonic() < fault_deadline:
                    want_cut = shared[LOST] < 1 and aimed < MAX_AIMED
                    if len(outages) >= KILLS and not want_cut:
                        break
                    if min(progress) >= INCREMENTS - 1:
                        break  # every worker waits for its last increment: nothing left to disturb
                    if want_cut or len(outages) % 2 == 0:
                        # killed while the proxy holds the answer to worker 0's commit: the commit's
                        # writer must learn whether it was applied (the AOF has it if it was)
                        aimed += 1
                        held = cut_answer(shared, lambda: bool(processes[0].is_alive())
                                          and progress[0] < INCREMENTS - 1)
                        cut += held == servers[-1].port
                    killed = time.monotonic()
                    servers[-1].kill()  # SIGKILL: no shutdown, no final fsync
                    time.sleep(DOWN)
                    servers.append(restart(servers[-1]))
                    outages.append(time.monotonic() - killed)
                    assert time.monotonic() - killed < DOWN + RESTART_BOUND
                    time.sleep(GAP)
                faults_done.set()
                tallies = collect_tallies(processes, results, WORKERS, WORKER_BUDGET)
            finally:
                stop_workers(processes, faults_done)
            seconds = round(time.monotonic() - started, 1)
            errors = [tally["error"] for tally in tallies if tally["error"]]
            acknowledged = sum(tally["done"] for tally in tallies)
            final = durable_count(context, guid)
            assert final is not None, "the counter is gone: the restarted server did not reload its AOF"
            total = sum_tallies(tallies)
            reloaded = redis_info(servers[-1], "persistence")
            figures(workers=WORKERS, acknowledged=acknowledged, final=final,
                    lost=max(0, acknowledged - final), extra=max(0, final - acknowledged), kills=len(outages),
                    outage_seconds=[round(outage, 2) for outage in outages],
                    aimed_kills=aimed, kills_while_an_answer_was_held=cut, conflicts=total["conflicts"],
                    unknown_outcomes=total["unknown_outcomes"], answers_lost=total["answers_lost"],
                    backend_errors=total["backend_errors"], nothing_written=total["nothing_written"],
                    load_errors=total["load_errors"],
                    slowest_increment=round(max((tally["slowest"] for tally in tallies), default=0.0), 2),
                    aof_loaded_after_restart=reloaded["aof_enabled"] == 1, seconds=seconds)
            assert not errors, "a worker failed:\n" + "\n".join(errors)
            assert len(tallies) == WORKERS and all(tally["finished"] for tally in tallies), (
                f"not every worker finished: {tallies}")
            assert len(outages) >= KILLS, f"only {len(outages)} kills of {KILLS} before the workers finished"
            assert len(servers) == len(outages) + 1
            assert all(server.process.returncode == -9 for server in servers[:-1]), "a kill was not a SIGKILL"
            # the outages really hit the writers: their loads failed while the server was down
            assert total["load_errors"] > 0, f"no writer noticed {len(outages)} outages: {total}"
            assert final == acknowledged == WORKERS * INCREMENTS, (
                f"stored {final}, saves that returned {acknowledged}, expected {WORKERS * INCREMENTS}")
            assert cut >= 1, f"none of {aimed} aimed kills came while a commit's answer was held"
            # the check above could fail: an applied commit lost its answer to a kill (its writer's
            # journal found its own record, at once or in a later save()), and was counted once
            assert total["answers_lost"] >= 1, (
                f"no applied commit lost its answer in {cut} aimed kills: {total}")
            assert total["races"] == 0
            # and the cache, on the same server, holds nothing older than the store, once this process
            # trusts the restarted server again: its connections to a start of the server other than
            # the one it trusted are refused (dal/backends/redis/restarts.py), which its first cache
            # read since notices, and a catch-up then trusts the server again
            assert load_as_stranger(context, guid) == final
            deadline = time.monotonic() + 10
            while context.objects.trust.lost and time.monotonic() < deadline:
                time.sleep(0.1)
            assert assert_nothing_stale(context, guid) == final
        finally:
            context.close()


# --- 2. the cache tier on Redis: readers and writers while the cache server is killed and paused ---

#: seconds after go before the first fault, and after each fault for the cache to be used again
WARM_UP = 1.0
RECOVERY = 2.5
#: seconds the killed cache server stays down
CACHE_DOWN = 0.5
#: a SIGSTOP of the cache server, far longer than dal's Redis cache timeout (0.5 s)
PAUSE = 2.0


def test_redis_cache_killed_restarted_with_its_data_and_paused_never_serves_stale(
        redis_server: RunningServer, fault_namespace: str, parent: list[Context], tmp_path: Path,
        figures: Callable[..., None]) -> None:
    writers, readers = (4, 6) if LONG else (2, 3)
    cycles = 3 if LONG else 1
    bound = WARM_UP + cycles * (CACHE_DOWN + RECOVERY + PAUSE + RECOVERY + 5)
    faults: list[tuple[str, float, float]] = []
    keys_reloaded: list[int] = []
    probes_kept: list[bool] = []
    with redis_with_aof(tmp_path / "cache") as servers:
        volatile = servers[0].url
        context, guids = setup(parent, redis_server.url, volatile, fault_namespace, 1)
        guid = guids[0]
        # a key outside dal's own, without expiry: a restart that reloads the cache's data keeps it
        probe(servers[0], "set")

        def script() -> None:
            time.sleep(WARM_UP)
            for _ in range(cycles):
                began = time.monotonic()
                servers[-1].kill()  # SIGKILL; the restart reloads every entry it held, stale ones too
                time.sleep(CACHE_DOWN)
                servers.append(restart(servers[-1]))
                faults.append(("restart", began, time.monotonic()))
                keys_reloaded.append(int(redis_info(servers[-1], "keyspace").get("db0", {}).get("keys", 0)))
                probes_kept.append(bool(probe(servers[-1], "exists")))
                time.sleep(RECOVERY)
                began = time.monotonic()
                servers[-1].pause()  # SIGSTOP: connections stay open, nothing answers
                try:
                    time.sleep(PAUSE)
                finally:
                    servers[-1].resume()
                faults.append(("pause", began, time.monotonic()))
                time.sleep(RECOVERY)

        crew = run_crew("redis-cache", plans(tmp_path, "redis-cache", redis_server.url, volatile,
                                             fault_namespace, guids, writers, readers, bound), script, bound)
        history = histories(crew, guids)[guid]
        verdict = judge(history, stored_count(context, guid))
    origin = crew.started
    calm, hits_calm = calm_hits(history, faults, crew)
    seconds = crew.ended - crew.started
    figures(writes=verdict.counted, reads=len(history.reads), reads_per_s=round(len(history.reads) / seconds),
            hits=crew.stat("reader", "object_hits"), hits_calm=hits_calm, stale=len(verdict.stale),
            backwards=len(verdict.backwards), restarts=sum(kind == "restart" for kind, _, _ in faults),
            keys_reloaded=keys_reloaded, probe_kept=probes_kept,
            pauses=sum(kind == "pause" for kind, _, _ in faults),
            fault_windows=[(kind, _interval(a, b, origin)) for kind, a, b in faults],
            lost=verdict.lost, extra=verdict.extra, duplicates=verdict.duplicates,
            unfinished=history.unfinished,
            invalidation_errors=crew.stat("writer", "object_invalidation_errors"),
            reader_errors=crew.stat("reader", "object_errors"),
            refused_as_older=crew.stat("reader", "object_stale"),
            trust_restored=crew.stat("reader", "object_trust_restored"), seconds=round(seconds, 1))
    story = explain(verdict, history, faults, origin)
    assert verdict.counted > 0 and len(history.reads) > 0, "nothing was written or read"
    assert probes_kept and all(probes_kept), "a restarted cache server did not reload its data"
    assert_clean(verdict, history, story)
    # the cache was really used between the faults, and the faults really hit the writers
    assert crew.stat("reader", "object_hits") > 0, "the readers missed every time"
    assert all(hits_calm), (f"no cache hit between two faults: hits per calm window {hits_calm}, "
                            f"windows {[_interval(start, end, origin) for start, end in calm]}")
    assert crew.stat("writer", "object_invalidation_errors") > 0, "no writer noticed a fault"


def test_redis_cache_control_without_invalidations_finds_stale_reads(
        redis_server: RunningServer, fault_namespace: str, parent: list[Context], tmp_path: Path,
        figures: Callable[..., None]) -> None:
    """Prove the check of the cache scenario can fail: the same history on the same Redis pair, with
    the writer's invalidations and every sweep disabled, has stale reads (all of them cache hits)."""
    seconds = 10.0 if LONG else 3.0
    with redis_with_aof(tmp_path / "cache") as servers:
        volatile = servers[0].url
        crew, history, verdict = steady_run(tmp_path, "redis-control", redis_server.url, volatile,
                                            fault_namespace, parent, seconds, sabotage=True)
    figures(writes=verdict.counted, reads=len(history.reads), hits=crew.stat("reader", "object_hits"),
            stale=len(verdict.stale), stale_hits=sum(history.hit[read] for read, _ in verdict.stale),
            backwards=len(verdict.backwards), lost=verdict.lost, extra=verdict.extra,
            seconds=round(crew.ended - crew.started, 1))
    assert verdict.counted > 0 and crew.stat("reader", "object_hits") > 0, "nothing was written or hit"
    assert len(verdict.stale) > 0, "the checker found no stale read although nothing was invalidated"
    assert all(history.hit[read] for read, _ in verdict.stale), "a control stale read was not a cache hit"
    # what the sabotage breaks is the cache alone: the durable store still counted every increment
    assert verdict.lost == 0 and verdict.extra == 0 and verdict.duplicates == 0

