"""The refresher's hold on its lease (``dal.cli.leader.Leader``), on every durable store.

The store methods themselves are in the conformance suite (``dal/testing/conformance/leadership.py``);
these tests cover what ``dal refresh`` builds on them: a thread renewing the lease, noticing its
loss, and letting go; and the command's choices about hybrids without ``refresh_every``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dal import configure
from dal.backends import open_persistent
from dal.backends.base import PersistentStore
from dal.cli.leader import MAX_RETRY, Leader


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
