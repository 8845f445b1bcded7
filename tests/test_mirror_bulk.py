"""Mirrored hybrids in bulk and at once: ``refresh_stale``, and single flight across threads and processes.

The remote is a real loopback HTTP server whose calls are counted (:mod:`dal.testing.remote`).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from typing import Any

import pytest
from mirror_hybrids import REMOTE_ENV, TIMEOUT, Clock, MirroredVM, SingleVM, answer, instance_path

import dal.mirror
from dal import DataList, configure
from dal.backends.base import DeletePrefix
from dal.config import Context
from dal.exceptions import ConfigurationError, MirrorError
from dal.mirror import flight
from dal.testing.fixtures import memcached_servers
from dal.testing.remote import Remote


def stored_vms(remote: Remote, count: int, prefix: str = "bulk") -> list[str]:
    guids = []
    for number in range(count):
        hostname = f"{prefix}-{number}-{uuid.uuid4().hex[:6]}"
        remote.answers[instance_path(hostname)] = answer(hostname, status="running", memory=number)
        obj = MirroredVM(data={"hostname": hostname})
        obj.save()
        guids.append(obj.guid)
    return guids


def test_an_answer_too_large_to_store_fails_alone(context: Context, remote: Remote) -> None:
    """etcd refuses a request over 1.5 MiB: a 2 MB answer is that object's failure, recorded on it,
    and the rest of its batch and the batches after it are stored (other stores take it)."""
    guids = stored_vms(remote, 6, prefix="large")
    with dal.mirror.frozen():
        big = MirroredVM(guids[1]).hostname
    remote.answers[instance_path(big)] = {**answer(big), "disks": ["x" * 1000] * 2000}
    report = dal.mirror.refresh_stale(MirroredVM, batch_size=2)
    refused = context.persistent_url.scheme == "etcd"
    expected = (6, 5, [guids[1]]) if refused else (6, 6, [])
    assert (report.total, report.refreshed, list(report.failed)) == expected
    if refused:
        assert "larger than the etcd server" in report.failed[guids[1]]
        assert "larger than the etcd server" in (MirroredVM(guids[1]).error or "")
    assert dal.mirror.stale_count(MirroredVM) == int(refused)


def test_an_answer_that_is_no_object_names_the_loader_that_returned_it(context: Context,
                                                                       remote: Remote) -> None:
    guids = stored_vms(remote, 3, prefix="shape")
    with dal.mirror.frozen():
        odd = MirroredVM(guids[0]).hostname
    remote.answers[instance_path(odd)] = ["not", "an", "object"]
    report = dal.mirror.refresh_stale(MirroredVM, batch_size=3)
    assert list(report.failed) == [guids[0]]
    assert "MirroredVM._refresh_many returned list, not a JSON object" in report.failed[guids[0]]
    with pytest.raises(MirrorError, match=r"MirroredVM\._refresh returned list, not a JSON object"):
        MirroredVM(guids[0]).refresh_info()  # one object: its own loader


def test_refresh_stale_refreshes_in_bulk_batches_and_reports_failures(context: Context, remote: Remote,
                                                                      clock: Clock) -> None:
    guids = stored_vms(remote, 25)
    with dal.mirror.frozen():
        missing = MirroredVM(guids[7]).hostname
    del remote.answers[instance_path(missing)]  # the remote has forgotten one of them
    assert MirroredVM in dal.mirror.mirrored_hybrids() and SingleVM in dal.mirror.mirrored_hybrids()
    assert dal.mirror.stale_count(MirroredVM) == 25
    done: list[int] = []
    report = dal.mirror.refresh_stale(MirroredVM, batch_size=10, progress=done.append)
    assert done == [10, 20, 25]
    assert remote.calls() == {"/bulk": 3}
    assert (report.total, report.refreshed, report.unchanged) == (25, 24, 0)
    assert list(report.failed) == [guids[7]] and "no info" in report.failed[guids[7]] and not report.ok
    assert dal.mirror.stale_count(MirroredVM) == 1, "the failed one stays stale: the next run retries it"
    assert "no info" in (MirroredVM(guids[7]).error or "")
    assert remote.calls() == {"/bulk": 3}
    clock.time += TIMEOUT
    again = dal.mirror.refresh_stale(MirroredVM, batch_size=100)
    assert (again.total, again.refreshed, again.unchanged, len(again.failed)) == (25, 0, 24, 1)
    assert remote.calls() == {"/bulk": 4}
    with pytest.raises(ConfigurationError, match="not a mirrored hybrid"):
        dal.mirror.refresh_stale(Context)  # type: ignore[arg-type]


def test_refresh_stale_lists_an_object_whose_retry_fails_like_another_callers_refresh(
        context: Context, remote: Remote, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    # another caller's refresh holds the object's lock and fails (503) once the run waits for it;
    # the run then asks the remote again itself (one bulk call), which fails too: the object must be
    # listed in ``failed`` with that error, not counted as refreshed elsewhere
    (guid,) = stored_vms(remote, 1, prefix="again")
    with dal.mirror.frozen():
        path = instance_path(MirroredVM(guid).hostname)
    remote.failures[path] = remote.failures["/bulk"] = 503
    waits = f"mirror.{MirroredVM._meta.name}.waits"
    asked = MirroredVM._refresh
    entered = threading.Event()

    def held_until_the_run_waits(self: MirroredVM) -> Any:
        entered.set()
        deadline = time.monotonic() + 30
        while context.stats[waits] < 1 and time.monotonic() < deadline:
            time.sleep(0.005)  # the run has found the lock held and waits for it
        return asked(self)  # the 503

    monkeypatch.setattr(MirroredVM, "_refresh", held_until_the_run_waits)
    holder = threading.Thread(target=lambda: MirroredVM(guid).status, name="holder")
    holder.start()
    assert entered.wait(30)
    report = dal.mirror.refresh_stale(MirroredVM)
    holder.join(30)
    assert remote.calls() == {path: 1, "/bulk": 1}, "the holder's call, then the run's own"
    assert list(report.failed) == [guid] and "/bulk answered 503" in report.failed[guid] and not report.ok
    assert (report.total, report.refreshed, report.unchanged) == (1, 0, 0)
    with dal.mirror.frozen():
        after = MirroredVM(guid)
        assert after.stale and "/bulk answered 503" in (after.error or "")


def test_refresh_stale_without_a_bulk_loader_calls_each_object(context: Context, remote: Remote,
                                                               clock: Clock) -> None:
    for number in range(4):
        remote.answers[instance_path(f"one-{number}")] = answer(f"one-{number}")
        SingleVM(data={"hostname": f"one-{number}"}).save()
    report = dal.mirror.refresh_stale(SingleVM)
    assert (report.total, report.refreshed, report.failed) == (4, 4, {})
    assert remote.count() == 4 and remote.count("/bulk") == 0
    assert dal.mirror.stale_count(SingleVM) == 0


def _six_threads_read(guid: str) -> list[Any]:
    """Load the object in 6 threads, then read its parsed ``ram`` in all of them at once."""
    start = threading.Barrier(6)
    found: list[Any] = []

    def read() -> None:
        obj = MirroredVM(guid)
        start.wait(5)
        found.append(obj.ram)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return found


def test_threads_reading_one_stale_object_make_one_remote_call(context: Context, remote: Remote,
                                                               clock: Clock) -> None:
    guid = stored_vms(remote, 1)[0]
    remote.delay = 0.3
    found = _six_threads_read(guid)
    assert found == [0] * 6, "every thread read the refreshed data"
    assert remote.count() == 1
    assert context.stats["mirror.mirroredvm.waits"] == 5


def test_control_without_the_lock_every_thread_calls_the_remote(context: Context, remote: Remote,
                                                                 clock: Clock,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above, with every caller handed a lock that holds nothing (what ``acquire`` gives
    when the cache cannot be used): the threads all call the remote, so that test sees the lock."""
    monkeypatch.setattr(flight, "acquire", lambda context, key, ttl: flight.Lock(key, None))
    guid = stored_vms(remote, 1)[0]
    remote.delay = 0.3
    found = _six_threads_read(guid)
    assert found == [0] * 6
    assert remote.count() == 6


def _read_once(persistent: str, volatile: str, namespace: str, guid: str, remote_url: str,
               start: Any) -> tuple[Any, float | None]:
    """In a spawned process: read one stale object's parsed property when every process is ready."""
    os.environ[REMOTE_ENV] = remote_url
    configure(persistent, volatile, namespace=namespace)
    obj = MirroredVM(guid)
    start.wait(60)
    return obj.status, obj.cached_at


def _eight_processes_read_one_stale_object(persistent: str, volatile: str, remote: Remote) -> None:
    """Eight spawned processes read one stale object at once: exactly one remote call, one result."""
    namespace = f"t{uuid.uuid4().hex[:12]}"
    context = configure(persistent, volatile, namespace=namespace)
    try:
        guid = stored_vms(remote, 1)[0]
        remote.delay = 0.5  # slow, as such remotes are: the others arrive while it answers
        spawn = multiprocessing.get_context("spawn")
        with spawn.Manager() as manager, spawn.Pool(8) as pool:
            start = manager.Barrier(8)
            arguments = (persistent, volatile, namespace, guid, remote.url, start)
            results = pool.starmap(_read_once, [arguments] * 8, chunksize=1)
        assert remote.count() == 1, f"{remote.count()} remote calls for one stale object in 8 processes"
        assert {status for status, _ in results} == {"running"}
        assert len({cached_at for _, cached_at in results}) == 1, "all read the one refresh's result"
        assert not MirroredVM(guid).stale
    finally:
        context.persistent.commit([], [DeletePrefix(context.keys.root)])


@pytest.mark.slow
@pytest.mark.memcached
@pytest.mark.parametrize("durable", ["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def test_8_processes_reading_one_stale_object_make_one_remote_call(
        durable: str, request: pytest.FixtureRequest, tmp_path: Any, remote: Remote,
        memcached_server: Any) -> None:
    persistent = (f"sqlite:///{tmp_path / 'dal.sqlite3'}" if durable == "sqlite"
                  else request.getfixturevalue("etcd_server").url)
    _eight_processes_read_one_stale_object(persistent, memcached_server.url, remote)


@pytest.mark.slow
@pytest.mark.memcached
def test_8_processes_make_one_remote_call_with_one_of_three_replicas_dead(tmp_path: Any,
                                                                          remote: Remote) -> None:
    """The refresh lock is a majority of the replicas (issue 14): one dead server of three still
    lets exactly one process refresh."""
    with memcached_servers(tmp_path) as trio:
        hosts = ",".join(f"{server.host}:{server.port}" for server in trio)
        trio[1].kill()
        _eight_processes_read_one_stale_object(f"sqlite:///{tmp_path / 'dal.sqlite3'}",
                                               f"memcached://{hosts}?replicas=3", remote)


def test_a_list_read_while_another_thread_refreshes_one_of_its_objects_waits_for_it(
        context: Context, remote: Remote, clock: Clock) -> None:
    guids = stored_vms(remote, 3)
    remote.delay = 0.3
    first = threading.Thread(target=lambda: MirroredVM(guids[0]).status)
    first.start()
    deadline = time.monotonic() + 5
    while remote.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # the single refresh of guids[0] is under way
    listed = list(DataList(MirroredVM))
    assert {obj.guid: obj.ram for obj in listed} == {guids[0]: 0, guids[1]: 1, guids[2]: 2}
    first.join(10)
    assert remote.calls() == {instance_path(MirroredVM(guids[0]).hostname): 1, "/bulk": 1}
    assert context.stats["mirror.mirroredvm.waits"] == 1, "the list waited for the refresh under way"


def test_a_lock_holder_that_died_blocks_nobody_past_its_lock(context: Context, remote: Remote,
                                                            clock: Clock) -> None:
    guid = stored_vms(remote, 1)[0]
    # a process took the refresh lock for 2 s and died without refreshing or releasing it;
    # memcached counts expiry in whole seconds on a clock that ticks once a second, so such a
    # lock lapses between 1 and 2 s after it was taken (a 0.5 s one could lapse at once)
    # timed from before the lock was taken: it lapses at least 1 s after that, however late the
    # acquire's answer (timed from after it, a 0.1 s late answer broke the lower bound)
    started = time.monotonic()
    assert flight.acquire(context, flight.lock_key(context, "mirroredvm", guid), 2) is not None
    assert MirroredVM(guid).ram == 0
    assert 0.9 < time.monotonic() - started < 10, "waited for the lock, then refreshed itself"
    assert remote.count() == 1 and context.stats["mirror.mirroredvm.waits"] == 1
