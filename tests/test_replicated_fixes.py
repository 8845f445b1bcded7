"""The replicated memcached under one bad server: what the journal's sweeps resend, what a paused
server's calls may hold up, and the ``replicas`` option as written."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from race_hybrids import Tally

from dal.backends.memcached import Memcached
from dal.backends.memcached.fanout import FanOut
from dal.backends.memcached.replicated import ReplicatedCache
from dal.backends.url import parse_url
from dal.cache import sweeps as sweeps_module
from dal.config import configure
from dal.exceptions import BackendError, ConfigurationError
from dal.testing.fixtures import memcached_servers
from dal.testing.servers import RunningServer, closed_port


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[RunningServer]]:
    with memcached_servers(tmp_path) as started:
        yield started


def _hosts(servers: list[RunningServer]) -> list[str]:
    return [f"{server.host}:{server.port}" for server in servers]


def _record_deletes(store: ReplicatedCache, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Record, per server, every key the store's deletes send it (and still send them)."""
    sent: dict[str, list[str]] = {}
    for name in store.nodes():
        single = store.server(name)

        def delete_many(keys: list[str], name: str = name,
                        real: Callable[..., Any] = single.delete_many) -> Any:
            sent.setdefault(name, []).extend(keys)
            return real(keys)

        monkeypatch.setattr(single, "delete_many", delete_many)
    return sent


@pytest.mark.memcached
def test_a_sweep_resends_a_dead_replicas_share_to_it_alone(
        tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one replica of three dead, each sweep sends the journal's records to the dead server only:
    the live ones confirmed them once, and their entries stay in use (read as hits)."""
    with memcached_servers(tmp_path, count=2) as live:
        dead = f"127.0.0.1:{closed_port()}"
        url = f"memcached://{','.join(_hosts(live))},{dead}?replicas=3&timeout=0.5&dead_timeout=0.2"
        context = configure(f"sqlite:///{tmp_path / 'db.sqlite3'}", url, namespace=namespace)
        try:
            assert context.sweeper is not None
            context.sweeper.stop()  # the test sweeps by hand
            sweep = context.sweeper.sweep
            store = context.volatile
            assert isinstance(store, ReplicatedCache)
            tallies = [Tally(data={"label": uuid.uuid4().hex[:8]}) for _ in range(5)]
            for tally in tallies:
                tally.save()  # each invalidation fails on the dead server: its record stays
            monkeypatch.setattr(sweeps_module, "GRACE", 0.0)
            sent = _record_deletes(store, monkeypatch)
            assert sweep.sweep()[1] == {dead}  # the first sweep sends every replica its share once
            assert all(sent.get(name) for name in _hosts(live))
            for tally in tallies:
                assert Tally(tally.guid).count == 0  # filled on the two live replicas
            hits = context.stats["object_hits"]
            sent.clear()
            for _ in range(3):
                assert sweep.sweep()[1] == {dead}
            assert set(sent) == {dead}, "the live replicas are not sent the dead one's records again"
            for tally in tallies:
                assert Tally(tally.guid).count == 0
            assert context.stats["object_hits"] == hits + len(tallies), "their entries stayed in use"
        finally:
            context.close()


def _run_beside_a_hanging_server(callers: int) -> list[Any]:
    """Run ``callers`` fan-outs at once to servers a and b, which answer, and c, which hangs (3 threads
    a server); return each one's answers."""
    fan_out = FanOut(3)
    release = threading.Event()
    start = threading.Barrier(callers)
    results: list[Any] = []

    def hang() -> str:
        release.wait(5)
        return "late"

    def caller() -> None:
        start.wait()
        results.append(fan_out.run({"a": functools.partial(str, "a"), "b": functools.partial(str, "b"),
                                    "c": hang}, within=0.5))

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    release.set()
    fan_out.close()
    assert len(results) == callers
    return results


def test_calls_to_a_hanging_server_never_hold_up_another_servers() -> None:
    """Calls to a server that hangs fill only that server's threads: every other server answers each
    caller within its deadline."""
    answered = [set(answers.results) for answers in _run_beside_a_hanging_server(32)]
    assert answered == [{"a", "b"}] * 32, "b never waits behind c's calls"


def test_a_call_still_queued_at_the_deadline_is_reported_unstarted() -> None:
    results = _run_beside_a_hanging_server(32)
    assert all(answers.unstarted <= {"c"} and not answers.errors for answers in results)
    assert sum(1 for answers in results if answers.unstarted) >= 32 - 3, "c has 3 threads"


@pytest.mark.memcached
def test_a_replica_that_hangs_makes_no_other_seem_failed_and_keeps_locks_held(
        servers: list[RunningServer], namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many threads reading locks (``gets``) while one replica's calls hang: the healthy replicas are
    never reported failed and every lock reads as held."""
    hosts = _hosts(servers)
    cache = ReplicatedCache.from_url(parse_url(f"memcached://{','.join(hosts)}?replicas=3&timeout=0.3"))
    failed: list[str] = []
    cache.on_failure = failed.extend
    keys = [f"{namespace}/lock{n}" for n in range(32)]
    for key in keys:
        assert cache.add(key, b"held", 60)

    def hanging_gets(key: str) -> tuple[bytes | None, object]:
        time.sleep(1.0)  # a paused server: the socket times out
        raise BackendError("timed out")

    monkeypatch.setattr(cache.server(hosts[2]), "gets", hanging_gets)
    start = threading.Barrier(len(keys))
    read: list[bytes | None] = []

    def poll(key: str) -> None:
        start.wait()
        for _ in range(3):
            read.append(cache.gets(key)[0])

    threads = [threading.Thread(target=poll, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cache.close()
    assert set(failed) == {hosts[2]}, "only the hanging server is reported"
    assert read == [b"held"] * len(read) and len(read) == 3 * len(keys)


@pytest.mark.parametrize("written", ["३", " 3", "3 ", "1_0", "+3", "0x3", "-1", "2.0", ""])
def test_replicas_is_written_in_ascii_digits_and_quoted_as_written(written: str) -> None:
    url = parse_url(f"memcached://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3?replicas={written}")
    with pytest.raises(ConfigurationError, match="digits 0-9") as refused:
        Memcached.from_url(url)
    assert f"replicas={written!r}" in str(refused.value)


def test_replicas_out_of_range_is_quoted_as_written() -> None:
    with pytest.raises(ConfigurationError, match="not '04'"):
        Memcached.from_url(parse_url("memcached://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3?replicas=04"))
    assert Memcached.from_url(parse_url("memcached://127.0.0.1:1,127.0.0.1:2?replicas=02")).replicas == 2


def test_one_server_named_twice_in_two_cases_is_refused() -> None:
    for hosts in ("Cache-1.invalid:1,cache-1.invalid:1,127.0.0.1:3",
                  "127.0.0.1:3,CACHE-1.INVALID:1,cache-1.invalid:1"):
        with pytest.raises(ConfigurationError, match="names one memcached server twice"):
            Memcached.from_url(parse_url(f"memcached://{hosts}?replicas=3"))


@pytest.mark.memcached
def test_invalidations_never_wait_in_turn_behind_a_replica_that_hangs(
        servers: list[RunningServer], namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many saves invalidating at once while one replica's calls hang: each waits about one timeout,
    not one per call queued before it on that replica's few threads; what the hanging replica did
    not take is reported undelivered (the journal delivers it later), the others' never."""
    hosts = _hosts(servers)
    cache = ReplicatedCache.from_url(parse_url(f"memcached://{','.join(hosts)}?replicas=3&timeout=0.3"))

    def hanging_delete_many(keys: list[str]) -> list[str]:
        time.sleep(1.0)  # a paused server: the socket times out
        raise BackendError("timed out")

    monkeypatch.setattr(cache.server(hosts[2]), "delete_many", hanging_delete_many)
    keys = [f"{namespace}/k{n}" for n in range(32)]
    start = threading.Barrier(len(keys))
    waited: list[float] = []
    missed: list[str] = []

    def invalidate(key: str) -> None:
        start.wait()
        began = time.monotonic()
        missed.extend(cache.delete_each([key]))
        waited.append(time.monotonic() - began)

    threads = [threading.Thread(target=invalidate, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cache.close()
    assert set(missed) == {hosts[2]}, "only the hanging server's share is undelivered"
    # 32 calls on 4 threads for 1 s each would be 8 s in turn; one timeout (0.3 s), or the hanging
    # call itself when it runs inline (1 s), bounds each
    assert max(waited) < 2.0, sorted(waited)[-3:]
