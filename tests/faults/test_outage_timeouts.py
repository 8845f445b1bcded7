"""A cache server that stops answering costs a read one timeout, not two.

The server is paused (SIGSTOP): connections stay open and nothing answers, so every call sent
waits its whole timeout. A read whose ``get`` timed out must not send the server anything else
before it reads around it: neither the catch-up probe of the commit journal (a process catches up
in a reader's thread only the first time, and never after an outage: the background sweep does)
nor, on memcached, a fill, a lock or a ``gets`` within ``dead_timeout`` of that failure (right after
it and later alike: the cache's clock is moved on rather than waited for).
Reads during and after the outage stay fresh: a change saved meanwhile is what the next read sees,
even by another process whose invalidation the server never got (a proxy in front of it cut it):
right after the server answers again, before any sweep of the journal delivered it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import dal
from dal import DataObject, Property, configure
from dal.backends import open_volatile
from dal.backends.memcached import cache as memcached_cache
from dal.config import Context
from dal.exceptions import BackendError
from dal.testing.fixtures import start_or_skip
from dal.testing.proxy import LoopbackProxy
from dal.testing.servers import RunningServer, start_memcached

pytestmark = pytest.mark.faults

#: the cache's timeout (s): long enough that one timeout stands out from a loaded machine's noise
TIMEOUT = 1.0
#: what a call the server is skipped for may take (s): no round trip at all
SKIPPED = 0.1
#: seconds the background sweep may take to trust a server again (a sweep every 0.5 s, jittered)
TRUSTED_WITHIN = 10.0
#: the memcached tests' ``dead_timeout`` (s), and how much later than a failure they call again:
#: well inside it, and far past what a skip cut short (to a fixed fraction of a second) would last
DEAD_TIMEOUT = 30.0
LATER = 20.0
#: seconds the writer process of the lost-invalidation test may take (its cache calls time out)
WRITER_WITHIN = 60.0

#: another process's save, made while the cache does not answer: argv is the durable and the
#: volatile URL, the namespace and the box's guid
WRITER = """
import sys
from dal import DataObject, Property, configure

class OutageBox(DataObject):
    __properties = [Property("name", str)]

persistent, volatile, namespace, guid = sys.argv[1:]
configure(persistent, volatile, namespace=namespace)
box = OutageBox(guid)
box.name = "after"
box.save()
"""


class OutageBox(DataObject):
    """A plain hybrid, read through the object cache."""

    __properties = [Property("name", str)]



def wait_for(condition: Callable[[], bool], within: float) -> bool:
    """Poll ``condition`` until it holds or ``within`` seconds passed; return whether it held."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def move_the_memcached_clock_on(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make the memcached cache's clock read ``seconds`` later than it is: a call that much later,
    without waiting for it (the cache reads the clock only through its module's ``time``)."""
    real = time.monotonic
    monkeypatch.setattr(memcached_cache, "time", SimpleNamespace(
        monotonic=lambda: real() + seconds, time=time.time))


def timed(read: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    value = read()
    return value, time.monotonic() - started


@pytest.fixture
def cache_proxy(cache_server: tuple[str, RunningServer]) -> Iterator[tuple[str, LoopbackProxy]]:
    """A loopback proxy in front of this test's cache server, with the cache's URL through it."""
    kind, _ = cache_server[0].split("://", 1)
    server = cache_server[1]
    with LoopbackProxy((server.host, server.port)) as proxy:
        yield f"{kind}://{proxy.netloc}", proxy


@pytest.fixture
def box(cache_server: tuple[str, RunningServer], tmp_path: Path, fault_namespace: str,
        parent: list[Context]) -> tuple[Context, str]:
    """A stored box read once through a warm cache, in a context that its background sweep (not a
    read) trusted first: the catch-up a process's first read would make is still to come."""
    url = f"{cache_server[0]}?timeout={TIMEOUT:g}"
    context = configure(f"sqlite:///{tmp_path}/durable.db", url, namespace=fault_namespace)
    parent.append(context)
    assert wait_for(lambda: context.objects.trust.trusted, TRUSTED_WITHIN), "no background catch-up"
    stored = OutageBox(data={"name": "before"})
    stored.save()
    assert OutageBox(stored.guid).name == "before"
    return context, stored.guid


def test_a_read_against_a_paused_cache_server_waits_one_timeout(
        box: tuple[Context, str], cache_server: tuple[str, RunningServer],
        figures: Callable[..., None]) -> None:
    _, guid = box
    _, server = cache_server
    server.pause()
    try:
        loaded, first = timed(lambda: OutageBox(guid).name)
        _, second = timed(lambda: OutageBox(guid).name)
    finally:
        server.resume()
    figures(first_read_s=round(first, 3), second_read_s=round(second, 3), timeout_s=TIMEOUT)
    assert loaded == "before"
    # the get times out; a catch-up probe of the same server in this thread would wait as long again
    assert first < 1.5 * TIMEOUT, f"the first read during the outage took {first:.2f} s"
    # read around while untrusted; memcached also skips the server itself for dead_timeout
    assert second < 1.5 * TIMEOUT, f"the second read during the outage took {second:.2f} s"


def test_a_change_saved_during_the_outage_is_read_after_it(
        box: tuple[Context, str], cache_server: tuple[str, RunningServer]) -> None:
    context, guid = box
    _, server = cache_server
    server.pause()
    try:
        assert OutageBox(guid).name == "before"  # the get fails: the server is untrusted
        changed = OutageBox(guid)
        changed.name = "after"
        changed.save()  # its invalidation fails: it waits in the journal (and the paused socket)
        assert OutageBox(guid).name == "after"  # read around
    finally:
        server.resume()
    assert OutageBox(guid).name == "after"  # the old entry is never served, trusted or not
    assert wait_for(lambda: context.objects.trust.trusted, TRUSTED_WITHIN), "never trusted again"
    assert OutageBox(guid).name == "after"
    assert OutageBox(guid).name == "after"  # now through the cache, filled anew


def test_a_change_whose_invalidation_the_server_never_got_is_read_right_after_the_outage(
        cache_proxy: tuple[str, LoopbackProxy], tmp_path: Path, fault_namespace: str,
        parent: list[Context], monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process saves while the cache server does not answer, and its invalidation is lost
    on the way (not delayed, as a paused server's socket would). The server answers again with the
    old entry in it: a read right after, before any sweep delivered the journal, reads around it.
    The writer is another process: this one's monotonic reads would refuse the older revision anyway."""
    url, proxy = cache_proxy
    persistent = f"sqlite:///{tmp_path}/durable.db"
    context = configure(persistent, f"{url}?timeout={TIMEOUT:g}", namespace=fault_namespace)
    parent.append(context)
    assert wait_for(lambda: context.objects.trust.trusted, TRUSTED_WITHIN), "no background catch-up"
    stored = OutageBox(data={"name": "before"})
    stored.save()
    guid, cache_key = stored.guid, context.keys.cached_doc(OutageBox._meta.name, stored.guid)
    assert OutageBox(guid).name == "before"
    assert context.volatile.get(cache_key) is not None, "the box was not cached"
    # nothing of this process delivers the journal until the test says so (see the end)
    sweeper = context.sweeper
    assert sweeper is not None, "a shared cache must come with a journal sweeper"
    sweeper.stop()
    sweeper._thread.join(WRITER_WITHIN)
    assert not sweeper._thread.is_alive(), "the journal sweeper did not stop"
    proxy.blackhole(True)
    try:
        assert OutageBox(guid).name == "before"  # the get fails: this process stops trusting the server
        writer = subprocess.run(
            [sys.executable, "-c", WRITER, persistent, f"{url}?timeout={TIMEOUT:g}", fault_namespace, guid],
            env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(dal.__file__))},
            capture_output=True, text=True, timeout=WRITER_WITHIN)
        assert writer.returncode == 0, writer.stderr
    finally:
        proxy.cut()  # what the writer sent (its invalidation) is lost, not delivered late
        proxy.blackhole(False)
    # memcached's own skip of a failed server (dead_timeout) is over: the read may ask the server
    move_the_memcached_clock_on(monkeypatch, DEAD_TIMEOUT)
    assert OutageBox(guid).name == "after"  # the server still holds "before": read around it
    assert context.volatile.get(cache_key) is not None, "the invalidation reached the server after all"
    assert not context.objects.trust.trusted
    sweeper.sweep.tick()  # a sweep catches up: it delivers the journal and trusts the server again
    assert context.objects.trust.trusted, "the catch-up did not trust the server again"
    assert context.volatile.get(cache_key) is None, "the catch-up did not deliver the invalidation"
    assert OutageBox(guid).name == "after"
    assert OutageBox(guid).name == "after"  # now through the cache, filled anew


def test_memcached_skips_fills_and_locks_for_dead_timeout_after_a_failed_get(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_or_skip("memcached", lambda: start_memcached(tmp_path / "memcached"))
    try:
        store = open_volatile(f"{server.url}?timeout={TIMEOUT:g}&dead_timeout={DEAD_TIMEOUT:g}")
        assert store.add("k", b"v", 60)
        _, token = store.gets("k")
        server.pause()
        try:
            with pytest.raises(BackendError, match="did not answer"):
                store.get("k")
            calls: dict[str, Callable[[], object]] = {
                "add": lambda: store.add("k", b"w", 60), "set": lambda: store.set("k", b"w", 60),
                "cas": lambda: store.cas("k", b"w", token, 60), "gets": lambda: store.gets("k")}
            # right after the failed get, then LATER s after it: still inside dead_timeout, so
            # still skipped (pymemcache, which sends these, never saw the get fail: were dal's own
            # skip over, each would wait a timeout of its own)
            for when, later in (("right after", 0.0), (f"{LATER:g} s after", LATER)):
                move_the_memcached_clock_on(monkeypatch, later)
                for name, call in calls.items():
                    started = time.monotonic()
                    with pytest.raises(BackendError, match="skipped"):
                        call()
                    took = time.monotonic() - started
                    assert took < SKIPPED, f"{name} {when} a failed get waited {took:.2f} s"
            # past dead_timeout the server is asked again (still paused: one timeout), not skipped
            move_the_memcached_clock_on(monkeypatch, DEAD_TIMEOUT + 1.0)
            with pytest.raises(BackendError) as asked:
                store.gets("k")
            assert "skipped" not in str(asked.value), asked.value
        finally:
            server.resume()
        assert store.delete_many(["other"]) == []  # an invalidation is sent anyway, and revives it
        assert store.set("k", b"w", 60) and store.get("k") == b"w"
    finally:
        server.stop()


def test_memcached_skips_reads_for_dead_timeout_after_a_failed_fill(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_or_skip("memcached", lambda: start_memcached(tmp_path / "memcached"))
    try:
        store = open_volatile(f"{server.url}?timeout={TIMEOUT:g}&dead_timeout={DEAD_TIMEOUT:g}")
        assert store.set("k", b"v", 60) and store.get("k") == b"v"
        server.pause()
        try:
            with pytest.raises(BackendError, match=r"add on .* failed"):
                store.add("n", b"v", 60)
            # right after the failed add, then LATER s after it: still inside dead_timeout
            for when, later in (("right after", 0.0), (f"{LATER:g} s after", LATER)):
                move_the_memcached_clock_on(monkeypatch, later)
                started = time.monotonic()
                with pytest.raises(BackendError, match="skipped"):
                    store.get("k")
                took = time.monotonic() - started
                assert took < SKIPPED, f"a get {when} a failed add waited {took:.2f} s"
        finally:
            server.resume()
    finally:
        server.stop()
