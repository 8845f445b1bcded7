"""Event counters of one process (hits, misses, rejected entries, seconds spent, ...).

Exact under threads without a lock on the hot path; a forked child starts from zero.
:mod:`dal.cache.stats` publishes them so ``dal stats`` can sum every process.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import weakref


class _ThreadMark:
    """Held by one thread's slot of a ``threading.local`` only: it dies when that thread ends."""

    __slots__ = ("__weakref__",)


def _retire(retiring: collections.deque[tuple[int, dict[str, float]]], token: int,
            counts: dict[str, float]) -> None:
    # Runs when a thread ends (or, in a forked child, for every thread that did not survive the
    # fork), at any moment and maybe while another thread holds the Stats lock: so no lock here,
    # only a deque append, which is atomic. The next snapshot folds the counts into the total.
    retiring.append((token, counts))


class Stats:
    """Event counters (hits, misses, rejected entries, seconds spent, ...), exact under threads.

    Each thread counts in its own dict, so the hot path takes no lock; a snapshot sums them.
    When a thread ends, its dict is folded into a shared total (by the next snapshot), so a
    process that runs many short-lived threads keeps one dict per *live* thread, and loses no
    count. A forked child starts from zero: it counts (and publishes) only its own events.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        #: token -> the dict of a thread that may still count (tokens are never reused)
        self._all: dict[int, dict[str, float]] = {}
        #: dicts of threads that ended, not yet folded into ``_total``
        self._retiring: collections.deque[tuple[int, dict[str, float]]] = collections.deque()
        self._total: dict[str, float] = {}
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        _all_stats.add(self)

    def add(self, event: str, amount: float = 1) -> None:
        try:
            counts: dict[str, float] = self._local.counts
        except AttributeError:
            counts = self._start_thread()
        counts[event] = counts.get(event, 0) + amount

    def local(self) -> dict[str, float]:
        """Return the calling thread's own counts, for a hot path that counts several events.

        Only the calling thread may write to it, and only as :meth:`add` does
        (``counts[event] = counts.get(event, 0) + amount``): no other thread writes to this
        dict, so the read-modify-write cannot interleave with another, and counts stay exact.
        """
        try:
            counts: dict[str, float] = self._local.counts
        except AttributeError:
            counts = self._start_thread()
        return counts

    def _start_thread(self) -> dict[str, float]:
        counts: dict[str, float] = {}
        token = next(self._tokens)  # itertools.count is atomic under the GIL
        mark = _ThreadMark()
        # the finalizer holds the dict, the deque and the token, never this Stats object
        weakref.finalize(mark, _retire, self._retiring, token, counts).atexit = False
        self._all[token] = counts  # one dict store: atomic, no lock on this path either
        local = self._local
        local.mark, local.counts = mark, counts
        return counts

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            total = self._fold_retired()
            # list() copies in one step; a dict retired after the fold above is still in _all,
            # so it is counted here once, and folded by the next snapshot
            for counts in list(self._all.values()):
                for event, amount in dict(counts).items():  # dict() copies in one step
                    total[event] = total.get(event, 0) + amount
        return total

    def __getitem__(self, event: str) -> float:
        return self.snapshot().get(event, 0)

    def _fold_retired(self) -> dict[str, float]:
        """Move the counts of ended threads into ``_total``; return a copy of it. Hold the lock."""
        retiring, total = self._retiring, self._total
        while retiring:
            token, counts = retiring.popleft()
            if self._all.pop(token, None) is None:
                continue  # reset after a fork: those counts were the parent's
            for event, amount in counts.items():
                total[event] = total.get(event, 0) + amount
        return dict(total)

    def _reset_in_child(self) -> None:
        """Forget every count: a forked child reports only what it does itself."""
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._retiring.clear()
        self._total.clear()
        for counts in list(self._all.values()):
            counts.clear()  # the forking thread keeps counting into its (now empty) dict
        self._all = {token: counts for token, counts in self._all.items()
                     if counts is getattr(self._local, "counts", None)}


_all_stats: weakref.WeakSet[Stats] = weakref.WeakSet()


def _reset_stats_in_child() -> None:
    for stats in list(_all_stats):
        stats._reset_in_child()


os.register_at_fork(after_in_child=_reset_stats_in_child)
