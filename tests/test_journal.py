"""The commit journal: records delivered then removed, a dead writer's record swept by others.

A writer killed between its commit and its invalidation is simulated here by a writer that
"forgets" to deliver (its process would have died at that point); the same with real SIGKILLed
processes is in ``tests/faults/test_writer_kills.py``.
"""

from __future__ import annotations

import math
import time
import types
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import PairURLs, cached_document, persistent_url_for, volatile_url_for
from race_hybrids import Tally

from dal import config as config_module
from dal.backends.base import DeletePrefix, Entry
from dal.backends.url import parse_url
from dal.cache import sweeps as sweeps_module
from dal.cache.journal import RECORD, SWEPT, Journal, applied_revision
from dal.cache.seen import Seen
from dal.cache.sweeps import Sweep
from dal.config import Context, configure
from dal.testing.servers import closed_port, start_memcached
from dal.tools.check.integrity import check
from dal.tools.transfer.load import copy

JOURNALED = [("etcd", "memcached"), ("sqlite", "memcached"), ("redis", "redis")]


@pytest.fixture(params=JOURNALED, ids=["+".join(pair) for pair in JOURNALED])
def journaled(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[Context]:
    volatile = volatile_url_for(request.param[1], request)
    if request.param == ("redis", "redis"):
        # the cache reached by another spelling of the host: not known to be the store's own
        # database, so a commit does not evict its entries itself and the writer's delivery and
        # the sweeps do, as on the other pairs (the evicting commit, which leaves no window for
        # a dying writer: tests/test_redis.py, test_a_writer_dying_after_an_evicting_commit_...)
        volatile = volatile.replace("127.0.0.1", "localhost")
    urls = PairURLs(persistent_url_for(request.param[0], request, tmp_path), volatile, namespace)
    context = urls.configure()
    yield context
    context.close()
    urls.configure().persistent.commit([], [DeletePrefix(context.keys.root)])


def records(context: Context) -> dict[str, bytes]:
    return {key: entry.value for key, entry in context.persistent.scan(context.keys.journal())}


def cached_revision(context: Context, tally: Tally) -> int | None:
    """Return the revision of the object's cached document on the server, None when not cached."""
    cached = cached_document(context, "tally", tally.guid)
    return None if cached is None else cached[0]


def stored_revision(context: Context, tally: Tally) -> int:
    entry = context.persistent.get(context.keys.doc("tally", tally.guid))
    assert entry is not None
    return entry.revision


def test_only_shared_caches_or_remote_stores_keep_a_journal(tmp_path: Path, namespace: str) -> None:
    embedded = configure(f"sqlite:///{tmp_path / 'a.sqlite3'}", "memory://", namespace=namespace)
    try:
        assert embedded.journal is None and embedded.sweeper is None  # nothing outlives this process
    finally:
        embedded.close()


def test_records_are_delivered_then_removed(journaled: Context) -> None:
    journal = journaled.journal
    assert journal is not None
    tallies = [Tally(data={"label": f"t{n}"}) for n in range(5)]
    for tally in tallies:
        tally.save()
        # each commit takes the records delivered before it along: at most the latest is left
        assert len(records(journaled)) <= 1
    deadline = time.monotonic() + 5
    while records(journaled) and time.monotonic() < deadline:  # an idle writer flushes its last one
        time.sleep(0.05)
    assert records(journaled) == {}


def test_a_record_left_by_a_dead_writer_is_delivered_by_a_sweep(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tally = Tally(data={"label": "dies"})
    tally.save()
    assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0
    cached = cached_revision(journaled, tally)
    assert cached == stored_revision(journaled, tally)
    # the writer dies right after its commit: its invalidations are never sent
    monkeypatch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)
    tally.count = 1
    killed_at = time.monotonic()
    tally.save()
    monkeypatch.undo()
    assert RECORD in {value[:1] for value in records(journaled).values()}
    assert cached_revision(journaled, tally) == cached  # stale: nobody has invalidated it yet
    while cached_revision(journaled, tally) == cached and time.monotonic() - killed_at < 5:
        time.sleep(0.02)
    stale_for = time.monotonic() - killed_at
    assert cached_revision(journaled, tally) != cached
    assert stale_for < 2.0, f"a dead writer's stale entry lasted {stale_for:.2f} s"

    def marked() -> bool:  # the sweep counts and marks a record after sending it: wait for that too
        kinds = {value[:1] for value in records(journaled).values()}
        return journaled.stats["journal_delivered"] >= 1 and SWEPT in kinds and RECORD not in kinds

    while not marked() and time.monotonic() - killed_at < 5:
        time.sleep(0.02)
    assert journaled.stats["journal_delivered"] >= 1
    # marked delivered, and kept while its writer might still be learning its outcome
    assert SWEPT in {value[:1] for value in records(journaled).values()}
    assert RECORD not in {value[:1] for value in records(journaled).values()}
    fresh = journaled.__class__(journaled.persistent_url, journaled.volatile_url, journaled.namespace, None)
    try:
        assert fresh.load_document("tally", tally.guid) is not None
    finally:
        fresh.close()


def test_control_without_any_sweep_a_dead_writers_entry_stays_stale(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prove the test above can fail: with no process sweeping, the stale entry stays."""
    assert journaled.sweeper is not None
    journaled.sweeper.stop()
    tally = Tally(data={"label": "unswept"})
    tally.save()
    assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0
    cached = cached_revision(journaled, tally)
    monkeypatch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)
    tally.count = 1
    tally.save()
    monkeypatch.undo()
    time.sleep(2.0)
    assert cached_revision(journaled, tally) == cached


def sweep_of(context: Context) -> Sweep:
    assert context.sweeper is not None
    context.sweeper.stop()  # the test sweeps by hand
    return context.sweeper.sweep


def test_swept_records_become_markers_with_their_revision_then_go(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = sweep_of(journaled)
    with monkeypatch.context() as patch:
        patch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)  # the writer dies
        tally = Tally(data={"label": "marker"})
        tally.save()
    monkeypatch.setattr(sweeps_module, "GRACE", 0.0)
    assert sweep.sweep() == (True, set())
    markers = records(journaled)
    assert markers and {value[:1] for value in markers.values()} == {SWEPT}
    # the marker names the revision the commit was applied at: a writer still learning the
    # outcome gets it, instead of a revision it would have to guess
    assert any(applied_revision(Entry(value, 1)) == stored_revision(journaled, tally)
               for value in markers.values())
    monkeypatch.setattr(sweeps_module, "MARKER_AGE", 0.0)
    assert sweep.sweep() == (True, set())
    assert records(journaled) == {}


def test_a_marker_is_never_stamped_later_than_its_sweep(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep at a clock reading that rounds up still ages its marker from no later than now.

    Stamps rounded to the nearest millisecond lay up to half of one in the future, and a sweep
    in the same instant found a marker of age 0 too young to remove (a flaky CI run showed it).
    """
    sweep = sweep_of(journaled)
    with monkeypatch.context() as patch:
        patch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)  # the writer dies
        Tally(data={"label": "rounded"}).save()
    instant = math.floor(time.time()) + 1.0006  # .0006 rounds up to .001 at three decimals
    # the module's time, its wall clock frozen (monotonic and sleep as they are: the stopped
    # sweeper's thread may still be leaving its loop)
    frozen = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time)
                                      if not name.startswith("_")})
    frozen.time = lambda: instant
    monkeypatch.setattr(sweeps_module, "time", frozen)
    monkeypatch.setattr(sweeps_module, "GRACE", 0.0)
    assert sweep.sweep() == (True, set())
    markers = records(journaled)
    assert markers and {value[:1] for value in markers.values()} == {SWEPT}
    monkeypatch.setattr(sweeps_module, "MARKER_AGE", 0.0)
    assert sweep.sweep() == (True, set())  # the same instant: age 0.0006 s, past MARKER_AGE 0
    assert records(journaled) == {}


def test_the_journal_is_not_data(journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """dal check does not read it, and a namespace holding only journal records is empty to a copy."""
    monkeypatch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)
    tally = Tally(data={"label": "checked"})
    tally.save()
    monkeypatch.undo()
    assert records(journaled)
    report = check(journaled)
    assert report.clean, report.problems
    source = journaled
    Tally(tally.guid).delete()
    journaled.persistent.commit([], [DeletePrefix(f"{journaled.keys.root}m/")])  # the schema record
    assert records(journaled) and [key for key, _ in journaled.persistent.scan(journaled.keys.root)
                                   if not key.startswith(journaled.keys.journal())] == []
    origin = configure(f"memory://{uuid.uuid4().hex[:8]}", "memory://", namespace="origin")
    Tally(data={"label": "copied"}).save()
    copied = copy(origin, source)  # into a namespace that holds nothing but journal records
    assert copied.load.total == 1 and not copied.mismatches


def test_a_failed_invalidation_keeps_the_record_until_a_sweep_delivers_it(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tally = Tally(data={"label": "undelivered"})
    tally.save()
    assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0
    real = journaled.volatile.delete_many

    def refuse(keys: Sequence[str]) -> list[str]:
        return list(keys)

    monkeypatch.setattr(journaled.volatile, "delete_many", refuse)
    tally.count = 1
    tally.save()
    assert not journaled.objects.trust.trusted  # this process stops serving from the cache
    assert any(value[:1] == RECORD for value in records(journaled).values())
    assert Tally(tally.guid).count == 1  # read around the cache meanwhile
    monkeypatch.setattr(journaled.volatile, "delete_many", real)
    deadline = time.monotonic() + 5
    while not journaled.objects.trust.trusted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert journaled.objects.trust.trusted, "the sweep never caught up"
    assert journaled.stats["object_trust_restored"] >= 1
    assert cached_revision(journaled, tally) in (None, stored_revision(journaled, tally))
    assert Tally(tally.guid).count == 1


def _dies_after_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the writer of the next saves die right after each commit (its invalidations never sent)."""
    monkeypatch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)


def _a_new_process_after_a_dead_writer(journaled: Context, monkeypatch: pytest.MonkeyPatch,
                                       label: str) -> tuple[Context, Tally]:
    """Leave a stale cached entry behind a dead writer, with nobody sweeping; then start a new
    process (a new context that has seen nothing, and sweeps nothing in the background)."""
    sweep_of(journaled)
    tally = Tally(data={"label": label})
    tally.save()
    assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0  # cached
    with monkeypatch.context() as patch:
        _dies_after_commit(patch)
        tally.count = 1
        tally.save()
    with monkeypatch.context() as patch:  # no background sweep at all: it could run before the test
        patch.setattr(config_module, "Sweeper", _Idle)
        later = configure(str(journaled.persistent_url.render(hide_password=False)),
                          str(journaled.volatile_url.render(hide_password=False)),
                          namespace=journaled.namespace)
    later.seen = Seen()
    return later, tally


class _Idle:
    """A Sweeper that never sweeps in the background (its sweep can still be run by hand)."""

    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep

    def stop(self) -> None:
        """Nothing runs: nothing to stop."""


def test_a_process_started_later_serves_nothing_a_dead_writer_left_stale(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    _, tally = _a_new_process_after_a_dead_writer(journaled, monkeypatch, "later")
    assert Tally(tally.guid).count == 1  # its first cache read delivered the dead writer's record


def test_control_a_process_that_trusts_the_cache_at_once_serves_the_stale_entry(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prove the test above can fail: without the first catch-up, the stale entry is served."""
    later, tally = _a_new_process_after_a_dead_writer(journaled, monkeypatch, "trusting")
    later.objects.trust.lost.clear()  # trusted without catching up
    assert Tally(tally.guid).count == 0


@pytest.mark.memcached
def test_with_one_of_two_cache_servers_dead_a_dead_writers_record_still_reaches_the_live_one(
        tmp_path: Path, namespace: str, memcached_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    live = f"{memcached_server.host}:{memcached_server.port}"
    url = f"memcached://{live},127.0.0.1:{closed_port()}?timeout=0.2"
    context = configure(f"sqlite:///{tmp_path / 'two.sqlite3'}", url, namespace=namespace)
    try:
        on_live = []
        while len(on_live) < 1:  # an object whose cached document lives on the live server
            tally = Tally(data={"label": uuid.uuid4().hex[:8]})
            tally.save()
            if context.volatile.node(context.keys.cached_doc("tally", tally.guid)) == live:
                on_live.append(tally)
        tally = on_live[0]
        assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0
        assert cached_revision(context, tally) is not None  # cached on the live server
        with monkeypatch.context() as patch:
            _dies_after_commit(patch)
            tally.count = 1
            killed_at = time.monotonic()
            tally.save()
        while cached_revision(context, tally) is not None and time.monotonic() - killed_at < 5:
            time.sleep(0.02)
        stale_for = time.monotonic() - killed_at
        assert cached_revision(context, tally) is None
        assert stale_for < 2.0, f"the live server kept the stale entry {stale_for:.2f} s"
    finally:
        context.close()


@pytest.mark.etcd
@pytest.mark.memcached
def test_a_process_with_a_cache_of_its_own_leaves_the_records_to_shared_cache_processes(
        etcd_server: Any, memcached_server: Any, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = configure(etcd_server.url, memcached_server.url, namespace=namespace)
    try:
        sweep_of(shared)
        tally = Tally(data={"label": "shared"})
        tally.save()
        assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0
        with monkeypatch.context() as patch:
            _dies_after_commit(patch)
            tally.count = 1
            tally.save()
        local = Context(shared.persistent_url, parse_url("memory://"), namespace, None)
        try:
            assert local.journal is not None and not local.journal.delivers
            assert local.sweeper is not None
            local.sweeper.stop()
            monkeypatch.setattr(sweeps_module, "GRACE", 0.0)
            monkeypatch.setattr(sweeps_module, "MARKER_AGE", 0.0)  # however old the record looks
            local.sweeper.sweep.sweep()  # as `dal check` on etcd would, with its memory:// cache
            assert RECORD in {value[:1] for value in records(shared).values()}, "it took the record"
        finally:
            local.close()
        assert shared.sweeper is not None
        assert shared.sweeper.sweep.sweep() == (True, set())  # the shared-cache process delivers it
        assert cached_revision(shared, tally) is None
    finally:
        shared.close()
        shared.persistent.commit([], [DeletePrefix(shared.keys.root)])


@contextmanager
def _three_replicas_one_dead(tmp_path: Path, namespace: str,
                             memcached_server: Any) -> Iterator[tuple[Context, list[str], str]]:
    """A context on three memcached servers holding every key (``replicas=3``), the third dead;
    yield it, the two live servers and the dead one."""
    other = start_memcached(tmp_path / "second")
    try:
        live = [f"{memcached_server.host}:{memcached_server.port}", f"{other.host}:{other.port}"]
        dead = f"127.0.0.1:{closed_port()}"
        url = f"memcached://{live[0]},{live[1]},{dead}?replicas=3&timeout=0.2"
        context = configure(f"sqlite:///{tmp_path / 'three.sqlite3'}", url, namespace=namespace)
        try:
            yield context, live, dead
        finally:
            context.close()
    finally:
        other.stop()


@pytest.mark.memcached
def test_with_replicas_a_catch_up_trusts_a_live_replica_again_while_another_server_is_dead(
        tmp_path: Path, namespace: str, memcached_server: Any) -> None:
    """Trust per server with replicas: a record left undelivered by a dead server keeps only that
    server untrusted; a live one that failed once meanwhile is trusted again by the next catch-up,
    and keys are served again (two of three replicas agree)."""
    with _three_replicas_one_dead(tmp_path, namespace, memcached_server) as (context, live, dead):
        sweep = sweep_of(context)
        trust = context.objects.trust
        tally = Tally(data={"label": uuid.uuid4().hex[:8]})
        tally.save()
        assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0
        tally.count = 1
        tally.save()  # its invalidation fails on the dead server: the record stays
        assert records(context) and set(trust.lost) == {dead}
        trust.fail([live[0]])  # a blip: now two of three replicas untrusted, keys read around
        assert not context.objects.usable(context.keys.cached_doc("tally", tally.guid))
        sweep.catch_up()
        assert set(trust.lost) == {dead}, "the live server that answered is trusted again"
        assert Tally(tally.guid).count == 1
        hits = context.stats["object_hits"]
        assert Tally(tally.guid).count == 1 and context.stats["object_hits"] == hits + 1


@pytest.mark.memcached
def test_with_replicas_a_record_stays_in_the_journal_until_every_replica_confirmed_it(
        tmp_path: Path, namespace: str, memcached_server: Any) -> None:
    """Two of three replicas confirming an invalidation is not enough: the writer does not queue
    the record for deletion, so its idle flush leaves it for a sweep to deliver to the third."""
    with _three_replicas_one_dead(tmp_path, namespace, memcached_server) as (context, _, _):
        sweep_of(context)  # nobody sweeps: the record can only go by the writer's flush
        journal = context.journal
        assert journal is not None
        tally = Tally(data={"label": uuid.uuid4().hex[:8]})
        tally.save()
        tally.count = 1
        tally.save()
        journal.flush()  # what the writer deletes when idle: the records it delivered everywhere
        doc = context.keys.cached_doc("tally", tally.guid)
        kept = [value for value in records(context).values()
                if value[:1] == RECORD and doc in journal.decode(value)]
        assert kept, "the record went though the dead replica never confirmed it"


def test_a_sweep_whose_delivery_a_server_refused_keeps_the_dead_writers_record(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that keeps its data refuses a sweep's deletes (a dead server in the tests above holds no
    entries): the record must stay, so that once the server takes deletes again the stale entry goes."""
    sweep = sweep_of(journaled)
    tally = Tally(data={"label": "sweep-refused"})
    tally.save()
    assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0  # cached
    with monkeypatch.context() as patch:
        patch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)  # the writer dies
        tally.count = 1
        tally.save()
    time.sleep(0.7)  # older than GRACE
    real = journaled.volatile.delete_many
    monkeypatch.setattr(journaled.volatile, "delete_many", lambda keys: list(keys))  # every delete refused
    sweep.sweep()
    assert cached_revision(journaled, tally) is not None, "the premise: the stale entry is still there"
    monkeypatch.setattr(journaled.volatile, "delete_many", real)  # the server takes deletes again
    deadline = time.monotonic() + 10
    while not journaled.objects.trust.trusted and time.monotonic() < deadline:
        sweep.tick()
        time.sleep(0.05)
    assert journaled.objects.trust.trusted
    assert cached_revision(journaled, tally) in (None, stored_revision(journaled, tally)), \
        "the stale entry survived: its record was marked swept though its delivery was refused"
    assert Tally(tally.guid).count == 1
