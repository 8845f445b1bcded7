"""What the Redis and etcd stores say when they are misconfigured, time out, or get too much.

Each error is typed and says what to do: a TLS option that cannot work is refused when the store is
opened (not at the first request, nor as a bare TypeError after a commit), a timeout no request can
keep is refused, a frozen redis-server reads like a timeout, and an etcd request over the server's
size limit names the limit whichever layer (etcd's or gRPC's) refused it.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dal import DataObject, Property, configure
from dal.backends import close_all, open_persistent, open_volatile
from dal.backends.base import Put
from dal.backends.etcd import EtcdStore
from dal.backends.redis import RedisCache, RedisStore
from dal.backends.url import MAX_TIMEOUT, parse_url
from dal.exceptions import BackendError, ConfigurationError
from dal.testing.servers import RunningServer, closed_port


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    # clients are cached per process by URL: none of this module's broken ones may outlive its test
    yield
    close_all()


@pytest.fixture
def junk_pem(tmp_path: Path) -> str:
    path = tmp_path / "k.pem"
    path.write_text("not a key")
    return str(path)


# --- rediss:// TLS options -------------------------------------------------------------------


@pytest.mark.parametrize("role", ["persistent", "volatile"])
def test_a_rediss_key_without_its_certificate_is_refused_when_the_store_is_opened(
        role: str, junk_pem: str) -> None:
    url = f"rediss://127.0.0.1:{closed_port()}?cert_key={junk_pem}"
    with pytest.raises(ConfigurationError, match="gives cert_key without cert_cert"):
        open_persistent(url) if role == "persistent" else open_volatile(url)


@pytest.mark.parametrize("option", ["ca_cert", "cert_cert", "cert_key"])
def test_a_rediss_tls_file_that_cannot_be_read_is_refused_when_the_store_is_opened(
        option: str, junk_pem: str, tmp_path: Path) -> None:
    others = "" if option != "cert_key" else f"&cert_cert={junk_pem}"
    url = f"rediss://127.0.0.1:{closed_port()}?{option}={tmp_path}/missing.pem{others}"
    for opener in (open_persistent, open_volatile):
        with pytest.raises(ConfigurationError, match=f"option {option} of .*cannot read .*missing.pem"):
            opener(url)


def test_a_rediss_certificate_alone_is_accepted_since_its_file_may_hold_the_key(junk_pem: str) -> None:
    cache = open_volatile(f"rediss://127.0.0.1:{closed_port()}?cert_cert={junk_pem}&ca_cert={junk_pem}")
    assert isinstance(cache, RedisCache)


def _unconnectable(cache: RedisCache) -> None:
    """Make every new connection of ``cache`` fail in its setup with an error that is neither redis-py's
    nor OSError (a socket timeout out of range: OverflowError), as ssl's TypeError was."""
    cache._calls.close()
    cache._calls._pool.connection_kwargs["socket_connect_timeout"] = 1e10


def test_a_connection_that_cannot_be_set_up_fails_as_a_backend_error(redis_server: RunningServer) -> None:
    cache = RedisCache.from_url(parse_url(redis_server.url))
    try:
        _unconnectable(cache)
        with pytest.raises(BackendError, match="could not set up a connection: OverflowError"):
            cache.get("k")
        assert cache.delete_many(["a", "b"]) == ["a", "b"]  # undelivered, for the cache layer to resend
    finally:
        cache.close()


class StoreErrorGadget(DataObject):
    name: str = Property()


def test_a_save_whose_cache_cannot_connect_is_committed_and_reports_no_bare_error(
        redis_server: RunningServer, tmp_path: Path) -> None:
    context = configure(f"sqlite:///{tmp_path}/x.db", redis_server.url + "/7",
                        namespace=f"t{uuid.uuid4().hex[:8]}")
    cache = context.volatile
    assert isinstance(cache, RedisCache)
    _unconnectable(cache)
    thing = StoreErrorGadget(name="a")
    thing.save()  # committed; the invalidation that cannot be delivered is the cache's to retry
    assert StoreErrorGadget(thing.guid).name == "a"


# --- timeouts --------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["etcd", "redis", "rediss", "fakeredis"])
@pytest.mark.parametrize("timeout", ["inf", "1e10", "1e12", "nan", "-inf"])
def test_a_timeout_no_request_can_keep_is_refused(scheme: str, timeout: str) -> None:
    host = "name" if scheme == "fakeredis" else f"127.0.0.1:{closed_port()}"
    with pytest.raises(ConfigurationError, match="must be a positive number of seconds, at most 1000000000"):
        open_persistent(f"{scheme}://{host}?timeout={timeout}")


def test_the_longest_timeout_taken_works(etcd_server: RunningServer) -> None:
    store = EtcdStore.from_url(parse_url(f"{etcd_server.url}?timeout={MAX_TIMEOUT:.0f}"))
    try:
        assert store.get(f"absent-{uuid.uuid4().hex}") is None
    finally:
        store.close()


def test_a_frozen_redis_server_reads_like_a_timeout(own_redis: RunningServer) -> None:
    store = RedisStore.from_url(parse_url(f"{own_redis.url}?timeout=0.3"))
    cache = RedisCache.from_url(parse_url(f"{own_redis.url}?timeout=0.2"))
    try:
        assert store.get("k") is None and cache.get("k") is None  # connected while it runs
        own_redis.pause()
        for call, what, seconds in ((lambda: store.get("k"), "get of 'k'", "0.3"),
                                    (lambda: cache.get("k"), "get", "0.2")):
            started = time.monotonic()
            with pytest.raises(BackendError) as failed:
                call()
            took = time.monotonic() - started
            # the message names the timeout: the wait must be that (twice it plus 0.2 s of a loaded
            # machine's slack), not a multiple of it the message would then misreport
            assert took < 2 * float(seconds) + 0.2, f"{what} ({seconds} s timeout) failed after {took:.2f} s"
            message = str(failed.value)
            assert message.startswith(f"redis {what} on 127.0.0.1:{own_redis.port}/0 failed: the server "
                                      f"did not answer within {seconds} s (the timeout option of redis://")
            assert "check that redis-server is running and not blocked, or raise timeout" in message
            # redis-py's own words come once, only in the brackets after dal's sentence, never alone
            said = re.fullmatch(r"[^()]*\(the timeout option of redis://[^;()]*; ([^()]*)\); check that "
                                r"[^()]*", message)
            assert said is not None and message.count("Timeout reading from") == 1, message
            assert said[1].startswith("Timeout reading from"), message
        own_redis.resume()
        assert store.get("k") is None  # a later call reconnects
    finally:
        own_redis.resume()
        store.close()
        cache.close()


# --- etcd's request size limit ---------------------------------------------------------------


# 1.8 MB is over etcd's own --max-request-bytes (1.5 MiB); 2.5 MB is over gRPC's limit on the server
# (that plus 512 KiB), which answers RESOURCE_EXHAUSTED before etcd sees the request
@pytest.mark.parametrize("size", [1_800_000, 2_500_000])
def test_an_etcd_request_over_the_size_limit_names_the_limit(etcd_server: RunningServer, size: int) -> None:
    store = EtcdStore.from_url(parse_url(etcd_server.url))
    key = f"big-{uuid.uuid4().hex}"
    try:
        with pytest.raises(BackendError) as failed:
            store.commit([], [Put(key, b"x" * size)])
        message = str(failed.value)
        assert "--max-request-bytes" in message and "fails the same way" in message
        assert "RESOURCE_EXHAUSTED" not in message
        assert store.get(key) is None
    finally:
        store.close()


class StoreErrorBlob(DataObject):
    payload: str = Property()


def test_an_etcd_save_over_the_size_limit_says_retrying_does_not_help(etcd_server: RunningServer) -> None:
    configure(etcd_server.url, "memory://", namespace=f"t{uuid.uuid4().hex[:8]}")
    with pytest.raises(BackendError) as failed:
        StoreErrorBlob(payload="x" * 2_500_000).save()
    message = str(failed.value)
    assert "--max-request-bytes" in message and "fails the same way" in message
    assert "RESOURCE_EXHAUSTED" not in message


# --- fakeredis:// ----------------------------------------------------------------------------


def test_a_fakeredis_path_that_is_no_database_gets_an_example_that_works() -> None:
    with pytest.raises(ConfigurationError, match=r"write fakeredis://x/0$"):
        open_persistent("fakeredis://x/abc")
    assert isinstance(open_persistent("fakeredis://x/0"), RedisStore)
