"""A key or value longer than the redis-server takes in one argument (its proto-max-bulk-len: 512 MB
by default, lowered here to its least, 1 MB, so the tests stay cheap): the durable store raises
TooLargeError, nothing sent, as SQLite and etcd do at their limits (the mirror records it as the
object's failure); the cache does not cache it, as memcached does not cache a value over its item
limit, and fails nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from dal import DataObject, Property, configure
from dal.backends import open_persistent, open_volatile
from dal.backends.base import HIT_SUFFIX, Put, RefusedError, TooLargeError
from dal.backends.redis.connection import CACHE, DATA
from dal.backends.redis.limits import AROUND, DEFAULT_BULK
from dal.exceptions import BackendError, ConfigurationError
from dal.testing.servers import RunningServer

pytestmark = pytest.mark.redis

MB = 1024 * 1024


def _limited(server: RunningServer, limit: str = "1mb") -> Any:
    admin: Any = redis.Redis(port=server.port)
    admin.config_set("proto-max-bulk-len", limit)
    return admin


def test_a_value_longer_than_the_server_takes_is_too_large_and_nothing_is_sent(
        own_redis: RunningServer) -> None:
    admin = _limited(own_redis)
    store = open_persistent(own_redis.url)
    store.commit([], [Put("small", b"v")])
    sent = admin.info("stats")["total_net_input_bytes"]
    with pytest.raises(TooLargeError, match=r"the value of 'big' is 2,097,152 bytes, more than the "
                                            r"1,048,576 .*proto-max-bulk-len.*nothing was written"):
        store.commit([], [Put("small", b"w"), Put("big", b"x" * (2 * MB))])
    assert admin.info("stats")["total_net_input_bytes"] - sent < MB, "the value was sent"
    assert admin.get("{dal}:d:small") == b"1:v" and not admin.exists("{dal}:d:big")
    with pytest.raises(TooLargeError, match=r"the key 'k+'\.\.\. \(1,100,000 characters\), read as "
                                            r"\{dal\}:d:<key>, is 1,100,008 bytes"):
        store.commit([], [Put("k" * 1_100_000, b"v")])
    assert store.commit([], [Put("small", b"w")]).ok, "the connection and the store are fine"


def test_a_limit_raised_since_it_was_read_is_read_again_before_refusing(own_redis: RunningServer) -> None:
    admin = _limited(own_redis)
    store = open_persistent(own_redis.url)
    with pytest.raises(TooLargeError):
        store.commit([], [Put("big", b"x" * (2 * MB))])
    admin.config_set("proto-max-bulk-len", "4mb")
    assert store.commit([], [Put("big", b"x" * (2 * MB))]).ok
    assert store.get("big") is not None


def test_a_save_of_a_value_longer_than_the_server_takes_raises_too_large(own_redis: RunningServer) -> None:
    _limited(own_redis)
    configure(own_redis.url, "memory://", namespace=f"big{uuid.uuid4().hex[:8]}")

    class BigDoc(DataObject, hybrid_name=f"bigdoc{uuid.uuid4().hex[:8]}"):
        __properties = [Property("body", str)]

    doc = BigDoc()
    doc.body = "x" * (2 * MB)
    with pytest.raises(TooLargeError, match="proto-max-bulk-len") as raised:
        doc.save()
    # sent again it is refused the same way: nothing written, and no 'retrying is safe' to suggest it
    said = str(raised.value).lower()
    assert said.count("nothing was written") == 1 and "retrying" not in said, said


def test_where_config_is_not_granted_redis_default_is_assumed(own_redis: RunningServer) -> None:
    admin = _limited(own_redis)
    admin.acl_setuser("noconfig", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                      commands=["+@all", "-config"])
    store = open_persistent(f"redis://noconfig:pw@127.0.0.1:{own_redis.port}")
    assert store._bulk_limit() == (DEFAULT_BULK, False)  # type: ignore[attr-defined]
    assert open_persistent(own_redis.url)._bulk_limit() == (MB, True)  # type: ignore[attr-defined]


def test_the_cache_does_not_cache_a_value_longer_than_the_server_takes(own_redis: RunningServer) -> None:
    """Not sent: sent, it resets the connection, a failure of the cache server (which the layer
    above reads around until a catch-up), for a value that will never fit."""
    _limited(own_redis)
    cache = open_volatile(own_redis.url)
    big = b"x" * (2 * MB)
    assert cache.set("k", b"old", 60)
    assert cache.add("k", big, 60) is False and cache.get("k") == b"old", "add replaces nothing"
    assert cache.set("k", big, 60) is False
    assert cache.get("k") is None, "the old value does not stay for readers"
    assert cache.set("k", b"old", 60)
    _, token = cache.gets("k")
    assert cache.cas("k", big, token, 60) is False and cache.get("k") is None
    near = b"x" * (MB - 8)  # with its 8-byte stamp, exactly the limit: taken
    assert cache.set("n", near, 60) and cache.get("n") == near
    assert cache.set("n", near + b"x", 60) is False


def test_a_key_is_measured_as_its_longest_command_sends_it() -> None:
    assert len(DATA) <= AROUND and len(CACHE + HIT_SUFFIX) <= AROUND


def test_a_key_the_reads_could_not_send_is_too_large_at_the_exact_edge(own_redis: RunningServer) -> None:
    """A data key is read as {dal}:d:<key>, longer than the commit's P<key>: one that fits only in
    the commit was written and could never be read back."""
    admin = _limited(own_redis)
    store = open_persistent(own_redis.url)
    edge = "k" * (MB - len(DATA))  # read as exactly the limit: taken
    assert store.commit([], [Put(edge, b"v")]).ok
    assert store.get(edge) is not None and list(store.get_many([edge])) == [edge]
    for key in (edge + "k", "\U0001F600" * ((MB - len(DATA)) // 4 + 1)):  # one byte, one character over
        with pytest.raises(TooLargeError, match=r"the key .*, read as \{dal\}:d:<key>, is 1,048,5"):
            store.commit([], [Put(key, b"v")])
    assert admin.zcard("{dal}:keys") == 1, "nothing was written"
    assert store.commit([], [Put("small", b"w")]).ok


def test_the_cache_does_not_cache_under_a_key_its_reads_could_not_send(own_redis: RunningServer) -> None:
    """A cache key is sent as dal:c:<key>, and by a read counting hits (?hits=1) with its counter's
    <key>/#hits too: one longer than the server takes there is not cached, nothing sent, the
    connection kept (a long non-ASCII key passed the screen and reset it)."""
    admin = _limited(own_redis)
    cache = open_volatile(own_redis.url)
    counting = open_volatile(f"{own_redis.url}?hits=1")
    edge = "k" * (MB - len(CACHE + HIT_SUFFIX))  # the counter's key is exactly the limit: taken
    assert cache.set(edge, b"v", 60) and counting.get(edge) == b"v"
    assert cache.set(edge + "k", b"v", 60) is False
    emoji = "\U0001F600" * ((MB - len(CACHE + HIT_SUFFIX)) // 4 + 1)
    assert cache.set(emoji, b"v", 60) is False and cache.add(emoji, b"v", 60) is False
    _, token = cache.gets("small")
    assert cache.cas(emoji, b"v", token or b"x" * 8, 60) is False
    assert admin.dbsize() == 2, "nothing but the entry at the edge and its hit counter was stored"
    assert cache.set("small", b"v", 60) and counting.get("small") == b"v", "the connections are fine"


def test_a_failed_read_of_the_limit_refuses_the_commit_with_nothing_written(
        own_redis: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The looks a commit takes at the server before sending it (its settings, its
    proto-max-bulk-len) sent nothing of it: their failure is a RefusedError, which the journal does
    not fence as a commit that may have been applied."""
    admin: Any = redis.Redis(port=own_redis.port)
    store = open_persistent(own_redis.url)
    assert store.commit([], [Put("small", b"v")]).ok
    calls: Any = store._calls  # type: ignore[attr-defined]
    call = calls.call

    def config_fails(*args: Any) -> Any:
        if args[:2] == ("CONFIG", "GET"):
            raise redis.ConnectionError("Connection reset by peer")
        return call(*args)

    monkeypatch.setattr(calls, "call", config_fails)
    with pytest.raises(RefusedError, match=r"proto-max-bulk-len.*nothing was written: retrying is safe"):
        store.commit([], [Put("small", b"w"), Put("big", b"x" * (2 * MB))])
    assert admin.get("{dal}:d:small") == b"1:v" and not admin.exists("{dal}:d:big")
    assert admin.get("{dal}:revision") == b"1"

    fresh = open_persistent(f"{own_redis.url}?timeout=4")  # another client: not checked yet
    fresh_calls: Any = fresh._calls  # type: ignore[attr-defined]

    def info_fails(*args: Any, **kwargs: Any) -> Any:
        raise redis.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(fresh_calls, "pipeline", info_fails)
    with pytest.raises(RefusedError, match=r"INFO server and memory.*nothing was written"):
        fresh.commit([], [Put("small", b"w")])
    assert admin.get("{dal}:revision") == b"1"


def test_a_password_changed_after_configure_is_a_failure_of_the_save_not_a_setting_error(
        own_redis: RunningServer) -> None:
    """The first value over 1 MiB makes dal read the server's proto-max-bulk-len; a server that then
    refuses the URL's password refuses that request, as any call it refuses: a BackendError, never the
    ConfigurationError (a ValueError) a refusal at configure() is; and it says once that nothing was
    written."""
    admin: Any = redis.Redis(port=own_redis.port)
    admin.config_set("requirepass", "pw1")
    configure(f"redis://:pw1@127.0.0.1:{own_redis.port}/0", "memory://",
              namespace=f"pw{uuid.uuid4().hex[:8]}")

    class Blob(DataObject, hybrid_name=f"blob{uuid.uuid4().hex[:8]}"):
        __properties = [Property("body", str)]

    blob = Blob(data={"body": "a"})
    blob.save()
    admin = redis.Redis(port=own_redis.port, password="pw1")
    admin.config_set("requirepass", "pw2")
    admin = redis.Redis(port=own_redis.port, password="pw2")
    admin.client_kill_filter(_type="normal", skipme=True)  # dal's connections come back with pw1
    blob.body = "b" * (2 * MB)
    with pytest.raises(BackendError, match="refuses the credentials") as raised:
        blob.save()
    assert not isinstance(raised.value, ConfigurationError)
    assert str(raised.value).lower().count("nothing was written") == 1, str(raised.value)
