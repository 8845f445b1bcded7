"""What the proxy holds per connection, and the handle of an armed fault."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

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


class Connection:
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


def reset(sock: socket.socket) -> None:
    """Close ``sock`` so the peer sees a reset, not an orderly end (no FIN, no TIME_WAIT)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
