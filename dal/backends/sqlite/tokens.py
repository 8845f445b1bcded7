"""The change tokens of a SQLite store: has another process committed since the last look?

A process-local cache in front of the file asks before every read it serves
(:meth:`dal.config.Context.check_local_cache`). The exact answer is the file's revision (one
``SELECT``), less the commits this store made itself; the WAL-index header
(:mod:`dal.backends.sqlite.watch`) tells far more cheaply that nothing at all was committed
since this thread's last look, which is the common case of a read.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref

from dal.backends.sqlite import watch
from dal.backends.sqlite.connections import SqliteConnections
from dal.backends.sqlite.watch import HEADER, WINDOW, ShmWatch
from dal.backends.tokens import ChangeTokens
from dal.backends.url import StoreURL
from dal.exceptions import BackendError

_REVISION = "SELECT revision FROM meta WHERE id = 0"


class SqliteTokens(SqliteConnections):
    """The connections of a SQLite store, and its change tokens (see the module docstring).

    The store's ``commit`` records each revision it committed in ``_changes``.
    """

    def __init__(self, url: StoreURL, path: str, *, timeout: float = 10.0,
                 synchronous: str = "NORMAL", mode: str = "rwc") -> None:
        self._changes = ChangeTokens()
        #: the watch of the -shm file, and those it replaced (their descriptors may still be read)
        self._shm: ShmWatch | None = None
        self._retired: list[ShmWatch] = []
        super().__init__(url, path, timeout=timeout, synchronous=synchronous, mode=mode)

    def change_token(self) -> int:
        """Return a counter that moves whenever another process committed since the last call.

        Every commit raises the file's revision by exactly one, so the commits since the last
        look that this store did not make itself are the others'. Exact for every thread at
        once, unlike SQLite's per-connection data_version. While the file's WAL-index header
        has not changed since this thread's last look, nothing was committed at all, so that
        look's answer stands without a read transaction (:mod:`dal.backends.sqlite.watch`).
        """
        local = self._local
        try:
            pid, view, header, until = local.shm
            if pid == watch.PID and view[:HEADER] == header and time.monotonic() < until:
                return self._changes.changes
        except (AttributeError, ValueError):  # not watched (yet), or the map was closed
            pass
        return self._look(local)

    def _look(self, local: threading.local) -> int:
        conn = self._conn()
        shm = self._shm_for(local, conn)
        before = None if shm is None else shm.header()  # read before the revision, never after
        ticket = self._changes.ticket()
        try:
            current: int = conn.execute(_REVISION).fetchone()[0]
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite could not read the revision of {self.path}: {exc}") from exc
        local.reader = conn  # its WAL is open now, and stays so until it closes
        changes = self._changes.token(current, ticket)
        if shm is not None and before is not None:
            local.shm = (watch.PID, shm.view, before, time.monotonic() + WINDOW)
        return changes

    def _shm_for(self, local: threading.local, conn: sqlite3.Connection) -> ShmWatch | None:
        """Return the watch of the live ``-shm`` file, once ``conn`` has had its WAL open since
        an earlier look: the file cannot be replaced while a connection has it open."""
        if getattr(local, "reader", None) is not conn:
            return None
        shm = self._shm
        if shm is not None and getattr(local, "verified", None) is shm:
            return shm
        if shm is None or not shm.live():
            shm = ShmWatch.open(self.path)
            if shm is None:
                return None
            with self._lock:
                if self._shm is not None:
                    self._retired.append(self._shm)  # other threads may still read its map
                self._shm = shm
            weakref.finalize(self, watch.forget, shm).atexit = False
            if not shm.live():
                return None
        local.verified = shm
        return shm

    def close(self) -> None:
        """Close every connection this process opened, then the ``-shm`` watches."""
        super().close()
        with self._lock:
            watches = [*self._retired, *([] if self._shm is None else [self._shm])]
            self._shm, self._retired = None, []
        for shm in watches:
            shm.close()
