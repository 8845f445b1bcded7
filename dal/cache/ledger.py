"""Which of this process's commits a process-local cache has heard of.

A commit invalidates the cache of the context it went through. Two contexts of one process
may put two local caches (``memory://one``, ``memory://two``) in front of one durable store
client; a commit through the second never reaches the first, and that store's change token
cannot tell (it counts other clients' commits, and both contexts share one client). So every
commit is counted per durable store client, and per local cache in front of it: when the two
counts differ, commits went through another context, and the cache is dropped before it serves
anything (:meth:`dal.config.Context.check_local_cache`).

Both counts move together under one lock, so a read never takes a commit through another
context for one of its own: at worst it sees its own commit half counted, and drops the cache
needlessly.
"""

from __future__ import annotations

import threading
import weakref

_lock = threading.Lock()


class _StoreCommits:
    """The commits made through one durable store client by this process."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class Ledger:
    """One local cache in front of one durable store client: what it heard, what it missed."""

    __slots__ = ("_expected", "_heard", "_store")

    def __init__(self, store: _StoreCommits) -> None:
        self._store = store
        #: the store client's commit count if every commit since this cache was emptied (or put in
        #: front of the store) went through it
        self._expected = store.count
        #: the commits through contexts in front of this cache, ever
        self._heard = 0

    def committed(self) -> None:
        """Count a commit (whatever its outcome) through a context in front of this cache."""
        with _lock:
            self._store.count += 1
            self._expected += 1
            self._heard += 1

    def missed(self) -> bool:
        """Tell whether a commit through another context of the store client bypassed this cache."""
        return self._store.count != self._expected

    def mark(self) -> tuple[int, int]:
        """Return the counts before the cache is emptied, for :meth:`synced` once it is."""
        with _lock:
            return self._store.count, self._heard

    def synced(self, mark: tuple[int, int]) -> None:
        """Note that the cache was emptied after ``mark``: every commit counted by then is accounted for.
        Later ones are not (a commit through another context while the cache was emptied may have
        been filled over as it was), except those through this cache, which it heard of. The same
        whichever thread (of whichever context in front of this cache) notes it, and in any order:
        an earlier mark only leaves more commits to be missed, and the cache emptied once more."""
        count, heard = mark
        with _lock:
            self._expected = count + (self._heard - heard)


_stores: weakref.WeakKeyDictionary[object, _StoreCommits] = weakref.WeakKeyDictionary()
_ledgers: weakref.WeakKeyDictionary[object, weakref.WeakKeyDictionary[object, Ledger]] = (
    weakref.WeakKeyDictionary())


def ledger_for(cache: object, store: object) -> Ledger:
    """Return the ledger of a local ``cache`` in front of a durable ``store`` client (one per pair)."""
    with _lock:
        # several clients may reach one store's data in this process (fakeredis:// URLs that differ in
        # options): such a client names the data it reaches, and its commits are counted with theirs
        commits = _stores.setdefault(getattr(store, "data_key", store), _StoreCommits())
        return _ledgers.setdefault(cache, weakref.WeakKeyDictionary()).setdefault(store, Ledger(commits))
