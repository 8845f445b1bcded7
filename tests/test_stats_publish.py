"""Published statistics reach `dal stats`: from short multiprocessing workers, from a context that
``configure()`` replaced, and from a live process that stays idle longer than the snapshots' TTL."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

import dal.cache.stats
from dal.cache.stats import collect, report
from dal.config import configure, current
from dal.testing.fixtures import memcached_servers
from dal.testing.servers import start_redis

pytestmark = pytest.mark.memcached


def _count_in_worker(persistent: str, volatile: str, namespace: str, inherited: bool) -> None:
    """A multiprocessing worker: count, and return at once (well before the 5 s timer)."""
    context = current() if inherited else configure(persistent, volatile, namespace=namespace)
    context.stats.add("probe_worker", 7)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_short_multiprocessing_worker_publishes_at_exit(
        tmp_path: Path, memcached_server: Any, namespace: str, method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    persistent = f"sqlite:///{tmp_path / 'mp.sqlite3'}"
    context = configure(persistent, memcached_server.url, namespace=namespace)
    if method == "fork" and context.sweeper is not None:
        # no parent thread inside sqlite while it forks: a child that inherits one of sqlite's
        # mutexes held hangs in its first connect (a hazard of its own, not of the statistics)
        context.sweeper.stop()
        context.sweeper._thread.join(10)
    # a fork worker inherits this context; the others configure their own (a new interpreter)
    worker = multiprocessing.get_context(method).Process(
        target=_count_in_worker, args=(persistent, memcached_server.url, namespace, method == "fork"))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    published = collect(context)
    assert published.totals.get("probe_worker") == 7, published.processes
    assert any(p["process"].endswith(f":{worker.pid}") for p in published.processes), published.processes


def _configure_worker(persistent: str, volatile: str, namespace: str) -> None:
    configure(persistent, volatile, namespace=namespace)


def _count_in_pool(amount: int) -> int:
    current().stats.add("probe_pool", amount)
    return os.getpid()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_of_a_pool_closed_and_joined_publish_their_counts(
        tmp_path: Path, memcached_server: Any, namespace: str, method: str) -> None:
    """``close()`` then ``join()``: each worker exits (not by SIGTERM) and publishes what it counted,
    which the docs advise before leaving ``with Pool() as pool:`` (whose ``terminate()`` loses it)."""
    persistent = f"sqlite:///{tmp_path / 'pool.sqlite3'}"
    context = configure(persistent, memcached_server.url, namespace=namespace)
    if method == "fork" and context.sweeper is not None:
        context.sweeper.stop()  # no parent thread inside sqlite while it forks (see above)
        context.sweeper._thread.join(10)
    start = multiprocessing.get_context(method)
    # a fork worker inherits this context; a spawned one configures its own
    initializer = None if method == "fork" else _configure_worker
    with start.Pool(2, initializer, (persistent, memcached_server.url, namespace)) as pool:
        workers = set(pool.map(_count_in_pool, [1, 10, 100, 1000], chunksize=1))
        pool.close()
        pool.join()
    published = collect(context)
    assert published.totals.get("probe_pool") == 1111, published.processes
    assert {int(p["process"].rsplit(":", 1)[1]) for p in published.processes} >= workers


def test_statistics_reads_are_not_counted_as_quorum_reads(tmp_path: Path, namespace: str) -> None:
    """On a replicated memcached, publishing (the index and its members read) and `dal stats`
    (``collect``) read through the quorum: never counted as the application's reads."""
    with memcached_servers(tmp_path, 2) as pair:
        hosts = ",".join(f"{server.host}:{server.port}" for server in pair)
        volatile = f"memcached://{hosts}?replicas=2"
        persistent = f"sqlite:///{tmp_path / 'quorum.sqlite3'}"
        first = configure(persistent, volatile, namespace=namespace)
        first.stats.add("probe", 1)
        second = configure(persistent, volatile, namespace=namespace)  # `first` publishes as it stops
        second.stats.add("probe", 1)
        assert second.publisher is not None
        second.publisher.flush()  # reads the index's members (first's) to enlist
        for _ in range(3):
            published = collect(second, reader=True)
        assert published.totals.get("probe") == 2
        counters = second.stats.snapshot()
        quorum = {name: amount for name, amount in counters.items() if name.startswith("quorum_")}
        assert not any(quorum.values()), quorum
        assert not any("replicated cache reads" in line for line in report(second, published, None))


def test_a_replaced_context_publishes_its_last_counts(tmp_path: Path, memcached_server: Any,
                                                     namespace: str) -> None:
    persistent = f"sqlite:///{tmp_path / 'close.sqlite3'}"
    first = configure(persistent, memcached_server.url, namespace=namespace)
    first.stats.add("probe", 5)  # within the publish interval: no tick published it
    configure(persistent, memcached_server.url, namespace=f"{namespace}other")  # closes `first`
    reader = configure(persistent, memcached_server.url, namespace=namespace)
    assert collect(reader).totals.get("probe") == 5


def test_contexts_of_one_process_publish_side_by_side(tmp_path: Path, memcached_server: Any,
                                                      namespace: str) -> None:
    persistent = f"sqlite:///{tmp_path / 'two.sqlite3'}"
    first = configure(persistent, memcached_server.url, namespace=namespace)
    first.stats.add("probe_first", 5)
    assert first.publisher is not None
    first.publisher.flush()
    second = configure(persistent, memcached_server.url, namespace=namespace)
    second.stats.add("probe_second", 1)
    assert second.publisher is not None
    second.publisher.flush()
    published = collect(second)
    assert (published.totals.get("probe_first"), published.totals.get("probe_second")) == (5, 1)
    # `dal stats` still counts processes, and says when one published for several contexts
    assert "  processes reporting: 1 (2 contexts)" in report(second, published, None)


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "counting"])
def test_a_live_process_stays_listed_past_the_ttl(tmp_path: Path, memcached_server: Any, namespace: str,
                                                  monkeypatch: pytest.MonkeyPatch, busy: bool) -> None:
    """Idle (nothing new to publish) or counting now and then (a new snapshot every 0.6 s, so the
    index entry must still be rewritten before it expires): listed throughout."""
    monkeypatch.setattr(dal.cache.stats, "PUBLISH_TTL", 2)  # stands for the day
    monkeypatch.setattr(dal.cache.stats, "PUBLISH_INTERVAL", 0.2)  # stands for the 5 s timer
    context = configure(f"sqlite:///{tmp_path / 'idle.sqlite3'}", memcached_server.url, namespace=namespace)
    context.stats.add("probe", 42)
    assert context.publisher is not None
    context.publisher.flush()
    deadline = time.monotonic() + 4.5  # more than twice the TTL
    counted = time.monotonic()
    while time.monotonic() < deadline:
        if busy and time.monotonic() - counted >= 0.6:  # a new snapshot every few ticks
            context.stats.add("probe", 1)
            counted = time.monotonic()
        assert (collect(context).totals.get("probe") or 0) >= 42
        time.sleep(0.05)  # often: without the index touched, it lapses for up to a tick


def test_the_index_drops_snapshots_that_expired(tmp_path: Path, memcached_server: Any, namespace: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    persistent = f"sqlite:///{tmp_path / 'prune.sqlite3'}"
    gone = configure(persistent, memcached_server.url, namespace=namespace)
    gone.stats.add("probe", 1)
    assert gone.publisher is not None
    gone.publisher.flush()
    kept = configure(persistent, memcached_server.url, namespace=namespace)  # stops `gone`
    prefix = gone.keys.published_stats()
    index = gone.volatile.get(prefix + "index")
    assert index is not None and len(json.loads(index)) == 1
    for member in json.loads(index):
        gone.volatile.delete(prefix + member)  # as if it expired
    kept.stats.add("probe", 2)
    assert kept.publisher is not None
    kept.publisher.flush()
    published = collect(kept)
    assert [p["counters"]["probe"] for p in published.processes] == [2]
    raw = kept.volatile.get(prefix + "index")
    assert raw is not None and len(json.loads(raw)) == 1


def _dal_stats(tmp_path: Path, persistent: str, volatile: str, namespace: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    result = subprocess.run([sys.executable, "-m", "dal", "stats", "--persistent", persistent,
                             "--volatile", volatile, "--namespace", namespace], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if "processes reporting" in line]


def test_dal_stats_is_not_left_behind_as_a_reporting_process(tmp_path: Path, memcached_server: Any,
                                                             namespace: str) -> None:
    """No application process: each run counts itself alone, and nothing of it stays published."""
    persistent = f"sqlite:///{tmp_path / 'polled.sqlite3'}"
    reader = configure(persistent, memcached_server.url, namespace=namespace)  # creates the file
    first = _dal_stats(tmp_path, persistent, memcached_server.url, namespace)
    second = _dal_stats(tmp_path, persistent, memcached_server.url, namespace)
    assert first == second == ["  processes reporting: 1"]
    assert collect(reader, reader=True).processes[:-1] == []  # none but the reader's own


def test_a_withdrawn_publisher_removes_its_snapshot_and_publishes_no_more(
        tmp_path: Path, memcached_server: Any, namespace: str) -> None:
    """What a `dal stats --demo` long enough for the timer to publish leaves: nothing."""
    persistent = f"sqlite:///{tmp_path / 'withdrawn.sqlite3'}"
    shown = configure(persistent, memcached_server.url, namespace=namespace)
    shown.stats.add("probe", 3)
    assert shown.publisher is not None
    shown.publisher.flush()  # as the timer would
    assert collect(shown).totals.get("probe") == 3
    shown.publisher.withdraw()
    shown.stats.add("probe", 1)
    shown.publisher.flush()  # as at exit: publishes nothing now
    assert collect(shown).processes == []
    # the reader's own counters are added in memory, once
    published = collect(shown, reader=True)
    assert (len(published.processes), published.totals.get("probe")) == (1, 4)


@pytest.fixture(scope="module")
def demo_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dump of the demo's data (its run on the process-local cache publishes nothing)."""
    where = tmp_path_factory.mktemp("admin")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    for command in (["demo", "--count", "2", "--erd", ""], ["dump", "-o", "demo.json"]):
        done = subprocess.run([sys.executable, "-m", "dal", *command], cwd=where, env=environment,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    return where / "demo.json"


@pytest.mark.parametrize("command", [
    ["migrate"], ["migrate", "--dry-run"], ["check"], ["check", "--repair"], ["dump", "-o", "out.json"],
    ["load", "{dump}", "--replace"], ["copy", "{source}", "{destination}"]], ids=" ".join)
def test_admin_commands_publish_no_statistics(tmp_path: Path, memcached_server: Any, namespace: str,
                                              demo_dump: Path, command: list[str]) -> None:
    """No application process: a run left published would count in ``dal stats`` as one more process
    reporting, for a day, its counters summed in (the demo's data makes each count something)."""
    source = f"sqlite:///{tmp_path / 'admin.sqlite3'}"
    destination = f"sqlite:///{tmp_path / 'copied.sqlite3'}"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    stores = ["--persistent", source, "--namespace", namespace]

    def dal_(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "dal", *args], cwd=tmp_path, env=environment,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr

    # the cache's journal then holds the load's invalidations, which the commands read (and count)
    dal_("load", str(demo_dump), *stores, "--volatile", memcached_server.url)
    reader = configure(destination if command[0] == "copy" else source, memcached_server.url,
                       namespace=namespace)
    before = collect(reader, reader=True).processes[:-1]  # none but the reader's own
    names = {"dump": str(demo_dump), "source": source, "destination": destination}
    dal_(*(part.format(**names) for part in command), *stores, "--volatile", memcached_server.url)
    assert collect(reader, reader=True).processes[:-1] == before == []


def test_dal_stats_on_a_memcached_that_is_down_names_the_failure(tmp_path: Path) -> None:
    """Its first call fails quietly (withdrawing what it never published); the read skipped after it
    says why the server is skipped, not only that it failed a moment ago."""
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    persistent = f"sqlite:///{tmp_path / 'down.sqlite3'}"
    configure(persistent, "memory://", namespace="down")  # creates the file
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    result = subprocess.run([sys.executable, "-m", "dal", "stats", "--persistent", persistent, "--volatile",
                             f"memcached://127.0.0.1:{port}"], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "ConnectionRefusedError" in result.stderr, result.stderr


#: an application run in a container restarted in place: the same host name, pid 1 at every start
AS_PID_1 = """
import os, sys
os.getpid = lambda: 1
from dal import configure
configure(sys.argv[1], sys.argv[2], namespace=sys.argv[3]).stats.add("probe", int(sys.argv[4]))
"""


def test_a_process_with_the_pid_of_an_earlier_one_keeps_its_snapshot(
        tmp_path: Path, memcached_server: Any, namespace: str) -> None:
    persistent = f"sqlite:///{tmp_path / 'pid1.sqlite3'}"
    reader = configure(persistent, memcached_server.url, namespace=namespace)  # creates the file
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    for amount in ("10", "5"):  # each publishes at exit, under host:1
        done = subprocess.run([sys.executable, "-c", AS_PID_1, persistent, memcached_server.url, namespace,
                               amount], env=environment, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stderr
    published = collect(reader, reader=True)
    assert sorted(p["counters"].get("probe", 0) for p in published.processes) == [0, 5, 10]
    assert published.totals.get("probe") == 15
    assert "  processes reporting: 3" in report(reader, published, None)  # the two runs, and the reader


def test_the_index_stays_bounded_and_never_drops_what_it_lists(
        tmp_path: Path, memcached_server: Any, namespace: str) -> None:
    """An index of snapshots just under memcached's 1 MiB item limit (as many short processes of one
    day leave it): the next publishes neither make it outgrow the limit (the refused write would
    delete it, and every earlier snapshot with it) nor forget the newest."""
    persistent = f"sqlite:///{tmp_path / 'bound.sqlite3'}"
    reader = configure(persistent, memcached_server.url, namespace=namespace)
    assert reader.publisher is not None
    reader.publisher.withdraw()
    prefix = reader.keys.published_stats()
    earlier = [f"{'earlier-process-' * 60}:{n:05d}:1" for n in range(1000)]  # long names: fewer keys
    started = time.time() - 3600
    for n, name in enumerate(earlier):  # the oldest first
        snapshot = {"process": name[:-2], "context": 1, "published": started + n, "counters": {"probe": 1}}
        assert reader.volatile.set(prefix + name, json.dumps(snapshot).encode(), 600)
    padding = (1024 * 1024 - 900) - len(json.dumps(sorted(earlier)))  # just under what memcached takes
    earlier.append("x" * (padding - 4))
    assert reader.volatile.set(prefix + earlier[-1], json.dumps(
        {"process": "x", "context": 1, "published": started, "counters": {"probe": 1}}).encode(), 600)
    assert reader.volatile.set(prefix + "index", json.dumps(sorted(earlier)).encode(), 600)
    for run in range(1, 41):  # 40 more contexts publish (each of their names makes it ~30 bytes longer)
        context = configure(persistent, memcached_server.url, namespace=namespace)
        context.stats.add("probe_new", 1)
        assert context.publisher is not None
        context.publisher.flush()
        raw = reader.volatile.get(prefix + "index")
        assert raw is not None, f"the index was deleted at publish {run}"
        assert collect(reader).totals.get("probe_new") == run
    assert raw is not None and len(raw) <= dal.cache.stats.INDEX_BYTES
    listed = json.loads(raw)
    kept = [name for name in earlier if name in listed]
    assert kept and kept == earlier[-1 - len(kept):-1]  # the newest of them (not the oldest padding)


@pytest.mark.redis
def test_published_statistics_outlive_a_restart_of_the_redis_cache(
        tmp_path: Path, own_redis: Any, namespace: str) -> None:
    """The clear of a restarted server (its entries may predate deletes it had confirmed) keeps the
    published snapshots: they hold no cached data, so none can be stale."""
    persistent = f"sqlite:///{tmp_path / 'restart.sqlite3'}"
    first = configure(persistent, own_redis.url, namespace=namespace)
    assert first.sweeper is not None and first.publisher is not None
    first.sweeper.sweep.catch_up()  # marks this start of the server as the namespace's
    first.stats.add("probe", 1)
    first.publisher.flush()
    first.close()
    redis.Redis(host=own_redis.host, port=own_redis.port).save()
    own_redis.kill()
    restarted = start_redis(own_redis.workdir, port=own_redis.port)  # from its snapshot
    try:
        second = configure(persistent, restarted.url, namespace=namespace)  # as a new process
        assert second.sweeper is not None
        second.sweeper.sweep.catch_up()
        assert second.stats["object_restart_clears"] == 1  # premise: the restart cleared the namespace
        assert collect(second).totals.get("probe") == 1
        second.close()
    finally:
        restarted.stop()


@pytest.mark.redis
def test_statistics_reads_are_not_counted_as_hits_on_redis(
        tmp_path: Path, redis_server: Any, namespace: str) -> None:
    """``?hits=1`` counts the application's hits: publishing and `dal stats` read without counting."""
    persistent = f"sqlite:///{tmp_path / 'hits.sqlite3'}"
    volatile = f"{redis_server.url}?hits=1"
    for amount in (1, 2):  # the second reads the index and the first's snapshot to enlist
        context = configure(persistent, volatile, namespace=namespace)
        context.stats.add("probe", amount)
        assert context.publisher is not None
        context.publisher.flush()
    for _ in range(3):
        assert collect(context).totals.get("probe") == 3
    listed = context.volatile.list_entries(context.keys.published_stats())  # type: ignore[attr-defined]
    assert len(listed) == 3 and [entry.hits for entry in listed] == [0, 0, 0], listed
