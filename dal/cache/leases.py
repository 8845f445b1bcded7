"""The read-through cache in front of the durable store, safe against stale sets.

A fill takes a *lease* before it reads the durable store: it ``add``s a lease marker under
the cache key, reads the durable value, and stores it with ``cas`` against the marker. An
invalidation (after a committed save or delete) deletes the key, which voids any lease
taken before it, so a fill that read an older revision can never land after the
invalidation. (The idea of "Scaling Memcache at Facebook", built on classic add/gets/cas.)

Entries are signed with HMAC-SHA256 bound to their key when an ``hmac_key`` is configured:
a tampered, forged or moved entry is rejected, counted, deleted and treated as a miss.
Every volatile-store failure counts as a miss: the cache never fails a read.

After a failure, a shared cache is not trusted (:class:`Trust`): while this process could not
reach it, invalidations may have failed to reach it too, so reads bypass it until a sweep of
the commit journal (``dal/cache/journal.py``), started after the last failure, has delivered every
recorded invalidation again.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from dal.backends.base import VolatileStore
from dal.exceptions import BackendError

log = logging.getLogger("dal.cache")  # the logger the README names; kept when the module moved
R = TypeVar("R")

_VALUE = b"V"
_LEASE = b"L"
_SIGNED = b"S"
_PLAIN = b"U"
_DIGEST_SIZE = 32
#: seconds between two attempts to deliver invalidations the volatile store did not take
RESEND_INTERVAL = 0.25
#: guards the record of invalidation outages that the caches of one context share (Trust.outages)
_outage_lock = threading.Lock()


class Signer:
    """Seal and open cache entries; with a key, entries are HMAC-signed and bound to their cache key."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key

    @property
    def signing(self) -> bool:
        return self._key is not None

    def seal(self, cache_key: str, payload: bytes) -> bytes:
        if self._key is None:
            return _PLAIN + payload
        return _SIGNED + self._digest(cache_key, payload) + payload

    def open(self, cache_key: str, raw: bytes) -> bytes | None:
        """Return the payload, or ``None`` when the entry is not one this signer accepts."""
        if self._key is None:
            return raw[1:] if raw[:1] == _PLAIN else None
        if raw[:1] != _SIGNED or len(raw) < 1 + _DIGEST_SIZE:
            return None
        digest, payload = raw[1:1 + _DIGEST_SIZE], raw[1 + _DIGEST_SIZE:]
        if not hmac.compare_digest(digest, self._digest(cache_key, payload)):
            return None
        return payload

    def _digest(self, cache_key: str, payload: bytes) -> bytes:
        assert self._key is not None
        # the key is part of the message, so an entry copied under another key fails
        message = cache_key.encode() + b"\x00" + payload
        return hmac.new(self._key, message, hashlib.sha256).digest()


class _ThreadMark:
    """Held by one thread's slot of a ``threading.local`` only: it dies when that thread ends."""

    __slots__ = ("__weakref__",)


def _retire(retiring: collections.deque[tuple[int, dict[str, float]]], token: int,
            counts: dict[str, float]) -> None:
    # Runs when a thread ends (or, in a forked child, for every thread that did not survive the
    # fork), at any moment and maybe while another thread holds the Stats lock: so no lock here,
    # only a deque append, which is atomic. The next snapshot folds the counts into the total.
    retiring.append((token, counts))


class Stats:
    """Event counters (hits, misses, rejected entries, seconds spent, ...), exact under threads.

    Each thread counts in its own dict, so the hot path takes no lock; a snapshot sums them.
    When a thread ends, its dict is folded into a shared total (by the next snapshot), so a
    process that runs many short-lived threads keeps one dict per *live* thread, and loses no
    count. A forked child starts from zero: it counts (and publishes) only its own events.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        #: token -> the dict of a thread that may still count (tokens are never reused)
        self._all: dict[int, dict[str, float]] = {}
        #: dicts of threads that ended, not yet folded into ``_total``
        self._retiring: collections.deque[tuple[int, dict[str, float]]] = collections.deque()
        self._total: dict[str, float] = {}
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        _all_stats.add(self)

    def add(self, event: str, amount: float = 1) -> None:
        try:
            counts: dict[str, float] = self._local.counts
        except AttributeError:
            counts = self._start_thread()
        counts[event] = counts.get(event, 0) + amount

    def _start_thread(self) -> dict[str, float]:
        counts: dict[str, float] = {}
        token = next(self._tokens)  # itertools.count is atomic under the GIL
        mark = _ThreadMark()
        # the finalizer holds the dict, the deque and the token, never this Stats object
        weakref.finalize(mark, _retire, self._retiring, token, counts).atexit = False
        self._all[token] = counts  # one dict store: atomic, no lock on this path either
        local = self._local
        local.mark, local.counts = mark, counts
        return counts

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            total = self._fold_retired()
            # list() copies in one step; a dict retired after the fold above is still in _all,
            # so it is counted here once, and folded by the next snapshot
            for counts in list(self._all.values()):
                for event, amount in dict(counts).items():  # dict() copies in one step
                    total[event] = total.get(event, 0) + amount
        return total

    def __getitem__(self, event: str) -> float:
        return self.snapshot().get(event, 0)

    def _fold_retired(self) -> dict[str, float]:
        """Move the counts of ended threads into ``_total``; return a copy of it. Hold the lock."""
        retiring, total = self._retiring, self._total
        while retiring:
            token, counts = retiring.popleft()
            if self._all.pop(token, None) is None:
                continue  # reset after a fork: those counts were the parent's
            for event, amount in counts.items():
                total[event] = total.get(event, 0) + amount
        return dict(total)

    def _reset_in_child(self) -> None:
        """Forget every count: a forked child reports only what it does itself."""
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._retiring.clear()
        self._total.clear()
        for counts in list(self._all.values()):
            counts.clear()  # the forking thread keeps counting into its (now empty) dict
        self._all = {token: counts for token, counts in self._all.items()
                     if counts is getattr(self._local, "counts", None)}


_all_stats: weakref.WeakSet[Stats] = weakref.WeakSet()


def _reset_stats_in_child() -> None:
    for stats in list(_all_stats):
        stats._reset_in_child()


os.register_at_fork(after_in_child=_reset_stats_in_child)


class Trust:
    """Which servers of a shared cache this process may serve entries from.

    None before this process has caught up with the commit journal once: a writer that died
    after its commit may have left invalidations there that never reached the cache. And no
    server after losing contact with it: while this process could not reach it, other writers
    may not have reached it either (their invalidations failed, or wait in a paused server's
    socket). Reads of keys on an untrusted server bypass the cache (as misses, without
    filling); :meth:`restore` is called for a server by a sweep of the journal that started
    after its last failure, reached it and delivered every recorded invalidation again. The
    first read does that sweep itself (``catch_up``) rather than wait for the background one.
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
        self.caches: list[LeasedCache] = []
        self._first = True
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
        if restored and self.outages and self.caches:
            self.caches[0].settle_outages()  # every invalidation recorded meanwhile was just delivered
        return restored

    def first_read(self) -> None:
        """Catch up with the journal now if nothing did yet (a failure leaves the cache untrusted)."""
        if self._first and self.catch_up is not None:
            with self._lock:
                first, self._first = self._first, False
            if first:
                try:
                    self.catch_up()
                except Exception:  # a cache never fails a read: the background sweep tries again
                    log.exception("catching up with the commit journal failed")


class LeasedCache:
    """A read-through cache of opaque payloads over a volatile store."""

    def __init__(self, store: VolatileStore, signer: Signer, stats: Stats, *,
                 prefix: str = "", lease_ttl: float = 10.0, trust: Trust | None = None) -> None:
        self.store = store
        self.signer = signer
        self.stats = stats
        self.prefix = prefix
        self.lease_ttl = lease_ttl
        self.trust = trust if trust is not None else Trust(None)
        self._probes: dict[tuple[str, str], str] = {}
        #: invalidations the store did not take yet, each with the generation it was added at;
        #: read around, and resent until delivered
        self._pending: dict[str, int] = {}
        self._generation = 0
        self._pending_lock = threading.Lock()
        self._resending = False
        self._closed = False
        self.trust.caches.append(self)

    def usable(self, key: str) -> bool:
        """Tell whether ``key`` may be read from and filled into the cache now."""
        return not self._bypassed(key)

    def _bypassed(self, key: str) -> bool:
        """Tell whether reads of ``key`` must not use the cache now."""
        trust = self.trust
        if trust.lost:
            trust.first_read()
            if trust.lost and self.store.node(key) in trust.lost:
                return True
        return bool(self._pending and key in self._pending)

    def get(self, key: str) -> bytes | None:
        """Return the cached payload under ``key``, or ``None`` on a miss, a lease or a bad entry."""
        if (self.trust.lost or self._pending) and self._bypassed(key):
            return None
        raw = self._call(key, self.store.get, key)
        return None if raw is None else self._payload(key, raw)

    def get_many(self, keys: list[str], *, count: bool = True) -> dict[str, bytes]:
        """Return the cached payloads among ``keys`` in one batch; count hits and misses."""
        found: dict[str, bytes] = {}
        asked = keys
        trust = self.trust
        if trust.lost:
            trust.first_read()
            if trust.lost:
                node = self.store.node
                asked = [key for key in asked if node(key) not in trust.lost]
        if self._pending:
            asked = [key for key in asked if key not in self._pending]
        for key, raw in self._get_many(asked).items():
            payload = self._payload(key, raw)
            if payload is not None:
                found[key] = payload
        if count:
            self.stats.add(f"{self.prefix}hits", len(found))
            self.stats.add(f"{self.prefix}misses", len(keys) - len(found))
        return found

    def _get_many(self, keys: list[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        try:
            return self.store.get_many(keys)
        except BackendError as exc:
            self.stats.add(f"{self.prefix}errors")
            log.debug("volatile store failed, treated as a miss: %s", exc)
        nodes = self.store.nodes()
        if len(nodes) == 1:
            self.trust.fail(nodes)
            return {}
        # which servers failed? ask each on its own: what the others hold still counts
        groups: dict[str, list[str]] = {}
        for key in keys:
            groups.setdefault(self.store.node(key), []).append(key)
        found: dict[str, bytes] = {}
        for node, group in groups.items():
            try:
                found.update(self.store.get_many(group))
            except BackendError:
                self.trust.fail([node])
        return found

    def put(self, key: str, payload: bytes, ttl: float) -> bool:
        """Store ``payload`` unconditionally, for entries whose validity readers check themselves."""
        if self._bypassed(key):
            return False
        return bool(self._call(key, self.store.set, key, self.signer.seal(key, _VALUE + payload), ttl))

    def _payload(self, key: str, raw: bytes) -> bytes | None:
        payload = self.signer.open(key, raw)
        if payload is None:
            self.stats.add(f"{self.prefix}rejected")
            log.warning("rejected a cache entry that failed verification: %s", key)
            self._call(key, self.store.delete, key)
            return None
        if payload[:1] != _VALUE:
            return None  # a lease: somebody is filling it right now
        return payload[1:]

    def fetch(self, key: str, load: Callable[[], bytes | None], ttl: float) -> bytes | None:
        """Return the cached payload, or ``load()`` it and cache it unless invalidated meanwhile."""
        cached = self.get(key)
        if cached is not None:
            self.stats.add(f"{self.prefix}hits")
            return cached
        self.stats.add(f"{self.prefix}misses")
        return self.fill(key, load, ttl)

    def fill(self, key: str, load: Callable[[], bytes | None], ttl: float) -> bytes | None:
        """Return ``load()``, caching it under ``key`` unless ``key`` was invalidated meanwhile."""
        lease = None if self._bypassed(key) else self._take_lease(key)
        try:
            payload = load()
        except BaseException:
            if lease is not None:  # give the fill up at once rather than block caching for lease_ttl
                self._call(key, self.store.delete, key)
            raise
        if lease is not None and payload is not None:
            sealed = self.signer.seal(key, _VALUE + payload)
            stored = self._call(key, self.store.cas, key, sealed, lease, ttl)
            self.stats.add(f"{self.prefix}fills" if stored else f"{self.prefix}fill_conflicts")
        return payload

    def invalidate(self, *keys: str, recorded: bool = False) -> list[str]:
        """Drop ``keys``; any fill that took its lease earlier will not store.

        Return the keys whose deletion the store did not confirm. Their server is no longer
        trusted (reads go around it, see :class:`Trust`). Keys a commit's journal record holds
        (``recorded``) are delivered by the journal's sweeps; the others are read around here
        and resent until delivered.
        """
        if not keys:
            return []
        undelivered = self.deliver(list(keys), first=True)
        if undelivered and not recorded:
            with self._pending_lock:
                for key in undelivered:
                    self._generation += 1
                    self._pending[key] = self._generation
            self._schedule_resend()
        return undelivered

    def deliver(self, keys: list[str], *, first: bool = False) -> list[str]:
        """Delete ``keys`` once; return those not confirmed (and stop trusting the cache if any).

        ``first``: these are new invalidations, not ones sent again; their failures are counted
        in the outage's summary.
        """
        try:
            undelivered = self.store.delete_many(keys)
        except BackendError:  # a store may still fail as a whole
            undelivered = list(keys)
        if undelivered:
            self.stats.add(f"{self.prefix}invalidation_errors")
            failed: dict[str, int] = {}
            for key in undelivered:
                node = self.store.node(key)
                failed[node] = failed.get(node, 0) + 1
            self.trust.fail(list(failed))
            # one warning when a server stops taking invalidations, not one per save: a dead
            # server fails every save until it answers again (settle_outages says when)
            with _outage_lock:
                started = {node: count for node, count in failed.items() if node not in self.trust.outages}
                for node, count in failed.items():
                    self.trust.outages[node] = self.trust.outages.get(node, 0) + (count if first else 0)
            for node, count in sorted(started.items()):
                log.warning("could not invalidate %d cache entries on %s; reading around it until they are "
                            "delivered (said once: a line follows when it answers again)", count,
                            self._server_name(node))
        if self.trust.outages:
            self.settle_outages(failing=undelivered)
        return undelivered

    def settle_outages(self, failing: Iterable[str] = ()) -> None:
        """Report each outage that is over: its server is trusted again and nothing waits for it.

        Trusted again means a sweep of the journal reached the server and delivered every
        recorded invalidation; the caches sharing the trust must also hold no unrecorded one
        still to be resent to it. ``failing``: keys whose invalidation just failed (not pending yet).
        """
        trust = self.trust
        with _outage_lock:
            candidates = [node for node in trust.outages if node not in trust.lost]
        if not candidates:
            return
        node_of = self.store.node
        waiting = {node_of(key) for key in failing} | {node_of(key) for cache in trust.caches
                                                        for key in cache.pending}
        ended: list[tuple[str, int]] = []
        with _outage_lock:
            for node in candidates:
                if node not in waiting and node not in trust.lost and node in trust.outages:
                    ended.append((node, trust.outages.pop(node)))
        for node, count in ended:
            log.warning("%s answers again; %d invalidations failed meanwhile, all delivered since",
                        self._server_name(node), count)

    def _server_name(self, node: str) -> str:
        """Return ``scheme://host:port`` of a server (``node`` is ``""`` when the store has one)."""
        url = self.store.url
        where = node or ",".join(host if port is None else f"{host}:{port}" for host, port in url.hosts)
        return f"{url.scheme}://{where}"

    def probe(self, prefix: str, nodes: Iterable[str]) -> set[str]:
        """Return which of ``nodes`` answer now: a delete of a key under ``prefix`` that each holds,
        sent even to a server marked dead."""
        answered: set[str] = set()
        for node in nodes:
            key = self._probe_key(prefix, node)
            try:
                failed = self.store.delete_many([key])
            except BackendError:
                failed = [key]
            if failed:
                self.trust.fail([node])
            else:
                answered.add(node)
        return answered

    def _probe_key(self, prefix: str, node: str) -> str:
        """Return a key under ``prefix`` that the store keeps on ``node`` (found once, then remembered)."""
        known = self._probes.get((prefix, node))
        if known is None:
            # rendezvous hashing spreads keys evenly: a few tries per server find one
            candidates = (f"{prefix}{n}" for n in range(100_000))
            known = next(key for key in candidates if self.store.node(key) == node)
            self._probes[prefix, node] = known
        return known

    @property
    def pending(self) -> frozenset[str]:
        """Keys whose invalidation has not reached the store yet."""
        with self._pending_lock:
            return frozenset(self._pending)

    def close(self) -> None:
        """Stop resending (this cache's context is being replaced), after one last try."""
        with self._pending_lock:
            self._closed = True
            pending = list(self._pending)
        undelivered = self.deliver(pending) if pending else []
        if undelivered:
            log.warning("gave up %d cache invalidations when this context closed; the entries expire "
                        "with their TTL", len(undelivered))

    def _schedule_resend(self) -> None:
        with self._pending_lock:
            if self._resending or not self._pending or self._closed:
                return
            self._resending = True
        timer = threading.Timer(RESEND_INTERVAL, self._resend)
        timer.daemon = True
        timer.start()

    def _resend(self) -> None:
        with self._pending_lock:
            sent = dict(self._pending)
        failed = set(self.deliver(list(sent)))
        with self._pending_lock:
            for key, generation in sent.items():
                # a key invalidated again (and failed again) while this resend ran stays pending
                if key not in failed and self._pending.get(key) == generation:
                    del self._pending[key]
            self._resending = False
        if self.trust.outages:
            self.settle_outages()  # the last of them may just have been delivered
        self._schedule_resend()

    def _take_lease(self, key: str) -> object | None:
        """Return a cas token when this caller holds the fill lease for ``key``."""
        marker = self.signer.seal(key, _LEASE + os.urandom(8))
        if not self._call(key, self.store.add, key, marker, self.lease_ttl):
            return None
        raw, token = self._call(key, self.store.gets, key) or (None, None)
        return token if raw == marker else None

    def _call(self, key: str, method: Callable[..., R], *args: object) -> R | None:
        """Run one call about ``key``; a failure is a miss, and ``key``'s server is no longer trusted."""
        try:
            return method(*args)
        except BackendError as exc:
            self.stats.add(f"{self.prefix}errors")
            log.debug("volatile store failed, treated as a miss: %s", exc)
            self.trust.fail([self.store.node(key)])
            return None
