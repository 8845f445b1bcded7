"""Shared fixtures: real servers started per test session, stores parametrized over every backend.

The suite starts its own etcd, memcached and redis-server on free loopback ports in temporary
directories. Without their binaries, server tests skip, unless DAL_REQUIRE_SERVICES=1
(as CI sets), when a missing server fails them.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from dal.backends.base import DeletePrefix
from dal.config import Context, configure
from dal.testing.fixtures import start_or_skip
from dal.testing.remote import Remote
from dal.testing.servers import RunningServer, start_etcd, start_memcached, start_redis

PERSISTENT_KINDS = ["memory", "sqlite", "etcd", "redis", "fakeredis"]
VOLATILE_KINDS = ["memory", "memcached", "redis", "fakeredis"]
#: (persistent, volatile) pairs the object-level tests run on
STORE_PAIRS = [("sqlite", "memory"), ("etcd", "memcached"), ("redis", "redis")]
#: the kinds served in process, by a name of their own per test (no server to start)
_IN_PROCESS = ("memory", "fakeredis")
_STARTERS: dict[str, Callable[[Path], RunningServer]] = {
    "etcd": start_etcd, "memcached": start_memcached, "redis": start_redis}

# Hypothesis' default 200 ms deadline per example measures the machine, not dal: on a loaded
# 2-core CI host one descheduled example fails the run ("Unreliable test timings"), and the same
# deadline caps input generation at 1 s before HealthCheck.too_slow fails it too. Every test's
# @settings inherits this profile, as loaded before the test modules are imported.
settings.register_profile("dal", deadline=None)
settings.load_profile("dal")


def _server(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    starter = _STARTERS[kind]
    server = start_or_skip(kind, lambda: starter(tmp_path_factory.mktemp(kind)))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from _server("etcd", tmp_path_factory)


@pytest.fixture(scope="session")
def memcached_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from _server("memcached", tmp_path_factory)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from _server("redis", tmp_path_factory)


@pytest.fixture(params=["redis", "fakeredis"])
def redis_url_each(request: pytest.FixtureRequest) -> str:
    """A Redis URL of each kind, in a database (or fake server) of this test's own."""
    if request.param == "fakeredis":
        return f"fakeredis://{uuid.uuid4().hex[:8]}"
    server: RunningServer = request.getfixturevalue("redis_server")
    return f"redis://127.0.0.1:{server.port}/{7 + uuid.uuid4().int % 8}"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RunningServer]:
    """A redis-server of this test's own, free to reconfigure, stop and pause."""
    server = start_or_skip("redis", lambda: start_redis(tmp_path / "redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def namespace() -> str:
    """A fresh namespace per test, so tests never see each other's data."""
    return f"t{uuid.uuid4().hex[:12]}"


def persistent_url_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind in _IN_PROCESS:
        return f"{kind}://{uuid.uuid4().hex[:8]}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'dal.sqlite3'}"
    server: RunningServer = request.getfixturevalue(f"{kind}_server")
    return server.url


#: memcached's read timeout in the shared pairs: its 0.25 s default is for production (a slow cache
#: must not slow reads), but here a loaded CI host holding memcached up 0.3 s turned a hit into an
#: error and failed tests that count round trips or loader calls; tests of the timeout itself
#: open their own URLs, and a stopped server refuses at once whatever the timeout
MEMCACHED_TEST_OPTIONS = "?timeout=2"


def volatile_url_for(kind: str, request: pytest.FixtureRequest) -> str:
    if kind in _IN_PROCESS:
        return f"{kind}://{uuid.uuid4().hex[:8]}"
    server: RunningServer = request.getfixturevalue(f"{kind}_server")
    return server.url + MEMCACHED_TEST_OPTIONS if kind == "memcached" else server.url


@pytest.fixture(params=PERSISTENT_KINDS)
def persistent_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return persistent_url_for(request.param, request, tmp_path)


@pytest.fixture(params=VOLATILE_KINDS)
def volatile_url(request: pytest.FixtureRequest) -> str:
    return volatile_url_for(request.param, request)


@dataclass(frozen=True)
class PairURLs:
    """The URLs of one store pair and the fresh namespace of one test."""

    persistent: str
    volatile: str
    namespace: str

    def configure(self, hmac_key: bytes | None = None) -> Context:
        """Make dal use this pair (in this namespace) and return the new Context."""
        return configure(self.persistent, self.volatile, namespace=self.namespace, hmac_key=hmac_key)


@pytest.fixture(params=STORE_PAIRS, ids=["+".join(pair) for pair in STORE_PAIRS])
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
def context(pair_urls: PairURLs) -> Context:
    """dal configured on one store pair in a fresh namespace."""
    return pair_urls.configure()


#: one durable store with each kind of volatile store: process memory, memcached, Redis
CACHE_PAIRS = [("sqlite", "memory"), ("etcd", "memcached"), ("redis", "redis")]


@pytest.fixture(params=CACHE_PAIRS, ids=["+".join(pair) for pair in CACHE_PAIRS])
def stores(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[Context]:
    """dal configured on one durable store with each kind of volatile store, in a fresh namespace
    (removed from the durable store afterwards)."""
    persistent, volatile = request.param
    context = configure(persistent_url_for(persistent, request, tmp_path),
                        volatile_url_for(volatile, request), namespace=namespace)
    yield context
    context.persistent.commit([], [DeletePrefix(context.keys.root)])


@pytest.fixture
def local(tmp_path: Path, namespace: str) -> Iterator[Context]:
    """dal on the embedded pair (a SQLite file and memory://) in a fresh namespace, closed after."""
    context = configure(f"sqlite:///{tmp_path}/local.sqlite3", "memory://", namespace=namespace)
    yield context
    context.close()


def round_trips(context: Context, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count every call that reaches either store from now on, by store and method; not the statistics
    publisher's (its timer fires 5 s after ``configure()``, whatever the test does then)."""
    calls: Counter[str] = Counter()
    publishing = context.publisher._tick if context.publisher is not None else None
    for role, store, methods in (("persistent", context.persistent,
                                  ("get", "get_many", "scan", "scan_keys", "commit")),
                                 ("volatile", context.volatile,
                                  ("get", "get_many", "gets", "set", "add", "cas", "delete", "delete_many"))):
        for method in methods:
            real = getattr(store, method)

            def counted(*args: Any, _real: Callable[..., Any] = real, _name: str = f"{role}.{method}",
                        **kwargs: Any) -> Any:
                if publishing is None or getattr(threading.current_thread(), "function", None) != publishing:
                    calls[_name] += 1
                return _real(*args, **kwargs)

            monkeypatch.setattr(store, method, counted)
    return calls


def cached_document(context: Context, hybrid: str, guid: str) -> tuple[int, dict[str, Any]] | None:
    """Return (revision, document) of an object's cached copy on the cache server; None when absent
    (or a fill's lease sits there)."""
    key = context.keys.cached_doc(hybrid, guid)
    raw = context.volatile.get(key)
    payload = None if raw is None else context.objects.signer.open(key, raw)
    if payload is None or payload[:1] != b"V":
        return None
    revision, _, document = payload[1:].partition(b" ")
    return int(revision), json.loads(document)


# --- mirrored hybrids (tests/test_mirror.py, tests/test_mirror_bulk.py) --------------------------


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> Iterator[Remote]:
    """A loopback remote API the mirrored hybrids of tests/mirror_hybrids.py ask (its URL in their
    environment variable); a test module may define a remote of its own."""
    from mirror_hybrids import REMOTE_ENV  # imported here: only mirror tests define those hybrids

    with Remote() as running:
        monkeypatch.setenv(REMOTE_ENV, running.url)
        yield running


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The mirror's clock, frozen and moved by the test (a ``mirror_hybrids.Clock``)."""
    from mirror_hybrids import Clock

    import dal.mirror

    fake = Clock()
    monkeypatch.setattr(dal.mirror.clock, "now", fake.now)
    return fake


def at_once(count: int, call: Callable[[], Any]) -> list[Any]:
    """Run ``call`` in ``count`` threads released together by one barrier; return what each returned."""
    start = threading.Barrier(count)
    results: list[Any] = []

    def run() -> None:
        start.wait()
        results.append(call())

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
