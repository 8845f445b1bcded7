"""The change token of the Redis store: the commit counter, less this client's own commits.

Chosen over ``None`` (etcd's answer) because reading it is one ``GET`` of one small key, answered
from memory in well under a millisecond: cheap enough for a process-local cache in front of the
store to look before each read, and for a query to keep what it read until the iteration. Every
commit raises the counter by exactly one, so the commits since the last look that this client did
not make are the others', exactly as the SQLite store counts them.
"""

from __future__ import annotations

import threading

#: own commits recorded between two looks; beyond, the record is dropped and the next look reports a
#: change (a paired shared cache never looks after the first time, so the record must stay bounded)
OWN_LIMIT = 1024


class ChangeTokens:
    """Turns the counter read at each look into a number that moves only for others' commits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changes = 0
        #: the counter at the last look (None before the first), and this client's commits since
        self._checked: int | None = None
        self._own: set[int] = set()
        self._forgot = False

    def committed(self, revision: int) -> None:
        """Record a commit this client made (and saw the answer of)."""
        with self._lock:
            if len(self._own) >= OWN_LIMIT:
                self._own.clear()
                self._forgot = True
            self._own.add(revision)

    def token(self, current: int) -> int:
        """Return the token for the counter read just now."""
        with self._lock:
            checked = self._checked
            if checked is None or self._forgot or current < checked:
                # nothing is known of what happened before the first look or since the record
                # overflowed; and a counter that went back means the database was emptied
                self._changes += 1
                self._forgot = False
                if checked is not None and current < checked:
                    self._own.clear()  # revisions of the data that is gone
            elif current != checked:
                ours = sum(1 for revision in self._own if checked < revision <= current)
                if current - checked > ours:
                    self._changes += 1
            self._own = {revision for revision in self._own if revision > current}
            self._checked = current
            return self._changes
