"""Monotonic reads: a process never returns an older revision of an object than one it has seen.

A cached document can lag the durable store: between a commit and its invalidation, while an
invalidation waits for an unreachable cache, or when an older authentic entry is written back
into the cache (a replay, which a signature cannot tell from the real thing). So each process
notes the highest revision it has read, written or deleted of every object, and a cached
document older than that is stale: it is dropped and the durable store is read instead.

Revisions grow with every commit across the whole store (etcd's mod revisions, SQLite's
commit counter), so one number can bound many objects. The record is bounded: when it is full,
the quarter of the objects first noted longest ago is forgotten, and the highest revision among
them becomes a *floor*. A cached document below the floor whose object is no longer recorded
may or may not be stale, so it is checked against the durable store before it is used.
"""

from __future__ import annotations

import threading
from enum import Enum

#: objects whose highest revision a process remembers before it forgets the oldest quarter
CAPACITY = 100_000


class Verdict(Enum):
    """What a cached revision is worth to this process."""

    FRESH = "fresh"  # no older than anything seen: serve it
    STALE = "stale"  # older than a revision this process has seen: drop it
    UNSURE = "unsure"  # below the floor of forgotten objects: read the durable store


class Seen:
    """The highest revision this process has seen of each object, bounded by :data:`CAPACITY`."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        #: (hybrid, guid) -> highest revision seen; insertion order is first-noted order
        self._revisions: dict[tuple[str, str], int] = {}
        #: the highest revision of any forgotten object
        self.floor = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._revisions)

    def note(self, hybrid: str, guid: str, revision: int) -> None:
        """Record that revision ``revision`` of an object was read, written or deleted."""
        key = (hybrid, guid)
        known = self._revisions.get(key)
        if known is not None and revision <= known:
            return  # the common case, a re-read: no write, no lock
        with self._lock:  # writers exclude each other, so forgetting never loses a newer note
            known = self._revisions.get(key)
            if known is None:
                if len(self._revisions) >= self.capacity:
                    self._forget_oldest()
                self._revisions[key] = revision
            elif revision > known:
                self._revisions[key] = revision

    def verdict(self, hybrid: str, guid: str, revision: int) -> Verdict:
        """Judge a cached document of an object at ``revision``."""
        known = self._revisions.get((hybrid, guid))
        if known is not None:
            return Verdict.STALE if revision < known else Verdict.FRESH
        return Verdict.UNSURE if revision < self.floor else Verdict.FRESH

    def _forget_oldest(self) -> None:
        """Forget the quarter of objects noted first; the caller holds the lock."""
        oldest = list(self._revisions)[:max(1, self.capacity // 4)]
        # raise the floor before forgetting, so a verdict meanwhile finds one or the other
        self.floor = max(self.floor, *(self._revisions[key] for key in oldest))
        for key in oldest:
            del self._revisions[key]
