"""The refresher's leadership: one lease per namespace, renewed by a thread, given up over a hung
remote call; and the signal handling that stops a leader (:mod:`dal.cli.refresh` uses both)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType

from dal.backends.base import Leadership, PersistentStore
from dal.exceptions import BackendError, DalError

#: the longest a standby waits between two attempts to take the lead
MAX_RETRY = 5.0


class Abandoned(BaseException):
    """Raised inside a hung remote call on a signal: not an Exception, so no refresh records it."""


def say(line: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}", flush=True)


class Leader:
    """This process's bid to lead ``role``: acquire, renew in a thread, release.

    :attr:`held` turns false as soon as a renewal says the lease is gone, when no renewal succeeded
    for a whole TTL (the store was unreachable, or this process was stopped: by then a standby may
    lead), or once the lead was given up over a hung remote call (:attr:`stuck`) while it held.
    """

    def __init__(self, store: PersistentStore, role: str, ttl: float, *, owner: str | None = None) -> None:
        self.store = store
        self.role = role
        self.ttl = float(ttl)
        #: a name for logs that says where the leader runs, unique per process
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.renew_every = self.ttl / 3
        self.retry = max(0.05, min(self.ttl / 4, MAX_RETRY))
        self.stuck_after = self.ttl  # a remote call running longer is hung: the lead is given up
        self.on_stuck: Callable[[], None] | None = None  # called once the lead was given up so
        self.lease: Leadership | None = None
        self._calling_since: float | None = None
        self._given_up: Leadership | None = None
        self._valid_until = 0.0
        self._lost = threading.Event()
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.lease is not None and not self._lost.is_set() and time.monotonic() < self._valid_until

    @property
    def gave_up(self) -> bool:
        """Whether this lead was given up over a hung remote call (not lost to the store or another)."""
        return self.lease is not None and self.lease is self._given_up

    @property
    def stuck(self) -> bool:
        """Whether the pass's remote call in progress has run for over :attr:`stuck_after` seconds."""
        since = self._calling_since
        return since is not None and time.monotonic() - since > self.stuck_after

    def calling(self, started: bool) -> None:
        """The pass's heartbeat (:func:`dal.mirror.refresh.watched`): a remote call starts or ends."""
        self._calling_since = time.monotonic() if started else None

    def acquire(self) -> Leadership:
        self._stop_renewing()
        self.lease = None  # a lease that lapsed is forgotten, even if asking for a new one fails
        started = time.monotonic()
        lease = self.store.acquire_leadership(self.role, self.owner, self.ttl)
        if not lease.acquired:
            return lease
        self.lease = lease
        self._valid_until = started + lease.ttl
        self._lost.clear()
        self._quit.clear()
        self._thread = threading.Thread(target=self._renew, args=(lease,), name="dal-refresh-lease",
                                        daemon=True)
        self._thread.start()
        return lease

    def release(self) -> None:
        self._stop_renewing()
        lease, self.lease = self.lease, None
        if lease is not None and lease is not self._given_up:  # given up: released already
            try:
                self.store.release_leadership(lease)
            except BackendError as exc:  # it expires anyway; a standby only waits longer
                print(f"could not release {self.role}: {exc}", file=sys.stderr)

    def _stop_renewing(self) -> None:
        self._quit.set()
        if self._thread is not None:
            self._thread.join(timeout=self.store.timeout + 1)
            self._thread = None

    def _renew(self, lease: Leadership) -> None:
        wait = self.renew_every
        while not self._quit.wait(wait):
            if time.monotonic() >= self._valid_until:
                # no renewal for a whole TTL: this process was stopped (SIGSTOP, a debugger) or
                # starved, and a standby may lead by now. Looked at first: time spent stopped also
                # makes a call in progress look hung, and a lost lead is not the remote's fault
                self._lost.set()
                return
            if self.stuck:  # the lease still holds, and a call has truly run that long
                self._give_up(lease)
                return
            started = time.monotonic()
            try:
                if not self.store.renew_leadership(lease):
                    self._lost.set()
                    return
            except DalError:
                if time.monotonic() >= self._valid_until:
                    self._lost.set()
                    return
                wait = self.renew_every / 4  # the store hiccupped: try again soon, before the lease ends
                continue
            self._valid_until = started + lease.ttl
            wait = self.renew_every

    def _give_up(self, lease: Leadership) -> None:
        # the pass hangs in a remote call: stop renewing, and let a standby lead at its next try
        self._given_up = lease
        self._lost.set()
        say(f"giving up the lead of {self.role}: a remote call has run for over {self.stuck_after:g}s")
        with suppress(DalError):  # it expires within its TTL anyway
            self.store.release_leadership(lease)
        if self.on_stuck is not None:
            self.on_stuck()


@contextmanager
def stopped_by_signals(stop: threading.Event, leader: Leader) -> Iterator[None]:
    """Set ``stop`` on SIGTERM or SIGINT (a second SIGINT interrupts at once), then restore the handlers.

    A signal during a hung remote call (:attr:`Leader.stuck`), or before it, abandons its batch.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals: whoever runs us there handles them
        return

    def on_signal(number: int, frame: FrameType | None) -> None:
        if number == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.set()  # before looking at stuck: see poke
        if leader.stuck:
            raise Abandoned

    def poke() -> None:
        # the lead was given up over a hung call; a signal came before it was hung: abandon it now
        if stop.is_set():
            signal.pthread_kill(main, signal.SIGTERM)

    main = threading.get_ident()  # the main thread's: checked above
    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
    leader.on_stuck = poke
    try:
        yield
    finally:
        leader.on_stuck = None
        for number, handler in previous.items():
            signal.signal(number, handler)
