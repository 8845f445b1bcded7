"""The single-server hit path: memcached's text ``get`` and ``delete``, pipelined, on a socket of our own.

Why hand-written, when pymemcache speaks the whole protocol: speed, measured with ``bench/``
(README, Benchmarks; docs/benchmarks.md). With every get going through pymemcache's
``HashClient`` and its connection pool, ``cached_load`` (a ``Hybrid(guid)`` served from the
memcached object cache) ran at 0.56-0.60x of the raw pymemcache ``get`` + ``json.loads`` it is
measured against, under its 0.8x target; through this connection it measured 0.89x, 0.95x
with issue 16's trimmed hit path, and 0.96x-1.04x with the timeout left to the kernel, which
did not hold under signals (see ``TextConnection.__init__`` for what replaced it).
Only the commands on that path live here (``get``, multi-key ``get``, ``delete``);
every other command, and every command with several servers, goes through pymemcache
(:mod:`dal.backends.memcached.client`).
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import time

from dal.backends.memcached.dumps import count_hit

#: deletes sent in one pipelined burst before their answers are read (a huge burst would not be
#: answered within the timeout)
DELETE_BURST = 512


class ProtocolError(Exception):
    """The server answered something a ``get`` never answers."""


def parse_values(buffer: bytes, position: int, wanted: set[bytes],
                 found: dict[bytes, bytes]) -> tuple[int, bool]:
    """Parse the ``VALUE <key> <flags> <bytes>`` blocks of a ``get`` answer from ``position`` into
    ``found``; return the position reached and whether it is past the closing ``END``.

    A key not asked for, or anything else a ``get`` never answers, raises ProtocolError: the
    stream is out of step (e.g. a connection shared across a fork), so never return its value.
    """
    # ~0.6 us a value, was 0.72 (a reverse list reads 1,000): the line split once, END told apart only if the
    # line is no VALUE line
    find, size = buffer.find, len(buffer)
    while True:
        line_end = find(b"\r\n", position)
        if line_end < 0:
            return position, False
        try:
            verb, key, _, length = buffer[position:line_end].split(b" ")
        except ValueError:  # not four fields
            verb = key = length = b""
        if verb != b"VALUE" or key not in wanted or not length.isdigit():
            if line_end == position + 3 and buffer.startswith(b"END", position):
                return line_end + 2, True
            raise ProtocolError(buffer[position:line_end].decode("ascii", "replace"))
        start = line_end + 2
        end = start + int(length)
        if size < end + 2:
            return position, False
        if buffer[end:end + 2] != b"\r\n":
            raise ProtocolError("a value was not followed by CRLF")
        found[key] = buffer[start:end]
        position = end + 2


class TextConnection:
    """One connection that speaks just memcached's text ``get`` and ``delete``, pipelined: the hit
    path and the invalidation after every write, without pymemcache's per-key overhead.

    Any error or timeout leaves the stream in an unknown state, so the caller closes it.
    """

    def __init__(self, server: tuple[str, int], timeout: float, connect_timeout: float) -> None:
        self._socket = socket.create_connection(server, timeout=connect_timeout)
        try:
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Non-blocking, with one deadline per call kept here: a command is one send (the socket
            # buffer has room) and each read one poll and one recv. Python's own timeout polls
            # before every send and recv too (four system calls a get instead of three, measured
            # ~0.75 us each); the kernel's SO_RCVTIMEO (two) restarts in full after every signal
            # a handler returns from, so a process with a periodic signal never timed out.
            self._socket.setblocking(False)
            self._readable, self._writable = select.poll(), select.poll()
            self._readable.register(self._socket, select.POLLIN)
            self._writable.register(self._socket, select.POLLOUT)
        except BaseException:
            self._socket.close()
            raise
        self._timeout = timeout
        self._timeout_ms = math.ceil(timeout * 1000)
        self._buffer = b""

    def _send(self, data: bytes) -> None:
        """Send all of ``data`` within the timeout (poll retries after a signal with the time left)."""
        try:
            sent = self._socket.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        deadline = time.monotonic() + self._timeout
        view = memoryview(data)[sent:]
        while view:
            self._wait(self._writable, deadline)
            with contextlib.suppress(BlockingIOError):
                view = view[self._socket.send(view):]

    def _recv(self, size: int) -> bytes:
        """Read what the server sent, at most ``size`` bytes, waiting at most the timeout for it."""
        # the common case: one poll given the whole timeout (poll keeps its own deadline across
        # signals, PEP 475), then the recv; no clock read of ours
        if not self._readable.poll(self._timeout_ms):
            raise TimeoutError(f"memcached did not answer within {self._timeout:g} s")
        try:
            return self._socket.recv(size)
        except BlockingIOError:  # a spurious wake-up (rare): wait again, for at most the timeout
            deadline = time.monotonic() + self._timeout
        while True:
            self._wait(self._readable, deadline)
            with contextlib.suppress(BlockingIOError):
                return self._socket.recv(size)

    def _wait(self, poller: select.poll, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(math.ceil(left * 1000)):
            raise TimeoutError(f"memcached did not answer within {self._timeout:g} s")

    def get(self, key: bytes) -> bytes | None:
        # the hit path of every cached load: one key, parsed without the multi-key bookkeeping
        self._send(b"get " + key + b"\r\n")
        buffer = self._buffer
        while True:
            if buffer.startswith(b"END\r\n"):
                self._buffer = buffer[5:]
                return None
            line_end = buffer.find(b"\r\n")
            if line_end >= 0:
                header = buffer[:line_end].split(b" ")
                # VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n; a key other than ours means
                # the stream is out of step (e.g. shared across a fork): never return its value
                # ... and a length that is not a number means it is not memcached answering
                if len(header) != 4 or header[0] != b"VALUE" or header[1] != key or not header[3].isdigit():
                    raise ProtocolError(buffer[:line_end].decode("ascii", "replace"))
                start = line_end + 2
                end = start + int(header[3])
                if len(buffer) >= end + 7:
                    if buffer[end:end + 7] != b"\r\nEND\r\n":
                        raise ProtocolError("a get answer did not end with END")
                    self._buffer = buffer[end + 7:]
                    return buffer[start:end]
            chunk = self._recv(65536)
            if not chunk:
                raise ProtocolError("the server closed the connection")
            buffer += chunk


    def get_many(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """Send one ``get`` naming every key; read ``VALUE <key> <flags> <bytes>`` blocks until ``END``."""
        self._send(b"get " + b" ".join(keys) + b"\r\n")
        wanted = set(keys)
        found: dict[bytes, bytes] = {}
        buffer = self._buffer
        position = 0
        while True:
            position, ended = parse_values(buffer, position, wanted, found)
            if ended:
                self._buffer = buffer[position:]
                return found
            chunk = self._recv(262144)
            if not chunk:
                raise ProtocolError("the server closed the connection")
            buffer = buffer[position:] + chunk
            position = 0

    def delete_many(self, keys: list[bytes]) -> None:
        """Send the deletes in bursts of DELETE_BURST, reading one answer per key after each burst."""
        for start in range(0, len(keys), DELETE_BURST):
            self._delete_burst(keys[start:start + DELETE_BURST])

    def _delete_burst(self, keys: list[bytes]) -> None:
        self._send(b"".join(b"delete " + key + b"\r\n" for key in keys))
        buffer = self._buffer
        answered = 0
        while answered < len(keys):
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                chunk = self._recv(65536)
                if not chunk:
                    raise ProtocolError("the server closed the connection")
                buffer += chunk
                continue
            if buffer[:line_end] not in (b"DELETED", b"NOT_FOUND"):
                raise ProtocolError(buffer[:line_end].decode("ascii", "replace"))
            buffer = buffer[line_end + 2:]
            answered += 1
        self._buffer = buffer

    def get_counted(self, key: bytes, counter: bytes) -> bytes | None:
        """As :meth:`get`, and count a hit on the wire key ``counter`` (commands without answers,
        see ``dumps``)."""
        value = self.get(key)
        if value is not None:
            self._send(count_hit(counter))
        return value

    def count_hits(self, counters: list[bytes]) -> None:
        """Count one hit on each of the wire keys ``counters`` in one write, waiting for no answer."""
        if counters:
            self._send(b"".join(count_hit(counter) for counter in counters))

    def close(self) -> None:
        self._socket.close()
