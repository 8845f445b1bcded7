"""Asking several memcached servers at once, and counting what quorum reads decide.

:class:`FanOut` runs one call per server in parallel (the first in the calling thread, the others
on a small pool of threads of each server's own), collects each server's answer or its
``BackendError``, and can stop waiting at a deadline: a server that has not answered by then is one
that did not reply; a call that had not started by then (its server's threads were all busy) is
cancelled, and says nothing of its server.
:class:`Counts` holds the replicated cache's counters. Both serve
:mod:`dal.backends.memcached.replicated`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Generic, Protocol, TypeVar

from dal.exceptions import BackendError

R = TypeVar("R")
#: pool threads per server: concurrent callers share each server's threads, and a call to a paused
#: server holds its thread until the socket times out; a pool per server, so that calls to the
#: others never queue behind those (they would miss a deadline, and their servers seem to fail)
THREADS_PER_SERVER = 4


class Answers(Generic[R]):
    """What the servers asked returned: ``results`` of those that answered, ``errors`` of those
    that failed; a server in neither did not answer before the deadline, and ``unstarted`` holds
    those whose call had not even started then (cancelled: no sign that the server failed)."""

    __slots__ = ("errors", "results", "unstarted")

    def __init__(self) -> None:
        self.results: dict[str, R] = {}
        self.errors: dict[str, BackendError] = {}
        self.unstarted: set[str] = set()


class FanOut:
    """Runs one call per server in parallel; each server's pool made on first use, and again after
    a fork.

    A pool made before ``fork()`` has no threads in the child (only the forking thread survives),
    yet believes it has: the child makes its own.
    """

    def __init__(self, threads: int = THREADS_PER_SERVER) -> None:
        self._workers = max(1, threads)
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._pid = 0
        self._lock = threading.Lock()

    def run(self, calls: Mapping[str, Callable[[], R]], within: float | None = None) -> Answers[R]:
        """Run every call (keyed by server); wait at most ``within`` seconds for the pooled ones
        (``None``: until each ends by itself, which its socket timeout bounds).

        A ``BackendError`` is that server's failure; any other exception is a bug and is raised.
        """
        answers: Answers[R] = Answers()
        items = list(calls.items())
        if not items:
            return answers
        started = time.monotonic()
        futures: dict[Future[R], str] = {}
        inline = items[:1]
        for index, (server, call) in enumerate(items[1:], start=1):
            try:
                futures[self._executor(server).submit(call)] = server
            except RuntimeError:
                # the interpreter is exiting (no new threads; an atexit hook such as the
                # statistics' last flush is writing): the rest one after another, in this thread
                inline += items[index:]
                break
        for server, call in inline:
            try:
                answers.results[server] = call()
            except BackendError as exc:
                answers.errors[server] = exc
        if futures:
            left = None if within is None else max(0.0, within - (time.monotonic() - started))
            done, late = wait(futures, timeout=left)
            for future in late:
                if future.cancel():  # still queued behind its server's earlier calls: never sent
                    answers.unstarted.add(futures[future])
            for future in done:
                try:
                    answers.results[futures[future]] = future.result()
                except BackendError as exc:
                    answers.errors[futures[future]] = exc
        return answers

    def _executor(self, server: str) -> ThreadPoolExecutor:
        pid = os.getpid()
        pool = self._pools.get(server)
        if pool is not None and self._pid == pid:
            return pool
        with self._lock:
            if self._pid != pid:  # a forked child: the parent's pools have no threads here
                self._pools, self._pid = {}, pid
            pool = self._pools.get(server)
            if pool is None:
                pool = self._pools[server] = ThreadPoolExecutor(
                    self._workers, thread_name_prefix="dal-memcached-replica")
            return pool

    def close(self) -> None:
        """Stop the pools' threads once they finish what they run (nothing waits for them)."""
        with self._lock:
            pools, self._pools = self._pools, {}
        if self._pid == os.getpid():
            for pool in pools.values():
                pool.shutdown(wait=False, cancel_futures=True)


class Counter(Protocol):
    """Where the replicated cache counts: :class:`Counts`, or the cache layer's statistics."""

    def add(self, name: str, amount: int = 1, /) -> None: ...

    def __getitem__(self, name: str, /) -> float: ...


class Counts:
    """Counters of one replicated cache: quorum hits, misses, disagreements, short reads, repairs,
    and replies rejected by the signature check (counted as no reply).

    A plain dict under a lock, for a store used on its own. The backends sit below
    :mod:`dal.cache.counters`; under a context, the cache layer puts its own ``Stats`` in their
    place (``ReplicatedCache.counts``), which ``dal stats`` publishes.
    """

    NAMES = ("quorum_hits", "quorum_misses", "quorum_disagreements", "quorum_short_reads", "quorum_repairs",
             "quorum_rejected")

    def __init__(self) -> None:
        self._counts = dict.fromkeys(self.NAMES, 0)
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts.get(name, 0)
