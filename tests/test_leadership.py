"""The refresher's hold on its lease (``dal.cli.leader.Leader``), on every durable store.

The store methods themselves are in the conformance suite (``dal/testing/conformance/leadership.py``);
these tests cover what ``dal refresh`` builds on them: a thread renewing the lease, noticing its
loss (before the next batch), and letting go; a lease granted late or lasting for ages; a loop
started while its store is away; and the command's choices about hybrids without ``refresh_every``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

import dal.cli.refresh as cli
from dal import Mirror, configure
from dal.backends import open_persistent
from dal.backends.base import Leadership, PersistentStore
from dal.cli.leader import MAX_RETRY, Leader
from dal.mirror import RefreshReport
from dal.testing.fixtures import start_or_skip
from dal.testing.servers import free_port, start_etcd, start_redis


@pytest.fixture
def store(persistent_url: str) -> PersistentStore:
    return open_persistent(persistent_url)


@pytest.fixture
def role() -> Iterator[str]:
    yield f"refresher/t{uuid.uuid4().hex[:12]}"


def _other(store: PersistentStore) -> PersistentStore:
    return type(store).from_url(store.url) if store.shared else store


def test_the_leader_keeps_its_lease_alive(store: PersistentStore, role: str) -> None:
    # a 2 s lease renewed every 2/3 s outlives a renewal 1.3 s late (a 1 s one lapsed when the
    # thread was held up 0.7 s on a loaded host); 1.5 TTLs are past the TTL, so it was renewed
    leader = Leader(store, role, 2.0)
    assert leader.acquire().acquired and leader.held
    other = _other(store)
    try:
        deadline = time.monotonic() + 1.5 * leader.lease.ttl  # type: ignore[union-attr]
        while time.monotonic() < deadline:  # long past the TTL: the thread renewed it
            assert leader.held
            assert not other.acquire_leadership(role, "standby", 1.0).acquired
            time.sleep(0.2)
    finally:
        leader.release()
    assert not leader.held
    assert other.acquire_leadership(role, "standby", 1.0).acquired  # released: taken at once


def test_the_leader_notices_it_lost_the_lease(store: PersistentStore, role: str) -> None:
    leader = Leader(store, role, 3.0)
    lease = leader.acquire()
    assert lease.acquired
    other = _other(store)
    # someone ends the lease behind the leader's back (an operator, an expiry during a long pause)
    other.release_leadership(lease)
    assert other.acquire_leadership(role, "usurper", 30).acquired
    deadline = time.monotonic() + leader.renew_every + 5
    while leader.held and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leader.held
    leader.release()  # lets go of nothing: the usurper still leads
    assert other.acquire_leadership(role, "usurper", 30).acquired
    assert not leader.acquire().acquired


def test_a_standby_is_not_held_and_retries_within_bounds(store: PersistentStore, role: str) -> None:
    first = Leader(store, role, 2.0)
    second = Leader(_other(store), role, 2.0)
    try:
        assert first.acquire().acquired
        answer = second.acquire()
        assert not answer.acquired and answer.holder == first.owner and not second.held
        assert first.owner != second.owner and str(os.getpid()) in first.owner
    finally:
        first.release()
    assert second.acquire().acquired
    second.release()
    assert Leader(store, role, 4.0).retry == 1.0
    assert Leader(store, role, 600.0).retry == MAX_RETRY


# --- hybrids without refresh_every ----------------------------------------------------------------


def test_the_loop_needs_a_hybrid_with_refresh_every(tmp_path: Path) -> None:
    (tmp_path / "lazy_hybrids.py").write_text(
        "from dal import DataObject, Mirror, Property\n\n"
        "class LazyOnly(DataObject):\n"
        "    __properties = [Property('name', str)]\n"
        "    __mirror = Mirror(60)\n\n"
        "    def _refresh(self):\n"
        "        raise AssertionError('no object is stored: nothing to refresh')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    env.update({"PYTHONPATH": str(tmp_path), "DAL_HYBRIDS": "lazy_hybrids",
                "DAL_PERSISTENT_URL": f"sqlite:///{tmp_path / 'dal.sqlite3'}"})
    configure(env["DAL_PERSISTENT_URL"], "memory://").close()  # the store exists: refresh opens no new one
    loop = subprocess.run([sys.executable, "-m", "dal", "refresh"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert loop.returncode == 2
    assert "LazyOnly declares no refresh_every" in loop.stdout
    assert "error: no mirrored hybrid declares refresh_every" in loop.stderr
    once = subprocess.run([sys.executable, "-m", "dal", "refresh", "--once"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert once.returncode == 0, once.stderr
    assert "LazyOnly: 0 stale: 0 changed, 0 unchanged, 0 failed" in once.stdout.splitlines()


# --- a lease lost between renewals, granted late, or very long; a store away at start ------------


def _batches(monkeypatch: pytest.MonkeyPatch, after_first: Callable[[], None]) -> list[int]:
    """Make ``refresh_pass`` refresh five batches of one object per hybrid, calling ``after_first``
    once the first is done (no remote, no stored object); return the list the batches are noted in."""
    done: list[int] = []

    def refresh_stale(cls: Any, *, batch_size: int, progress: Callable[[int], None], guids: list[str],
                      ahead: float) -> RefreshReport:
        for count in range(1, len(guids) + 1):
            done.append(count)
            if count == 1:
                after_first()
            progress(count)
        return RefreshReport(total=len(guids), refreshed=0, unchanged=len(guids))

    monkeypatch.setattr(cli, "stale_guids", lambda cls, ahead: [f"g{n}" for n in range(5)])
    monkeypatch.setattr(cli, "refresh_stale", refresh_stale)
    return done


class First:
    """Stands for a mirrored hybrid: ``refresh_pass`` only names it (its refreshes are faked)."""


class Second:
    """Another."""


def test_a_leader_whose_lease_was_lost_stops_before_its_next_batch(
        store: PersistentStore, role: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a Redis lease key evicted (volatile-* policy) or lost in a restart without AOF, an operator's
    # release: a standby takes the role at once, long before the leader's next renewal (TTL / 3)
    leader = Leader(store, role, 30.0)
    lease = leader.acquire()
    assert lease.acquired
    other = _other(store)

    def lose_the_lease() -> None:
        other.release_leadership(lease)
        assert other.acquire_leadership(role, "usurper", 30).acquired

    done = _batches(monkeypatch, lose_the_lease)
    stopped = threading.Event()
    try:
        outcome = cli.refresh_pass([First, Second], 1, leader, stopped)  # type: ignore[list-item]
        assert outcome.interrupted and not outcome.reports
        assert done == [1], "the leader ran another batch after it lost its lease"
        assert not leader.held and not leader.leading()
    finally:
        leader.release()
    assert not other.acquire_leadership(role, "third", 30).acquired  # the usurper still leads


class LateAnswer:
    """A store that grants a lease when asked, and whose answer arrives ``delay`` seconds later (the
    lease runs meanwhile; slept before the grant, the lease would count from the answer, and a leader
    counting it from there would pass: found by a mutation audit); renewals counted."""

    def __init__(self, store: PersistentStore, delay: float) -> None:
        self.store, self.delay, self.renewals = store, delay, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def acquire_leadership(self, role: str, owner: str, ttl: float) -> Leadership:
        granted = self.store.acquire_leadership(role, owner, ttl)
        time.sleep(self.delay)
        return granted

    def renew_leadership(self, lease: Leadership) -> bool:
        self.renewals += 1
        return self.store.renew_leadership(lease)


def test_a_lease_granted_late_is_renewed_before_it_runs_out(role: str) -> None:
    # the lease counts from before the ask: answered 0.7 TTL late, only 0.3 TTL of it is left, less
    # than the third of the TTL a renewal waits; the first renewal comes within half of what is left
    store = LateAnswer(open_persistent(f"memory://late-{uuid.uuid4().hex[:8]}"), 2.1)
    leader = Leader(cast(PersistentStore, store), role, 3.0)
    asked = time.monotonic()
    assert leader.acquire().acquired
    try:
        while time.monotonic() < asked + leader.ttl + 0.5:  # past the end of the lease as granted
            assert leader.held, f"lost {time.monotonic() - asked:.2f}s after the ask, " \
                                f"after {store.renewals} renewals"
            time.sleep(0.05)
        assert store.renewals >= 1
    finally:
        leader.release()


def test_leases_and_refresh_intervals_too_long_to_wait_for_at_once(role: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Mirror accepts up to 1e12 s, far past threading.TIMEOUT_MAX: waits are cut into days
    huge = Mirror(timeout=1e11, refresh_every=5e10)
    hybrid = type("Huge", (), {"_meta": types.SimpleNamespace(mirror=huge)})  # stands for a hybrid
    leader = Leader(open_persistent(f"memory://huge-{uuid.uuid4().hex[:8]}"), role, huge.timeout)
    passes: list[object] = []

    def one_pass(hybrids: Any, batch_size: int, leading: Leader, stop: threading.Event,
                 ahead: Any = None) -> cli.Outcome:
        passes.append(hybrids)
        return cli.Outcome()

    monkeypatch.setattr(cli, "refresh_pass", one_pass)
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    args = argparse.Namespace(batch_size=100, limit=10, look_ahead=None)
    try:
        assert cli._loop([hybrid], leader, stop, args) == 0  # type: ignore[list-item]
    finally:
        timer.cancel()
    assert passes == [[hybrid]] and leader.lease is None  # one pass, then the wait; released
    assert leader.acquire().acquired
    try:
        time.sleep(0.2)
        assert leader._thread is not None and leader._thread.is_alive(), "the renewing thread died"
        assert leader.held
    finally:
        leader.release()


def _loop_process(tmp_path: Path, url: str) -> subprocess.Popen[str]:
    (tmp_path / "away_hybrids.py").write_text(
        "from dal import DataObject, Mirror, Property\n\n"
        "class AwayThing(DataObject):\n"
        "    __properties = [Property('name', str)]\n"
        "    __mirror = Mirror(3, refresh_every=1)\n\n"
        "    def _refresh(self):\n"
        "        return {}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    env.update({"PYTHONPATH": os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]),
                "DAL_HYBRIDS": "away_hybrids", "DAL_PERSISTENT_URL": url,
                "DAL_NAMESPACE": f"t{uuid.uuid4().hex[:8]}"})
    return subprocess.Popen([sys.executable, "-m", "dal", "refresh"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _lines_until(process: subprocess.Popen[str], pattern: str, limit: float = 30.0) -> list[str]:
    """Read ``process``'s stdout until a line matches ``pattern`` (fail after ``limit`` seconds)."""
    assert process.stdout is not None
    lines: list[str] = []
    timer = threading.Timer(limit, process.kill)
    timer.start()
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if re.search(pattern, line):
                return lines
    finally:
        timer.cancel()
    raise AssertionError(f"no line matching {pattern!r}: {lines}; stderr: {process.communicate()[1]}")


@pytest.mark.parametrize("kind", ["redis", "etcd"])
def test_a_loop_started_while_its_store_is_away_waits_and_says_so_once(tmp_path: Path, kind: str) -> None:
    # Redis is read at configure() (INFO memory): a loop exited 2 at once there, while on etcd it
    # retried, saying the same line at every retry; both now wait, say it once, and say it ended
    port = free_port()
    process = _loop_process(tmp_path, f"{kind}://127.0.0.1:{port}")
    try:
        _lines_until(process, "could not reach the durable store")
        time.sleep(3)  # three retries or more, on either path
        starter = start_redis if kind == "redis" else start_etcd
        server = start_or_skip(kind, lambda: starter(tmp_path / kind, port=port))
        try:
            lines = _lines_until(process, "leading refresher/")
            assert not [line for line in lines if "could not reach" in line]  # said once only
            assert any(line.endswith("reached the durable store") for line in lines)
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
            assert process.returncode == 0, err
            assert out.rstrip().endswith("stopped")
        finally:
            server.stop()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


# --- a rolling deploy: processes of the release before the lease tokens share the store --------------

#: the release before the tokens: Redis's three scripts, which matched the owner alone
_OLD_REDIS = {
    "acquire": "local h = redis.call('GET', KEYS[1]) if h and h ~= ARGV[1] then return 0 end "
               "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1",
    "renew": "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
             "redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1",
    "release": "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"}


class _OlderRelease:
    """A process of the release before the tokens, on the same SQLite file or Redis server."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, what: str, role: str, owner: str) -> bool:
        if self.url.startswith("redis"):
            client = redis.Redis.from_url(self.url)
            try:
                return bool(client.eval(_OLD_REDIS[what], 1, f"{{dal}}:lead:{role}", owner, 30_000))
            finally:
                client.close()
        conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            now = time.time()
            if what == "acquire":
                row = conn.execute("SELECT owner, expires FROM leadership WHERE role = ?", (role,)).fetchone()
                if row is not None and row[0] != owner and row[1] > now:
                    return False
                changed = conn.execute("INSERT OR REPLACE INTO leadership (role, owner, expires) VALUES "
                                       "(?, ?, ?)", (role, owner, now + 30)).rowcount
            elif what == "renew":
                changed = conn.execute("UPDATE leadership SET expires = ? WHERE role = ? AND owner = ? AND "
                                       "expires > ?", (now + 30, role, owner, now)).rowcount
            else:
                changed = conn.execute("DELETE FROM leadership WHERE role = ? AND owner = ?",
                                       (role, owner)).rowcount
            return changed == 1
        finally:
            conn.execute("COMMIT")
            conn.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_lease_of_the_older_release_and_one_of_this_release_never_match(
        request: pytest.FixtureRequest, tmp_path: Path, role: str, kind: str) -> None:
    # the lease tokens are written beside the owner in the record the older release reads: its
    # processes take a lease of this release for another owner's (even under the same owner name), and
    # this release takes theirs for another lease: neither renews, releases nor takes over the other's
    url = (f"sqlite:///{tmp_path / 'dal.sqlite3'}" if kind == "sqlite"
           else request.getfixturevalue("redis_server").url)
    store, older = open_persistent(url), _OlderRelease(url)
    lease = store.acquire_leadership(role, "host-a:1", 30)
    assert lease.acquired
    assert not older.call("renew", role, "host-a:1")
    assert not older.call("release", role, "host-a:1")
    assert not older.call("acquire", role, "host-a:1")
    assert store.renew_leadership(lease)
    store.release_leadership(lease)
    assert older.call("acquire", role, "host-a:1")  # released: the older release may lead
    theirs = store.acquire_leadership(role, "host-a:1", 30)
    assert not theirs.acquired and theirs.holder == "host-a:1"
    assert not store.acquire_leadership(role, "host-b:2", 30).acquired
    store.release_leadership(Leadership(role, "host-a:1", 30, acquired=True))
    assert older.call("renew", role, "host-a:1")
    assert older.call("release", role, "host-a:1")
