"""The replicated memcached (issue 14): three real servers, each entry on its replicas, quorum reads."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from dal.backends import backend_class
from dal.backends.memcached import MemcachedCache
from dal.backends.memcached.fanout import FanOut
from dal.backends.memcached.replicated import ReplicatedCache, ReplicaToken
from dal.backends.url import parse_url
from dal.cache.counters import Stats
from dal.cache.leases import LeasedCache
from dal.cache.signing import Signer
from dal.cache.trust import Trust
from dal.exceptions import BackendError, ConfigurationError
from dal.quorum import Kind, vote
from dal.testing.conformance import VolatileStoreContract
from dal.testing.fixtures import memcached_servers
from dal.testing.servers import RunningServer

pytestmark = pytest.mark.memcached


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[RunningServer]]:
    """Three memcached servers of this test's own: tests kill and pause them."""
    with memcached_servers(tmp_path) as started:
        yield started


@pytest.fixture(scope="module")
def shared_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunningServer]]:
    """Three memcached servers the conformance suite shares (nobody kills them)."""
    with memcached_servers(tmp_path_factory.mktemp("replicated")) as started:
        yield started


class TestReplicatedCacheConformance(VolatileStoreContract):
    """The replicated cache passes every volatile store's conformance test."""

    @pytest.fixture
    def store(self, shared_servers: list[RunningServer]) -> Iterator[ReplicatedCache]:
        cache = open_cache(shared_servers)
        yield cache
        cache.close()

    @pytest.fixture
    def prefix(self, namespace: str) -> str:
        return f"{namespace}/"


def open_cache(servers: list[RunningServer], replicas: int = 3, timeout: float = 2.0) -> ReplicatedCache:
    """A replicated cache on ``servers``. The timeout is long: a killed server refuses at once,
    and a loaded host can hold a live one up for a fraction of a second (0.25 s made its replies
    late, and a set or a count of repairs came out short); a test that pauses one sets its own."""
    hosts = ",".join(f"{server.host}:{server.port}" for server in servers)
    return ReplicatedCache.from_url(parse_url(
        f"memcached://{hosts}?replicas={replicas}&dead_timeout=0.5&timeout={timeout:g}"))


def in_forked_child(check: Callable[[], bool]) -> bool:
    """Run ``check`` in a forked child; return what it returned (False if it raised)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, b"1" if check() else b"0")
        finally:
            os._exit(0)
    os.close(write)
    try:
        return os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)


def name_of(server: RunningServer) -> str:
    return f"{server.host}:{server.port}"


def test_replicas_must_fit_the_servers(servers: list[RunningServer]) -> None:
    with pytest.raises(ConfigurationError, match="replicas"):
        open_cache(servers, replicas=4)
    with pytest.raises(ConfigurationError, match="replicas"):
        open_cache(servers, replicas=0)
    assert open_cache(servers, replicas=3).needed == 2


def test_every_set_lands_on_every_replica(servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers)
    keys = [f"{namespace}/k{n}" for n in range(20)]
    for key in keys:
        assert cache.set(key, key.encode(), 60)
    for server in servers:
        assert cache.server(name_of(server)).get_many(keys) == {key: key.encode() for key in keys}
    assert cache.get_many(keys) == {key: key.encode() for key in keys}
    assert cache.counts["quorum_hits"] == 20


def test_two_replicas_of_three_servers_hold_the_entry_and_the_third_is_not_asked(
        servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers, replicas=2)
    key = f"{namespace}/two"
    assert cache.set(key, b"v", 60)
    holders = set(cache.replicas_of(key))
    (outsider,) = {name_of(server) for server in servers} - holders
    assert {name for name in holders if cache.server(name).get(key) == b"v"} == holders
    assert cache.server(outsider).get(key) is None
    # a different entry on a server that is not a replica of the key is never heard
    assert cache.server(outsider).set(key, b"other", 60)
    assert cache.get(key) == b"v"
    assert cache.counts["quorum_disagreements"] == 0


def test_the_vote_ignores_a_server_that_was_not_asked() -> None:
    outcome = vote(["a", "b", "c"], {"a": b"v", "b": b"v", "x": b"forged"}, 2)
    assert (outcome.kind, outcome.value, outcome.unasked) == (Kind.HIT, b"v", 1)
    outcome = vote(["a", "b", "c"], {"a": b"v", "x": b"v", "y": b"v"}, 2)
    assert outcome.kind is Kind.SHORT


def test_a_read_hits_with_three_or_two_agreeing(servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers, timeout=0.5)  # waited out once per call while a server is paused
    key = f"{namespace}/k"
    assert cache.set(key, b"value", 60)
    assert cache.get(key) == b"value"
    servers[0].pause()  # no reply within the read timeout: two agreeing replies remain
    try:
        assert cache.get(key) == b"value"
        assert cache.get_many([key, f"{namespace}/absent"]) == {key: b"value"}
        assert cache.add(f"{namespace}/lock", b"mine", 10)  # a lock on the two that answer
        assert cache.gets(f"{namespace}/lock")[0] == b"mine"
    finally:
        servers[0].resume()
    assert cache.counts["quorum_hits"] == 3
    assert cache.counts["quorum_misses"] == 1
    assert cache.counts["quorum_disagreements"] == cache.counts["quorum_short_reads"] == 0


def test_a_tampered_replica_is_outvoted_and_repaired(servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers)
    key = f"{namespace}/k"
    assert cache.set(key, b"value", 60)
    tampered = cache.replicas_of(key)[1]
    assert cache.server(tampered).set(key, b"forged", 60)  # straight to that server
    # an entry and another entry: a disagreement, never served; every copy is deleted ...
    assert cache.get(key) is None
    assert cache.counts["quorum_disagreements"] == 1
    assert cache.counts["quorum_repairs"] == 3
    assert all(cache.server(name_of(server)).get(key) is None for server in servers)
    assert cache.get(key) is None
    assert cache.counts["quorum_misses"] == 1
    # ... so the caller's leased fill takes its lease on every replica and rewrites them all
    leased = LeasedCache(cache, Signer(None), Stats())
    assert leased.fetch(key, lambda: b"durable", 60) == b"durable"
    assert all(cache.server(name_of(server)).get(key) is not None for server in servers)
    assert leased.fetch(key, lambda: pytest.fail("served from the cache"), 60) == b"durable"


def test_a_replica_that_missed_is_a_disagreement_and_repaired(
        servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers)
    key = f"{namespace}/k"
    assert cache.set(key, b"value", 60)
    cache.server(cache.replicas_of(key)[2]).delete(key)  # e.g. a server that restarted empty
    assert cache.get(key) is None
    assert cache.counts["quorum_disagreements"] == 1
    assert cache.counts["quorum_repairs"] == 2


def test_one_server_killed_reads_hit_and_locks_acquire(servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers)
    keys = [f"{namespace}/k{n}" for n in range(10)]
    for key in keys:
        assert cache.set(key, b"v" + key.encode(), 60)
    servers[1].kill()
    for _ in range(3):
        assert cache.get_many(keys) == {key: b"v" + key.encode() for key in keys}
        assert cache.get(keys[0]) == b"v" + keys[0].encode()
    assert cache.counts["quorum_short_reads"] == cache.counts["quorum_disagreements"] == 0
    # locks: held on two replicas of three, refused to the next caller, released by cas
    lock = f"{namespace}/lock"
    assert cache.add(lock, b"mine", 10)
    assert not cache.add(lock, b"yours", 10)
    held, token = cache.gets(lock)
    assert held == b"mine" and isinstance(token, ReplicaToken) and len(token.tokens) == 2
    assert cache.cas(lock, b"done", token, 10)
    assert cache.get(lock) == b"done"
    # an invalidation some replica did not take is reported, so the caller resends it
    assert cache.delete_many(keys[:3]) == keys[:3]
    with pytest.raises(BackendError):
        cache.delete(keys[3])
    assert cache.get(keys[3]) is None  # deleted where it was reached: no quorum for the value


def test_a_leased_cache_keeps_hitting_with_one_server_dead(
        servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers)
    leased = LeasedCache(cache, Signer(b"k" * 32), Stats())
    keys = [f"{namespace}/d{n}" for n in range(10)]
    for key in keys:
        assert leased.fetch(key, key.encode, 60) == key.encode()
    servers[2].kill()
    assert leased.get_many(keys) == {key: key.encode() for key in keys}
    fresh = f"{namespace}/fresh"
    assert leased.fetch(fresh, lambda: b"filled", 60) == b"filled"  # the lease is taken on two
    assert leased.get(fresh) == b"filled"


def test_two_servers_dead_reads_are_short_misses(servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers)
    key = f"{namespace}/k"
    assert cache.set(key, b"value", 60)
    servers[0].kill()
    servers[2].kill()
    assert cache.get(key) is None
    assert cache.get_many([key]) == {}
    assert cache.counts["quorum_short_reads"] == 2
    assert cache.gets(key) == (None, None)
    with pytest.raises(BackendError):  # no majority to hold a lock on, or to refuse one
        cache.add(f"{namespace}/lock", b"mine", 10)
    with pytest.raises(BackendError):
        cache.set(key, b"new", 60)


def test_a_lock_taken_by_one_client_is_refused_to_another(
        servers: list[RunningServer], namespace: str) -> None:
    first, second = open_cache(servers), open_cache(servers)
    lock = f"{namespace}/lock"
    assert first.add(lock, b"first", 10)
    assert not second.add(lock, b"second", 10)
    assert second.gets(lock)[0] == b"first"
    assert all(first.server(name_of(server)).get(lock) == b"first" for server in servers)


def test_an_add_taken_on_too_few_replicas_is_rolled_back(
        servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers)
    lock = f"{namespace}/lock"
    one, two, three = cache.replicas_of(lock)
    # another caller's lock already sits on two replicas (its third add lost a race)
    assert cache.server(one).add(lock, b"other", 10)
    assert cache.server(two).add(lock, b"other", 10)
    assert not cache.add(lock, b"mine", 10)
    assert cache.server(three).get(lock) is None  # what this add took is given back
    assert cache.server(one).get(lock) == cache.server(two).get(lock) == b"other"  # the rest untouched
    held, token = cache.gets(lock)
    assert held == b"other" and isinstance(token, ReplicaToken)
    assert {name for name, _ in token.tokens} == {one, two}


def test_a_rollback_never_removes_what_another_caller_put_there(
        servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers)
    lock = f"{namespace}/lock"
    one, two, three = cache.replicas_of(lock)
    assert cache.server(three).set(lock, b"someone else", 10)
    cache._roll_back(lock, b"mine", [three])
    assert cache.server(three).get(lock) == b"someone else"
    assert cache.server(one).get(lock) is None and cache.server(two).get(lock) is None


def test_deletes_reach_every_replica(servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers)
    keys = [f"{namespace}/k{n}" for n in range(30)]
    for key in keys:
        assert cache.set(key, b"v", 60)
    assert cache.delete_many(keys) == []
    cache.delete(keys[0])  # absent everywhere now: not an error
    for server in servers:
        assert cache.server(name_of(server)).get_many(keys) == {}


def test_the_fan_out_makes_its_own_threads_in_a_forked_child() -> None:
    fan_out = FanOut(3)
    calls = {name: functools.partial(str, name) for name in ("a", "b", "c")}
    assert fan_out.run(calls).results == {"a": "a", "b": "b", "c": "c"}  # the parent's pool exists now
    # in the child, the parent's pool threads did not survive the fork
    assert in_forked_child(lambda: fan_out.run(calls, within=2).results == {"a": "a", "b": "b", "c": "c"})
    fan_out.close()


def test_concurrent_fills_and_invalidations_leave_no_stale_entry(
        servers: list[RunningServer], namespace: str) -> None:
    """Readers fill through leases while writers change the durable value and invalidate: once
    quiet, every key reads the durable value (a fill that read an older one never outlives the
    invalidation that followed it)."""
    cache = open_cache(servers)
    leased = LeasedCache(cache, Signer(None), Stats())
    keys = [f"{namespace}/k{n}" for n in range(8)]
    durable = {key: b"0" for key in keys}
    failures: list[BaseException] = []

    def reader(seed: int) -> None:
        try:
            for n in range(150):
                key = keys[(seed * 7 + n) % len(keys)]
                leased.fetch(key, functools.partial(durable.__getitem__, key), 60)
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    def writer(seed: int) -> None:
        try:
            for n in range(60):
                key = keys[(seed + n) % len(keys)]
                durable[key] = str(int(durable[key]) + 1).encode()
                assert not leased.invalidate(key)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    for key in keys:
        assert leased.fetch(key, functools.partial(durable.__getitem__, key), 60) == durable[key]
        assert leased.get(key) in (None, durable[key])


def test_a_reply_with_a_bad_signature_counts_as_no_reply(
        servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers)
    signer = Signer(b"k" * 32)
    cache.verify = lambda key, raw: signer.open(key, raw) is not None
    key = f"{namespace}/k"
    sealed = signer.seal(key, b"Vvalue")
    assert cache.set(key, sealed, 60)
    assert cache.get(key) == sealed
    one, two, three = cache.replicas_of(key)
    moved = signer.seal(f"{namespace}/other", b"Vmoved")  # another key's authentic entry
    assert cache.server(three).set(key, moved, 60)
    # two authentic replies agree: served; the forged copy is no reply, and is deleted
    assert cache.get(key) == sealed
    assert (cache.counts["quorum_rejected"], cache.counts["quorum_disagreements"]) == (1, 0)
    assert cache.server(three).get(key) is None
    # two forged (even identical) copies: one authentic reply is too few
    forged = b"not signed"
    assert cache.server(one).set(key, forged, 60) and cache.server(two).set(key, forged, 60)
    assert cache.get(key) is None
    assert cache.counts["quorum_short_reads"] == 1
    assert cache.server(one).get(key) is None and cache.server(two).get(key) is None
    # unanimous but forged: never served
    for name in (one, two, three):
        assert cache.server(name).set(key, forged, 60)
    assert cache.get(key) is None


def test_one_of_eight_processes_takes_a_lock_with_one_server_dead(
        servers: list[RunningServer], namespace: str) -> None:
    """Single flight across processes: with a server dead, racing adds may all fall short (each
    rolled back); retrying, exactly one process ever holds the lock."""
    servers[0].kill()
    lock = f"{namespace}/lock"
    read, write = os.pipe()
    children = []
    for n in range(8):
        pid = os.fork()
        if pid == 0:  # child: its own client
            outcome = b"?"
            try:
                cache = open_cache(servers)
                for _ in range(200):
                    if cache.add(lock, str(n).encode(), 30):
                        outcome = b"W"
                        break
                    if cache.gets(lock)[0] is not None:
                        outcome = b"L"
                        break
            finally:
                os.write(write, outcome)
                os._exit(0)
        children.append(pid)
    os.close(write)
    outcomes = b""
    while len(outcomes) < 8:
        chunk = os.read(read, 8)
        if not chunk:
            break
        outcomes += chunk
    os.close(read)
    for pid in children:
        os.waitpid(pid, 0)
    assert sorted(outcomes.decode()) == ["L"] * 7 + ["W"]
    winner = open_cache(servers).gets(lock)[0]
    assert winner is not None and winner.isdigit()


# --- selected by URL, and the cache layer over it (trust per server, read around per replica set) ---


def test_the_memcached_url_selects_one_copy_or_replicas() -> None:
    cls = backend_class("volatile", "memcached")
    hosts = "memcached://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"
    for url in (hosts, f"{hosts}?replicas=1"):
        single = cls.from_url(parse_url(url))
        assert type(single) is MemcachedCache
        single.close()
    replicated = cls.from_url(parse_url(f"{hosts}?replicas=3&timeout=0.5"))
    assert isinstance(replicated, ReplicatedCache) and replicated.replicas == 3 and replicated.needed == 2
    replicated.close()
    for bad in ("replicas=4", "replicas=0", "replicas=two"):
        with pytest.raises(ConfigurationError, match="replicas"):
            cls.from_url(parse_url(f"{hosts}?{bad}"))
    with pytest.raises(ConfigurationError, match="replicas"):
        cls.from_url(parse_url("memcached://127.0.0.1:1?replicas=2"))


def test_a_key_is_read_around_only_when_a_quorum_of_its_replicas_is_untrusted(
        servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers)
    stats = Stats()
    trust = Trust(cache.nodes())
    leased = LeasedCache(cache, Signer(b"k" * 32), stats, trust=trust)
    trust.lost.clear()  # caught up (no journal here)
    key = f"{namespace}/k"
    _, two, three = cache.replicas_of(key)
    assert leased.fetch(key, lambda: b"v", 60) == b"v" and leased.get(key) == b"v"
    assert cache.counts is stats and stats["quorum_hits"] >= 1, "the quorum counters are the cache layer's"
    trust.fail([three])
    assert leased.usable(key) and leased.get(key) == b"v", "one untrusted replica of three is outvoted"
    trust.fail([two])
    assert not leased.usable(key) and leased.get(key) is None, "two could agree on a stale entry"


def test_failures_are_told_per_server(servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers)
    trust = Trust(cache.nodes())
    leased = LeasedCache(cache, Signer(b"k" * 32), Stats(), trust=trust)
    trust.lost.clear()
    keys = [f"{namespace}/d{n}" for n in range(5)]
    for key in keys:
        leased.fetch(key, key.encode, 60)
    dead = f"{servers[1].host}:{servers[1].port}"
    servers[1].kill()
    assert leased.get_many(keys) == {key: key.encode() for key in keys}
    assert set(trust.lost) == {dead}, "only the dead server is untrusted"
    trust.lost.clear()
    assert leased.invalidate(*keys) == keys, "every key has a replica on the dead server"
    assert set(trust.lost) == {dead}
    assert leased.probe(f"{namespace}/probe/", cache.nodes()) == set(cache.nodes()) - {dead}


def test_a_fill_under_way_is_not_repaired(servers: list[RunningServer], namespace: str) -> None:
    """A lease marker on some replicas only (its owner adding or writing one replica after the
    other): the read is a miss, but nothing is deleted, so the owner's cas completes."""
    cache = open_cache(servers)
    leased = LeasedCache(cache, Signer(b"k" * 32), Stats())
    key = f"{namespace}/filling"
    lease = leased._take_lease(key)
    assert lease is not None
    one, two, _ = cache.replicas_of(key)
    assert cache.server(one).cas(key, leased.signer.seal(key, b"Vhalf"), cache.server(one).gets(key)[1], 60)
    assert leased.get(key) is None  # a value and a lease marker: a disagreement, a miss
    assert cache.counts["quorum_disagreements"] == 1 and cache.counts["quorum_repairs"] == 0
    assert cache.server(two).get(key) is not None, "the lease marker was left in place"


def test_a_forked_child_reads_on_connections_of_its_own(servers: list[RunningServer], namespace: str) -> None:
    cache = open_cache(servers)
    key = f"{namespace}/k"
    assert cache.set(key, b"v", 60)
    assert cache.get(key) == b"v"  # this thread's connections exist now
    reader = cache._reader
    parent_connections = dict(reader._local.connections)

    def child_reads_on_its_own() -> bool:  # the parent's streams are not the child's to read
        value = cache.get(key)
        return value == b"v" and all(reader._local.connections[name] is not connection
                                     for name, connection in parent_connections.items())

    assert in_forked_child(child_reads_on_its_own)
    assert cache.get(key) == b"v" and dict(reader._local.connections) == parent_connections
    cache.close()


@pytest.mark.serial  # a 1 s timeout on 50,000 keys: live servers too slow on a loaded machine
def test_a_read_too_large_for_a_paused_servers_buffers_ends_within_its_timeout(
        servers: list[RunningServer], namespace: str) -> None:
    """A paused server stops reading: a request larger than the socket buffers cannot be sent whole;
    the read does not wait past its deadline for it, and the other replicas' answers still count.
    (A timeout of 1 s: a live server takes a while to look up 50,000 keys on a busy machine.)"""
    cache = open_cache(servers, timeout=1.0)
    keys = [f"{namespace}/{'k' * 200}{number}" for number in range(50_000)]  # about 11 MB of request
    assert cache.set(keys[0], b"v", 60)
    for key in keys:  # hashed now (the replicas of a key are remembered), so the read alone is timed
        cache.replicas_of(key)
    servers[2].pause()
    try:
        started = time.monotonic()
        found = cache.get_many(keys)
        took = time.monotonic() - started
    finally:
        servers[2].resume()
    assert found == {keys[0]: b"v"}, "two replicas of three agreed; the paused one did not reply"
    # the paused server is given up 1 s after it last took some of the request; building the
    # request and reading the live servers' answers take the rest
    assert took < 5.0, f"the read took {took:.2f} s"
    assert cache.counts["quorum_hits"] == 1 and cache.counts["quorum_misses"] == len(keys) - 1
    cache.close()


def test_the_last_statistics_flush_at_exit_reaches_the_replicas(servers: list[RunningServer],
                                                               namespace: str, tmp_path: Path) -> None:
    """At interpreter exit no new thread can start; the statistics' last flush (an atexit hook)
    still writes to every replica, one after another, instead of failing with a traceback."""
    hosts = ",".join(name_of(server) for server in servers)
    script = (f"import dal\n"
              f"context = dal.configure('sqlite:///{tmp_path / 'dal.sqlite3'}', "
              f"'memcached://{hosts}?replicas=3', namespace='{namespace}')\n"
              f"context.stats.add('object_hits', 3)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    cache = open_cache(servers)
    published = [server for server in servers
                 if any(namespace in key for key in _keys_on(server))]
    cache.close()
    assert len(published) == 3, "the flush wrote its statistics to every replica"


def _keys_on(server: RunningServer) -> list[str]:
    """The keys one memcached server holds (``lru_crawler metadump hash``: the walk that skips no
    entry, see dal/backends/memcached/dumps.py)."""
    with socket.create_connection((server.host, server.port), timeout=5) as connection:
        connection.sendall(b"lru_crawler metadump hash\r\n")
        answer = b""
        deadline = time.monotonic() + 5
        while not answer.endswith(b"END\r\n") and time.monotonic() < deadline:
            answer += connection.recv(65536)
    return [unquote(line.split(b" ", 1)[0].removeprefix(b"key=").decode())
            for line in answer.splitlines() if line.startswith(b"key=")]
