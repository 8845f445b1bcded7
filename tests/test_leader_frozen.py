"""A refresher frozen (SIGSTOP, a debugger, a paused VM) past its lease, mid remote call, wakes up.

Time spent stopped counts on the monotonic clock, so on waking the call in progress looks as if it
had run for that long. The lease ran out meanwhile and a standby may lead: that is a lost lead
(``--once`` exits 3), not a remote call that hung (exit 1, blaming the remote). The freeze is
injected by moving ``dal.cli.leader``'s clock on while a call is in progress.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import dal.cli.leader as leader_module
import dal.cli.refresh as cli
from dal.backends import open_persistent
from dal.backends.base import Leadership, PersistentStore
from dal.cli.leader import Leader

#: the lease of these tests: renewed every 0.1 s, so a freeze is noticed at once
TTL = 0.3


class SkewedTime:
    """``dal.cli.leader``'s ``time`` module with a monotonic clock that can jump ahead."""

    def __init__(self) -> None:
        self.skew = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.skew

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SkewedTime:
    skewed = SkewedTime()
    monkeypatch.setattr(leader_module, "time", skewed)
    return skewed


@pytest.fixture
def store() -> Iterator[PersistentStore]:
    store = open_persistent(f"memory://frozen-{uuid.uuid4().hex[:8]}")
    yield store
    store.close()


class Releases:
    """Counts the releases a store is asked for (a lead given up releases its lease)."""

    def __init__(self, store: PersistentStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.leases: list[Leadership] = []
        real = store.release_leadership

        def counted(lease: Leadership) -> None:
            self.leases.append(lease)
            real(lease)

        monkeypatch.setattr(store, "release_leadership", counted)


def freeze_mid_call(leader: Leader, clock: SkewedTime, stopped_for: float) -> None:
    """A remote call starts, the process is stopped for ``stopped_for`` seconds, then wakes up."""
    leader.calling(True)
    clock.skew += stopped_for
    thread = leader._thread  # the renewing thread decides at its next turn (within TTL / 3)
    assert thread is not None
    thread.join(timeout=5)
    assert not thread.is_alive(), "the renewing thread neither lost nor gave up the lead"
    leader.calling(False)


def test_a_leader_frozen_past_its_lease_lost_it_rather_than_gave_it_up(
        store: PersistentStore, clock: SkewedTime, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    releases = Releases(store, monkeypatch)
    leader = Leader(store, f"refresher/{uuid.uuid4().hex[:8]}", TTL)
    assert leader.acquire().acquired
    freeze_mid_call(leader, clock, stopped_for=10 * TTL)
    assert not leader.held
    assert not leader.gave_up  # the call did not hang: the process did not run
    assert releases.leases == []  # a standby may lead on that lease by now: not ours to release
    assert "giving up the lead" not in capsys.readouterr().out
    leader.release()


def test_a_hung_call_within_the_lease_still_gives_the_lead_up(
        store: PersistentStore, clock: SkewedTime, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    releases = Releases(store, monkeypatch)
    leader = Leader(store, f"refresher/{uuid.uuid4().hex[:8]}", TTL)
    lease = leader.acquire()
    assert lease.acquired
    leader.calling(True)
    deadline = time.monotonic() + 5
    while not leader.gave_up and time.monotonic() < deadline:  # renewed meanwhile: the lease holds
        time.sleep(0.02)
    assert leader.gave_up and not leader.held
    assert releases.leases == [lease]
    assert f"a remote call has run for over {TTL:g}s" in capsys.readouterr().out
    leader.release()
    assert releases.leases == [lease]  # given up: released once, already


def test_once_frozen_past_its_lease_exits_3_not_1(store: PersistentStore, clock: SkewedTime,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    leader = Leader(store, f"refresher/{uuid.uuid4().hex[:8]}", TTL)

    def frozen_pass(hybrids: Any, batch_size: int, leading: Leader, stop: threading.Event,
                    ahead: Any = None) -> cli.Outcome:
        freeze_mid_call(leading, clock, stopped_for=10 * TTL)
        return cli.Outcome(interrupted=True)  # the next batch saw the lead was no longer held

    monkeypatch.setattr(cli, "refresh_pass", frozen_pass)
    args = argparse.Namespace(batch_size=100, limit=10, look_ahead=None)
    assert cli._once([], leader, threading.Event(), args) == cli.EXIT_STANDBY
    captured = capsys.readouterr()
    assert "giving up the lead" not in captured.out and "gave up the lead" not in captured.err
