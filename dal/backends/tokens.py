"""Change tokens counted from a commit counter: the commits since the last look that were not ours.

A store whose every commit raises one counter by exactly one (SQLite's ``meta.revision``, Redis's
``{dal}:revision``) can tell whether *another* client committed since the last look: the counter
moved by more than the commits this client made in between. A process-local cache in front of the
store asks before each read it serves (:meth:`dal.config.Context.check_local_cache`), so a client's
own commits must not count as changes, or each save would empty its own cache.
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

    @property
    def changes(self) -> int:
        """The token the last look returned (0 before the first)."""
        return self._changes

    @property
    def own(self) -> int:
        """How many of this client's commits are recorded, unread by a look (bounded by OWN_LIMIT)."""
        return len(self._own)
