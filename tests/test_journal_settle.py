"""The journal's records reach every shared cache: settled later, written by a process with a cache of
its own, or left by a writer whose clock runs ahead (``dal/cache/journal.py``, ``dal/cache/sweeps.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import PairURLs, cached_document, persistent_url_for, volatile_url_for
from race_hybrids import Tally
from test_commit_outcome import LostAnswers

import dal
from dal.backends.base import DeletePrefix
from dal.backends.url import parse_url
from dal.cache import journal as journal_module
from dal.cache import sweeps as sweeps_module
from dal.cache.journal import FLUSH_AFTER, HOLD, RECORD, Journal
from dal.cache.sweeps import FLUSH_EVERY, GRACE, SEEN_AGAIN, SWEEP_INTERVAL, Sweep
from dal.config import Context
from dal.exceptions import CommitOutcomeUnknownError


@pytest.fixture(params=[("redis", "memcached")], ids=["redis+memcached"])
def urls(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[PairURLs]:
    """A store that can lose answers, and memcached."""
    persistent = persistent_url_for(request.param[0], request, tmp_path) + "?timeout=1"
    yield PairURLs(persistent, volatile_url_for(request.param[1], request), namespace)


@pytest.fixture
def shared(urls: PairURLs) -> Iterator[Context]:
    context = urls.configure()
    yield context
    context.close()
    urls.configure().persistent.commit([], [DeletePrefix(context.keys.root)])


def records(context: Context) -> dict[str, bytes]:
    return {key: entry.value for key, entry in context.persistent.scan(context.keys.journal())}


def hand_sweep(context: Context) -> Sweep:
    assert context.sweeper is not None
    context.sweeper.stop()  # the test sweeps by hand
    return context.sweeper.sweep


def cached_count(context: Context, tally: Tally) -> int | None:
    cached = cached_document(context, "tally", tally.guid)
    return None if cached is None else int(cached[1]["count"])


def cached_tallies(*labels: str) -> list[Tally]:
    tallies = [Tally(data={"label": label, "count": 0}) for label in labels]
    dal.save_many(tallies)
    for tally in tallies:
        assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0  # cached now
    return tallies


def refuse_deletes(context: Context, monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """Make memcached refuse this process's deletes while the returned switch is on."""
    cache = context.objects
    real = cache._delete
    down = {"on": True}

    def failing(keys: Sequence[str]) -> dict[str, list[str]]:
        if not down["on"]:
            return real(list(keys))
        by_node: dict[str, list[str]] = {}
        for key in keys:
            for node in cache.placement.holders(key):
                by_node.setdefault(node, []).append(key)
        return by_node

    monkeypatch.setattr(cache, "_delete", failing)
    return down


def unknown_commit(context: Context, monkeypatch: pytest.MonkeyPatch, save: Any) -> LostAnswers:
    """Apply ``save()`` and lose its answer until the deadline; the store answers again after."""
    lost = LostAnswers(context, monkeypatch)
    lost.plan = ["applied"] + ["down"] * 1000
    with pytest.raises(CommitOutcomeUnknownError):
        save()
    lost.plan = []
    return lost


def test_a_settle_whose_invalidation_failed_leaves_the_record_for_a_sweep(
        shared: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = hand_sweep(shared)
    (tally,) = cached_tallies("settled")
    down = refuse_deletes(shared, monkeypatch)
    mine = Tally(tally.guid)
    mine.count = 1
    unknown_commit(shared, monkeypatch, mine.save)
    mine.save()  # learns that it was applied; memcached still refuses this process
    assert [value[:1] for value in records(shared).values()] == [RECORD], "marked though undelivered"
    down["on"] = False
    sweep.catch_up()  # memcached answers again: the record is delivered
    assert cached_count(shared, tally) in (None, 1)
    assert Tally(tally.guid).count == 1


def test_settling_one_object_of_a_save_many_invalidates_them_all(
        shared: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    hand_sweep(shared)  # no sweep comes between the commit and the settle
    a, b = cached_tallies("a", "b")
    down = refuse_deletes(shared, monkeypatch)
    a.count, b.count = 1, 1
    unknown_commit(shared, monkeypatch, lambda: dal.save_many([a, b]))
    down["on"] = False
    a.save()  # settles the commit of both
    assert cached_count(shared, b) is None, "the other object's entry stayed stale"


_WRITER = """
import sys, time, dal
from race_hybrids import Tally
dal.configure(sys.argv[1], "memory://", namespace=sys.argv[2])
tally = Tally(sys.argv[3]); tally.count = 1; tally.save()
time.sleep(float(sys.argv[4]))  # idle (its sweeper flushes what it delivered), then exit
"""


@pytest.mark.parametrize("idle", [1.0, 0.0], ids=["idle-then-exit", "exit-at-once"])
def test_a_record_of_a_process_with_a_cache_of_its_own_reaches_the_shared_cache(
        shared: Context, urls: PairURLs, idle: float) -> None:
    sweep = hand_sweep(shared)
    (tally,) = cached_tallies("local")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    subprocess.run([sys.executable, "-c", _WRITER, urls.persistent, urls.namespace, tally.guid,
                    str(idle)], check=True, env=env, timeout=60)
    time.sleep(GRACE)
    sweep.sweep()  # as a memcached process's next sweep
    assert cached_count(shared, tally) is None, "the record was gone before any sweep delivered it"


def test_the_hold_outlasts_two_sweeps_and_seeing_again_outlasts_a_live_writer() -> None:
    assert HOLD > GRACE + 1.2 * SWEEP_INTERVAL and HOLD > 2 * 1.2 * SWEEP_INTERVAL
    assert FLUSH_AFTER + FLUSH_EVERY < SEEN_AGAIN <= 0.8 * SWEEP_INTERVAL


def test_a_process_with_a_cache_of_its_own_deletes_an_abandoned_record(
        shared: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    hand_sweep(shared)
    with monkeypatch.context() as patch:
        patch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)  # the writer dies
        Tally(data={"label": "abandoned"}).save()
    local = Context(shared.persistent_url, parse_url("memory://"), shared.namespace, None)
    try:
        sweep = hand_sweep(local)
        monkeypatch.setattr(sweeps_module, "GRACE", 0.0)
        sweep.sweep()
        assert records(shared), "deleted before it was abandoned"
        monkeypatch.setattr(sweeps_module, "ABANDONED", 0.0)
        sweep.sweep()
        assert records(shared) == {}
    finally:
        local.close()


@pytest.mark.parametrize("ahead", [8.0])
def test_a_dead_writer_whose_clock_runs_ahead_is_swept_in_time(
        shared: Context, monkeypatch: pytest.MonkeyPatch, ahead: float) -> None:
    (tally,) = cached_tallies("skewed")
    real = time.time

    class Ahead:
        monotonic = staticmethod(time.monotonic)
        sleep = staticmethod(time.sleep)

        @staticmethod
        def time() -> float:
            return real() + ahead

    monkeypatch.setattr(journal_module, "time", Ahead)  # the writer's clock; sweeps keep the real one
    monkeypatch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)  # dies after commit
    tally.count = 1
    tally.save()
    killed = time.monotonic()
    while cached_count(shared, tally) is not None and time.monotonic() - killed < ahead + 2:
        time.sleep(0.02)
    stale_for = time.monotonic() - killed
    assert stale_for < 2.0, f"the stale entry lasted {stale_for:.2f} s"
