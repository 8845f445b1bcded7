"""A Redis cache server restarted with its data serves nothing invalidated before its restart.

A redis-server that restarts from an RDB snapshot (Redis's default persistence; an AOF not synced at
every write does the same) comes back with entries whose deletes it had confirmed after the
snapshot: a save's invalidation reached the old start of the server, and the new one holds the
entry again. dal notices the restart by the server's ``run_id`` (dal/backends/redis/restarts.py):
a process that was running reads around the server until a catch-up removed the namespace's
entries, and a process started afterwards does that catch-up before its first read
(``RedisCache.settle_restart``). Each scenario checks its premise, that the restarted server holds
the stale entry when the read comes, so the test can fail; the saves come from another process, so
the reading process's monotonic reads (which refuse copies older than its own saves) play no part.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from query_hybrids import Item

from dal import configure
from dal.exceptions import BackendError
from dal.testing.fixtures import start_or_skip
from dal.testing.servers import RunningServer, start_redis

pytestmark = [pytest.mark.faults, pytest.mark.redis]

HERE = Path(__file__).resolve().parent.parent
ACT = """
import sys
from dal import configure
from dal.exceptions import BackendError
from query_hybrids import Item
context = configure(sys.argv[1], sys.argv[2], namespace=sys.argv[3])
if sys.argv[4] == "create":
    item = Item(data={"name": "counted", "size": 0})
    item.save()
    print(item.guid)
elif sys.argv[4] == "grow":
    item = Item(sys.argv[5])
    item.size += 1
    item.save()
else:
    print(Item(sys.argv[5]).size, context.stats["object_hits"])
"""
#: seconds a process may take to trust the restarted server again (sweeps run every 0.5 s)
TRUSTED_WITHIN = 10.0


@pytest.fixture
def cache_servers(tmp_path: Path) -> Iterator[list[RunningServer]]:
    """A redis-server of this test alone (no AOF; the test takes its snapshot); the list holds it and
    its restart, each stopped at the end."""
    servers = [start_or_skip("redis", lambda: start_redis(tmp_path / "cache"))]
    yield servers
    for server in servers:
        server.stop()


def act(store: str, cache: str, namespace: str, *args: str) -> list[str]:
    """Run one action in a process of its own; return the words it printed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    done = subprocess.run([sys.executable, "-c", ACT, store, cache, namespace, *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def restart_from_snapshot(servers: list[RunningServer], guid: str) -> RunningServer:
    """Kill -9 the cache server and start it again on its directory, from its snapshot; check that
    it holds the item's cached document again (the entry a save invalidated after the snapshot)."""
    servers[-1].kill()
    server = start_redis(servers[-1].workdir, port=servers[-1].port)
    servers.append(server)
    assert stale_entries(server, guid), "the restarted server holds no entry of the item: nothing to test"
    return server


def stale_entries(server: RunningServer, guid: str) -> list[bytes]:
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=5)
    try:
        return list(client.scan_iter(match=f"*o/qitem/{guid}"))
    finally:
        client.close()


def snapshot(server: RunningServer) -> None:
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=5)
    try:
        client.save()  # what a server with `save` rules does from time to time
    finally:
        client.close()


def test_a_running_process_reads_nothing_a_restarted_cache_brought_back(
        tmp_path: Path, namespace: str, cache_servers: list[RunningServer]) -> None:
    store, cache = f"sqlite:///{tmp_path / 'store.sqlite3'}", cache_servers[0].url
    context = configure(store, cache, namespace=namespace)
    guid = act(store, cache, namespace, "create")[0]
    assert Item(guid).size == 0 and Item(guid).size == 0
    assert context.stats["object_hits"] == 1  # cached here, then served from the cache
    # the namespace's first catch-up found no mark of this server: it cleared, but no restart is counted
    assert context.stats["object_restart_clears"] == 0
    # another item, cached by another process only: this one never saw it, so nothing but the
    # catch-up's clear keeps it from reading the entry the restart brings back
    unseen = act(store, cache, namespace, "create")[0]
    assert act(store, cache, namespace, "read", unseen) == ["0", "0"]  # cached
    snapshot(cache_servers[0])
    act(store, cache, namespace, "grow", guid)  # its invalidation confirmed by the server
    act(store, cache, namespace, "grow", unseen)
    restarted = restart_from_snapshot(cache_servers, guid)
    assert stale_entries(restarted, unseen), "the restarted server holds no entry of the other item"
    assert Item(guid).size == 1, "a running process read an entry invalidated before the restart"
    deadline = time.monotonic() + TRUSTED_WITHIN
    while context.objects.trust.lost and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not context.objects.trust.lost, f"the restarted server was not trusted again in {TRUSTED_WITHIN} s"
    assert context.stats["object_restart_clears"] == 1
    assert Item(unseen).size == 1, "trusted again, the cache served an entry the restart brought back"
    hits = context.stats["object_hits"]
    assert Item(guid).size == 1 and Item(guid).size == 1
    assert context.stats["object_hits"] == hits + 1, "trusted again, the cache serves hits"


def test_a_process_started_after_the_restart_reads_nothing_it_brought_back(
        tmp_path: Path, namespace: str, cache_servers: list[RunningServer]) -> None:
    store, cache = f"sqlite:///{tmp_path / 'store.sqlite3'}", cache_servers[0].url
    guid = act(store, cache, namespace, "create")[0]
    assert act(store, cache, namespace, "read", guid) == ["0", "0"]  # cached
    assert act(store, cache, namespace, "read", guid) == ["0", "1"]  # served from the cache
    snapshot(cache_servers[0])
    act(store, cache, namespace, "grow", guid)
    restart_from_snapshot(cache_servers, guid)
    assert act(store, cache, namespace, "read", guid)[0] == "1", \
        "a process started after the restart read an entry invalidated before it"
    assert act(store, cache, namespace, "read", guid) == ["1", "1"], "the next one is served from the cache"


def test_a_process_that_only_writes_trusts_the_restarted_cache_again(tmp_path: Path, namespace: str) -> None:
    """Redis in both roles, one database: a commit deletes the cache entries it invalidates inside its
    own script, so no cache call of a process that only writes fails after a restart (its statistics
    publisher's would be refused, silently). The refused connection itself stops the trust, and a
    catch-up restores it."""
    server = start_or_skip("redis", lambda: start_redis(tmp_path / "both", appendfsync="always"))
    servers = [server]
    try:
        context = configure(server.url, server.url, namespace=namespace)
        item = Item(data={"name": "first"})
        item.save()
        assert Item(item.guid).size == 0  # read once: this process trusts this start of the server
        server.kill()
        servers.append(start_redis(server.workdir, port=server.port, appendfsync="always"))
        deadline = time.monotonic() + TRUSTED_WITHIN
        while True:
            Item(data={"name": "written"}).save()
            try:
                context.volatile.get(context.keys.cache_root + "probe")
                break
            except BackendError:  # refused: a start of the server this process did not catch up with
                assert time.monotonic() < deadline, f"not trusted again in {TRUSTED_WITHIN} s"
                time.sleep(0.2)
        assert not context.objects.trust.lost
        assert context.stats["object_restart_clears"] == 1
    finally:
        for running in servers:
            running.stop()


def test_clearing_the_namespace_keeps_the_single_flight_locks(
        tmp_path: Path, namespace: str, redis_server: Any) -> None:
    """A catch-up that clears the namespace's entries (here one that finds no mark of the server) keeps
    the locks: they hold no data, and removing one while its holder computes would let other callers
    of a locked dynamic compute it too."""
    context = configure(f"sqlite:///{tmp_path / 'store.sqlite3'}", redis_server.url, namespace=namespace)
    keys, store = context.keys, context.volatile
    trust = context.objects.trust
    # the first catch-up (the background sweep's) must have ended before the entries below are
    # written: one still running would clear them, or mark the server after the delete
    deadline = time.monotonic() + TRUSTED_WITHIN
    while trust.lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not trust.lost and store.get(keys.cache_incarnation()) is not None, "the server was never marked"
    lock, entry = keys.cached_dynamic("qitem", "some-guid", "slow") + "/lock", keys.cached_doc("qitem", "g")
    assert store.set(lock, b"held", 60) and store.set(entry, b"old", 60)
    store.delete(keys.cache_incarnation())  # as if the server had never been checked (or evicted it)
    trust.fail(store.nodes())  # the next sweep catches up, and finds no mark
    deadline = time.monotonic() + TRUSTED_WITHIN
    while trust.lost and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not trust.lost
    assert store.get(entry) is None, "the catch-up did not clear the namespace: the test tests nothing"
    assert store.get(lock) == b"held"
