"""Bounded resources and forked processes: what a long-running or forking process keeps.

Threads that end give back their SQLite connection and their statistics dict; the SQLite store's
record of its own commits and the ``memory://`` cache's expired entries stay bounded however long
a process runs; a forked child neither deadlocks on the backend registry's lock nor inherits (and
publishes again) its parent's statistics.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dal.backends
import dal.cache.stats
from dal.backends import open_persistent, open_volatile
from dal.backends.base import Put
from dal.backends.memory import MemoryCache, MemoryStore
from dal.backends.memory_lru import ENTRY_OVERHEAD
from dal.backends.sqlite import SqliteStore
from dal.backends.url import StoreURL, parse_url
from dal.cache.leases import Stats
from dal.cache.stats import collect
from dal.config import configure, current

#: the most own commits a SQLite store records between two looks (dal.backends.sqlite.OWN_LIMIT)
OWN_BOUND = 1024
fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def open_sqlite(path: Path) -> SqliteStore:
    return SqliteStore.from_url(parse_url(f"sqlite:///{path}"))


def descriptors_on(path: Path) -> int:
    """Count this process's file descriptors open on the database file or its WAL and shared memory."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        if target.startswith(str(path)):
            count += 1
    return count


def run_threads(count: int, work: Any, batch: int = 50) -> None:
    """Run ``work()`` in ``count`` short-lived threads, ``batch`` at a time."""
    for start in range(0, count, batch):
        threads = [threading.Thread(target=work) for _ in range(min(batch, count - start))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def child_answer(pid: int, read_end: int, seconds: float = 10.0) -> bytes:
    """Return what a forked child wrote to ``read_end``; kill it and fail when it hangs."""
    waiting = select.poll()  # not select.select: a process with 1,024 descriptors open cannot use it
    waiting.register(read_end, select.POLLIN)
    if not waiting.poll(seconds * 1000):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail(f"the forked child hung for {seconds} s (a lock inherited held?)")
    answer = os.read(read_end, 4096)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return answer


def in_child(work: Callable[[], bytes], seconds: float = 10.0) -> bytes:
    """Fork; return what ``work`` returned in the child (kill it and fail when it hangs)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write_end, work())
        finally:
            os._exit(0)
    os.close(write_end)
    return child_answer(pid, read_end, seconds)


# --- 13: threads that end release their share ---------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_sqlite_threads_that_end_close_their_connections(tmp_path: Path) -> None:
    path = tmp_path / "threads.sqlite3"
    store = open_sqlite(path)
    assert store.commit([], [Put("k", b"v")]).ok
    before = descriptors_on(path)

    def work() -> None:
        assert store.get("k") is not None
        assert store.commit([], [Put("k", b"w")]).ok

    run_threads(100, work, batch=20)
    # SQLite defers closing a file another connection of the process holds a lock on (POSIX locks
    # are per process), and reuses such a descriptor for the next connection: what stays open is
    # bounded by the threads alive at once (20 here), never by the threads that ever ran
    peak = descriptors_on(path)
    assert peak <= before + 2 * 20, peak
    run_threads(900, work, batch=20)
    assert descriptors_on(path) <= before + 2 * 20, "every ended thread's connection must be released"
    assert len(store._connections) == 1  # the main thread's
    assert store.get("k") is not None  # the main thread's own connection still works
    store.close()
    assert descriptors_on(path) == 0


def test_sqlite_survives_many_short_threads_under_a_low_descriptor_limit(tmp_path: Path) -> None:
    script = (
        "import resource, sys, threading\n"
        "from dal.backends.sqlite import SqliteStore\n"
        "from dal.backends.url import parse_url\n"
        "from dal.backends.base import Put\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
        "store = SqliteStore.from_url(parse_url('sqlite:///' + sys.argv[1]))\n"
        "store.commit([], [Put('k', b'v')])\n"
        "failures = []\n"
        "def work():\n"
        "    try:\n"
        "        store.get('k')\n"
        "    except Exception as exc:\n"
        "        failures.append(exc)\n"
        "for _ in range(20):\n"
        "    threads = [threading.Thread(target=work) for _ in range(30)]\n"
        "    [t.start() for t in threads]\n"
        "    [t.join() for t in threads]\n"
        "print(len(failures), failures[:1])\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "limit.sqlite3")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("0 "), done.stdout


def test_statistics_of_ended_threads_are_kept_in_a_shared_total() -> None:
    stats = Stats()
    stats.add("main")

    def work() -> None:
        stats.add("events")
        stats.add("seconds", 0.5)

    run_threads(1000, work)
    assert stats.snapshot() == {"main": 1, "events": 1000, "seconds": 500.0}
    assert len(stats._all) <= 1, "an ended thread's counters must be folded, not kept per thread"


def test_statistics_stay_exact_while_threads_end_during_snapshots() -> None:
    stats = Stats()
    done = threading.Event()
    seen: list[float] = []

    def snapshots() -> None:
        while not done.is_set():
            seen.append(stats["events"])
            time.sleep(0.0002)

    watcher = threading.Thread(target=snapshots)
    watcher.start()
    run_threads(2000, lambda: stats.add("events"), batch=100)
    done.set()
    watcher.join()
    assert stats["events"] == 2000
    assert all(value <= 2000 for value in seen), "a dict being folded must not count twice"
    assert seen == sorted(seen), "a dict being folded must not be missed"
    assert len(stats._all) <= 1


# --- 14: bounded growth over a long run ---------------------------------------------------


def test_sqlite_record_of_its_own_commits_stays_bounded(tmp_path: Path) -> None:
    """Paired with memcached, nobody calls change_token() after the first look."""
    store = open_sqlite(tmp_path / "own.sqlite3")
    store.change_token()  # the one look a Context takes when it opens
    sizes = []
    for round_ in range(6):
        for n in range(500):
            assert store.commit([], [Put(f"k{round_}/{n}", b"v")]).ok
        sizes.append(store._changes.own)
    assert max(sizes) <= OWN_BOUND, sizes
    # still right afterwards: own commits do not move the token, another connection's do
    after_overflow = store.change_token()
    assert store.commit([], [Put("mine", b"v")]).ok
    assert store.change_token() == after_overflow
    other = open_sqlite(tmp_path / "own.sqlite3")
    assert other.commit([], [Put("theirs", b"v")]).ok
    assert store.change_token() != after_overflow


def test_sqlite_record_of_its_own_commits_exact_below_the_bound(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path / "exact.sqlite3")
    token = store.change_token()
    for n in range(999):
        assert store.commit([], [Put(f"k{n}", b"v")]).ok
    assert store.change_token() == token  # all ours: nothing to flush
    assert store._changes.own == 0


def test_memory_cache_drops_expired_entries_nobody_reads() -> None:
    cache = MemoryCache(StoreURL("memory"))
    # a TTL far longer than the loop takes on a loaded machine: none may expire before the count
    for n in range(5000):
        assert cache.set(f"query/{n}", b"result", 3)
        assert cache.set(f"version/{n}", b"token", 3)
    assert len(cache._slots) == 10_000
    time.sleep(3.1)
    assert cache.set("later", b"x", 60)  # any later use drops what expired
    assert len(cache._slots) == 1
    assert cache.total_size == len("later") + 1 + ENTRY_OVERHEAD


def test_memory_cache_stays_flat_over_a_long_run() -> None:
    """20 rounds of 500 short-lived entries, each key also rewritten: what is held never grows."""
    cache = MemoryCache(StoreURL("memory"))
    held, bookkeeping = [], []
    for round_ in range(20):
        for n in range(500):
            cache.set(f"r{round_}/{n}", b"v" * 10, 0.05)
            cache.set(f"r{round_}/{n}", b"w" * 10, 0.05)  # an overwrite leaves a stale deadline behind
            cache.set("hot", b"h", 600)  # one long-lived key rewritten all the time
        held.append(len(cache._slots))
        bookkeeping.append(len(getattr(cache, "_deadlines", ())))
        time.sleep(0.06)
    assert max(held) <= 2 * 500 + 1, held
    assert max(bookkeeping) <= 2 * max(held) + 65, bookkeeping
    cache.get("hot")
    assert len(cache._slots) == 1 and cache.total_size == len("hot") + 1 + ENTRY_OVERHEAD


def test_sqlite_and_memory_pair_stays_flat_over_many_saves(tmp_path: Path) -> None:
    """The embedded default over a long run: 3,000 commits, distinct cached entries expiring."""
    context = configure(f"sqlite:///{tmp_path / 'long.sqlite3'}", f"memory://{uuid.uuid4().hex[:8]}",
                        namespace="long")
    store = context.persistent
    assert isinstance(store, SqliteStore)
    cache = context.volatile
    assert isinstance(cache, MemoryCache)
    recorded = []
    for n in range(3000):
        context.commit([], [Put(f"long/k{n % 50}", b"v")])
        cache.set(f"long/q{n}", b"result", 0.01)
        if n % 500 == 499:
            recorded.append(store._changes.own)
            time.sleep(0.02)
    assert max(recorded) <= OWN_BOUND
    assert len(cache._slots) <= 500 + 1


@pytest.mark.memcached
def test_sqlite_paired_with_memcached_stays_flat_over_many_commits(tmp_path: Path, memcached_server: Any,
                                                                   namespace: str) -> None:
    """With memcached, change_token() is called once, when the context opens, and never again."""
    context = configure(f"sqlite:///{tmp_path / 'paired.sqlite3'}", memcached_server.url, namespace=namespace)
    store = context.persistent
    assert isinstance(store, SqliteStore)
    recorded = []
    for n in range(1500):
        assert context.commit([], [Put(f"{namespace}/k{n % 50}", b"v")], [f"{namespace}/c{n}"]).ok
        if n % 250 == 249:
            recorded.append(store._changes.own)
    assert max(recorded) <= OWN_BOUND, recorded



@pytest.mark.memcached
def test_dal_never_draws_from_the_applications_random_sequence(tmp_path: Path, memcached_server: Any,
                                                                 namespace: str) -> None:
    """A seeded application gets the same numbers whether or not dal's sweeps ran meanwhile: their
    jitter comes from a generator of dal's own, not the global one a background thread would advance."""
    random.seed(20261126)
    expected = [random.random() for _ in range(3)]
    random.seed(20261126)
    context = configure(f"sqlite:///{tmp_path / 'seeded.sqlite3'}", memcached_server.url, namespace=namespace)
    assert context.commit([], [Put(f"{namespace}/k", b"v")], [f"{namespace}/c"]).ok
    time.sleep(1.5)  # three sweep intervals: each tick drew its jitter
    assert [random.random() for _ in range(3)] == expected

# --- 15: fork ------------------------------------------------------------------------------


class _SlowStore:
    """A persistent store whose creation blocks until told to go on (a slow etcd connect)."""

    started = threading.Event()
    go_on = threading.Event()

    @classmethod
    def from_url(cls, url: StoreURL) -> Any:
        cls.started.set()
        cls.go_on.wait(30)
        return MemoryStore.from_url(url)  # not through the registry: its caller holds the registry


@fork_only
def test_forked_child_opens_stores_while_a_parent_thread_creates_a_client(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = dal.backends.backend_class
    monkeypatch.setattr(dal.backends, "backend_class",
                        lambda role, scheme: _SlowStore if scheme == "slow" else real(role, scheme))
    _SlowStore.started.clear()
    _SlowStore.go_on.clear()
    creator = threading.Thread(target=open_persistent, args=("slow://",))
    creator.start()
    try:
        assert _SlowStore.started.wait(10)
        def open_in_child() -> bytes:
            open_volatile("memory://child")
            return b"ok"

        assert in_child(open_in_child, 5.0) == b"ok"
    finally:
        _SlowStore.go_on.set()
        creator.join()


@fork_only
def test_forked_child_gets_a_fresh_registry_lock() -> None:
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with dal.backends._lock:
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(10)
        def open_in_child() -> bytes:
            open_volatile("memory://child-lock")
            return b"ok"

        assert in_child(open_in_child, 5.0) == b"ok"
    finally:
        release.set()
        holder.join()


@fork_only
def test_forked_child_starts_its_statistics_from_zero() -> None:
    stats = Stats()
    stats.add("commits", 100)
    ended = threading.Thread(target=stats.add, args=("commits", 1))
    ended.start()
    ended.join()
    counted, release = threading.Event(), threading.Event()

    def alive_at_the_fork() -> None:
        stats.add("commits", 10)
        counted.set()
        release.wait(30)

    alive = threading.Thread(target=alive_at_the_fork)
    alive.start()
    try:
        assert counted.wait(10)
        def count_in_child() -> bytes:
            empty = stats.snapshot() == {}
            stats.add("commits")
            return f"{empty} {stats.snapshot()}".encode()

        assert in_child(count_in_child).decode() == "True {'commits': 1}"
    finally:
        release.set()
        alive.join()
    assert stats["commits"] == 111  # the parent's own numbers are untouched


@fork_only
def test_forked_child_keeps_its_parents_thread_connections_open(tmp_path: Path) -> None:
    """A parent thread's connection ends with that thread in the child; closing it there could drop
    the child's own locks on the file (POSIX locks are per process), so it is kept, never used."""
    store = open_sqlite(tmp_path / "forked.sqlite3")
    assert store.commit([], [Put("k", b"parent")]).ok
    opened, release = threading.Event(), threading.Event()
    connections: list[Any] = []

    def thread_with_a_connection() -> None:
        assert store.get("k") is not None
        connections.append(store._local.conn)
        opened.set()
        release.wait(30)
        assert store.commit([], [Put("k", b"thread")]).ok  # still usable in the parent

    thread = threading.Thread(target=thread_with_a_connection)
    thread.start()
    try:
        assert opened.wait(10)
        def use_in_child() -> bytes:
            import gc

            gc.collect()
            connections[0].total_changes  # raises ProgrammingError once closed  # noqa: B018
            kept = any(conn is connections[0] for conn in store._inherited)
            written = store.commit([], [Put("k", b"child")]).ok
            return f"{kept} {written}".encode()

        assert in_child(use_in_child) == b"True True"
    finally:
        release.set()
        thread.join()
    entry = store.get("k")
    assert entry is not None and entry.value == b"thread"


@fork_only
@pytest.mark.memcached
def test_forked_children_publish_only_their_own_counters(tmp_path: Path, memcached_server: Any,
                                                         namespace: str) -> None:
    context = configure(f"sqlite:///{tmp_path / 'pub.sqlite3'}", memcached_server.url, namespace=namespace)
    assert context.publisher is not None
    for n in range(100):
        context.commit([], [Put(f"{namespace}/k{n}", b"v")])
    context.publisher.flush()
    children = []
    for _ in range(3):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                child = current()  # reopens this process's own connections
                child.commit([], [Put(f"{namespace}/child{os.getpid()}", b"v")])
                assert child.publisher is not None
                child.publisher.flush()
                os.write(write_end, b"ok")
            finally:
                os._exit(0)
        os.close(write_end)
        children.append((pid, read_end))
    for pid, read_end in children:
        assert child_answer(pid, read_end) == b"ok"
    published = collect(context)
    assert len(published.processes) == 4
    assert published.totals["commits"] == 103, published.totals


@fork_only
@pytest.mark.memcached
def test_a_forked_child_publishes_by_itself_while_it_runs(
        tmp_path: Path, memcached_server: Any, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dal.cache.stats, "PUBLISH_INTERVAL", 0.1)
    context = configure(f"sqlite:///{tmp_path / 'timer.sqlite3'}", memcached_server.url, namespace=namespace)
    context.commit([], [Put(f"{namespace}/parent", b"v")])
    assert context.publisher is not None
    context.publisher.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            current().commit([], [Put(f"{namespace}/child", b"v")])
            time.sleep(1.0)  # the child's own timer publishes meanwhile; it exits without atexit
            os.write(write_end, b"ok")
        finally:
            os._exit(0)
    os.close(write_end)
    assert child_answer(pid, read_end) == b"ok"
    published = collect(context)
    mine = [p for p in published.processes if p["process"].endswith(f":{pid}")]
    assert mine and mine[0]["counters"]["commits"] == 1, published.processes
