"""Quorum reads' hit path: one pipelined multi-key ``get`` to each replica, all in flight at once.

The calling thread sends every server its ``get k1 k2 ...`` first, then waits on all of them at
once with one ``poll``: the servers work in parallel, so a read costs about the slowest replica's
time, not the sum, and no thread is handed anything (a pool hand-off per read cost more than the
read itself). Each server must start to answer within the read timeout from the start, and then
keep going: take more of the request (a request larger than the socket's buffers is sent as the
server reads it, beside the others) or send more of its answer within the read timeout of the
last time it did, so a large batch is not cut off, while a server that stops (paused, cut off)
holds up no other. A server that did not answer in time did not reply, and (as
:class:`~dal.backends.memcached.cache.MemcachedCache` does) is skipped for ``dead_timeout``
seconds, during which reads count it as not replying at once.

Why non-blocking sockets and ``poll``, not a timeout per socket: a socket with a timeout costs a
``poll`` before every ``send`` and ``recv`` and an ``ioctl`` per ``settimeout``; with three
replicas that was 15 system calls per read (and a ``getpid`` per server, now a counter bumped at
fork). Here a read is one ``send`` and one ``recv`` per server and one or two ``poll`` calls in
all: ``cached_load_replicated`` went from 0.68x-0.69x to 0.76x-0.77x of a one-server load
(``python -m bench --only cached_load_replicated``; docs/benchmarks.md).

Connections are this thread's own (and this process's: a forked child opens its own), and a
connection that failed or timed out is closed, since its stream is then out of step.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Mapping, Sequence

from dal.backends.memcached.text import ProtocolError, parse_values

#: the least time a read waits for an answer already on its way once the deadline has passed
LAST_LOOK = 0.001
_READABLE = select.POLLIN | select.POLLERR | select.POLLHUP | select.POLLNVAL
_WRITABLE = select.POLLOUT | select.POLLERR | select.POLLHUP | select.POLLNVAL

#: bumped in a forked child: connections made before the fork are the parent's (checked instead
#: of ``os.getpid()``, a system call per read)
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


class _Pending:
    """One server's share of a read: its connection, the request left to send, the keys asked and
    what arrived of the answer so far."""

    __slots__ = ("buffer", "connection", "found", "limit", "name", "outgoing", "position", "wanted")

    def __init__(self, name: str, connection: socket.socket, keys: Sequence[bytes], limit: float) -> None:
        self.name = name
        self.connection = connection
        self.outgoing = b"get " + b" ".join(keys) + b"\r\n"
        self.wanted = set(keys)
        self.found: dict[bytes, bytes] = {}
        self.buffer = b""
        self.position = 0
        #: the monotonic time by which the server must take more of the request or send more of
        #: its answer
        self.limit = limit

    def send(self, now: float, timeout: float) -> None:
        """Send what the socket takes now of the request (usually all of it, in one ``send``)."""
        try:
            sent = self.connection.send(self.outgoing)
        except BlockingIOError:  # the buffers are full: the server is not reading (yet)
            return
        self.outgoing = self.outgoing[sent:]
        self.limit = now + timeout

    def receive(self, now: float, timeout: float) -> bool:
        """Read what arrived; return whether the answer is complete (``END`` read)."""
        chunk = self.connection.recv(262144)
        if not chunk:
            raise ProtocolError("the server closed the connection")
        self.buffer = self.buffer[self.position:] + chunk
        self.position, ended = parse_values(self.buffer, 0, self.wanted, self.found)
        if ended and len(self.buffer) != self.position:
            raise ProtocolError("more followed the END of a get")
        self.limit = now + timeout
        return ended


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
        pending: dict[int, _Pending] = {}
        poller = select.poll()
        asked: list[str] = []
        try:
            for name, keys in shares.items():
                if not keys or self._dead_until.get(name, 0.0) > started:
                    continue
                connection = self._connection(name)
                if connection is None:
                    continue
                asked.append(name)
                entry = _Pending(name, connection, keys, started + self._timeout)
                try:
                    entry.send(started, self._timeout)
                except OSError:
                    self._failed(name)
                    continue
                pending[connection.fileno()] = entry
                poller.register(connection, _WRITABLE if entry.outgoing else _READABLE)
            return self._answers(poller, pending)
        except BaseException:
            # interrupted (a signal handler raised: a soft time limit, KeyboardInterrupt): answers
            # still on their way would be read by the next get as its own, so every stream asked
            # is dropped; no server failed, so none is skipped
            for name in asked:
                self._drop(name)
            raise

    def _answers(self, poller: select.poll, pending: dict[int, _Pending]) -> dict[str, dict[bytes, bytes]]:
        """Send the rest of each request and read each answer as the sockets allow, each server
        within its limit; return the answers read whole."""
        answered: dict[str, dict[bytes, bytes]] = {}
        while pending:
            wait = min(entry.limit for entry in pending.values()) - time.monotonic()
            ready = poller.poll(max(LAST_LOOK, wait) * 1000)
            now = time.monotonic()
            for fd, _ in ready:
                entry = pending[fd]
                try:
                    if entry.outgoing:
                        entry.send(now, self._timeout)
                        if not entry.outgoing:
                            poller.modify(fd, _READABLE)
                        continue
                    ended = entry.receive(now, self._timeout)
                except (OSError, ProtocolError):
                    ended = False
                    entry.limit = 0.0  # failed: dropped below
                if ended:
                    answered[entry.name] = entry.found
                    poller.unregister(fd)
                    del pending[fd]
            for fd, entry in list(pending.items()):
                if entry.limit <= now:  # failed, or took no more of the request or sent no more
                    # of its answer in time (poll just looked at it: that was its last look)
                    poller.unregister(fd)
                    del pending[fd]
                    self._failed(entry.name)
        return answered

    def _connection(self, name: str) -> socket.socket | None:
        """Return this thread's connection to ``name``, made on first use; ``None`` when it fails."""
        connections: dict[str, socket.socket] | None = getattr(self._local, "connections", None)
        if connections is None or getattr(self._local, "forks", -1) != _forks:
            connections = self._local.connections = {}  # a forked child never reads its parent's stream
            self._local.forks = _forks
        found = connections.get(name)
        if found is not None:
            return found
        try:
            made = socket.create_connection(self._servers[name], timeout=self._connect_timeout)
            made.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            made.setblocking(False)
        except (OSError, UnicodeError):  # UnicodeError: a host name the IDNA codec refuses
            self._dead_until[name] = time.monotonic() + self._dead_timeout
            return None
        connections[name] = made
        return made

    def _failed(self, name: str) -> None:
        """Close the connection to ``name`` (its stream is out of step) and skip the server a while."""
        self._dead_until[name] = time.monotonic() + self._dead_timeout
        self._drop(name)

    def _drop(self, name: str) -> None:
        """Close this thread's connection to ``name``: the next read opens a new one."""
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

