"""Run the backend conformance suites over every backend the test session can reach."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dal.backends import open_persistent, open_volatile
from dal.backends.base import DeletePrefix, PersistentStore, VolatileStore
from dal.testing.conformance import PersistentStoreContract, VolatileStoreContract


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
