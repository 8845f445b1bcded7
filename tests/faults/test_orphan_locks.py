"""A locked dynamic's lock whose answer was lost: released once the cache server answers again.

A locked dynamic takes its single-flight lock with an ``add`` and releases it with a conditional
delete. When the server is paused (SIGSTOP) the moment the lock's ``add`` is sent, the caller times
out, computes alone and moves on; the paused server still holds the ``add`` in its socket and
applies it when it resumes (SIGCONT). Unless the caller releases it then, that lock has no owner,
and every reader of the value, in every process, waits ``lock_timeout`` for it. The same goes for a
release sent while the server is paused. Both are run on a memcached and a redis-server of the
test's own; the reader is another process, timed from the moment the server answers again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dal import DataObject, Dynamic, Property, configure
from dal.backends.base import VolatileStore
from dal.cache import owners
from dal.config import Context
from dal.exceptions import BackendError
from dal.objects import dynamics
from dal.testing.servers import RunningServer

pytestmark = pytest.mark.faults

#: the lock's TTL: how long an orphan lock stalls every reader
LOCK_TIMEOUT = 10
#: seconds after the server answers again within which another process must read the value
#: (the lock is released by the next resend, 0.25 s later, once the server is trusted again)
SERVED_WITHIN = 3.0
HMAC = "k" * 40


class OrphanLockCounter(DataObject):
    """A hybrid with a locked dynamic whose lock stalls readers for LOCK_TIMEOUT when orphaned."""

    __properties = [Property("name", str, unique=True), Property("n", int)]
    __dynamics = [Dynamic("double", int, 600, locked=True, lock_timeout=LOCK_TIMEOUT)]

    def _double(self) -> int:
        return 2 * self.n


#: the other process: the same hybrid (its name makes the keys), reading the value once, timed
READER = f"""
import sys, time
from dal import DataObject, Dynamic, Property, configure
from dal.backends.base import VolatileStore
class OrphanLockCounter(DataObject):
    __properties = [Property("name", str, unique=True), Property("n", int)]
    __dynamics = [Dynamic("double", int, 600, locked=True, lock_timeout={LOCK_TIMEOUT})]
    def _double(self):
        return 2 * self.n
configure(sys.argv[1], sys.argv[2], namespace=sys.argv[3], hmac_key={HMAC!r})
started = time.monotonic()
value = OrphanLockCounter(sys.argv[4]).double
print(value, time.monotonic() - started)
"""



@pytest.fixture
def counter(cache_server: tuple[str, RunningServer], tmp_path: Path, fault_namespace: str,
            parent: list[Context]) -> tuple[Context, str, str]:
    """A stored counter, its context, and the durable store's URL."""
    url, _ = cache_server
    durable = f"sqlite:///{tmp_path}/durable.db"
    context = configure(durable, url, namespace=fault_namespace, hmac_key=HMAC)
    parent.append(context)
    counter = OrphanLockCounter(data={"name": "c", "n": 21})
    counter.save()
    return context, durable, counter.guid


def pause_at(server: RunningServer, context: Context, method: str,
             monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Pause ``server`` just before the first ``method`` call on a lock key is sent; return the keys
    whose call then failed (the request waits in the server's socket, applied when it resumes)."""
    store = context.dynamics.store
    original: Callable[..., Any] = getattr(store, method)
    failed: list[str] = []

    def paused(key: str, *args: Any) -> Any:
        if not failed and key.endswith("/lock"):
            server.pause()
            try:
                return original(key, *args)
            except BackendError:
                failed.append(key)
                raise
        return original(key, *args)

    monkeypatch.setattr(store, method, paused)
    return failed


def read_elsewhere(context: Context, durable: str, guid: str) -> tuple[int, float]:
    """Read the counter's dynamic in another process; return the value and how long the read took."""
    volatile = str(context.volatile_url)
    done = subprocess.run([sys.executable, "-c", READER, durable, volatile, context.namespace, guid],
                          capture_output=True, text=True, timeout=LOCK_TIMEOUT * 3, check=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    value, seconds = done.stdout.split()
    return int(value), float(seconds)


def held(store: VolatileStore, key: str) -> bool:
    """Tell whether the lock ``key`` may be held: found, or the server not asked yet (marked dead)."""
    try:
        return store.gets(key)[0] is not None
    except BackendError:
        return True


def lock_key(context: Context, guid: str) -> str:
    return context.keys.cached_dynamic("orphanlockcounter", guid, "double") + "/lock"


def test_a_lock_whose_add_got_no_answer_is_released_when_the_server_answers(
        counter: tuple[Context, str, str], cache_server: tuple[str, RunningServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    context, durable, guid = counter
    _, server = cache_server
    failed = pause_at(server, context, "add", monkeypatch)
    try:
        assert OrphanLockCounter(guid).double == 42  # computed alone: the lock's add timed out
    finally:
        server.resume()  # the add waiting in its socket is applied now
    assert failed == [lock_key(context, guid)]
    resumed = time.monotonic()
    value, seconds = read_elsewhere(context, durable, guid)
    served = time.monotonic() - resumed
    assert value == 42
    # without the release the lock stays LOCK_TIMEOUT, and the other process waits it out
    assert served < SERVED_WITHIN, f"another process was served {served:.2f} s after the server answered"
    assert seconds < SERVED_WITHIN


def test_a_release_that_got_no_answer_is_sent_again_when_the_server_answers(
        counter: tuple[Context, str, str], cache_server: tuple[str, RunningServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    context, durable, guid = counter
    _, server = cache_server
    failed = pause_at(server, context, "gets", monkeypatch)  # a release reads the lock, then deletes it
    try:
        assert OrphanLockCounter(guid).double == 42
    finally:
        server.resume()
    key = lock_key(context, guid)
    assert failed == [key]
    resumed = time.monotonic()
    store = context.dynamics.store
    while held(store, key) and time.monotonic() - resumed < LOCK_TIMEOUT:
        time.sleep(0.05)
    released = time.monotonic() - resumed
    assert released < SERVED_WITHIN, f"the lock stayed {released:.2f} s after the server answered"
    OrphanLockCounter(guid).invalidate_dynamics()  # the value goes: a reader must take the lock
    value, seconds = read_elsewhere(context, durable, guid)
    assert value == 42 and seconds < SERVED_WITHIN


def test_a_pending_release_leaves_another_callers_lock(counter: tuple[Context, str, str]) -> None:
    context, _, guid = counter
    key, cache = lock_key(context, guid), context.dynamics
    theirs, ours = cache.signer.seal(key, owners.token()), cache.signer.seal(key, owners.token())
    assert cache.store.add(key, theirs, LOCK_TIMEOUT)
    dynamics._release_later(cache, key, ours)
    deadline = time.monotonic() + 5
    while cache._retries and time.monotonic() < deadline:  # looked at twice, then given up
        time.sleep(0.05)
    assert not cache._retries
    assert cache.store.gets(key)[0] == theirs
