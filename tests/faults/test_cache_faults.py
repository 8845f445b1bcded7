"""memcached killed, restarted and paused under counter writers and readers: no read is ever stale.

Writers increment counters with dal's documented recipe and record when each save returned;
readers load the counters in a loop and record each value with when the read began and ended
(and whether the object cache served it). The parent kills, restarts and pauses memcached
meanwhile. Afterwards tests/faults/history.py checks the histories: no read older than a save
that had returned before it began, no process reading backwards, no increment lost or doubled.
A control run with the writer's invalidations disabled shows that the checker does catch
stale reads.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.rendezvous import RendezvousHash

from dal import configure
from dal.backends.memcached import wire_key
from dal.config import Context
from dal.testing.servers import RunningServer, start_memcached
from faults import cache_workers
from faults.cache_workers import Plan
from faults.fault_hybrids import Counter
from faults.history import Read, Write, backward_steps, stale_reads

LONG = os.environ.get("DAL_CHAOS") == "1"
#: seconds the spawned workers may take to import dal, connect and warm up (a loaded 2-core box)
READY_TIMEOUT = 60.0
#: seconds the workers may take to finish their last operation and write their results
JOIN_TIMEOUT = 30.0
#: the staleness a fault may cause is bounded by the trust machinery, not by these sleeps: they
#: only give the cache time to be used again between faults
WARM_UP = 1.0
RECOVERY = 2.5
#: a pause longer than dal's memcached timeout (0.25 s): calls fail; and a shorter one: calls wait
LONG_PAUSE = 1.5
SHORT_PAUSE = 0.1
#: seconds a killed memcached stays down before it is restarted on its port
DOWN = 0.5
#: seconds dal skips a memcached that failed (the URL option; dal's default is 5)
DEAD_TIMEOUT = 1.0
#: the first excerpts of a failed check shown in its message
SHOWN = 12


def _interval(start: float, end: float, origin: float) -> str:
    return f"[{start - origin:.3f}, {end - origin:.3f}]"


# --- running workers ------------------------------------------------------------------------


@dataclass
class Crew:
    """The results of one run of spawned workers, in the order they were listed."""

    results: list[dict[str, Any]]
    started: float
    ended: float

    def of(self, role: str) -> list[dict[str, Any]]:
        return [result for result in self.results if result["role"] == role]

    def stat(self, role: str, name: str) -> int:
        return int(sum(result["stats"].get(name, 0) for result in self.of(role)))


def run_crew(label: str, members: list[tuple[str, Plan]], script: Callable[[], None],
             script_bound: float) -> Crew:
    """Start the members (role, plan) as spawned processes, run ``script`` once all are warm, stop them.

    ``script_bound`` is how long ``script`` may run at most; every wait here is bounded, and a
    process still alive after JOIN_TIMEOUT is killed by its PID.
    """
    spawn = multiprocessing.get_context("spawn")
    ready, go, stop = spawn.Queue(), spawn.Event(), spawn.Event()
    targets = {"writer": cache_workers.writer, "reader": cache_workers.reader}
    processes = []
    try:
        for role, plan in members:
            process = spawn.Process(target=targets[role], args=(plan, ready, go, stop), daemon=True,
                                    name=f"{label}-{role}-{plan.process}")
            process.start()
            processes.append(process)
        deadline = time.monotonic() + READY_TIMEOUT
        warm = 0
        while warm < len(processes):
            try:
                ready.get(timeout=max(0.01, min(1.0, deadline - time.monotonic())))
                warm += 1
            except queue.Empty:
                gone = [(p.name, p.exitcode) for p in processes if p.exitcode is not None]
                if gone or time.monotonic() > deadline:
                    # the worker's result file says why, when it got that far
                    reasons = [_result_file(plan).get("error", "") for _, plan in members]
                    pytest.fail(f"{label}: {warm}/{len(processes)} workers ready within {READY_TIMEOUT} s; "
                                f"exited: {gone}; errors: {[r for r in reasons if r]}")
        go.set()
        started = time.monotonic()
        script()
        ended = time.monotonic()
        assert ended - started < script_bound + 10, f"{label}: the fault script overran its bound"
    finally:
        stop.set()
        go.set()  # a worker still waiting for go sees stop at once
        join_deadline = time.monotonic() + JOIN_TIMEOUT
        for process in processes:
            process.join(timeout=max(0.1, join_deadline - time.monotonic()))
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGKILL)
                process.join(timeout=5)
        ready.close()
    results = []
    for (role, plan), process in zip(members, processes, strict=True):
        result = _result_file(plan)
        assert result, f"{label}: {role} {plan.process} wrote no results (exit code {process.exitcode})"
        assert "error" not in result, f"{label}: {role} {plan.process} failed:\n{result['error']}"
        results.append({**result, "role": role, "process": plan.process})
    return Crew(results, started, ended)


def _result_file(plan: Plan) -> dict[str, Any]:
    try:
        with open(plan.out) as handle:
            loaded: dict[str, Any] = json.load(handle)
            return loaded
    except (OSError, ValueError):
        return {}


def plans(out_dir: Path, label: str, persistent: str, volatile: str, namespace: str, guids: list[str],
          writers: int, readers: int, bound: float, **options: Any) -> list[tuple[str, Plan]]:
    """Plans for ``writers`` writers then ``readers`` readers of ``guids``; numbered from 0."""
    deadline = time.monotonic() + READY_TIMEOUT + bound + 20
    members = []
    for number in range(writers + readers):
        role = "writer" if number < writers else "reader"
        members.append((role, Plan(persistent, volatile, namespace, tuple(guids),
                                   out=str(out_dir / f"{label}-{number}.json"), deadline=deadline,
                                   process=number, **options.get(role, {}))))
    return members


# --- histories ------------------------------------------------------------------------------


@dataclass
class History:
    """The writes and reads of one counter, with which reads the object cache served."""

    writes: list[Write] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    hit: dict[Read, bool] = field(default_factory=dict)
    unfinished: int = 0


def histories(crew: Crew, guids: list[str]) -> dict[str, History]:
    """Split every worker's records by counter (a reader's reads keep its process number)."""
    found = {guid: History() for guid in guids}
    for result in crew.of("writer"):
        for guid, writes in result["writes"].items():
            found[guid].writes += [Write(value, returned) for value, returned in writes]
        for guid in result.get("unfinished", []):  # cut by the deadline: maybe applied, maybe not
            found[guid].unfinished += 1
    for result in crew.of("reader"):
        for index, value, began, ended, hit in result["reads"]:
            read = Read(value, began, ended, result["process"])
            found[guids[index]].reads.append(read)
            found[guids[index]].hit[read] = bool(hit)
    return found


@dataclass
class Verdict:
    """What the checks of history.py found in one counter's history, and the counter's tally."""

    stale: list[tuple[Read, int]]
    backwards: list[tuple[Read, Read]]
    stored: int
    counted: int
    lost: int
    extra: int
    duplicates: int


def judge(history: History, stored: int) -> Verdict:
    values = [write.value for write in history.writes]
    counted = len(values)
    return Verdict(stale=stale_reads(history.writes, history.reads), backwards=backward_steps(history.reads),
                   stored=stored, counted=counted, lost=max(0, counted - stored),
                   extra=max(0, stored - counted - history.unfinished),
                   duplicates=counted - len(set(values)))


def explain(verdict: Verdict, history: History, faults: list[tuple[str, float, float]], origin: float,
            where: Callable[[Read], str] = lambda read: "") -> str:
    """The first stale reads and backward steps, with the cache's part and the fault windows."""
    lines = [f"faults (s after go): {[(kind, _interval(a, b, origin)) for kind, a, b in faults]}"]
    by_time = sorted(history.writes, key=lambda write: write.returned)
    for read, expected in verdict.stale[:SHOWN]:
        before = [write for write in by_time if write.returned < read.began][-1:]
        lines.append(f"stale: process {read.process} read {read.value} during "
                     f"{_interval(read.began, read.ended, origin)} "
                     f"({'cache hit' if history.hit.get(read) else 'durable store'}{where(read)}); "
                     f"a save of {expected} had returned"
                     + (f" at {before[0].returned - origin:.3f}" if before else ""))
    for earlier, later in verdict.backwards[:SHOWN]:
        lines.append(f"backwards: process {later.process} read {earlier.value} during "
                     f"{_interval(earlier.began, earlier.ended, origin)} "
                     f"({'hit' if history.hit.get(earlier) else 'store'}) then {later.value} during "
                     f"{_interval(later.began, later.ended, origin)} "
                     f"({'hit' if history.hit.get(later) else 'store'}{where(later)})")
    return "\n".join(lines)


# --- the stores -----------------------------------------------------------------------------


def setup(contexts: list[Context], persistent: str, volatile: str, namespace: str,
          counters: int) -> tuple[Context, list[str]]:
    context = configure(persistent, volatile, namespace=namespace)
    contexts.append(context)
    guids = []
    for number in range(counters):
        counter = Counter(data={"label": f"counter-{number}"})
        counter.save()
        guids.append(counter.guid)
    return context, guids


def stored_count(context: Context, guid: str) -> int:
    """The count in the durable store itself, past every cache."""
    entry = context.persistent.get(context.keys.doc(Counter._meta.name, guid))
    assert entry is not None, f"counter {guid} vanished from the durable store"
    return int(json.loads(entry.value)["count"])


def node_of(key: str, nodes: list[str]) -> str:
    """The memcached server (``host:port``) dal's client sends a cache key to: rendezvous hashing."""
    return nodes[0] if len(nodes) == 1 else str(RendezvousHash(nodes=list(nodes)).get_node(wire_key(key)))


def holds(server: RunningServer, key: str) -> bool:
    """Ask one memcached server directly whether it holds a cache key."""
    with socket.create_connection((server.host, server.port), timeout=2) as connection:
        connection.sendall(b"get " + wire_key(key).encode() + b"\r\n")
        answer = b""
        deadline = time.monotonic() + 2
        while not answer.endswith(b"END\r\n") and time.monotonic() < deadline:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.startswith(b"VALUE ")


def stop_all(servers: list[RunningServer]) -> None:
    for server in servers:
        server.stop()


# --- 1. restart and pause during a counter run ------------------------------------------------


@pytest.mark.faults
@pytest.mark.etcd
@pytest.mark.memcached
def test_restart_and_pause_under_counter_run(etcd_server: RunningServer, memcached_alone: RunningServer,
                                             fault_namespace: str, parent: list[Context], tmp_path: Path,
                                             figures: Callable[..., None]) -> None:
    writers, readers = (4, 6) if LONG else (2, 3)
    cycles = 3 if LONG else 1
    # a failed server is skipped for dead_timeout; 1 s instead of the default 5 s lets the cache
    # serve again within each recovery window, so the reads right after a fault are exercised
    volatile = f"{memcached_alone.url}?dead_timeout={DEAD_TIMEOUT:g}"
    context, guids = setup(parent, etcd_server.url, volatile, fault_namespace, 1)
    guid = guids[0]
    servers = [memcached_alone]  # the current one last; each restart adds one
    faults: list[tuple[str, float, float]] = []
    cycle_length = DOWN + RECOVERY + LONG_PAUSE + RECOVERY + ((SHORT_PAUSE + 1.0) if LONG else 0)
    bound = WARM_UP + cycles * (cycle_length + 5)

    def script() -> None:
        time.sleep(WARM_UP)
        for _ in range(cycles):
            began = time.monotonic()
            servers[-1].process.kill()  # kill -9
            servers[-1].process.wait(timeout=5)
            time.sleep(DOWN)
            servers.append(start_memcached(memcached_alone.workdir, port=memcached_alone.port))
            faults.append(("restart", began, time.monotonic()))
            time.sleep(RECOVERY)
            pauses = [LONG_PAUSE, SHORT_PAUSE] if LONG else [LONG_PAUSE]
            for length in pauses:
                began = time.monotonic()
                servers[-1].pause()
                try:
                    time.sleep(length)
                finally:
                    servers[-1].resume()
                faults.append(("pause" if length > 0.25 else "short pause", began, time.monotonic()))
                time.sleep(RECOVERY if length > 0.25 else 1.0)

    try:
        crew = run_crew("counter", plans(tmp_path, "counter", etcd_server.url, volatile,
                                                   fault_namespace, guids, writers, readers, bound),
                        script, bound)
    finally:
        stop_all(servers)
    # the stores are back for the parent: a fresh memcached is not needed to read the durable truth
    history = histories(crew, guids)[guid]
    verdict = judge(history, stored_count(context, guid))
    origin = crew.started
    calm, hits_calm = calm_hits(history, faults, crew)
    seconds = crew.ended - crew.started
    figures(writes=verdict.counted, reads=len(history.reads), reads_per_s=round(len(history.reads) / seconds),
            hits=crew.stat("reader", "object_hits"), hits_calm=hits_calm, stale=len(verdict.stale),
            backwards=len(verdict.backwards),
            restarts=sum(kind == "restart" for kind, _, _ in faults),
            pauses=sum(kind != "restart" for kind, _, _ in faults), lost=verdict.lost, extra=verdict.extra,
            duplicates=verdict.duplicates, unfinished=history.unfinished,
            conflicts=sum(r["errors"].get("conflicts", 0) for r in crew.of("writer")),
            invalidation_errors=crew.stat("writer", "object_invalidation_errors"),
            reader_errors=crew.stat("reader", "object_errors"),
            refused_as_older=crew.stat("reader", "object_stale"),
            trust_restored=crew.stat("reader", "object_trust_restored"),
            seconds=round(seconds, 1))
    story = explain(verdict, history, faults, origin)
    assert verdict.counted > 0 and len(history.reads) > 0, "nothing was written or read"
    assert_clean(verdict, history, story)
    # the cache was really used, and the faults really hit the writers
    assert crew.stat("reader", "object_hits") > 0, "the readers missed every time"
    assert all(hits_calm), (f"no cache hit between two faults: hits per calm window {hits_calm}, "
                            f"windows {[_interval(start, end, origin) for start, end in calm]}")
    assert crew.stat("writer", "object_invalidation_errors") > 0, "no writer noticed a fault"


# --- 2. one writer, three readers, no fault; and the control ----------------------------------


def _steady_run(tmp_path: Path, label: str, etcd_url: str, memcached_url: str, namespace: str,
                parent: list[Context], seconds: float, sabotage: bool) -> tuple[Crew, History, Verdict]:
    context, guids = setup(parent, etcd_url, memcached_url, namespace, 1)
    if sabotage and context.sweeper is not None:
        context.sweeper.stop()  # nobody may deliver the writer's records in the control
    options = {"writer": {"sabotage": sabotage}, "reader": {"sabotage": sabotage}}
    crew = run_crew(label, plans(tmp_path, label, etcd_url, memcached_url, namespace, guids, 1, 3,
                                           seconds, **options),
                    lambda: time.sleep(seconds), seconds)
    history = histories(crew, guids)[guids[0]]
    return crew, history, judge(history, stored_count(context, guids[0]))


@pytest.mark.faults
@pytest.mark.etcd
@pytest.mark.memcached
def test_one_writer_three_readers_never_stale_and_control_catches_staleness(
        etcd_server: RunningServer, memcached_server: RunningServer, fault_namespace: str,
        parent: list[Context], tmp_path: Path, figures: Callable[..., None]) -> None:
    seconds = 10.0 if LONG else 3.0
    crew, history, verdict = _steady_run(tmp_path, "steady", etcd_server.url, memcached_server.url,
                                         fault_namespace, parent, seconds, sabotage=False)
    control_crew, control, control_verdict = _steady_run(tmp_path, "control", etcd_server.url,
                                                         memcached_server.url, fault_namespace + "c", parent,
                                                         seconds, sabotage=True)
    length = crew.ended - crew.started
    figures(writes=verdict.counted, reads=len(history.reads), reads_per_s=round(len(history.reads) / length),
            hits=crew.stat("reader", "object_hits"), stale=len(verdict.stale),
            backwards=len(verdict.backwards), lost=verdict.lost, extra=verdict.extra,
            refused_as_older=crew.stat("reader", "object_stale"), control_writes=control_verdict.counted,
            control_reads=len(control.reads),
            control_hits=control_crew.stat("reader", "object_hits"), control_stale=len(control_verdict.stale),
            control_backwards=len(control_verdict.backwards))
    story = explain(verdict, history, [], crew.started)
    assert verdict.counted > 0 and len(history.reads) > 0, "nothing was written or read"
    assert crew.stat("reader", "object_hits") > 0, "the readers never hit the cache"
    assert not verdict.stale, f"{len(verdict.stale)} stale reads\n{story}"
    assert not verdict.backwards, f"{len(verdict.backwards)} backward steps\n{story}"
    assert verdict.lost == 0 and verdict.extra == 0 and verdict.duplicates == 0
    # the control: with the writer's invalidations gone, cached documents outlive saves
    assert control_verdict.counted > 0 and control_crew.stat("reader", "object_hits") > 0
    assert len(control_verdict.stale) > 0, "the checker found no stale read although nothing was invalidated"
    assert all(control.hit[read] for read, _ in control_verdict.stale), "a control stale read was not a hit"


# --- 3. several memcached servers, one killed ------------------------------------------------


@pytest.mark.faults
@pytest.mark.etcd
@pytest.mark.memcached
def test_one_of_three_memcached_killed(etcd_server: RunningServer, fault_namespace: str,
                                       parent: list[Context], tmp_path: Path,
                                       figures: Callable[..., None]) -> None:
    outage = 6.0 if LONG else 3.0
    settle = 0.5  # after the kill, before counting what readers got from the live servers
    readers = 3
    servers: list[RunningServer] = []
    try:
        for number in range(3):
            servers.append(start_memcached(tmp_path / f"memcached{number}"))
        nodes = [f"{server.host}:{server.port}" for server in servers]
        url = "memcached://" + ",".join(nodes)
        context = configure(etcd_server.url, url, namespace=fault_namespace)
        parent.append(context)
        # counters until every server holds the documents of two of them
        guids: list[str] = []
        owner: dict[str, str] = {}
        for number in range(40):
            if all(sum(node == other for other in owner.values()) >= 2 for node in nodes):
                break
            counter = Counter(data={"label": f"counter-{number}"})
            counter.save()
            guids.append(counter.guid)
            owner[counter.guid] = node_of(context.keys.cached_doc(Counter._meta.name, counter.guid), nodes)
        assert all(node in owner.values() for node in nodes), f"counters not on every server: {owner}"
        # cache every document, and check that the test's hashing agrees with where dal put them
        confirmed: set[str] = set()
        for guid in guids:
            Counter(guid)
            where = [node for node, server in zip(nodes, servers[:3], strict=True)
                     if holds(server, context.keys.cached_doc(Counter._meta.name, guid))]
            assert set(where) <= {owner[guid]}, f"counter {guid} cached on {where}, expected on {owner[guid]}"
            confirmed.update(where)
        assert confirmed == set(nodes), f"cached documents found only on {confirmed}"
        victim = servers[1]
        victim_node = nodes[1]
        probe_node = node_of(context.keys.cache_root + "probe", nodes)
        window: list[float] = []
        bound = WARM_UP + outage + RECOVERY + 5

        def script() -> None:
            time.sleep(WARM_UP)
            window.append(time.monotonic())
            victim.process.kill()  # kill -9
            victim.process.wait(timeout=5)
            time.sleep(outage)
            window.append(time.monotonic())
            servers.append(start_memcached(victim.workdir, port=victim.port))
            time.sleep(RECOVERY)

        members = plans(tmp_path, "spread", etcd_server.url, url, fault_namespace, guids, 1, readers, bound,
                        writer={"spy_deletes": True})
        crew = run_crew("spread", members, script, bound)
    finally:
        stop_all(servers)
    killed, restarted = window
    found = histories(crew, guids)
    verdicts = {guid: judge(found[guid], stored_count(context, guid)) for guid in guids}
    # what the writer's invalidations did, key by key, by server
    failed_live = failed_victim = delivered_live_outage = delivered_victim = 0
    for when, keys, failed in crew.of("writer")[0]["deletes"]:
        missed = set(failed)
        for key in keys:
            node = node_of(key, nodes)
            if key in missed:
                failed_victim += node == victim_node
                failed_live += node != victim_node
            elif node == victim_node:
                delivered_victim += 1
            elif killed <= when <= restarted:
                delivered_live_outage += 1
    live_reads = victim_reads = live_hits = victim_hits = hits_after_restart = 0
    for guid in guids:
        for read in found[guid].reads:
            hits_after_restart += read.began >= restarted and found[guid].hit[read]
            if read.began >= killed + settle and read.ended <= restarted:
                hit = found[guid].hit[read]
                if owner[guid] == victim_node:
                    victim_reads += 1
                    victim_hits += hit
                else:
                    live_reads += 1
                    live_hits += hit
    all_reads = sum(len(history.reads) for history in found.values())
    stale = sum(len(verdict.stale) for verdict in verdicts.values())
    backwards = sum(len(verdict.backwards) for verdict in verdicts.values())
    figures(counters=len(guids), victim_counters=sum(node == victim_node for node in owner.values()),
            probe_on_victim=probe_node == victim_node, writes=sum(v.counted for v in verdicts.values()),
            reads=all_reads, reads_per_s=round(all_reads / (crew.ended - crew.started)),
            hits=crew.stat("reader", "object_hits"), stale=stale, backwards=backwards,
            lost=sum(v.lost for v in verdicts.values()), extra=sum(v.extra for v in verdicts.values()),
            invalidation_errors=crew.stat("writer", "object_invalidation_errors"),
            failed_keys_victim=failed_victim, failed_keys_live=failed_live,
            delivered_keys_victim=delivered_victim,
            delivered_live_during_outage=delivered_live_outage, live_reads_during_outage=live_reads,
            live_hits_during_outage=live_hits, victim_reads_during_outage=victim_reads,
            victim_hits_during_outage=victim_hits, hits_after_restart=hits_after_restart,
            refused_as_older=crew.stat("reader", "object_stale"),
            trust_restored=crew.stat("reader", "object_trust_restored"))
    stories = []
    for guid in guids:
        if verdicts[guid].stale or verdicts[guid].backwards:
            served = f", {owner[guid]}{' (the killed one)' if owner[guid] == victim_node else ''}"
            stories.append(f"counter {guid}:\n" + explain(verdicts[guid], found[guid],
                                                          [("kill", killed, restarted)], crew.started,
                                                          lambda read, s=served: s))
    assert all_reads > 0 and sum(v.counted for v in verdicts.values()) > 0, "nothing was written or read"
    assert stale == 0, f"{stale} stale reads\n" + "\n".join(stories)
    assert backwards == 0, f"{backwards} backward steps\n" + "\n".join(stories)
    assert all(v.lost == 0 and v.extra == 0 and v.duplicates == 0 for v in verdicts.values()), verdicts
    # the dead server was noticed, and only its keys failed: the live servers took theirs
    assert failed_victim > 0 and crew.stat("writer", "object_invalidation_errors") > 0
    assert failed_live == 0, f"{failed_live} invalidations to live servers failed"
    assert delivered_live_outage > 0, "no invalidation reached a live server during the outage"
    # the readers kept using the live servers while one was dead
    assert live_reads > 0
    assert live_hits > 0, (
        f"no cache hit in {live_reads} reads of counters on live servers during the outage ({settle} s after "
        f"the kill until the restart, {restarted - killed - settle:.1f} s); the readers failed "
        f"{crew.stat('reader', 'object_errors')} cache calls and restored their trust in the cache "
        f"{crew.stat('reader', 'object_trust_restored')} times in the whole run")


def assert_clean(verdict: Any, history: Any, story: str) -> None:
    """Assert a counter history read nothing stale or backwards and lost or doubled no increment."""
    assert not verdict.stale, f"{len(verdict.stale)} stale reads\n{story}"
    assert not verdict.backwards, f"{len(verdict.backwards)} backward steps\n{story}"
    assert verdict.lost == 0 and verdict.extra == 0 and verdict.duplicates == 0, (
        f"counted {verdict.counted} increments (unfinished {history.unfinished}), stored {verdict.stored}, "
        f"duplicate values {verdict.duplicates}")
    assert sorted(write.value for write in history.writes) == list(range(1, verdict.stored + 1)), (
        "the stored values are not exactly 1..count")


def calm_hits(history: Any, faults: list[tuple[str, float, float]],
              crew: Any) -> tuple[list[tuple[float, float]], list[int]]:
    """Return the calm windows (before the first fault, and after each fault until the next one or
    the end) and the cache hits read whole within each."""
    calm = [(crew.started, faults[0][1])] + [
        (end, following[1]) for (_, _, end), following in
        zip(faults, [*faults[1:], ("end", crew.ended, crew.ended)], strict=True)]
    hits = [sum(1 for read in history.reads
                if history.hit[read] and start <= read.began and read.ended <= end) for start, end in calm]
    return calm, hits
