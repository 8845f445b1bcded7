"""Quorum reads' hit path: one pipelined multi-key ``get`` to each replica, all in flight at once.

The calling thread sends every server its ``get k1 k2 ...`` first, then reads the answers in turn:
the servers work in parallel, so a read costs about the slowest replica's time, not the sum, and
no thread is handed anything (a pool hand-off per read cost more than the read itself). Each
answer must start within one deadline, the read timeout from the start, and then keep coming
(each further receive within the read timeout, so a large batch is not cut off): a server that
has not started to answer by then did not reply, and (as
:class:`~dal.backends.memcached.cache.MemcachedCache` does) is skipped for ``dead_timeout``
seconds, during which reads count it as not replying at once.

Connections are this thread's own (and this process's: a forked child opens its own), and a
connection that failed or timed out is closed, since its stream is then out of step.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence

from dal.backends.memcached.text import ProtocolError, parse_values

#: the least time a read waits for an answer already on its way once the deadline has passed
LAST_LOOK = 0.001


class MultiGet:
    """Pipelined multi-key gets to several memcached servers, read against one deadline."""

    def __init__(self, servers: Mapping[str, tuple[str, int]], *, timeout: float, connect_timeout: float,
                 dead_timeout: float) -> None:
        self._servers = dict(servers)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._dead_timeout = dead_timeout
        #: server -> monotonic time before which it is skipped (written whole: no lock needed)
        self._dead_until: dict[str, float] = {}
        self._local = threading.local()

    def get_many(self, shares: Mapping[str, Sequence[bytes]]) -> dict[str, dict[bytes, bytes]]:
        """Ask each server for its share of wire keys; return, for each server that answered in
        time, the values it holds (a key it lacks is absent from its dict)."""
        started = time.monotonic()
        deadline = started + self._timeout
        sent: list[tuple[str, socket.socket, set[bytes]]] = []
        for name, keys in shares.items():
            if not keys or self._dead_until.get(name, 0.0) > started:
                continue
            connection = self._connection(name)
            if connection is None:
                continue
            try:
                connection.sendall(b"get " + b" ".join(keys) + b"\r\n")
            except OSError:
                self._failed(name)
                continue
            sent.append((name, connection, set(keys)))
        answered: dict[str, dict[bytes, bytes]] = {}
        for name, connection, wanted in sent:
            try:
                answered[name] = _read_values(connection, wanted, deadline, self._timeout)
            except (OSError, ProtocolError):
                self._failed(name)
        return answered

    def _connection(self, name: str) -> socket.socket | None:
        """Return this thread's connection to ``name``, made on first use; ``None`` when it fails."""
        connections: dict[str, socket.socket] | None = getattr(self._local, "connections", None)
        if connections is None or getattr(self._local, "pid", 0) != os.getpid():
            connections = self._local.connections = {}  # a forked child never reads its parent's stream
            self._local.pid = os.getpid()
        found = connections.get(name)
        if found is not None:
            return found
        try:
            made = socket.create_connection(self._servers[name], timeout=self._connect_timeout)
            made.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            self._dead_until[name] = time.monotonic() + self._dead_timeout
            return None
        connections[name] = made
        return made

    def _failed(self, name: str) -> None:
        """Close the connection to ``name`` (its stream is out of step) and skip the server a while."""
        self._dead_until[name] = time.monotonic() + self._dead_timeout
        connections: dict[str, socket.socket] = getattr(self._local, "connections", {})
        connection = connections.pop(name, None)
        if connection is not None:
            connection.close()

    def revive(self, name: str) -> None:
        """Read from ``name`` again at once (it just answered another command)."""
        if self._dead_until.get(name):
            self._dead_until[name] = 0.0

    def close(self) -> None:
        """Close this thread's connections."""
        connections: dict[str, socket.socket] = getattr(self._local, "connections", {})
        for connection in connections.values():
            connection.close()
        connections.clear()


def _read_values(connection: socket.socket, wanted: set[bytes], deadline: float,
                 timeout: float) -> dict[bytes, bytes]:
    """Read ``VALUE <key> <flags> <bytes>`` blocks up to ``END``: the first bytes by ``deadline``,
    each later receive within ``timeout``.

    A key not asked for, or anything else a ``get`` never answers, raises ProtocolError (the
    stream is out of step: e.g. a connection shared across a fork); so does a closed connection.
    """
    found: dict[bytes, bytes] = {}
    buffer = b""
    position = 0
    received = False
    while True:
        position, ended = parse_values(buffer, position, wanted, found)
        if ended:
            if len(buffer) != position:
                raise ProtocolError("more followed the END of a get")
            return found
        connection.settimeout(timeout if received else max(LAST_LOOK, deadline - time.monotonic()))
        chunk = connection.recv(262144)
        received = True
        if not chunk:
            raise ProtocolError("the server closed the connection")
        buffer = buffer[position:] + chunk
        position = 0
