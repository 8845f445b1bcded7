"""Change tokens counted from a commit counter: the commits since the last look that were not ours.

A store whose every commit raises one counter by exactly one (SQLite's ``meta.revision``, Redis's
``{dal}:revision``) can tell whether *another* client committed since the last look: the counter
moved by more than the commits this client made in between. A process-local cache in front of the
store asks before each read it serves (:meth:`dal.config.Context.check_local_cache`), so a client's
own commits must not count as changes, or each save would empty its own cache.
"""

from __future__ import annotations

import os
import threading
import weakref

#: own commits recorded between two looks; beyond, the record is dropped and the next look reports a
#: change (a paired shared cache never looks after the first time, so the record must stay bounded)
OWN_LIMIT = 1024


_all: weakref.WeakSet[ChangeTokens] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # another thread may have held a lock at fork() time; in the child it would stay held, and the
    # child's first commit would hang after its COMMIT (written, never answered)
    for tokens in list(_all):
        tokens._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ChangeTokens:
    """Turns the counter read at each look into a number that moves only for others' commits.

    ``resets``: the counter can go back, because the data was emptied (Redis ``FLUSHDB``); a look
    reading less than the last one then reports a change. Without it (SQLite, whose revision only
    grows within a file), such a look is one that read the counter before another thread's look
    and reached the lock after it: nothing changed for it. (With ``resets``, that look reports a
    change too: a needless flush of a local cache, never a stale read.)
    """

    def __init__(self, *, resets: bool) -> None:
        self._resets = resets
        self._lock = threading.Lock()
        _all.add(self)
        #: the token the last look returned (0 before the first); read without the lock by a
        #: store that knows nothing was committed since that look
        self.changes = 0
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
            if checked is not None and current < checked and not self._resets:
                return self.changes  # a look at the counter older than the last: nothing new in it
            emptied = self._resets and checked is not None and current < checked
            if checked is None or self._forgot or emptied:
                # nothing is known of what happened before the first look or since the record
                # overflowed, or the data went away
                self.changes += 1
                self._forgot = False
                if emptied:
                    self._own.clear()  # revisions of the data that is gone
            elif current != checked:
                ours = sum(1 for revision in self._own if checked < revision <= current)
                if current - checked > ours:
                    self.changes += 1
            self._own = {revision for revision in self._own if revision > current}
            self._checked = current
            return self.changes

    @property
    def own(self) -> int:
        """How many of this client's commits are recorded, unread by a look (bounded by OWN_LIMIT)."""
        return len(self._own)
