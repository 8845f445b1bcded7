"""The proxy thread: one selector loop over every socket, forwarding bytes and carrying out faults.

Control methods (:mod:`dal.testing.proxy.control`) hand their work to this thread through
:meth:`ProxyLoop._call`, so faults take effect between two reads, never in the middle of one.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable

from dal.testing.proxy.connection import (
    ACCEPT_BATCH,
    CHUNK,
    CONNECT_TIMEOUT,
    CONTROL_TIMEOUT,
    TICK,
    Connection,
    DropHandle,
    reset,
)

#: how long after the first answer bytes a ``close`` fault resets the client (answer discarded)
CLOSE_GRACE = 0.05


class ProxyLoop:
    """The state of a proxy and the loop that runs on its thread."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.connections = 0
        self.active = 0
        self.bytes_to_server = 0
        self.bytes_to_client = 0
        #: bytes thrown away while losing (either way)
        self.bytes_lost = 0
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._commands: list[Callable[[], None]] = []
        self._conns: dict[socket.socket, Connection] = {}
        self._armed: DropHandle | None = None
        self._blackholed = False
        self._losing = False
        self._stopping = False

    def _wake(self) -> None:
        if self._wake_w is None:
            return
        # a full pipe means a wake-up is pending anyway; a closed one, that the loop is gone
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _call(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the proxy thread (or here when it does not run) and wait for it."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            with self._lock:
                action()
            return
        done = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                action()
            except BaseException as exc:
                failure.append(exc)
            finally:
                done.set()

        with self._lock:
            self._commands.append(run)
        self._wake()
        if not done.wait(CONTROL_TIMEOUT):
            raise RuntimeError(f"{self!r}: the proxy thread did not answer within {CONTROL_TIMEOUT} s")
        if failure:
            raise failure[0]

    def _run(self) -> None:
        assert self._selector is not None and self._listener is not None and self._wake_r is not None
        try:
            # runs for the life of the proxy: stop() ends it, and each select waits at most TICK
            while not self._stopping:
                with self._lock:
                    commands, self._commands = self._commands, []
                for command in commands:
                    command()
                self._expire_holds()
                for conn in self._connections():
                    self._update_interest(conn)
                for key, events in self._selector.select(self._next_timeout()):
                    sock = key.fileobj
                    if sock is self._listener:
                        self._accept()
                    elif sock is self._wake_r:
                        self._drain_wake()
                    else:
                        assert isinstance(sock, socket.socket)
                        self._serve(sock, events)
        finally:
            self._shutdown()
            # a control call that raced with stop() finds nothing left to act on, but must not hang
            with self._lock:
                commands, self._commands = self._commands, []
            for command in commands:
                command()

    def _connections(self) -> list[Connection]:
        """Return each open connection once (the map holds it under both of its sockets)."""
        return list({id(conn): conn for conn in self._conns.values()}.values())

    def _next_timeout(self) -> float:
        holds = [conn.hold_until for conn in self._connections()
                 if conn.hold_until is not None and conn.client is not None]
        if not holds:
            return TICK
        return max(0.0, min(TICK, min(holds) - time.monotonic()))

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                client, _address = self._listener.accept()
            except BlockingIOError:
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(client)
            self._conns[client] = conn
            self.connections += 1
            self.active += 1
            if not self._blackholed:
                self._connect(conn)

    def _connect(self, conn: Connection) -> None:
        # a blocking connect: the target is on loopback, so it is immediate (or refused)
        try:
            upstream = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT)
        except OSError:
            # an unreachable server looks the same to the client as a proxy that resets it
            self._abort(conn)
            return
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.upstream = upstream
        self._conns[upstream] = conn

    def _update_interest(self, conn: Connection) -> None:
        # a side is read only while the other side has taken what came before: memory stays bounded
        client_mask = upstream_mask = 0
        if not self._blackholed:
            if conn.client is not None and conn.upstream is not None:
                if not conn.client_eof and len(conn.to_upstream) < CHUNK:
                    client_mask |= selectors.EVENT_READ
                if conn.to_client:
                    client_mask |= selectors.EVENT_WRITE
            if conn.upstream is not None:
                if not conn.upstream_eof and len(conn.to_client) < CHUNK:
                    upstream_mask |= selectors.EVENT_READ
                if conn.to_upstream:
                    upstream_mask |= selectors.EVENT_WRITE
        if conn.client is not None:
            self._set_mask(conn, conn.client, client_mask)
        if conn.upstream is not None:
            self._set_mask(conn, conn.upstream, upstream_mask)

    def _set_mask(self, conn: Connection, sock: socket.socket, mask: int) -> None:
        assert self._selector is not None
        current = conn.masks.get(sock, 0)
        if mask == current:
            return
        if current == 0:
            self._selector.register(sock, mask)
        elif mask == 0:
            self._selector.unregister(sock)
        else:
            self._selector.modify(sock, mask)
        conn.masks[sock] = mask

    def _serve(self, sock: socket.socket, events: int) -> None:
        conn = self._conns.get(sock)
        if conn is None:
            # closed earlier in this round
            return
        try:
            if events & selectors.EVENT_READ:
                self._receive(conn, sock)
            self._flush(conn)
        except OSError:
            # a reset (or any error) on one side is passed on to the other as a reset
            self._abort(conn)
            return
        if conn.finished():
            self._close(conn)

    def _receive(self, conn: Connection, sock: socket.socket) -> None:
        try:
            data = sock.recv(CHUNK)
        except BlockingIOError:
            return
        if data and self._losing:
            self.bytes_lost += len(data)
            return
        if sock is conn.client:
            if not data:
                conn.client_eof = True
                return
            if conn.fault is None:
                with self._lock:
                    handle, self._armed = self._armed, None
                if handle is not None:
                    # claimed before forwarding: whatever the server sends from now on is the answer
                    conn.fault = handle
                    handle._claim()
                    if handle.mode == "hold":
                        conn.hold_until = time.monotonic() + handle.hold
            conn.to_upstream += data
            self.bytes_to_server += len(data)
            return
        if not data:
            conn.upstream_eof = True
            return
        if conn.fault is None:
            conn.to_client += data
            self.bytes_to_client += len(data)
            return
        conn.fault._discard(len(data))
        if conn.fault.mode == "close" and conn.hold_until is None:
            # not at once: a request written in several pieces (gRPC's HEADERS, then DATA) may
            # still be on its way when the server's first bytes (a WINDOW_UPDATE, a PING ack)
            # come back; it must all reach the server, or the request would be lost, not its answer
            conn.hold_until = time.monotonic() + CLOSE_GRACE

    def _flush(self, conn: Connection) -> None:
        if self._blackholed:
            return
        if conn.client is not None and conn.to_client:
            self._send(conn.client, conn.to_client)
        if conn.upstream is not None and conn.to_upstream:
            self._send(conn.upstream, conn.to_upstream)
        # pass an end of input on once everything before it was delivered (a half-close)
        if conn.client_eof and not conn.upstream_shut and not conn.to_upstream and conn.upstream is not None:
            conn.upstream.shutdown(socket.SHUT_WR)
            conn.upstream_shut = True
        if (conn.upstream_eof and not conn.client_shut and not conn.to_client
                and conn.client is not None):
            conn.client.shutdown(socket.SHUT_WR)
            conn.client_shut = True

    @staticmethod
    def _send(sock: socket.socket, pending: bytearray) -> None:
        try:
            sent = sock.send(pending)
        except BlockingIOError:
            return
        del pending[:sent]

    def _expire_holds(self) -> None:
        now = time.monotonic()
        for conn in self._connections():
            if conn.hold_until is not None and conn.hold_until <= now and conn.client is not None:
                self._drop_client(conn)
                if conn.finished():
                    self._close(conn)

    def _drop_client(self, conn: Connection) -> None:
        """Reset the client's side of a faulted connection; keep draining the server's side."""
        client = conn.client
        if client is None:
            return
        self._forget(conn, client)
        reset(client)
        conn.client = None
        conn.to_client.clear()
        conn.hold_until = None

    def _abort(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        for sock in conn.sockets():
            self._forget(conn, sock)
            reset(sock)
        conn.client = conn.upstream = None
        self.active -= 1

    def _close(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        for sock in conn.sockets():
            self._forget(conn, sock)
            sock.close()
        conn.client = conn.upstream = None
        self.active -= 1

    def _forget(self, conn: Connection, sock: socket.socket) -> None:
        assert self._selector is not None
        if conn.masks.pop(sock, 0):
            self._selector.unregister(sock)
        self._conns.pop(sock, None)

    def _shutdown(self) -> None:
        for conn in self._connections():
            self._abort(conn)
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()
