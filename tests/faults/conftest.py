"""The fault suite: dal against real servers on loopback that are killed, paused and cut mid-work.

Every scenario starts its own servers in a temporary directory (a 3-member etcd cluster where it
needs one, memcached, proxies) and stops each by its PID. Every loop is bounded in count and
time. Each scenario records its figures with the ``figures`` fixture; they are printed at the
end of the run, and the scenario fails when one is off.

Two sizes: quick (the default, run by ``make test`` and CI) and long (``make chaos``, which sets
``DAL_CHAOS=1``): more workers, more operations, more faults.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dal.backends.base import DeletePrefix
from dal.config import Context
from dal.testing.cluster import EtcdCluster, start_etcd_cluster
from dal.testing.fixtures import start_or_skip
from dal.testing.servers import RunningServer, start_memcached, start_redis

LONG = os.environ.get("DAL_CHAOS") == "1"
T = TypeVar("T")

#: (scenario, figures) recorded during the run, printed at its end
_FIGURES: list[tuple[str, dict[str, Any]]] = []


def scale(quick: T, long: T) -> T:
    """Return the quick or the long figure of a scenario parameter."""
    return long if LONG else quick


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A fresh 3-member etcd cluster of this test alone."""
    cluster = start_or_skip("etcd cluster", lambda: start_etcd_cluster(tmp_path / "cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def memcached_alone(tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh memcached of this test alone (free to kill, pause and restart)."""
    server = start_or_skip("memcached", lambda: start_memcached(tmp_path / "memcached"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memcached", "redis"])
def cache_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, RunningServer]]:
    """A cache server of this test's own (free to pause), memcached and Redis, with its URL."""
    kind = request.param
    starter = start_memcached if kind == "memcached" else start_redis
    server = start_or_skip(kind, lambda: starter(tmp_path / kind))
    try:
        yield f"{kind}://{server.host}:{server.port}", server
    finally:
        server.stop()


@pytest.fixture
def parent() -> Iterator[list[Context]]:
    """The parent's own dal contexts (set up counters, read the truth); after the test their namespace
    is removed from the store (each test asks for its server itself, which outlives this) and they
    are closed."""
    contexts: list[Context] = []
    yield contexts
    for context in contexts:
        try:
            context.persistent.commit([], [DeletePrefix(context.keys.root)])
        finally:
            context.close()


@pytest.fixture
def fault_namespace() -> str:
    return f"f{uuid.uuid4().hex[:12]}"


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Record figures of this scenario (printed at the end of the run): ``figures(lost=0, ...)``."""
    name = request.node.nodeid.split("::", 1)[-1]

    def record(**values: Any) -> None:
        _FIGURES.append((name, values))

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section(f"fault suite figures ({'long' if LONG else 'quick'} mode)")
    for name, values in _FIGURES:
        shown = ", ".join(f"{key}={value}" for key, value in values.items())
        terminalreporter.write_line(f"{name}: {shown}")
