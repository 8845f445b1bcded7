"""Which servers of a shared cache this process may serve entries from (see :class:`Trust`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from dal.backends.base import VolatileStore

log = logging.getLogger("dal.cache")  # the logger the manual names, shared with dal.cache.leases
#: seconds a read waits for the first catch-up another thread of its context runs
FIRST_WAIT = 5.0
#: guards the record of invalidation outages that the caches of one context share (Trust.outages)
outage_lock = threading.Lock()


class Settles(Protocol):
    """A cache sharing a :class:`Trust` (``LeasedCache``): told when its servers are trusted again."""

    @property
    def pending(self) -> frozenset[str]: ...

    def settle_outages(self) -> None: ...


class Placement:
    """Where a volatile store keeps each key, as far as trust is concerned.

    A single-copy store keeps a key on one server (``node``). A replicated one (a store with
    ``replicas_of``, ``needed`` and ``delete_each``, e.g. ``memcached://...?replicas=3``) keeps it
    on several and serves it only when ``needed`` of them agree and none answering differs, so a
    stale entry can be served only if at least ``needed`` of its replicas missed an invalidation:
    a key is read around only when that many of its replicas are untrusted (:meth:`unsafe`).
    Trust itself stays per server: a server is what misses invalidations.
    """

    def __init__(self, store: VolatileStore) -> None:
        self.node: Callable[[str], str] = store.node
        replicas_of: Callable[[str], tuple[str, ...]] | None = getattr(store, "replicas_of", None)
        self.replicated = replicas_of is not None
        self._replicas_of = replicas_of
        self.needed: int = getattr(store, "needed", 1) if self.replicated else 1

    def holders(self, key: str) -> tuple[str, ...]:
        """Return the servers that hold ``key``."""
        return self._replicas_of(key) if self._replicas_of is not None else (self.node(key),)

    def unsafe(self, key: str, lost: dict[str, float]) -> bool:
        """Tell whether ``key`` may be served stale given the untrusted servers ``lost``."""
        if self._replicas_of is None:
            return self.node(key) in lost
        return sum(1 for node in self._replicas_of(key) if node in lost) >= self.needed


class Trust:
    """Which servers of a shared cache this process may serve entries from.

    None before this process has caught up with the commit journal once: a writer that died
    after its commit may have left invalidations there that never reached the cache. And no
    server after losing contact with it: while this process could not reach it, other writers
    may not have reached it either (their invalidations failed, or wait in a paused server's
    socket). Reads of keys on an untrusted server bypass the cache (as misses, without
    filling); :meth:`restore` is called for a server by a sweep of the journal that started
    after its last failure, reached it and delivered every recorded invalidation again. The
    first read of a context does that sweep itself (``catch_up``) unless the background sweep
    already caught up, so that a new context does not read around the cache while it waits for
    one: only that once. Never after an outage: a server that stopped answering is read around
    (never stale) until a background sweep trusts it again, so a reader whose call just timed out
    does not wait a second timeout for a probe of that same server.
    Disabled (``nodes=None``) for a process-local cache, which nobody else writes.
    """

    def __init__(self, nodes: Sequence[str] | None) -> None:
        self.enabled = nodes is not None
        #: server -> ``time.monotonic()`` of its last failure, for every server not trusted now;
        #: each starts there (at minus infinity) until the first catch-up
        self.lost: dict[str, float] = dict.fromkeys(nodes, float("-inf")) if nodes is not None else {}
        #: the sweep that catches up, run by the first read that finds a server untrusted
        self.catch_up: Callable[[], None] | None = None
        #: server -> invalidations that failed since it stopped taking them: each outage is
        #: reported once when it starts and once when it ends, however many saves it spans
        self.outages: dict[str, int] = {}
        #: the caches sharing this trust (see LeasedCache.settle_outages)
        self.caches: list[Settles] = []
        self._first = True
        #: set once the first catch-up ended (or a sweep caught up): reads of other threads wait for it
        self._caught = threading.Event()
        self._lock = threading.Lock()

    @property
    def trusted(self) -> bool:
        """Tell whether every server is trusted."""
        return not self.lost

    def fail(self, nodes: Iterable[str]) -> None:
        """Note failed calls to ``nodes``: stop serving what they hold."""
        if self.enabled:
            now = time.monotonic()
            with self._lock:
                for node in nodes:
                    self.lost[node] = now

    def restore(self, nodes: Iterable[str], since: float) -> list[str]:
        """Trust ``nodes`` again, but not one that failed after ``since``; return those restored."""
        with self._lock:
            restored = [node for node in nodes if self.lost.get(node, since) < since]
            for node in restored:
                del self.lost[node]
            if restored:
                self._first = False  # caught up once: first_read has nothing left to do
                self._caught.set()
        if restored and self.outages and self.caches:
            self.caches[0].settle_outages()  # every invalidation recorded meanwhile was just delivered
        return restored

    def first_read(self) -> None:
        """Catch up with the journal now if nothing did yet (a failure leaves the cache untrusted).

        At most once, and never once a catch-up restored a server: then ``lost`` holds only servers
        that failed since, which the background sweep probes (see the class). A read of another
        thread meanwhile waits for that catch-up (at most FIRST_WAIT seconds), rather than read
        around the cache: a locked dynamic read around it would be computed by every such thread.
        """
        if self._caught.is_set() or self.catch_up is None:
            return
        with self._lock:
            first, self._first = self._first, False
        if not first:
            self._caught.wait(FIRST_WAIT)
            return
        try:
            self.catch_up()
        except Exception:  # a cache never fails a read: the background sweep tries again
            log.exception("catching up with the commit journal failed")
        finally:
            self._caught.set()
