"""Run the backend conformance suites over every backend the test session can reach."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dal.backends import open_persistent, open_volatile
from dal.backends.base import DeletePrefix, PersistentStore, Put, VolatileStore
from dal.backends.etcd import store as etcd
from dal.testing.conformance import PersistentStoreContract, VolatileStoreContract
from dal.testing.servers import RunningServer


class TestPersistentStore(PersistentStoreContract):
    @pytest.fixture
    def store(self, persistent_url: str) -> PersistentStore:
        return open_persistent(persistent_url)

    @pytest.fixture
    def prefix(self, namespace: str, persistent_url: str) -> Iterator[str]:
        prefix = f"{namespace}/"
        yield prefix
        # Opened afresh: a test may have closed every cached client (close and reopen).
        assert open_persistent(persistent_url).commit([], [DeletePrefix(prefix)]).ok


class TestVolatileStore(VolatileStoreContract):
    @pytest.fixture
    def store(self, volatile_url: str) -> VolatileStore:
        return open_volatile(volatile_url)

    @pytest.fixture
    def prefix(self, namespace: str) -> str:
        return f"{namespace}/"


@pytest.mark.etcd
def test_etcd_scan_keys_pages_a_range_past_one_response(etcd_server: RunningServer, namespace: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd, "KEYS_PAGE", 7)
    store = open_persistent(f"etcd://127.0.0.1:{etcd_server.port}")
    prefix = f"{namespace}/"
    assert store.commit([], [Put(f"{prefix}k{n:02d}", b"") for n in range(30)]).ok
    try:
        assert store.scan_keys([prefix, f"{prefix}k1"]) == {
            prefix: [f"{prefix}k{n:02d}" for n in range(30)],
            f"{prefix}k1": [f"{prefix}k1{n}" for n in range(10)]}
    finally:
        store.commit([], [DeletePrefix(prefix)])
