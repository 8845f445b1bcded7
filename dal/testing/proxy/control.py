"""The proxy a test holds: start and stop it, and arm its faults (see :mod:`dal.testing.proxy`)."""

from __future__ import annotations

import selectors
import socket
import threading
from types import TracebackType

from dal.testing.proxy.connection import CONTROL_TIMEOUT, LOOPBACK, MODES, DropHandle
from dal.testing.proxy.loop import ProxyLoop


class LoopbackProxy(ProxyLoop):
    """A TCP proxy on a free loopback port in front of ``target``, with faults a test can arm.

    Counters (read them from any thread): :attr:`connections` accepted so far,
    :attr:`active` connections now, :attr:`bytes_to_server` and :attr:`bytes_to_client`
    forwarded, :attr:`bytes_lost` thrown away by :meth:`lose`.
    """

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
        reset 50 ms after the first answer bytes arrive (meanwhile the rest of a request sent in
        several pieces still reaches the server; nothing of the answer reaches the client); the
        proxy keeps the server's side open and drains it, so the server finishes the request as
        if only the network had failed. With ``"hold"``, the client's connection stays open but
        silent for ``hold`` seconds from the request, then is reset the same way (a client with
        a shorter timeout times out first). Other connections, and new ones, are not affected.
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

    def lose(self, on: bool) -> None:
        """Start (``True``) or end (``False``) losing traffic; return once it is in force.

        While on, connections are accepted and connected as usual, but what either side sends is
        read and thrown away (counted in :attr:`bytes_lost`), as is what was waiting to be
        forwarded when it started: a network that drops packets, where :meth:`blackhole` delays
        them. Connections stay open, so a client idle meanwhile finds its connection working when
        it ends; one that sent a request meanwhile times out waiting for the answer.
        """
        def switch() -> None:
            self._losing = on
            if on:
                for conn in self._connections():
                    self.bytes_lost += len(conn.to_upstream) + len(conn.to_client)
                    conn.to_upstream.clear()
                    conn.to_client.clear()

        self._call(switch)

    def cut(self) -> None:
        """Reset every current connection (both sides see a reset); keep accepting new ones."""
        def cut_all() -> None:
            for conn in self._connections():
                self._abort(conn)

        self._call(cut_all)
