"""A loopback TCP proxy that can lose a server's answer, partition and cut connections, for fault tests.

Put a :class:`LoopbackProxy` in front of a server and point the client at the proxy. It
forwards bytes both ways until a test arms a fault:

* :meth:`~LoopbackProxy.drop_next_answer` lets the next request through and throws the
  answer away, then drops the client (``"close"``) or keeps it waiting in silence
  (``"hold"``), so the server applied a request whose client cannot tell;
* :meth:`~LoopbackProxy.blackhole` stops all traffic (a partition) until turned off;
* :meth:`~LoopbackProxy.cut` resets every current connection.

One thread runs a selector loop over every socket, so faults take effect between two
reads, never in the middle of one; the control methods hand their work to that thread and
return once it is done.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType

LOOPBACK = "127.0.0.1"
#: bytes read at once, and the most held for a side that does not read (then reading stops)
CHUNK = 65536
#: seconds the proxy waits for the target to accept a connection (it is on loopback)
CONNECT_TIMEOUT = 2.0
#: seconds a control method waits for the proxy thread to carry it out
CONTROL_TIMEOUT = 5.0
#: the loop wakes at least this often, so a missed wake-up costs at most this much
TICK = 0.2
#: connections accepted at once before the loop serves the others again
ACCEPT_BATCH = 64
MODES = ("close", "hold")


class DropHandle:
    """One armed :meth:`LoopbackProxy.drop_next_answer`: whether it fired, and what it discarded."""

    def __init__(self, mode: str, hold: float) -> None:
        self.mode = mode
        self.hold = hold
        #: server bytes thrown away on the faulted connection so far
        self.discarded_bytes = 0
        self._claimed = threading.Event()
        self._fired = threading.Event()

    def __repr__(self) -> str:
        return (f"DropHandle(mode={self.mode!r}, claimed={self.claimed}, fired={self.fired}, "
                f"discarded_bytes={self.discarded_bytes})")

    @property
    def claimed(self) -> bool:
        """Tell whether a request went through with this fault armed (its answer will be dropped)."""
        return self._claimed.is_set()

    @property
    def fired(self) -> bool:
        """Tell whether the server answered and the answer was discarded."""
        return self._fired.is_set()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the fault to fire; return whether it did."""
        return self._fired.wait(timeout)

    def _claim(self) -> None:
        self._claimed.set()

    def _discard(self, count: int) -> None:
        # counted before the event is set: a waiter that wakes sees the bytes
        self.discarded_bytes += count
        self._fired.set()


class _Connection:
    """One client connection and its connection to the target, with what each side has not taken yet."""

    def __init__(self, client: socket.socket) -> None:
        #: None once a fault dropped the client; the upstream side is then drained to its end
        self.client: socket.socket | None = client
        #: None until connected (connecting waits while the proxy is blackholed)
        self.upstream: socket.socket | None = None
        self.to_upstream = bytearray()
        self.to_client = bytearray()
        self.client_eof = False
        self.upstream_eof = False
        #: whether each side's end of input was passed on to the other side (half-close)
        self.client_shut = False
        self.upstream_shut = False
        self.fault: DropHandle | None = None
        self.hold_until: float | None = None
        self.masks: dict[socket.socket, int] = {}
        self.closed = False

    def sockets(self) -> list[socket.socket]:
        return [sock for sock in (self.client, self.upstream) if sock is not None]

    def finished(self) -> bool:
        if self.upstream is None:
            return self.client is None
        if self.client is None:
            # a dropped client: the server finishes its work undisturbed until it closes
            return self.upstream_eof
        return self.client_eof and self.upstream_eof and self.client_shut and self.upstream_shut


class LoopbackProxy:
    """A TCP proxy on a free loopback port in front of ``target``, with faults a test can arm.

    Counters (read them from any thread): :attr:`connections` accepted so far,
    :attr:`active` connections now, :attr:`bytes_to_server` and :attr:`bytes_to_client`
    forwarded.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.connections = 0
        self.active = 0
        self.bytes_to_server = 0
        self.bytes_to_client = 0
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._commands: list[Callable[[], None]] = []
        self._conns: dict[socket.socket, _Connection] = {}
        self._armed: DropHandle | None = None
        self._blackholed = False
        self._stopping = False

    def __repr__(self) -> str:
        return f"LoopbackProxy({self.address} -> {self.target[0]}:{self.target[1]})"

    def __enter__(self) -> LoopbackProxy:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """Return the (host, port) clients connect to."""
        return LOOPBACK, self.port

    @property
    def netloc(self) -> str:
        """Return ``host:port`` for clients, as in a dal URL."""
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> LoopbackProxy:
        """Listen on a free loopback port and start forwarding; return the proxy."""
        if self._thread is not None:
            raise RuntimeError(f"{self!r} was started already")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((LOOPBACK, 0))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection (clients see resets); calling it again does nothing."""
        thread = self._thread
        if thread is None or self._stopping:
            return
        self._stopping = True
        self._wake()
        thread.join(CONTROL_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"{self!r}: the proxy thread did not stop within {CONTROL_TIMEOUT} s")

    def drop_next_answer(self, mode: str = "close", hold: float = 0.0) -> DropHandle:
        """Arm a one-shot fault: let the next request through and discard the answer to it.

        The next bytes any client sends are forwarded; from then on, what the server sends
        back on that connection is thrown away. With ``"close"``, the client's connection is
        reset as soon as the first answer bytes arrive; the proxy keeps the server's side
        open and drains it, so the server finishes the request as if only the network had
        failed. With ``"hold"``, the client's connection stays open but silent for ``hold``
        seconds from the request, then is reset the same way (a client with a shorter
        timeout times out first). Other connections, and new ones, are not affected.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if hold < 0 or (mode == "hold" and hold == 0):
            raise ValueError(f"hold must be positive in mode 'hold' (and never negative), not {hold}")
        handle = DropHandle(mode, hold)
        with self._lock:
            if self._armed is not None:
                raise RuntimeError("a drop_next_answer fault is armed already and no request took it yet")
            self._armed = handle
        return handle

    def blackhole(self, on: bool) -> None:
        """Start (``True``) or end (``False``) a partition; return once it is in force.

        While on, connections are accepted but nothing is forwarded either way, and new
        ones are not connected to the server yet. Nothing is discarded: what either side
        sent meanwhile is delivered when the partition ends, as TCP would after a short
        outage (call :meth:`cut` first to lose it instead).
        """
        def switch() -> None:
            self._blackholed = on
            if not on:
                for conn in self._connections():
                    if conn.upstream is None and conn.client is not None:
                        self._connect(conn)

        self._call(switch)

    def cut(self) -> None:
        """Reset every current connection (both sides see a reset); keep accepting new ones."""
        def cut_all() -> None:
            for conn in self._connections():
                self._abort(conn)

        self._call(cut_all)

    # --- the proxy thread ---------------------------------------------------------------

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

    def _connections(self) -> list[_Connection]:
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
            conn = _Connection(client)
            self._conns[client] = conn
            self.connections += 1
            self.active += 1
            if not self._blackholed:
                self._connect(conn)

    def _connect(self, conn: _Connection) -> None:
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

    def _update_interest(self, conn: _Connection) -> None:
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

    def _set_mask(self, conn: _Connection, sock: socket.socket, mask: int) -> None:
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

    def _receive(self, conn: _Connection, sock: socket.socket) -> None:
        try:
            data = sock.recv(CHUNK)
        except BlockingIOError:
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
        if conn.fault.mode == "close":
            self._drop_client(conn)

    def _flush(self, conn: _Connection) -> None:
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

    def _drop_client(self, conn: _Connection) -> None:
        """Reset the client's side of a faulted connection; keep draining the server's side."""
        client = conn.client
        if client is None:
            return
        self._forget(conn, client)
        _reset(client)
        conn.client = None
        conn.to_client.clear()
        conn.hold_until = None

    def _abort(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        for sock in conn.sockets():
            self._forget(conn, sock)
            _reset(sock)
        conn.client = conn.upstream = None
        self.active -= 1

    def _close(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        for sock in conn.sockets():
            self._forget(conn, sock)
            sock.close()
        conn.client = conn.upstream = None
        self.active -= 1

    def _forget(self, conn: _Connection, sock: socket.socket) -> None:
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


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` so the peer sees a reset, not an orderly end (no FIN, no TIME_WAIT)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
