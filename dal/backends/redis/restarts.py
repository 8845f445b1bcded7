"""Which start of its redis-server a Redis cache trusts.

A Redis cache server that restarts with its data (an RDB snapshot, Redis's default persistence, or
an AOF not synced at every write), or a replica promoted in its place, can hold entries whose
deletes it had confirmed before: a commit's invalidation that reached the old start is lost on the
new one, and its entry would be served stale until it expires. dal's client reconnects an idle
connection the server closed without telling anyone (:mod:`dal.backends.redis.calls`), so the
restart would go unnoticed. Each server start has a new ``run_id`` (``INFO server``): every
connection the cache opens reads it, and one to another start than the trusted one fails, as a
call to a dead server does. The layer above then reads around the server until a catch-up
(:meth:`dal.backends.redis.cache.RedisCache.settle_restart`, called by
:mod:`dal.cache.sweeps`) removed the namespace's entries the new start may hold stale and trusts it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from dal.backends.redis.limits import ServerModeRefused, connect_checked, mode_refusal


def run_id_of(info: Any) -> str:
    """Return the ``run_id`` of an ``INFO server`` answer (bytes as the server sent them)."""
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("run_id:"):
            return line[len("run_id:"):].strip()
    raise redis.ConnectionError("the server's INFO names no run_id: cannot tell whether it restarted")


class Restarts:
    """The ``run_id`` connections must reach (``None``: any, until a catch-up trusts one)."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._trusted: str | None = None
        #: a connection found the server standalone (or could not tell: INFO not granted)
        self._checked = False
        #: told when a connection reached another start: the layer above stops trusting the server
        #: even when no read notices (a process that only writes, whose statistics go to the cache)
        self.refused: Callable[[], None] | None = None

    def trust(self, run_id: str) -> None:
        self._trusted = run_id

    def suspend(self) -> None:
        """Let connections reach any start of the server while a catch-up finds out which it is: the
        layer above reads around this server meanwhile (it is not trusted)."""
        self._trusted = None

    def connected(self, connection: Any) -> None:
        """Set up a new connection (redis-py's ``redis_connect_func``), and refuse it when it reached
        another start of the server than the trusted one, or, until one connection found the server
        standalone, a server of a mode dal refuses (:class:`ServerModeRefused`)."""
        connect_checked(self._where, connection)
        trusted = self._trusted
        if trusted is None and self._checked:
            return
        connection.send_command("INFO", "server")
        try:
            info = connection.read_response()
        except redis.ResponseError:
            if trusted is not None:
                raise
            self._checked = True  # INFO renamed, or not granted by the ACL: the mode cannot be told
            return
        if not self._checked:
            refused = mode_refusal(self._where, info)
            if refused is not None:
                raise ServerModeRefused(refused)
            self._checked = True
        if trusted is None:
            return
        run_id = run_id_of(info)
        if run_id != trusted:
            if self.refused is not None:
                self.refused()
            raise redis.ConnectionError(
                f"redis-server at {self._where} restarted (run_id {run_id}, was {trusted}): the entries it "
                "holds may predate deletes it had confirmed; the cache reads around it until a catch-up "
                "removed them")
