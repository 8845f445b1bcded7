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
#: the longest one wait lasts (a day): a longer one is cut into days, since ``Event.wait`` refuses
#: one past ``threading.TIMEOUT_MAX`` (a few hundred years), and ``Mirror`` accepts timeouts up to 1e12 s
MAX_WAIT = 86400.0


class Abandoned(BaseException):
    """Raised inside a hung remote call on a signal: not an Exception, so no refresh records it."""


def say(line: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}", flush=True)


class Complaint:
    """A failure met at every retry, said once: again only when its text changes, and when it ends."""

    def __init__(self) -> None:
        self.last: str | None = None

    def say(self, line: str) -> None:
        if line != self.last:
            say(line)
            self.last = line

    def over(self, line: str) -> None:
        """Say ``line`` when a failure was said (it ended), and forget it."""
        if self.last is not None:
            say(line)
            self.last = None


class Leader:
    """This process's bid to lead ``role``: acquire, renew in a thread, release.

    :attr:`held` turns false as soon as a renewal says the lease is gone, when no renewal succeeded
    for a whole TTL (the store was unreachable, or this process was stopped: by then a standby may
    lead), or once the lead was given up over a hung remote call (:attr:`stuck`) while it held.
    A renewal comes every third of the TTL, and within half of what is left of the lease when less
    is left (a grant that answered late); :meth:`leading` also renews, before each batch.
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

    def leading(self) -> bool:
        """Whether this process still leads, asked of the store (a renewal): called before each batch.

        A lease can be lost between two renewals of the thread (a Redis key evicted, a store restarted
        without its data, an operator's release): asked here, a leader whose lease another took
        stops before its next batch, not at the thread's next renewal up to a third of the TTL later.
        A store that does not answer leaves the answer to :attr:`held` (the thread retries).
        """
        lease = self.lease
        if lease is None or not self.held:
            return False
        started = time.monotonic()
        try:
            renewed = self.store.renew_leadership(lease)
        except DalError:
            return self.held
        if not renewed:
            self._lost.set()
            return False
        self._valid_until = max(self._valid_until, started + lease.ttl)
        return self.held

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

    def _next_renewal(self, every: float) -> float:
        """Return how long to wait for the next renewal: ``every``, or half of what is left of the
        lease when that is sooner (a grant that answered late), never over :data:`MAX_WAIT`; at
        least 10 ms, so that a store failing at once is not asked in a busy loop as the lease ends."""
        return max(0.01, min(every, (self._valid_until - time.monotonic()) / 2, MAX_WAIT))

    def _renew(self, lease: Leadership) -> None:
        wait = self._next_renewal(self.renew_every)
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
                # the store hiccupped: try again soon, before the lease ends
                wait = self._next_renewal(self.renew_every / 4)
                continue
            self._valid_until = max(self._valid_until, started + lease.ttl)
            wait = self._next_renewal(self.renew_every)

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
def stopped_by_signals(stop: threading.Event, leader: Leader | None) -> Iterator[None]:
    """Set ``stop`` on SIGTERM or SIGINT (a second SIGINT interrupts at once), then restore the handlers.

    A signal during a hung remote call (:attr:`Leader.stuck`), or before it, abandons its batch
    (``leader`` None: before there is one, waiting for the store).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals: whoever runs us there handles them
        return

    def on_signal(number: int, frame: FrameType | None) -> None:
        if number == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.set()  # before looking at stuck: see poke
        if leader is not None and leader.stuck:
            raise Abandoned

    def poke() -> None:
        # the lead was given up over a hung call; a signal came before it was hung: abandon it now
        if stop.is_set():
            signal.pthread_kill(main, signal.SIGTERM)

    main = threading.get_ident()  # the main thread's: checked above
    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
    if leader is not None:
        leader.on_stuck = poke
    try:
        yield
    finally:
        if leader is not None:
            leader.on_stuck = None
        for number, handler in previous.items():
            signal.signal(number, handler)
