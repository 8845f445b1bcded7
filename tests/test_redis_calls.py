"""dal's own call path for the hot Redis commands (:mod:`dal.backends.redis.calls`): each property of
redis-py's client layer it replaces, pinned down by a case where a list without it would differ."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis
from harness import periodic_signal

from dal.backends.base import Put
from dal.backends.redis import RedisCache, RedisStore
from dal.backends.redis.calls import Calls
from dal.backends.redis.connection import DATA
from dal.backends.url import parse_url
from dal.exceptions import BackendError
from dal.testing.fixtures import start_or_skip
from dal.testing.servers import RunningServer, start_redis

pytestmark = pytest.mark.redis

#: a script that holds the server for ``ARGV[1]`` ms, then answers ``ARGV[2]``: an answer that comes late
SLOW = """
local started = redis.call('TIME')
local function now(t) return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 end
while now(redis.call('TIME')) - now(started) < tonumber(ARGV[1]) do end
return ARGV[2]
"""


class SoftTimeLimit(Exception):
    """What a task runner raises from a signal handler (Celery's soft time limit)."""


@pytest.fixture
def store(redis_server: RunningServer) -> Iterator[RedisStore]:
    opened = RedisStore.from_url(parse_url(redis_server.url))
    try:
        yield opened
    finally:
        opened.close()


def _calls(store: RedisStore | RedisCache) -> Any:
    calls: Any = store._calls
    return calls


def _interrupt_next_read(store: RedisStore | RedisCache, monkeypatch: pytest.MonkeyPatch,
                         interruption: type[BaseException]) -> Any:
    """Make the next read on the connection the next call takes raise ``interruption``, once (as a
    signal handler's exception landing between the send and the read); return that connection."""
    taken = _calls(store)._free[-1]
    real = taken.read_response

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(taken, "read_response", real)  # once
        raise interruption()

    monkeypatch.setattr(taken, "read_response", interrupted)
    return taken


def _client_id(store: RedisStore) -> int:
    """The server's id of the connection the next call takes (the one the last call put back)."""
    return int(store._command("client id", "CLIENT", "ID"))


# --- 1. an answer never stays unread on a connection that is used again ----------------------------


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SoftTimeLimit])
def test_an_exception_between_the_send_and_the_read_drops_the_connection(
        store: RedisStore, namespace: str, monkeypatch: pytest.MonkeyPatch,
        interruption: type[BaseException]) -> None:
    """A signal handler's exception (or Ctrl-C) landing after the send, before the read starts: the
    late answer is still on its way (the server is busy), so only dropping the connection keeps the
    next call, sent at once, from reading it as its own."""
    key = f"{namespace}/k"
    assert store.commit([], [Put(key, b"fresh")]).ok
    taken = _interrupt_next_read(store, monkeypatch, interruption)
    with pytest.raises(interruption):
        store._command("slow", "EVAL", SLOW, 0, 300, b"0:stale")
    assert not taken.is_connected and taken not in _calls(store)._free
    entry = store.get(key)  # sent while the script still runs: answered after it
    assert entry is not None and entry.value == b"fresh"


@pytest.mark.parametrize("operation", ["scan_keys", "identity", "acquire_leadership"])
def test_a_pipeline_or_a_script_interrupted_before_its_answers_drops_the_connection(
        store: RedisStore, namespace: str, monkeypatch: pytest.MonkeyPatch, operation: str) -> None:
    """The several-command calls (scan_keys, identity: MULTI..EXEC) and leadership's scripts go
    through dal's connections too: interrupted before their answers are read, the connection is
    dropped, and the next call reads its own answers."""
    assert store.commit([], [Put(f"{namespace}/a/1", b"x"), Put(f"{namespace}/b/1", b"y")]).ok
    taken = _interrupt_next_read(store, monkeypatch, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        if operation == "scan_keys":
            store.scan_keys([f"{namespace}/a/"])
        elif operation == "identity":
            store.identity()
        else:
            store.acquire_leadership(f"{namespace}-role", "first", 30)
    assert not taken.is_connected and taken not in _calls(store)._free
    assert store.scan_keys([f"{namespace}/b/"]) == {f"{namespace}/b/": [f"{namespace}/b/1"]}
    assert store.identity().startswith("redis-")
    lease = store.acquire_leadership(f"{namespace}-other", "second", 30)
    assert lease.acquired and lease.holder == "second"
    store.release_leadership(lease)


def test_the_pipelined_deletes_interrupted_before_their_answers_drop_the_connection(
        redis_server: RunningServer, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache's ``delete_many`` (an invalidation: DELs pipelined outside a transaction) interrupted
    after its send: the DEL's answer (an integer) must not be read by the next get as its value."""
    cache = RedisCache.from_url(parse_url(f"{redis_server.url}?timeout=2"))
    try:
        assert cache.set(f"{namespace}/a", b"value-of-a", 60) and cache.set(f"{namespace}/b", b"b", 60)
        # the server takes no command for 0.3 s (its answer to the pause itself comes at once): the
        # DEL's answer comes late, so it is not yet on the socket when the next call checks for
        # unread bytes, and only dropping the connection keeps that call from reading it
        assert _calls(cache).call("CLIENT", "PAUSE", 300) in (b"OK", "OK")
        taken = _interrupt_next_read(cache, monkeypatch, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            cache.delete_many([f"{namespace}/b"])
        assert not taken.is_connected and taken not in _calls(cache)._free
        assert cache.get(f"{namespace}/a") == b"value-of-a"  # sent at once: answered after the pause
    finally:
        cache.close()


@pytest.mark.parametrize("interrupted_read", [1, 2])
def test_the_cache_listing_interrupted_before_its_answers_drops_the_connection(
        redis_server: RunningServer, namespace: str, monkeypatch: pytest.MonkeyPatch,
        interrupted_read: int) -> None:
    """The listing (``dal cache ls``): its SCAN (the first read) or its pipeline of MEMORY USAGE,
    OBJECT IDLETIME, PTTL and GET (the second) interrupted, the next listing reads its own answers."""
    cache = RedisCache.from_url(parse_url(redis_server.url))
    try:
        assert cache.set(f"{namespace}/listed", b"value", 60)
        taken = _calls(cache)._free[-1]
        real, reads = taken.read_response, []

        def interrupted(*args: Any, **kwargs: Any) -> Any:
            reads.append(1)
            if len(reads) == interrupted_read:
                monkeypatch.setattr(taken, "read_response", real)
                raise KeyboardInterrupt()
            return real(*args, **kwargs)

        monkeypatch.setattr(taken, "read_response", interrupted)
        with pytest.raises(KeyboardInterrupt):
            cache.list_entries(f"{namespace}/")
        assert not taken.is_connected and taken not in _calls(cache)._free
        listed = cache.list_entries(f"{namespace}/")
        assert [entry.key for entry in listed] == [f"{namespace}/listed"]
        assert listed[0].size > 0 and listed[0].expires_at is not None
    finally:
        cache.close()


def test_errors_inline_keep_the_connection_and_stand_in_their_commands_place(store: RedisStore) -> None:
    calls = _calls(store)
    assert store.get("{dal}:none") is None  # a connection in the list
    taken = calls._free[-1]
    answers = calls.pipeline(
        [("SET", "{dal}:inline", "1"), ("INCR", "{dal}:inline", "x"), ("GET", "{dal}:inline")],
        transaction=False, errors_inline=True)
    assert answers[0] in (b"OK", "OK") and isinstance(answers[1], redis.ResponseError) and answers[2] == b"1"
    assert calls._free[-1] is taken and taken.is_connected  # every answer read: used again


def test_a_failed_command_in_a_pipeline_raises_and_leaves_no_answer_for_the_next(store: RedisStore) -> None:
    calls = _calls(store)
    with pytest.raises(redis.ResponseError):
        calls.pipeline([("SET", "{dal}:t", "1"), ("INCR", "{dal}:t", "not a number"), ("GET", "{dal}:t")],
                       transaction=False)
    assert calls.call("PING") in (b"PONG", "PONG", True)  # the next call reads its own answer


def test_a_read_interrupted_by_a_signal_handler_leaves_no_answer_for_the_next(
        store: RedisStore, namespace: str) -> None:
    key = f"{namespace}/k"
    assert store.commit([], [Put(key, b"fresh")]).ok

    def interrupt(*_: object) -> None:
        raise SoftTimeLimit()

    with periodic_signal(0.1, interrupt), pytest.raises(SoftTimeLimit):
        store._command("slow", "EVAL", SLOW, 0, 400, b"0:stale")
    entry = store.get(key)
    assert entry is not None and entry.value == b"fresh"
    time.sleep(0.4)  # the late answer has arrived by now, on no connection in use
    entry = store.get(key)
    assert entry is not None and entry.value == b"fresh"


def test_an_error_reply_keeps_the_connection(store: RedisStore) -> None:
    """An error reply is read whole: its connection is clean and stays in use."""
    first = _client_id(store)
    with pytest.raises(BackendError, match="ResponseError"):
        store._command("bad", "NO-SUCH-COMMAND")
    assert _client_id(store) == first


# --- 2. a forked child opens its own connections -------------------------------------------------


@pytest.mark.parametrize("closes_first", [False, True], ids=["calls-then-closes", "closes-then-calls"])
def test_a_forked_child_neither_uses_nor_closes_the_parents_connection(
        store: RedisStore, closes_first: bool) -> None:
    parent_id = _client_id(store)
    parent_connection = _calls(store)._free[-1]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reports its client id, and whether it left the parent's connection alone
        code = 1
        try:
            if closes_first:
                store.close()
            child_id = _client_id(store)
            untouched = _calls(store)._free[-1] is not parent_connection
            store.close()
            untouched = untouched and parent_connection.is_connected
            os.write(write, f"{child_id} {int(untouched)}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        reported = answer.read().decode().split()
    _, status = os.waitpid(pid, 0)
    assert status == 0
    child_id, untouched = int(reported[0]), reported[1] == "1"
    assert child_id != parent_id and untouched
    assert _client_id(store) == parent_id  # the parent's session survived the child's close()


# --- 3. threads never share a connection -----------------------------------------------------------


def test_concurrent_threads_each_read_their_own_answers(store: RedisStore, namespace: str) -> None:
    keys = [f"{namespace}/t{index}" for index in range(8)]
    assert store.commit([], [Put(key, key.encode()) for key in keys]).ok
    wrong: list[tuple[str, object]] = []
    start = threading.Barrier(len(keys))

    def reader(key: str) -> None:
        start.wait()
        for _ in range(300):
            entry = store.get(key)
            if entry is None or entry.value != key.encode():
                wrong.append((key, entry))

    threads = [threading.Thread(target=reader, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong
    free = _calls(store)._free
    assert 1 < len(free) <= len(keys) and len({id(connection) for connection in free}) == len(free)


# --- 4. an idle connection the server closed, or holding bytes, is replaced -------------------------


def test_a_connection_the_server_closed_is_reconnected_not_failed(
        store: RedisStore, redis_server: RunningServer, namespace: str) -> None:
    """As after a restart or the server's idle timeout: the next call succeeds on a new session."""
    key = f"{namespace}/k"
    assert store.commit([], [Put(key, b"v")]).ok
    killed = _client_id(store)
    admin = redis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        assert admin.client_kill_filter(_id=killed) == 1
        time.sleep(0.05)  # the server's FIN reaches the idle socket
        entry = store.get(key)
        assert entry is not None and entry.value == b"v"
        assert _client_id(store) != killed
    finally:
        admin.close()


def test_an_idle_connection_holding_unread_bytes_is_not_read_from(store: RedisStore, namespace: str) -> None:
    key = f"{namespace}/k"
    assert store.commit([], [Put(key, b"v")]).ok
    idle = _calls(store)._free[-1]
    idle.send_packed_command(idle.pack_command("ECHO", b"0:stray"), check_health=False)  # never read
    time.sleep(0.05)
    entry = store.get(key)
    assert entry is not None and entry.value == b"v"


# --- 5. failures: the same BackendError, one attempt, NOSCRIPT reloads -----------------------------


class FakeServer:
    """A RESP server that records every command; ``OK`` to all, except ``HELLO`` (its map),
    ``EVALSHA`` (the connection drops: the commit may have run) and ``GET`` (silence: the answer
    never comes)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.commands: list[list[bytes]] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def close(self) -> None:
        # close() alone leaves the thread blocked in accept(), listening on a number the next test's
        # socket may get (see tests/test_cached_reads.py): shutdown() wakes it
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.acceptor.join(5)

    @property
    def url(self) -> str:
        host, port = self.listener.getsockname()[:2]
        return f"redis://{host}:{port}"

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                threading.Thread(target=self._serve, args=(self.listener.accept()[0],), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        reader = hiredis.Reader()
        with contextlib.suppress(OSError), client:
            while data := client.recv(65536):
                reader.feed(data)
                while (command := reader.gets()) is not False:
                    self.commands.append(command)
                    name = command[0].upper()
                    if name == b"EVALSHA":
                        return
                    if name == b"HELLO":  # redis-py 8 speaks RESP3
                        client.sendall(b"%1\r\n$5\r\nproto\r\n:3\r\n")
                    elif name != b"GET":
                        client.sendall(b"+OK\r\n")


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    try:
        yield server
    finally:
        server.close()


def test_a_commit_whose_connection_drops_is_sent_once_and_fails(fake_server: FakeServer) -> None:
    store = RedisStore.from_url(parse_url(fake_server.url))
    try:
        with pytest.raises(BackendError, match=r"redis commit of 1 ops on 127\.0\.0\.1:\d+/0 failed: "
                                               r"ConnectionError: "):
            store.commit([], [Put("k", b"v")])
        assert [command[0] for command in fake_server.commands].count(b"EVALSHA") == 1
    finally:
        store.close()


def test_a_silent_server_fails_a_call_in_its_timeout_with_redis_pys_message(fake_server: FakeServer) -> None:
    cache = RedisCache.from_url(parse_url(fake_server.url + "?timeout=0.2"))
    client: Any = redis.Redis.from_url(fake_server.url, socket_timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(BackendError) as failed:
            cache.get("k")
        assert 0.15 < time.monotonic() - started < 1.0
        with pytest.raises(redis.TimeoutError) as direct:
            client.get("dal:c:k")
        where = fake_server.url.removeprefix("redis://") + "/0"
        assert str(failed.value) == (
            f"redis get on {where} failed: the server did not answer within 0.2 s (the timeout option of "
            f"{fake_server.url}?timeout=0.2; {direct.value}); check that redis-server is running and not "
            "blocked, or raise timeout")
    finally:
        cache.close()
        client.close()


def test_a_refused_connection_fails_with_redis_pys_message() -> None:
    with socket.create_server(("127.0.0.1", 0)) as unused:
        port = unused.getsockname()[1]
    store = RedisStore.from_url(parse_url(f"redis://127.0.0.1:{port}"))
    client: Any = redis.Redis(host="127.0.0.1", port=port)
    try:
        with pytest.raises(BackendError) as failed:
            store.get("k")
        with pytest.raises(redis.ConnectionError) as direct:
            client.get(DATA + "k")
        assert str(failed.value) == (f"redis get of 'k' on 127.0.0.1:{port}/0 failed: "
                                     f"ConnectionError: {direct.value}")
    finally:
        store.close()
        client.close()


def test_a_forgotten_script_is_loaded_once_and_run_again(
        store: RedisStore, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert store.commit([], [Put(f"{namespace}/a", b"1")]).ok
    store._client.script_flush()  # as a restarted server forgets every script
    sent: list[Any] = []
    real = Calls.call

    def record(self: Calls, *args: Any) -> Any:
        sent.append(args[0])
        return real(self, *args)

    monkeypatch.setattr(Calls, "call", record)
    assert store.commit([], [Put(f"{namespace}/b", b"2")]).ok
    assert sent == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]


# --- 6. close() --------------------------------------------------------------------------------------


def test_close_disconnects_the_idle_connections_and_one_in_use_when_its_call_ends(
        store: RedisStore, redis_server: RunningServer) -> None:
    idle_id = _client_id(store)
    in_flight: list[Any] = []
    started = threading.Event()

    def slow() -> None:
        started.set()
        in_flight.append(store._command("slow", "EVAL", SLOW, 0, 300, b"done"))

    worker = threading.Thread(target=slow)
    worker.start()
    started.wait()
    time.sleep(0.1)  # the slow call holds its own connection (the idle one is in the list)
    busy = [connection for connection in [*_calls(store)._free] if connection.is_connected]
    store.close()
    worker.join()
    assert in_flight == [b"done"]
    assert not _calls(store)._free  # the in-flight call's connection was not put back
    assert not any(connection.is_connected for connection in busy)
    admin = redis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        ids = {int(client["id"]) for client in admin.client_list()}
        assert idle_id not in ids
    finally:
        admin.close()


def test_a_connection_asked_to_reconnect_is_not_put_back(store: RedisStore) -> None:
    """What redis-py's pool does on release for a server's maintenance notice (RESP3)."""
    first = _client_id(store)
    asked = _calls(store)._free[-1]
    asked.mark_for_reconnect()
    assert _client_id(store) == first  # the call itself runs on it
    assert asked not in _calls(store)._free and not asked.is_connected
    assert _client_id(store) != first


def test_a_set_over_maxmemory_fails_and_leaves_no_old_value(tmp_path: Path) -> None:
    """The OOM error reply of a SET reaches the cache as a ResponseError (the connection stays)."""
    server = start_or_skip("redis", lambda: start_redis(tmp_path / "oom"))
    cache = RedisCache.from_url(parse_url(server.url))
    admin = redis.Redis(host=server.host, port=server.port)
    try:
        assert cache.set("k", b"old", 60)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        assert cache.set("k", b"new", 60) is False
        assert cache.get("k") is None
        assert len(_calls(cache)._free) == 1
    finally:
        admin.close()
        cache.close()
        server.stop()
