"""A memcached call through pymemcache interrupted by ``KeyboardInterrupt`` or ``SystemExit`` leaves
no answer for the next call to read.

pymemcache closes a client's socket on any ``Exception``, not on those two; but dal opens its
clients pooled (``use_pooling=True``), and the pool's ``get_and_release`` hands a client back only
when its block ends without an exception (and destroys it on an ``Exception``): a client left by a
``BaseException`` is never handed out again (its socket is closed with the cache). ``gets`` and
``cas`` go over connections of their own (``dal/backends/memcached/client.py``), closed on any
exception. These tests hold that for every command dal sends through pymemcache on one server
(``gets``, ``add``, ``cas``, ``set``, ``delete``) and for a ``get`` with two servers.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import socket
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import lines_of, stand_in_server
from pymemcache.pool import ObjectPool

from dal.backends.memcached import MemcachedCache
from dal.backends.url import parse_url

#: how long the stand-in server takes to answer, and when the signal handler raises
ANSWER_AFTER, INTERRUPT_AT = 0.5, 0.1


@pytest.fixture
def slow_server() -> Iterator[tuple[tuple[str, int], dict[str, bytes]]]:
    """A memcached stand-in answering after ANSWER_AFTER: ``get`` and ``gets`` with the value it holds
    when asked (and a cas token), ``set``, ``add`` and ``cas`` with the reply it holds when asked,
    ``delete`` with ``DELETED``."""
    state = {"value": b"v1", "reply": b"STORED"}

    def serve(client: socket.socket) -> None:
        with contextlib.suppress(OSError), client:
            received = lines_of(client)
            for line in received:
                command, keys = line.split()[0], line.split()[1:]
                if command in (b"set", b"add", b"cas"):
                    next(received)  # the data block (no CRLF in the tests' values)
                    reply = state["reply"]  # as when asked, like a value
                    time.sleep(ANSWER_AFTER)
                    client.sendall(reply + b"\r\n")
                    continue
                if command == b"delete":
                    time.sleep(ANSWER_AFTER)
                    client.sendall(b"DELETED\r\n")
                    continue
                value = state["value"]
                time.sleep(ANSWER_AFTER)
                cas = b" 7" if command == b"gets" else b""
                client.sendall(b"".join(b"VALUE %s 0 %d%s\r\n%s\r\n" % (key, len(value), cas, value)
                                        for key in keys) + b"END\r\n")

    with stand_in_server(serve) as address:
        yield address, state


@contextlib.contextmanager
def raising_once(exception: type[BaseException]) -> Iterator[None]:
    """Raise ``exception`` from a SIGALRM handler INTERRUPT_AT seconds from now, once."""
    def handler(*_: object) -> None:
        raise exception()

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, INTERRUPT_AT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def interrupted_then_read(state: dict[str, bytes], exception: type[BaseException],
                          call: Callable[[], object], then: Callable[[], object],
                          change: dict[str, bytes]) -> object:
    """Interrupt ``call`` while its answer is on its way, apply ``change`` to the server, return
    ``then()``: what it reads must be its own answer, not the interrupted call's."""
    call()  # opens (and pools) the connection
    with raising_once(exception), pytest.raises(exception):
        call()
    state.update(change)
    time.sleep(ANSWER_AFTER + 0.1)  # the interrupted call's answer is on its socket now
    return then()


def _gets(cache: MemcachedCache) -> object:
    return cache.gets("k")[0]


#: the token each cache's first ``_cas`` read
_TOKENS: weakref.WeakKeyDictionary[MemcachedCache, object] = weakref.WeakKeyDictionary()


def _cas(cache: MemcachedCache) -> object:
    """``cas`` against the token of a ``gets`` made by the first call only: a later call is
    interrupted in its ``cas``."""
    if cache not in _TOKENS:
        _TOKENS[cache] = cache.gets("k")[1]
    return cache.cas("k", b"x", _TOKENS[cache], 60)


def _fresh_cas(cache: MemcachedCache) -> object:
    return cache.cas("k", b"x", cache.gets("k")[1], 60)


#: a command interrupted, what the server answers next, the call that follows and what it must return
#: (the interrupted answer would be b"v1", or True for a STORED)
CASES = {
    "gets": (_gets, {"value": b"v2"}, _gets, b"v2"),
    "add": (lambda cache: cache.add("k", b"x", 60), {"reply": b"NOT_STORED"},
            lambda cache: cache.add("k", b"x", 60), False),
    "cas": (_cas, {"reply": b"EXISTS"}, _fresh_cas, False),
    "set": (lambda cache: cache.set("k", b"x", 60), {"reply": b"NOT_STORED"},
            lambda cache: cache.set("k", b"x", 60), False),
    "delete": (lambda cache: cache.delete("k"), {"value": b"v2"}, _gets, b"v2"),
}


@pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("command", sorted(CASES))
def test_an_interrupted_command_on_one_server_leaves_no_answer_for_the_next(
        slow_server: tuple[tuple[str, int], dict[str, bytes]], exception: type[BaseException],
        command: str) -> None:
    (host, port), state = slow_server
    cache = MemcachedCache.from_url(parse_url(f"memcached://{host}:{port}?timeout=2"))
    call, change, then, expected = CASES[command]
    try:
        assert interrupted_then_read(state, exception, lambda: call(cache), lambda: then(cache),
                                     change) == expected
    finally:
        cache.close()


@pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit])
def test_an_interrupted_get_across_two_servers_leaves_no_answer_for_the_next(
        slow_server: tuple[tuple[str, int], dict[str, bytes]], exception: type[BaseException]) -> None:
    (host, port), state = slow_server
    # two servers, one copy of each entry: every get goes through pymemcache's HashClient; the
    # second server is never asked (its port is closed), the key lives on the slow one
    with socket.create_server(("127.0.0.1", 0)) as closed:
        other = closed.getsockname()[1]
    cache = MemcachedCache.from_url(parse_url(f"memcached://{host}:{port},{host}:{other}?timeout=2"))
    key = next(f"k{n}" for n in range(1000) if cache.node(f"k{n}") == f"{host}:{port}")
    try:
        assert interrupted_then_read(state, exception, lambda: cache.get(key), lambda: cache.get(key),
                                     {"value": b"v2"}) == b"v2"
    finally:
        cache.close()


def test_control_a_pool_that_hands_an_interrupted_client_back_reads_the_old_answer(
        slow_server: tuple[tuple[str, int], dict[str, bytes]], monkeypatch: pytest.MonkeyPatch) -> None:
    """What the tests above would see if pymemcache's pool handed a client interrupted by a
    ``BaseException`` back: the next call reads the interrupted call's answer (STORED, not
    NOT_STORED)."""

    @contextlib.contextmanager
    def get_and_release(self: ObjectPool[Any], destroy_on_fail: bool = False) -> Iterator[Any]:
        client = self.get()
        try:
            yield client
        except BaseException:
            self.release(client)
            raise
        self.release(client)

    monkeypatch.setattr(ObjectPool, "get_and_release", get_and_release)
    (host, port), state = slow_server
    cache = MemcachedCache.from_url(parse_url(f"memcached://{host}:{port}?timeout=2"))
    try:
        add = functools.partial(cache.add, "k", b"x", 60)
        assert interrupted_then_read(state, KeyboardInterrupt, add, add, {"reply": b"NOT_STORED"}) is True
    finally:
        cache.close()
