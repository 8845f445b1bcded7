"""The read-through cache in front of the durable store, safe against stale sets.

A fill takes a *lease* before it reads the durable store: it ``add``s a lease marker under
the cache key, reads the durable value, and stores it with ``cas`` against the marker. An
invalidation (after a committed save or delete) deletes the key, which voids any lease
taken before it, so a fill that read an older revision can never land after the
invalidation. (The idea of "Scaling Memcache at Facebook", built on classic add/gets/cas.)

Entries are signed with HMAC-SHA256 bound to their key when an ``hmac_key`` is configured:
a tampered, forged or moved entry is rejected, counted, deleted and treated as a miss
(:mod:`dal.cache.signing`). Events are counted in :class:`dal.cache.counters.Stats`.
Every volatile-store failure counts as a miss: the cache never fails a read.

After a failure, a shared cache is not trusted (:class:`dal.cache.trust.Trust`): while this process could not
reach it, invalidations may have failed to reach it too, so reads bypass it until a sweep of
the commit journal (``dal/cache/journal.py``), started after the last failure, has delivered every
recorded invalidation again. Over a replicated store (``memcached://...?replicas=N``) trust stays
per server, told by the store which server failed; a key is read around only when enough of its
replicas are untrusted to agree on a stale entry (:class:`dal.cache.trust.Placement`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

from dal.backends.base import CacheFullError, VolatileStore
from dal.cache import owners
from dal.cache.counters import Stats
from dal.cache.outages import Outages
from dal.cache.signing import Signer
from dal.cache.trust import Placement, Trust
from dal.exceptions import BackendError

log = logging.getLogger("dal.cache")  # the logger the manual names; kept when the module moved
R = TypeVar("R")

_VALUE = b"V"
_LEASE = b"L"
#: seconds between two attempts to deliver invalidations the volatile store did not take
RESEND_INTERVAL = 0.25


class LeasedCache(Outages):
    """A read-through cache of opaque payloads over a volatile store."""

    def __init__(self, store: VolatileStore, signer: Signer, stats: Stats, *,
                 prefix: str = "", lease_ttl: float = 10.0, trust: Trust | None = None) -> None:
        self.store = store
        self.signer = signer
        self.stats = stats
        self.prefix = prefix
        #: the counters of ``fetch``, named once rather than formatted on every read
        self.hits_label, self.misses_label = f"{prefix}hits", f"{prefix}misses"
        self.lease_ttl = lease_ttl
        self.trust = trust if trust is not None else Trust(None)
        self._probes: dict[tuple[str, str], str] = {}
        #: invalidations the store did not take yet, each with the generation it was added at;
        #: read around, and resent until delivered
        self._pending: dict[str, int] = {}
        self._retries: set[Callable[[], bool]] = set()  # writes whose answer was lost: see retry
        self._generation = 0
        self._pending_lock = threading.Lock()
        self._resending = False
        self._closed = False
        self.trust.caches.append(self)
        self.placement = Placement(store)
        #: how every value entry starts when nothing is signed (``None`` when entries are signed):
        #: ``get`` takes such an entry by this one comparison, without calling the signer
        self._plain_value = None if signer.signing else signer.seal("", _VALUE)
        if self.placement.replicated:
            # a replica that does not answer is untrusted on its own (see Placement); the context
            # sets the store's signature check (``verify``), knowing which keys are signed
            store.on_failure = self.trust.fail  # type: ignore[attr-defined]
            store.filling = self.is_lease  # type: ignore[attr-defined]  # never repaired mid-fill
            store.counts = stats  # type: ignore[attr-defined]  # quorum counters, published with ours

    def is_lease(self, key: str, raw: bytes) -> bool:
        """Tell whether ``raw`` is an authentic lease marker of ``key`` (a fill under way)."""
        payload = self.signer.open(key, raw)
        return payload is not None and payload[:1] == _LEASE

    def usable(self, key: str) -> bool:
        """Tell whether ``key`` may be read from and filled into the cache now."""
        return not self._bypassed(key)

    def _bypassed(self, key: str) -> bool:
        """Tell whether reads of ``key`` must not use the cache now."""
        trust = self.trust
        if trust.lost:
            trust.first_read()
            if trust.lost and self.placement.unsafe(key, trust.lost):
                return True
        return bool(self._pending and key in self._pending)

    def get(self, key: str) -> bytes | None:
        """Return the cached payload under ``key``, or ``None`` on a miss, a lease or a bad entry."""
        if (self.trust.lost or self._pending) and self._bypassed(key):
            return None
        # the hit path of every cached read, so ``_call`` and ``_payload`` are written out here (two
        # calls and a bound-method argument less, measured ~5% of a cached dynamic read)
        try:
            raw = self.store.get(key)
        except BackendError as exc:
            self.failed(key, exc)
            return None
        if raw is None:
            return None
        if raw[:2] == self._plain_value:  # what ``open`` then the check of _VALUE accept, unsigned
            return raw[2:]
        payload = self.signer.open(key, raw)
        if payload is None:
            self._reject(key)
            return None
        return payload[1:] if payload[:1] == _VALUE else None  # else a lease: a fill under way

    def get_many(self, keys: list[str], *, count: bool = True) -> dict[str, bytes]:
        """Return the cached payloads among ``keys`` in one batch; count hits and misses."""
        found: dict[str, bytes] = {}
        asked = keys
        trust = self.trust
        if trust.lost:
            trust.first_read()
            if trust.lost:
                unsafe = self.placement.unsafe
                asked = [key for key in asked if not unsafe(key, trust.lost)]
        if self._pending:
            asked = [key for key in asked if key not in self._pending]
        for key, raw in self._get_many(asked).items():
            payload = self._payload(key, raw)
            if payload is not None:
                found[key] = payload
        if count:
            self.stats.add(self.hits_label, len(found))
            self.stats.add(self.misses_label, len(keys) - len(found))
        return found

    def _get_many(self, keys: list[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        try:
            return self.store.get_many(keys)
        except BackendError as exc:
            self.stats.add(f"{self.prefix}errors")
            log.debug("volatile store failed, treated as a miss: %s", exc)
        if self.placement.replicated:
            return {}  # the store told the trust which replicas failed
        nodes = self.store.nodes()
        if len(nodes) == 1:
            self.trust.fail(nodes)
            return {}
        groups: dict[str, list[str]] = {}  # ask each server on its own: what the others hold counts
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
            self._reject(key)
            return None
        return payload[1:] if payload[:1] == _VALUE else None  # else a lease: a fill under way

    def _reject(self, key: str) -> None:
        """Count, log and delete an entry that failed verification: it reads as a miss."""
        self.stats.add(f"{self.prefix}rejected")
        log.warning("rejected a cache entry that failed verification: %s", key)
        self._call(key, self.store.delete, key)

    def fetch(self, key: str, load: Callable[[], bytes | None], ttl: float) -> bytes | None:
        """Return the cached payload, or ``load()`` it and cache it unless invalidated meanwhile."""
        cached = self.get(key)
        if cached is not None:
            self.stats.add(self.hits_label)
            return cached
        self.stats.add(self.misses_label)
        return self.fill(key, load, ttl)

    def fill(self, key: str, load: Callable[[], bytes | None], ttl: float, *,
             lease_ttl: float | None = None, share: bool = False,
             refused: list[bytes] | None = None) -> bytes | None:
        """Return ``load()``, caching it under ``key`` unless ``key`` was invalidated meanwhile.

        ``lease_ttl``: how long the fill's lease lasts (the cache's ``lease_ttl`` when not given).
        A ``load()`` that outlasts its lease is not cached (the ``cas`` finds the lease gone), so
        a caller whose loads may run longer (a dynamic's loader) gives the longest it allows.
        ``share``: a lease found there (a locked dynamic's owner that outran its lock, or died) is
        shared, for what is left of it: both fills may store, the first to return does (the other's
        ``cas`` then fails). A fill whose ``load()`` raises gives its lease up, by a conditional delete,
        unless it shares (another fill may hold that lease): a shared lease is left to expire.
        ``refused``: where the sealed entry a fill under a lease did not store is appended (its
        lease lost, or the entry refused), for a caller that tells which (a locked dynamic's owner).
        """
        lease = None if self._bypassed(key) else self._take_lease(key, lease_ttl, share)
        try:
            payload = load()
        except BaseException:
            if lease is not None and not share:  # give the lease up at once, only while it is this fill's
                self._call(key, self.store.cas, key, b"", lease, -1)  # an expired item: a conditional delete
            raise
        if lease is not None and payload is not None:
            sealed = self.signer.seal(key, _VALUE + payload)
            stored = self._call(key, self.store.cas, key, sealed, lease, ttl)
            self.stats.add(f"{self.prefix}fills" if stored else f"{self.prefix}fill_conflicts")
            if not stored and refused is not None:
                refused.append(sealed)
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

        ``first``: new invalidations, not ones sent again: their failures count in the outage's summary.
        """
        by_node = self.deliver_each(keys, first=first)
        return list(dict.fromkeys(key for share in by_node.values() for key in share))

    def deliver_each(self, keys: list[str], *, first: bool = False) -> dict[str, list[str]]:
        """As :meth:`deliver`, but return per server the keys it did not confirm."""
        by_node = self._delete(keys)
        undelivered = list(dict.fromkeys(key for share in by_node.values() for key in share))
        if undelivered:
            self.stats.add(f"{self.prefix}invalidation_errors")
            self.outage(by_node, first)
        if self.trust.outages:
            self.settle_outages(failing=undelivered)
        return by_node

    def probe(self, prefix: str, nodes: Iterable[str]) -> set[str]:
        """Return which of ``nodes`` answer now: a delete of a key under ``prefix`` that each holds,
        sent even to a server marked dead."""
        answered: set[str] = set()
        for node in nodes:
            key = self._probe_key(prefix, node)
            if node in self._delete([key]):
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

    def _delete(self, keys: list[str]) -> dict[str, list[str]]:
        """Delete ``keys`` once; return, per server, the keys it did not confirm."""
        delete_each = getattr(self.store, "delete_each", None)
        try:
            if delete_each is not None:
                return dict(delete_each(keys))
            undelivered = self.store.delete_many(keys)
        except BackendError:  # a store may still fail as a whole
            undelivered = list(keys)
        by_node: dict[str, list[str]] = {}
        for key in undelivered:
            for node in self.placement.holders(key):
                by_node.setdefault(node, []).append(key)
        return by_node

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

    def retry(self, attempt: Callable[[], bool]) -> None:
        """Call ``attempt`` with each resend until it returns True; it must not raise BackendError."""
        with self._pending_lock:
            self._retries.add(attempt)
        self._schedule_resend()

    def _schedule_resend(self) -> None:
        with self._pending_lock:
            if self._resending or not (self._pending or self._retries) or self._closed:
                return
            self._resending = True
        timer = threading.Timer(RESEND_INTERVAL, self._resend)
        timer.daemon = True
        timer.start()

    def _resend(self) -> None:
        with self._pending_lock:
            sent, retries = dict(self._pending), list(self._retries)
        failed = set(self.deliver(list(sent))) if sent else set()
        done = [attempt for attempt in retries if attempt()]
        with self._pending_lock:
            self._retries.difference_update(done)
            for key, generation in sent.items():
                # a key invalidated again (and failed again) while this resend ran stays pending
                if key not in failed and self._pending.get(key) == generation:
                    del self._pending[key]
            self._resending = False
        if self.trust.outages:
            self.settle_outages()  # the last of them may just have been delivered
        self._schedule_resend()

    def _take_lease(self, key: str, ttl: float | None = None, share: bool = False) -> object | None:
        """Return the cas token of the lease of ``key`` this fill took (``ttl`` s, or lease_ttl) or,
        with ``share``, found there (another fill's, for what is left of it; the same token: the
        first of them to store changes it, so the other's ``cas`` fails)."""
        marker = self.signer.seal(key, owners.token(_LEASE))
        taken = self._call(key, self.store.add, key, marker, self.lease_ttl if ttl is None else ttl)
        if taken is None or not (taken or share):  # None: no answer
            return None
        raw, token = self._call(key, self.store.gets, key) or (None, None)
        return token if raw == marker or (not taken and raw is not None and self.is_lease(key, raw)) else None

    def _call(self, key: str, method: Callable[..., R], *args: object) -> R | None:
        """Run one call about ``key``; a failure is a miss, and ``key``'s server is no longer trusted."""
        try:
            return method(*args)
        except CacheFullError:  # a write refused for the server's memory limit: a miss, the server trusted
            self.stats.add(f"{self.prefix}full")
            return None
        except BackendError as exc:
            self.failed(key, exc)
            return None

    def failed(self, key: str, exc: BackendError) -> None:
        """Count a failed call about ``key``; ``key``'s server is no longer trusted."""
        self.stats.add(f"{self.prefix}errors")
        log.debug("volatile store failed, treated as a miss: %s", exc)
        if not self.placement.replicated:  # a replicated store names its failed replicas itself
            self.trust.fail([self.store.node(key)])
