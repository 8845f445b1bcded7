"""The conformance suite of leadership leases on persistent stores (see :mod:`dal.testing.conformance`).

A part of :class:`~dal.testing.conformance.PersistentStoreContract`: every durable store offers
``acquire_leadership``, ``renew_leadership`` and ``release_leadership``. Roles are named under the
``prefix`` fixture, so tests sharing a server never meet. Where a store is shared, a second,
independent client of the same data (``type(store).from_url``) stands for another process.
"""

from __future__ import annotations

import threading
import time

import pytest

from dal.backends.base import Leadership, PersistentStore
from dal.exceptions import ConfigurationError, InvalidValueError

#: seconds a lease may outlive its TTL before a standby gets it: etcd checks expiry twice a
#: second and may round a lease up to whole seconds
EXPIRY_SLACK = 1.5


def _other_client(store: PersistentStore) -> PersistentStore:
    """Return an independent client of the same data where there can be one, else ``store``."""
    if not store.shared:
        return store  # a process-local store's data lives in this one object
    return type(store).from_url(store.url)


def _wait_to_acquire(store: PersistentStore, role: str, owner: str, ttl: float,
                     limit: float) -> tuple[Leadership, float]:
    """Retry acquiring every 50 ms for up to ``limit`` seconds; return the last try and when it ended."""
    deadline = time.monotonic() + limit
    while True:
        lease = store.acquire_leadership(role, owner, ttl)
        if lease.acquired or time.monotonic() > deadline:
            return lease, time.monotonic()
        time.sleep(0.05)


class LeadershipContract:
    """Conformance tests of the leadership methods of :class:`dal.backends.base.PersistentStore`."""

    def test_one_leader_at_a_time(self, store: PersistentStore, prefix: str) -> None:
        role = f"{prefix}role"
        first = store.acquire_leadership(role, "first", 30)
        assert isinstance(first, Leadership)
        assert first.acquired and first.holder == "first" and first.role == role
        other = _other_client(store)
        try:
            second = other.acquire_leadership(role, "second", 30)
            assert not second.acquired
            assert second.holder == "first"
            assert not other.renew_leadership(second)  # a lease never acquired never holds
            # ... and releases nothing, even under the leader's own name
            other.release_leadership(second)
            store.release_leadership(Leadership(role, "first", 30, acquired=False))
            assert not other.acquire_leadership(role, "second", 30).acquired
            # the leader asking again keeps it (and renews it): a restart under one token
            again = store.acquire_leadership(role, "first", 30)
            assert again.acquired
            assert store.renew_leadership(again)
            assert not other.acquire_leadership(role, "second", 30).acquired
            # another role is another lease
            elsewhere = other.acquire_leadership(f"{prefix}other-role", "second", 30)
            assert elsewhere.acquired
            other.release_leadership(elsewhere)
        finally:
            store.release_leadership(first)
            if other is not store:
                other.close()

    def test_racing_owners_get_one_leader(self, store: PersistentStore, prefix: str) -> None:
        role = f"{prefix}race"
        results: list[Leadership] = []
        lock = threading.Lock()
        start = threading.Barrier(8)

        def contend(name: str) -> None:
            start.wait(timeout=10)
            lease = store.acquire_leadership(role, name, 30)
            with lock:
                results.append(lease)

        threads = [threading.Thread(target=contend, args=(f"owner-{n}",)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(results) == 8
        winners = [lease for lease in results if lease.acquired]
        assert len(winners) == 1
        assert {lease.holder for lease in results} == {winners[0].owner}
        store.release_leadership(winners[0])

    def test_renew_keeps_the_lease_past_its_ttl(self, store: PersistentStore, prefix: str) -> None:
        role = f"{prefix}renewed"
        lease = store.acquire_leadership(role, "leader", 1)
        assert lease.acquired
        other = _other_client(store)
        try:
            # renewing every third of the TTL for two TTLs: never lost, never taken
            deadline = time.monotonic() + 2 * lease.ttl
            while time.monotonic() < deadline:
                assert store.renew_leadership(lease)
                assert not other.acquire_leadership(role, "standby", 1).acquired
                time.sleep(lease.ttl / 3)
        finally:
            store.release_leadership(lease)
            if other is not store:
                other.close()

    def test_a_standby_takes_over_once_the_lease_expires(self, store: PersistentStore, prefix: str) -> None:
        role = f"{prefix}expiry"
        # timed from before the lease is asked for: it lapses at least its TTL after that, however
        # late the answer comes (timed from after, an answer 0.1 s late broke the lower bound)
        began = time.monotonic()
        dead = store.acquire_leadership(role, "dead", 1)
        assert dead.acquired
        other = _other_client(store)
        try:
            # the leader never renews, as if killed: the standby gets it within the TTL (plus slack)
            standby, took = _wait_to_acquire(other, role, "standby", 1, dead.ttl + EXPIRY_SLACK + 2)
            assert standby.acquired, f"not taken over within {dead.ttl + EXPIRY_SLACK}s"
            assert dead.ttl * 0.9 <= took - began <= dead.ttl + EXPIRY_SLACK
            assert not store.renew_leadership(dead)  # the old leader learns it lost
            assert other.renew_leadership(standby)
            store.release_leadership(dead)  # releasing a lost lease leaves the new leader alone
            assert other.renew_leadership(standby)
            assert not store.acquire_leadership(role, "dead", 1).acquired
            other.release_leadership(standby)
        finally:
            if other is not store:
                other.close()

    def test_an_expired_lease_does_not_renew(self, store: PersistentStore, prefix: str) -> None:
        lease = store.acquire_leadership(f"{prefix}lapsed", "sleeper", 1)
        assert lease.acquired
        time.sleep(lease.ttl + EXPIRY_SLACK)
        assert not store.renew_leadership(lease)
        assert store.acquire_leadership(f"{prefix}lapsed", "sleeper", 1).acquired

    def test_a_lease_that_expired_leaves_its_owners_newer_lease_alone(
            self, store: PersistentStore, prefix: str) -> None:
        # the owner's lease lapsed (a pause), it acquired the role again, then a late renewal or
        # release of the lapsed lease came: memory://, SQLite and Redis matched the owner alone,
        # renewed the new lease, then released it, and a standby led beside the new leader
        role = f"{prefix}lapsed-then-again"
        lapsed = store.acquire_leadership(role, "host-a:1", 1)
        assert lapsed.acquired
        time.sleep(lapsed.ttl + EXPIRY_SLACK)
        again = store.acquire_leadership(role, "host-a:1", 30)
        assert again.acquired
        other = _other_client(store)
        try:
            assert not store.renew_leadership(lapsed)
            store.release_leadership(lapsed)
            other.release_leadership(lapsed)
            assert not other.acquire_leadership(role, "host-b:2", 30).acquired
            assert store.renew_leadership(again)
            assert again.handle != lapsed.handle  # another lease, though the same owner's
        finally:
            store.release_leadership(again)
            if other is not store:
                other.close()

    def test_the_owner_asking_again_keeps_its_lease_for_the_ttl_it_asks(
            self, store: PersistentStore, prefix: str) -> None:
        # asked again while it holds (a restart with another timeout), the lease lasts the TTL asked
        # for: etcd kept the old lease and its TTL, and the lease lapsed under a holder renewing
        # every third of the TTL it was told
        role = f"{prefix}asked-again"
        first = store.acquire_leadership(role, "host-a:1", 1)
        assert first.acquired
        same = store.acquire_leadership(role, "host-a:1", 1)
        assert same.acquired
        longer = store.acquire_leadership(role, "host-a:1", 30)
        assert longer.acquired and longer.ttl >= 30
        other = _other_client(store)
        try:
            time.sleep(first.ttl + EXPIRY_SLACK)
            assert not other.acquire_leadership(role, "host-b:2", 30).acquired
            assert store.renew_leadership(longer)
            # asked again for the TTL it has, the lease is kept, and said to last what it lasts
            assert same.handle == first.handle and same.ttl == first.ttl
            store.release_leadership(longer)  # the lease asked for last is the one held
            taken = other.acquire_leadership(role, "host-b:2", 30)
            assert taken.acquired
            other.release_leadership(taken)
        finally:
            store.release_leadership(longer)
            if other is not store:
                other.close()

    def test_release_hands_over_at_once(self, store: PersistentStore, prefix: str) -> None:
        role = f"{prefix}released"
        lease = store.acquire_leadership(role, "leaving", 60)
        assert lease.acquired
        other = _other_client(store)
        try:
            assert not other.acquire_leadership(role, "next", 60).acquired
            store.release_leadership(lease)
            assert not store.renew_leadership(lease)
            taken = other.acquire_leadership(role, "next", 60)
            assert taken.acquired and taken.holder == "next"
            other.release_leadership(taken)
        finally:
            if other is not store:
                other.close()

    @pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
    def test_a_lease_needs_a_positive_ttl(self, store: PersistentStore, prefix: str, ttl: float) -> None:
        with pytest.raises(ConfigurationError):
            store.acquire_leadership(f"{prefix}bad", "owner", ttl)

    def test_a_lease_needs_a_role_and_an_owner(self, store: PersistentStore, prefix: str) -> None:
        with pytest.raises(ConfigurationError):
            store.acquire_leadership("", "owner", 5)
        with pytest.raises(ConfigurationError):
            store.acquire_leadership(f"{prefix}role", "", 5)

    @pytest.mark.parametrize(("role", "owner", "ttl"), [
        ("role", "owner", "5"), ("role", "owner", None), ("role", "owner", True),
        (5, "owner", 5), ("role", 7, 5), ("role", b"owner", 5)],
        ids=["ttl-str", "ttl-none", "ttl-bool", "role-int", "owner-int", "owner-bytes"])
    def test_badly_typed_arguments_raise_configuration_error(
            self, store: PersistentStore, prefix: str, role: object, owner: object, ttl: object) -> None:
        # the same error on every store, never a driver's TypeError or AttributeError
        named = f"{prefix}{role}" if isinstance(role, str) else role
        with pytest.raises(ConfigurationError):
            store.acquire_leadership(named, owner, ttl)  # type: ignore[arg-type]

    @pytest.mark.parametrize(("role", "owner"), [("role\udcff", "owner"), ("role", "owner\udcff")],
                             ids=["role", "owner"])
    def test_a_lone_surrogate_in_a_role_or_owner_is_an_invalid_value(
            self, store: PersistentStore, prefix: str, role: str, owner: str) -> None:
        # as in a key, on every store: SQLite raised UnicodeEncodeError, memory:// took it
        with pytest.raises(InvalidValueError, match="surrogate"):
            store.acquire_leadership(f"{prefix}{role}", owner, 5)

    @pytest.mark.parametrize("long", ["role", "owner"])
    def test_a_role_or_owner_longer_than_a_name_is_refused_saying_so(
            self, store: PersistentStore, prefix: str, long: str) -> None:
        # 2 MiB: Redis answered a bare protocol error quoting all of it, etcd a limit of data keys
        big = "é" * (1 << 20)
        role, owner = (f"{prefix}{big}", "owner") if long == "role" else (f"{prefix}role", big)
        refused = r"of at most 4,096 bytes \(UTF-8\), not 2,09"
        with pytest.raises(ConfigurationError, match=refused) as caught:
            store.acquire_leadership(role, owner, 5)
        assert len(str(caught.value)) < 300
        fits = "é" * 2000  # 4,000 bytes
        lease = store.acquire_leadership(f"{prefix}{fits}"[:2000], fits, 5)
        try:
            assert lease.acquired and store.renew_leadership(lease)
        finally:
            store.release_leadership(lease)

    def test_an_owner_asking_again_is_the_same_owner(self, store: PersistentStore, prefix: str) -> None:
        # an int owner was stored as text by SQLite, then refused as another owner: now refused at once
        role = f"{prefix}same"
        with pytest.raises(ConfigurationError):
            store.acquire_leadership(role, 7, 30)  # type: ignore[arg-type]
        first = store.acquire_leadership(role, "7", 30)
        try:
            assert first.acquired
            assert store.acquire_leadership(role, "7", 30).acquired
        finally:
            store.release_leadership(first)

    @pytest.mark.parametrize("lease", [None, "role", ("role", "owner", 5.0, True)])
    def test_renew_and_release_need_a_leadership(self, store: PersistentStore, lease: object) -> None:
        with pytest.raises(ConfigurationError):
            store.renew_leadership(lease)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            store.release_leadership(lease)  # type: ignore[arg-type]
