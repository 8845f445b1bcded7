"""The Redis commit script's compact arguments: what is sent per check, write and evict, and that the
script reads them back exactly (kinds folded into keys, evicts gathered after the writes, paged)."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.connection import HiredisRespSerializer  # type: ignore[attr-defined, unused-ignore]

from dal.backends import open_persistent
from dal.backends.base import (
    Check,
    Delete,
    DeletePrefix,
    Entry,
    Evict,
    Exists,
    Op,
    PrefixEmpty,
    PrefixUnchanged,
    Put,
    Revision,
)
from dal.backends.redis import RedisStore
from dal.backends.redis import store as redis_store
from dal.backends.redis.connection import CACHE, Packer, open_redis, packs_commands
from dal.backends.url import parse_url
from dal.testing.servers import RunningServer


@pytest.fixture(params=["redis", "fakeredis"])
def store(request: pytest.FixtureRequest, namespace: str) -> Iterator[RedisStore]:
    """A store on the session's redis-server, and one on a fake server of this test's own."""
    if request.param == "fakeredis":
        url = f"fakeredis://{namespace}"
    else:
        server: RunningServer = request.getfixturevalue("redis_server")
        url = server.url
    opened = open_persistent(url)
    assert isinstance(opened, RedisStore)
    yield opened
    opened.commit([], [DeletePrefix(f"{namespace}/")])


def _client(store: RedisStore) -> Any:
    client: Any = store._client
    return client


def _sent(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record the arguments of every command the store sends on its hot path (its own connections)."""
    calls: Any = store._calls
    sent: list[tuple[Any, ...]] = []
    real = calls.call

    def record(*args: Any) -> Any:
        sent.append(args)
        return real(*args)

    monkeypatch.setattr(calls, "call", record)
    return sent


def test_a_saves_commit_sends_two_arguments_per_check_and_write_and_one_per_evict(
        store: RedisStore, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shape of a save (two checks, four writes, fourteen evicts) is one EVALSHA with 31 ARGV, not
    the 64 of three per item: each argument costs the client (packing) and the server (a Lua string)."""
    p = f"{namespace}/"
    assert store.commit([], [Put(f"{p}old-journal", b"R")]).ok
    checks: list[Check] = [Revision(f"{p}doc", 0), Revision(f"{p}journal", 0)]
    ops: list[Op] = [Put(f"{p}doc", b"{}"), Put(f"{p}index/doc", b""), Put(f"{p}journal", b"R..."),
                     Delete(f"{p}old-journal")]
    ops += [Evict(f"{p}cached/{number}") for number in range(14)]
    sent = _sent(store, monkeypatch)
    assert store.commit(checks, ops).ok
    assert [args[0] for args in sent] == ["EVALSHA"]
    _command, _sha, keys, *rest = sent[0]
    # KEYS, then the header, the checks, the writes and the evicts
    assert keys == 3 and len(rest) == keys + 31 == keys + 5 + 2 * 2 + 2 * 4 + 14
    assert sent[0][-14:] == tuple(CACHE + f"{p}cached/{number}" for number in range(14))
    assert store.get(f"{p}doc") is not None and store.get(f"{p}old-journal") is None


def test_keys_that_begin_like_a_kind_are_read_back_whole(store: RedisStore, namespace: str) -> None:
    """The kind letter is the first byte of the key's argument: the script takes the rest, exactly,
    whatever the key's own first characters (letters that are kinds, a colon, multibyte UTF-8)."""
    p = f"{namespace}/"
    keys = [f"{p}P", f"{p}RX:1", f"{p}é/ß", f"{p}E"]
    first = store.commit([Revision(key, 0) for key in keys] + [PrefixEmpty(f"{p}P")],
                         [Put(key, key.encode()) for key in keys] + [Put(f"{p}empty", b"")])
    assert first.ok
    assert store.get_many([*keys, f"{p}empty"]) == {
        **{key: Entry(key.encode(), first.revision) for key in keys}, f"{p}empty": Entry(b"", first.revision)}
    failed = store.commit([Exists(f"{p}RX:1"), Revision(f"{p}é/ß", 0), PrefixEmpty(f"{p}P"),
                           PrefixUnchanged(f"{p}E", first.revision - 1), Exists(f"{p}nothing")],
                          [Delete(f"{p}P")])
    assert not failed.ok and failed.failed == (1, 2, 3, 4)
    assert dict(failed.current) == {f"{p}é/ß": Entry(f"{p}é/ß".encode(), first.revision)}
    assert store.get(f"{p}P") is not None  # nothing written by the failed commit
    assert store.commit([PrefixUnchanged(f"{p}E", first.revision)], [DeletePrefix(f"{p}R")]).ok
    assert [key for key, _ in store.scan(p)] == sorted([f"{p}P", f"{p}é/ß", f"{p}E", f"{p}empty"])


def test_evicts_past_a_page_all_go_with_the_writes_and_none_when_a_check_fails(
        store: RedisStore, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evicts are sent after the writes, whatever their place among the ops, and deleted a page per
    DEL: all of them on success (seven over pages of three), none on a failed check."""
    monkeypatch.setattr(redis_store, "PAGE", 3)
    p = f"{namespace}/"
    client = _client(store)
    cached = [f"{p}cached/{number}" for number in range(7)]

    def fill() -> None:
        for key in cached:
            client.set(CACHE + key, b"stampstavalue")

    fill()
    ops: list[Op] = [Evict(cached[0]), Put(f"{p}a", b"1"), *(Evict(key) for key in cached[1:4]),
                     Delete(f"{p}gone"), *(Evict(key) for key in cached[4:]), Put(f"{p}b", b"2")]
    assert not store.commit([Exists(f"{p}a")], ops).ok
    assert all(client.get(CACHE + key) is not None for key in cached)
    assert store.commit([], ops).ok
    assert [client.get(CACHE + key) for key in cached] == [None] * 7
    assert [key for key, _ in store.scan(p)] == [f"{p}a", f"{p}b"]
    fill()
    assert store.commit([], [Evict(key) for key in cached]).ok  # evicts alone, no write
    assert [client.get(CACHE + key) for key in cached] == [None] * 7


def test_writes_then_a_prefix_delete_then_writes_apply_in_order(store: RedisStore, namespace: str) -> None:
    """Writes stay in their order around a DeletePrefix (only evicts move): what the delete finds
    includes the commit's own earlier puts, and a later put under the prefix survives it."""
    p = f"{namespace}/"
    assert store.commit([], [Put(f"{p}d/x", b"1"), Put(f"{p}d/y", b"2"), DeletePrefix(f"{p}d/"),
                             Put(f"{p}d/y", b"3"), Delete(f"{p}d/z"), Put(f"{p}d/z", b"4")]).ok
    found = [(key, entry.value) for key, entry in store.scan(f"{p}d/")]
    assert found == [(f"{p}d/y", b"3"), (f"{p}d/z", b"4")]


@pytest.mark.parametrize("args", [
    ("EVALSHA", "0" * 40, 2, "{dal}:revision", "{dal}:keys", "{dal}:d:", 1000, 1, 1, "Rk/é", 0, "Pk/é",
     b"\x00\xff"),
    ("SET", b"key", b"", "PX", 1500), ("SCRIPT LOAD", "return 1"), (b"CONFIG GET", "maxmemory"),
    ("SET", bytearray(b"key"), memoryview(b"value")), ("INCRBYFLOAT", "k", 1.5), ("GET", "k" * 100_000),
], ids=["commit", "set", "spaced-name", "spaced-bytes-name", "bytearray-memoryview", "float", "long"])
def test_the_packer_sends_the_bytes_redis_py_would(args: tuple[Any, ...]) -> None:
    """The store's packer skips redis-py's pass over every argument: whatever it is given, what it
    sends must be byte for byte what redis-py's own hiredis packer sends."""
    assert b"".join(Packer().pack(*args)) == b"".join(HiredisRespSerializer().pack(*args))


def test_the_packer_refuses_what_redis_py_refuses() -> None:
    for bad in (None, {"a": 1}, ["x"]):
        with pytest.raises(redis.DataError):
            Packer().pack("SET", "k", bad)
        with pytest.raises(redis.DataError):
            HiredisRespSerializer().pack("SET", "k", bad)


def test_a_redis_client_packs_with_the_packer(redis_server: RunningServer) -> None:
    """Every connection of an opened client packs with :class:`Packer`, and still talks to a server."""
    opened = open_redis(parse_url(redis_server.url), 5.0)
    client: Any = opened.client
    try:
        assert client.ping()
        connection = client.connection_pool.get_connection()
        try:
            assert isinstance(connection._command_packer, Packer)
        finally:
            client.connection_pool.release(connection)
    finally:
        client.close()


def test_a_hiredis_without_pack_command_or_unused_by_redis_py_is_not_used_to_pack() -> None:
    old = types.SimpleNamespace(__version__="2.0.0")  # no pack_command: packing would raise AttributeError
    current = types.SimpleNamespace(pack_command=lambda args: b"")
    assert not packs_commands(old, True)
    assert not packs_commands(current, False)  # redis-py does not use it (too old for redis-py)
    assert not packs_commands(None, True)
    assert packs_commands(current, True)
