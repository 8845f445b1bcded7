"""What several tests use to stand in for a server, to send signals and to run other processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def stand_in_server(serve: Callable[[socket.socket], None]) -> Iterator[tuple[str, int]]:
    """Listen on a free loopback port, run ``serve`` on a thread for each connection, and yield the
    address; afterwards stop accepting and end every connection.

    ``close()`` alone leaves the thread blocked in ``accept()`` listening past the test, and its fd
    number goes to the next test's listener: once, with the process stopped and continued under
    load, the next test's first get was answered with a previous test's value (most likely the
    restarted ``accept()`` took the reused number). ``shutdown()`` wakes ``accept()``; each
    connection's ``shutdown()`` ends its ``serve``.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    clients: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                clients.append(listener.accept()[0])
                threading.Thread(target=serve, args=(clients[-1],), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join(5)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)


def lines_of(client: socket.socket) -> Iterator[bytes]:
    """Yield each CRLF-ended line a client sends (without its CRLF), until it closes the connection."""
    buffer = b""
    while data := client.recv(4096):
        buffer += data
        while b"\r\n" in buffer:
            line, buffer = buffer.split(b"\r\n", 1)
            yield line


@contextlib.contextmanager
def periodic_signal(seconds: float, handler: Callable[..., None]) -> Iterator[None]:
    """SIGALRM every ``seconds`` to ``handler`` (a profiler's or a timer library's signal)."""
    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)


def run_spawned(target: Callable[..., None], *args: Any, timeout: float = 60) -> None:
    """Run ``target(*args)`` in a new (spawned) process; fail unless it exits 0 within ``timeout``."""
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    process.join(timeout=timeout)
    if process.is_alive():
        process.kill()
        process.join()
    assert process.exitcode == 0, f"{target.__name__} in another process exited {process.exitcode}"


def exit_code_of(pid: int, hung: str, timeout: float = 20) -> int:
    """Return the exit code of forked child ``pid``; kill it and fail with ``hung`` if it runs past
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(hung)
