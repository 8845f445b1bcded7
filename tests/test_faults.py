"""Faults against real servers: unreachable, frozen and restarted servers, failover, limits, secrets.

Timing bounds here are correctness bounds (the call must not hang), not benchmarks, so they
are generous.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from pyetcd import etcdrpc
from tls_pki import make_pki

from dal.backends.base import DeletePrefix, Entry, Put, Revision
from dal.backends.etcd import EtcdStore
from dal.backends.memcached import MemcachedCache, wire_key
from dal.backends.url import parse_url
from dal.exceptions import BackendError, ConfigurationError
from dal.testing.fixtures import start_or_skip
from dal.testing.servers import RunningServer, closed_port, start_etcd, start_memcached

T = TypeVar("T")
MARGIN = 1.5


def etcd(url: str) -> EtcdStore:
    return EtcdStore.from_url(parse_url(url))


def memcached(url: str) -> MemcachedCache:
    return MemcachedCache.from_url(parse_url(url))


def timed(call: Callable[[], T]) -> tuple[T | BaseException, float]:
    """Run ``call``; return what it returned or raised, and how long it took."""
    started = time.monotonic()
    try:
        outcome: T | BaseException = call()
    except BaseException as exc:
        outcome = exc
    return outcome, time.monotonic() - started


def eventually(call: Callable[[], T], within: float) -> T:
    """Return the first result of ``call`` that does not raise BackendError within ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            return call()
        except BackendError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def private(start: Callable[[Path], RunningServer], workdir: Path) -> Iterator[RunningServer]:
    server = start_or_skip("a private server", lambda: start(workdir))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[RunningServer]:
    yield from private(start_etcd, tmp_path / "etcd")


@pytest.fixture
def private_memcached(tmp_path: Path) -> Iterator[RunningServer]:
    yield from private(start_memcached, tmp_path / "memcached")


# --- etcd ---------------------------------------------------------------------------


@pytest.mark.etcd
def test_etcd_on_closed_port_fails_within_timeout() -> None:
    store = etcd(f"etcd://127.0.0.1:{closed_port()}?timeout=1")
    try:
        for call in (lambda: store.get("k"), lambda: store.commit([], [Put("k", b"v")]),
                     lambda: store.scan("p/"), lambda: store.get_many(["a", "b"])):
            outcome, elapsed = timed(call)
            assert isinstance(outcome, BackendError), outcome
            assert isinstance(outcome.__cause__, grpc.RpcError)
            assert f"127.0.0.1:{closed_port()}" in str(outcome)
            assert elapsed < 1 + MARGIN
    finally:
        store.close()


@pytest.mark.etcd
def test_frozen_etcd_times_out_then_recovers(private_etcd: RunningServer) -> None:
    store = etcd(f"{private_etcd.url}?timeout=1")
    try:
        store.commit([], [Put("k", b"v")])
        private_etcd.pause()
        try:
            for call in (lambda: store.get("k"), lambda: store.commit([], [Put("k", b"w")])):
                outcome, elapsed = timed(call)
                assert isinstance(outcome, BackendError), outcome
                assert "did not answer within 1 s" in str(outcome)
                assert elapsed < 1 + MARGIN
        finally:
            private_etcd.resume()
        entry = eventually(lambda: store.get("k"), within=5)
        assert entry is not None
        assert entry.value in (b"v", b"w")  # the timed-out commit may have been applied
    finally:
        store.close()


@pytest.mark.etcd
def test_failover_past_a_dead_endpoint(etcd_server: RunningServer, namespace: str) -> None:
    live = f"{etcd_server.host}:{etcd_server.port}"
    dead = f"127.0.0.1:{closed_port()}"
    for order, hosts in enumerate((f"{dead},{live}", f"{live},{dead}")):
        # pyetcd starts on a random endpoint: enough rounds make landing on the dead one first likely
        for round_ in range(4):
            store = etcd(f"etcd://{hosts}?timeout=2")
            try:
                key = f"{namespace}/{order}/{round_}"
                result, elapsed = timed(partial(store.commit, [Revision(key, 0)], [Put(key, b"v")]))
                assert not isinstance(result, BaseException), result
                assert result.ok and elapsed < 2 + MARGIN
                assert store.get(key) == Entry(b"v", result.revision)
                assert store.commit([], [Put(key, b"w")]).ok
            finally:
                store.close()
    cleanup = etcd(etcd_server.url)
    assert cleanup.commit([], [DeletePrefix(f"{namespace}/")]).ok
    cleanup.close()


@pytest.mark.etcd
def test_commit_over_max_txn_ops_says_how_to_fix(etcd_server: RunningServer, namespace: str) -> None:
    store = etcd(etcd_server.url)
    try:
        with pytest.raises(BackendError, match="--max-txn-ops") as raised:
            store.commit([], [Put(f"{namespace}/{i:03d}", b"") for i in range(129)])
        assert "129" in str(raised.value)
        assert store.scan(f"{namespace}/") == []
        assert store.commit([], [Put(f"{namespace}/{i:03d}", b"") for i in range(128)]).ok
        many = {f"{namespace}/{i:03d}" for i in range(128)} | {f"{namespace}/x{i}" for i in range(300)}
        assert len(store.get_many(sorted(many))) == 128  # get_many chunks under the limit
    finally:
        store.commit([], [DeletePrefix(f"{namespace}/")])
        store.close()


@pytest.mark.etcd
def test_user_and_password_authenticate(private_etcd: RunningServer) -> None:
    channel = grpc.insecure_channel(f"{private_etcd.host}:{private_etcd.port}")
    auth = etcdrpc.AuthStub(channel)
    auth.RoleAdd(etcdrpc.AuthRoleAddRequest(name="root"), timeout=5)
    auth.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password="s3cret pass"), timeout=5)
    auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=5)
    auth.AuthEnable(etcdrpc.AuthEnableRequest(), timeout=5)
    channel.close()
    base = f"{private_etcd.host}:{private_etcd.port}"

    anonymous = etcd(f"etcd://{base}?timeout=2")
    with pytest.raises(BackendError):
        anonymous.get("k")
    anonymous.close()

    for url in (f"etcd://root:s3cret%20pass@{base}", f"etcd://{base}?user=root&password=s3cret%20pass"):
        store = etcd(url)
        try:
            assert store.commit([], [Put("k", b"v")]).ok
            assert store.get("k") is not None
            store._token = "expired.token"  # as after etcd dropped it: the store logs in again
            assert store.get("k") is not None
        finally:
            store.close()

    wrong = etcd(f"etcd://root:not-it@{base}?timeout=2")
    with pytest.raises(BackendError) as raised:
        wrong.get("k")
    assert "not-it" not in str(raised.value)
    wrong.close()


def test_etcd_options_parse(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)  # the files are parsed when the store is opened
    ca, key, cert = pki.ca, pki.client_key, pki.client_cert
    store = etcd(f"etcd://u:p@h1,h2:2380?timeout=0.5&ca_cert={ca}&cert_key={key}&cert_cert={cert}")
    assert store.url.require_hosts(2379) == (("h1", 2379), ("h2", 2380))
    store.close()
    etcd(f"etcd://h?user=u&password=p&ca_cert={ca}").close()

    bad = [
        f"etcd://h?ca_cert={tmp_path / 'missing.pem'}",  # a missing file
        f"etcd://h?ca_cert={ca}&cert_key={key}",  # half a client certificate
        "etcd://h?timeout=soon",
        "etcd://h?timeout=0",
        "etcd://h?tiemout=1",  # unknown option
        "etcd://u@h",  # a user without a password
        "etcd://h/some/path",
        "etcd://",
    ]
    for url in bad:
        with pytest.raises(ConfigurationError):
            etcd(url)


def test_secrets_stay_out_of_repr_and_errors() -> None:
    for url in ("etcd://admin:hunter2@127.0.0.1:1", "etcd://127.0.0.1:1?user=admin&password=hunter2"):
        store = etcd(url)
        try:
            for text in (repr(store), str(store), repr(store.url), str(store.url)):
                assert "hunter2" not in text
                assert "admin" in text
        finally:
            store.close()
    with pytest.raises(ConfigurationError) as raised:
        etcd("etcd://admin:hunter2@127.0.0.1:1?bogus=1")
    assert "hunter2" not in str(raised.value)


@pytest.mark.etcd
def test_unreachable_error_names_endpoints_not_password() -> None:
    port = closed_port()
    store = etcd(f"etcd://admin:hunter2@127.0.0.1:{port}?timeout=1")
    with pytest.raises(BackendError) as raised:
        store.get("k")
    assert f"127.0.0.1:{port}" in str(raised.value)
    assert "hunter2" not in str(raised.value)
    store.close()


# --- memcached ----------------------------------------------------------------------


@pytest.mark.memcached
def test_memcached_on_closed_port_fails_fast_and_stays_skipped() -> None:
    cache = memcached(f"memcached://127.0.0.1:{closed_port()}?dead_timeout=30")
    try:
        outcome, elapsed = timed(lambda: cache.get("k"))
        assert isinstance(outcome, BackendError), outcome
        assert outcome.__cause__ is not None
        assert elapsed < 0.25 + MARGIN
        started = time.monotonic()
        for call in (lambda: cache.get("k"), lambda: cache.set("k", b"v", 0),
                     lambda: cache.get_many(["a", "b"])) * 5:
            with pytest.raises(BackendError):
                call()
            # an invalidation is tried even now (refused at once) and reported undelivered
            assert cache.delete_many(["a", "b"]) == ["a", "b"]
        assert time.monotonic() - started < 1.0  # skipped, not retried with a timeout each time
    finally:
        cache.close()


@pytest.mark.memcached
def test_frozen_memcached_times_out(private_memcached: RunningServer) -> None:
    cache = memcached(f"{private_memcached.url}?timeout=0.5")
    try:
        assert cache.set("k", b"v", 0)
        private_memcached.pause()
        try:
            outcome, elapsed = timed(lambda: cache.get("k"))
            assert isinstance(outcome, BackendError), outcome
            assert elapsed < 0.5 + MARGIN
        finally:
            private_memcached.resume()
    finally:
        cache.close()


@pytest.mark.memcached
def test_restarted_memcached_is_used_again_after_dead_timeout(private_memcached: RunningServer) -> None:
    cache = memcached(f"{private_memcached.url}?dead_timeout=1")
    try:
        assert cache.set("k", b"v", 0) and cache.get("k") == b"v"
        private_memcached.stop()
        # the first call may only notice the closed connection; the next one is refused and marks it dead
        for _ in range(2):
            with pytest.raises(BackendError):
                cache.get("k")
        restarted = start_memcached(private_memcached.workdir, port=private_memcached.port)
        try:
            # pymemcache re-checks dead servers every dead_timeout, so it takes up to twice that
            assert eventually(lambda: cache.set("k", b"again", 0), within=2 * 1 + 4) is True
            assert cache.get("k") == b"again"
        finally:
            restarted.stop()
    finally:
        cache.close()


@pytest.mark.memcached
def test_invalidations_reach_a_restarted_memcached_before_its_dead_timeout(
        private_memcached: RunningServer) -> None:
    """A pending invalidation waits for nothing: the restarted server gets it while reads still skip it."""
    cache = memcached(f"{private_memcached.url}?dead_timeout=30")
    try:
        assert cache.set("k", b"old", 0)
        private_memcached.stop()
        for _ in range(2):  # notice the closed connection, then be refused: marked dead for 30 s
            with pytest.raises(BackendError):
                cache.get("k")
        assert cache.delete_many(["k"]) == ["k"]
        restarted = start_memcached(private_memcached.workdir, port=private_memcached.port)
        try:
            assert restarted.process.pid != private_memcached.process.pid
            cache_of_another_process = memcached(private_memcached.url)
            assert cache_of_another_process.set("k", b"filled while we thought it dead", 0)
            assert cache.delete_many(["k"]) == [], "the invalidation must not wait out dead_timeout"
            assert cache_of_another_process.get("k") is None
            assert cache.get("k") is None  # and having answered, it is no longer skipped
            cache_of_another_process.close()
        finally:
            restarted.stop()
    finally:
        cache.close()


def test_memcached_options_parse() -> None:
    cache = memcached("memcached://a,b:11212?timeout=0.1&connect_timeout=0.2&dead_timeout=3")
    assert cache.url.require_hosts(11211) == (("a", 11211), ("b", 11212))
    cache.close()
    for url in ("memcached://h?timeout=-1", "memcached://h?dead_timeout=x", "memcached://h?ttl=3",
                "memcached://u:p@h", "memcached://"):
        with pytest.raises(ConfigurationError):
            memcached(url)


@pytest.mark.memcached
def test_memcached_ttl_over_30_days_is_not_read_as_a_past_timestamp(memcached_server: RunningServer,
                                                                     namespace: str) -> None:
    cache = memcached(memcached_server.url)
    try:
        assert cache.set(f"{namespace}/long", b"v", 31 * 24 * 3600) is True
        assert cache.set(f"{namespace}/fraction", b"v", 0.2) is True  # rounded up to 1 s, not 0 (never)
        assert cache.get(f"{namespace}/long") == b"v"
        time.sleep(2.1)
        assert cache.get(f"{namespace}/long") == b"v"
        assert cache.get(f"{namespace}/fraction") is None
    finally:
        cache.delete_many([f"{namespace}/long", f"{namespace}/fraction"])
        cache.close()


def test_memcached_wire_keys_are_safe_and_distinct() -> None:
    keys = ["plain:key", "with space", "x" * 251, "x" * 250, "ключ", "tab\t", "", "a~b",
            "with_space", f"with_space~{'0' * 64}"]
    wired = [wire_key(key) for key in keys]
    assert len(set(wired)) == len(keys)
    assert wire_key("plain:key") == "plain:key" and wire_key("x" * 250) == "x" * 250
    for sent in wired:
        assert 0 < len(sent.encode()) <= 250
        assert all(0x21 <= ord(char) <= 0x7E for char in sent)
