"""Change tokens counted from a commit counter: the commits since the last look that were not ours.

A store whose every commit raises one counter by exactly one (SQLite's ``meta.revision``, Redis's
``{dal}:revision``) can tell whether *another* client committed since the last look: the counter
moved by more than the commits this client made in between. A process-local cache in front of the
store asks before each read it serves (:meth:`dal.config.Context.check_local_cache`), so a client's
own commits must not count as changes, or each save would empty its own cache.
"""

from __future__ import annotations

import itertools
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

    A look takes a :meth:`ticket` before it reads the counter. Looks of several threads can reach
    :meth:`token` in another order than they read: one whose ticket is older than a look applied
    already brings nothing new (that look read later) and changes nothing. Otherwise a counter
    lower than the last one is taken for data that went away (Redis ``FLUSHDB``, a replaced file)
    and reported as a change; so is a look that took its ticket first but read the counter after
    another's: a needless flush of a local cache, never a stale read.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _all.add(self)
        #: the token the last look returned (0 before the first); read without the lock by a
        #: store that knows nothing was committed since that look
        self.changes = 0
        self._tickets = itertools.count(1)
        #: the ticket of the last look applied
        self._applied = 0
        #: the counter at the last look (None before the first), and this client's commits since
        self._checked: int | None = None
        self._own: set[int] = set()
        self._forgot = False

    def ticket(self) -> int:
        """Return the number of a look about to read the counter (``next`` on a count is atomic)."""
        return next(self._tickets)

    def committed(self, revision: int) -> None:
        """Record a commit this client made (and saw the answer of)."""
        with self._lock:
            if len(self._own) >= OWN_LIMIT:
                self._own.clear()
                self._forgot = True
            self._own.add(revision)

    def token(self, current: int, ticket: int) -> int:
        """Return the token for the counter read just now by the look holding ``ticket``."""
        with self._lock:
            if ticket < self._applied:
                return self.changes  # a look applied already began later: it saw all this one could
            self._applied = ticket
            checked = self._checked
            if checked is None or self._forgot or current < checked:
                # nothing is known of what happened before the first look or since the record
                # overflowed; and a counter that went back means the data went away
                self.changes += 1
                self._forgot = False
                if checked is not None and current < checked:
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
