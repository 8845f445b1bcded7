"""A writer whose clock runs ahead of the sweepers' cannot keep its journal record young: sweeps age
a record from when they first saw it too (``dal/cache/sweeps.py``)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any

import pytest
from race_hybrids import Tally
from test_journal import records, sweep_of
from test_journal_settle import cached_count, cached_tallies, shared, urls

from dal import configure
from dal.cache import journal as journal_module
from dal.cache import sweeps
from dal.cache.journal import FLUSH_AFTER, RECORD, Journal
from dal.cache.sweeps import FLUSH_EVERY, GRACE, SEEN_SHARE, SWEEP_INTERVAL
from dal.config import Context

__all__ = ["shared", "urls"]  # fixtures, imported for this module's tests

#: the guarantee's bound on a dead writer's stale entry (docs/guarantees.md)
BOUND = 2.0


def clock_ahead(ahead: float) -> Any:
    """A stand-in for the ``time`` module whose wall clock runs ``ahead`` seconds fast."""
    real = time.time

    class Ahead:
        monotonic = staticmethod(time.monotonic)
        sleep = staticmethod(time.sleep)

        @staticmethod
        def time() -> float:
            return real() + ahead

    return Ahead


def writer_ahead(monkeypatch: pytest.MonkeyPatch, ahead: float) -> None:
    """Run this process's writer on a clock ``ahead`` seconds fast, and kill it after each commit
    (before it invalidates); its sweeps keep the real clock."""
    monkeypatch.setattr(journal_module, "time", clock_ahead(ahead))
    monkeypatch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)


def test_a_record_seen_at_one_sweep_is_due_at_the_next_but_not_before_its_writer_deleted_it() -> None:
    # a live writer deletes its delivered record within FLUSH_AFTER + FLUSH_EVERY; sweeps come
    # 0.8 to 1.2 SWEEP_INTERVAL apart
    assert FLUSH_AFTER + FLUSH_EVERY < SEEN_SHARE * GRACE <= 0.8 * SWEEP_INTERVAL


@pytest.mark.parametrize("ahead", [3.0, 30.0])
def test_a_dead_writer_whose_clock_runs_ahead_leaves_no_stale_entry_past_the_bound(
        shared: Context, monkeypatch: pytest.MonkeyPatch, ahead: float) -> None:
    (tally,) = cached_tallies("skewed")
    writer_ahead(monkeypatch, ahead)
    tally.count = 1
    tally.save()
    died = time.monotonic()
    assert cached_count(shared, tally) == 0, "the dead writer left its object's entry stale"
    while cached_count(shared, tally) is not None and time.monotonic() - died < ahead + BOUND:
        time.sleep(0.02)
    stale_for = time.monotonic() - died
    assert stale_for < BOUND, f"the stale entry lasted {stale_for:.2f} s"
    assert Tally(tally.guid).count == 1


def test_a_longer_grace_holds_back_records_however_long_they_were_seen(
        shared: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """GRACE alone says how long a writer has (a fault test lengthens it to keep sweeps out of its
    scenario); the control sweeps the same way at the default GRACE and delivers."""
    sweep = sweep_of(shared)
    first, second = cached_tallies("held", "control")
    writer_ahead(monkeypatch, 3.0)
    first.count = 1
    first.save()
    with monkeypatch.context() as patch:
        patch.setattr(sweeps, "GRACE", 60.0)
        for _ in range(3):
            sweep.sweep()
            time.sleep(SWEEP_INTERVAL)
    assert cached_count(shared, first) == 0, "a sweep delivered the record inside GRACE"
    assert all(value[:1] == RECORD for value in records(shared).values()), "a sweep marked a record"
    second.count = 1
    second.save()
    for _ in range(3):
        sweep.sweep()
        time.sleep(SWEEP_INTERVAL)
    assert cached_count(shared, first) is None and cached_count(shared, second) is None


def _skewed_writer(persistent: str, volatile: str, namespace: str, guid: str, ahead: float) -> None:
    """Another process, its clock ``ahead``: commits one save and is killed -9 before it invalidates."""
    configure(persistent, volatile, namespace=namespace)

    def killed(self: Journal, key: str, invalidate: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    journal_module.time = clock_ahead(ahead)  # type: ignore[assignment]
    Journal._delivered = killed  # type: ignore[method-assign]
    tally = Tally(guid)
    tally.count = 1
    tally.save()


@pytest.mark.parametrize("ahead", [3.0])
def test_a_reader_serves_a_dead_skewed_writers_stale_value_no_longer_than_the_bound(
        shared: Context, urls: Any, ahead: float) -> None:
    """The writer is another process, killed -9 right after its commit; this process only reads
    (it never saw the save, so its monotonic reads do not hide the stale entry) and sweeps."""
    (tally,) = cached_tallies("skewed")
    spawn = multiprocessing.get_context("spawn")
    writer = spawn.Process(target=_skewed_writer,
                           args=(urls.persistent, urls.volatile, urls.namespace, tally.guid, ahead))
    writer.start()
    writer.join(60)
    died = time.monotonic()
    assert writer.exitcode == -signal.SIGKILL, writer.exitcode
    assert Tally(tally.guid).count == 0, "the entry was not left stale: the test shows nothing"
    while Tally(tally.guid).count != 1 and time.monotonic() - died < ahead + BOUND:
        time.sleep(0.02)
    stale_for = time.monotonic() - died
    assert stale_for < BOUND, f"a reader served the stale value for {stale_for:.2f} s"
