"""Fixtures that configure dal on each (persistent, volatile) pair of STORE_PAIRS.

Import them into a test module (``from objects_fixtures import store_pair``) to run that
module's tests on SQLite + memory and on etcd + memcached.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import STORE_PAIRS, persistent_url_for, volatile_url_for

import dal
from dal.backends.base import DeletePrefix
from dal.config import Context


@dataclass(frozen=True)
class PairURLs:
    """The URLs of one store pair and the fresh namespace of one test."""

    persistent: str
    volatile: str
    namespace: str

    def configure(self, hmac_key: bytes | None = None) -> Context:
        """Make dal use this pair (in this namespace) and return the new Context."""
        return dal.configure(self.persistent, self.volatile, namespace=self.namespace, hmac_key=hmac_key)


@pytest.fixture(params=STORE_PAIRS, ids=[f"{p}+{v}" for p, v in STORE_PAIRS])
def pair_urls(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[PairURLs]:
    """Yield the URLs of one store pair; afterwards remove the test's namespace from the durable store."""
    persistent_kind, volatile_kind = request.param
    urls = PairURLs(persistent_url_for(persistent_kind, request, tmp_path),
                    volatile_url_for(volatile_kind, request), namespace)
    yield urls
    # a shared server outlives the test: leave nothing behind in it
    context = urls.configure()
    context.persistent.commit([], [DeletePrefix(context.keys.root)])


@pytest.fixture
def store_pair(pair_urls: PairURLs) -> Context:
    """Configure dal on one store pair in a fresh namespace and return the Context."""
    return pair_urls.configure()
