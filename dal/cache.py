"""The read-through cache in front of the durable store, safe against stale sets.

A fill takes a *lease* before it reads the durable store: it ``add``s a lease marker under
the cache key, reads the durable value, and stores it with ``cas`` against the marker. An
invalidation (after a committed save or delete) deletes the key, which voids any lease
taken before it, so a fill that read an older revision can never land after the
invalidation. (The idea of "Scaling Memcache at Facebook", built on classic add/gets/cas.)

Entries are signed with HMAC-SHA256 bound to their key when an ``hmac_key`` is configured:
a tampered, forged or moved entry is rejected, counted, deleted and treated as a miss.
Every volatile-store failure counts as a miss: the cache never fails a read.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from dal.backends.base import VolatileStore
from dal.exceptions import BackendError

log = logging.getLogger(__name__)
R = TypeVar("R")

_VALUE = b"V"
_LEASE = b"L"
_SIGNED = b"S"
_PLAIN = b"U"
_DIGEST_SIZE = 32
#: seconds between two attempts to deliver invalidations the volatile store did not take
RESEND_INTERVAL = 1.0


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


class Stats:
    """Event counters (hits, misses, rejected entries, seconds spent, ...), exact under threads.

    Each thread counts in its own dict, so the hot path takes no lock; a snapshot sums them.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[dict[str, float]] = []
        self._lock = threading.Lock()

    def add(self, event: str, amount: float = 1) -> None:
        try:
            counts: dict[str, float] = self._local.counts
        except AttributeError:
            counts = self._local.counts = {}
            with self._lock:
                self._all.append(counts)
        counts[event] = counts.get(event, 0) + amount

    def snapshot(self) -> dict[str, float]:
        total: dict[str, float] = {}
        with self._lock:
            for counts in self._all:
                for event, amount in dict(counts).items():  # dict() copies in one step
                    total[event] = total.get(event, 0) + amount
        return total

    def __getitem__(self, event: str) -> float:
        return self.snapshot().get(event, 0)


class LeasedCache:
    """A read-through cache of opaque payloads over a volatile store."""

    def __init__(self, store: VolatileStore, signer: Signer, stats: Stats, *,
                 prefix: str = "", lease_ttl: float = 10.0) -> None:
        self.store = store
        self.signer = signer
        self.stats = stats
        self.prefix = prefix
        self.lease_ttl = lease_ttl
        #: invalidations the store did not take yet; read around, and resent until delivered
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._resending = False

    def get(self, key: str) -> bytes | None:
        """Return the cached payload under ``key``, or ``None`` on a miss, a lease or a bad entry."""
        if self._pending and key in self._pending:
            return None
        raw = self._call(self.store.get, key)
        return None if raw is None else self._payload(key, raw)

    def get_many(self, keys: list[str], *, count: bool = True) -> dict[str, bytes]:
        """Return the cached payloads among ``keys`` in one batch; count hits and misses."""
        found: dict[str, bytes] = {}
        if self._pending:
            keys = [key for key in keys if key not in self._pending]
        for key, raw in (self._call(self.store.get_many, keys) or {}).items():
            payload = self._payload(key, raw)
            if payload is not None:
                found[key] = payload
        if count:
            self.stats.add(f"{self.prefix}hits", len(found))
            self.stats.add(f"{self.prefix}misses", len(keys) - len(found))
        return found

    def put(self, key: str, payload: bytes, ttl: float) -> bool:
        """Store ``payload`` unconditionally, for entries whose validity readers check themselves."""
        if self._pending and key in self._pending:
            return False
        return bool(self._call(self.store.set, key, self.signer.seal(key, _VALUE + payload), ttl))

    def _payload(self, key: str, raw: bytes) -> bytes | None:
        payload = self.signer.open(key, raw)
        if payload is None:
            self.stats.add(f"{self.prefix}rejected")
            log.warning("rejected a cache entry that failed verification: %s", key)
            self._call(self.store.delete, key)
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
        lease = None if self._pending and key in self._pending else self._take_lease(key)
        try:
            payload = load()
        except BaseException:
            if lease is not None:  # give the fill up at once rather than block caching for lease_ttl
                self._call(self.store.delete, key)
            raise
        if lease is not None and payload is not None:
            sealed = self.signer.seal(key, _VALUE + payload)
            stored = self._call(self.store.cas, key, sealed, lease, ttl)
            self.stats.add(f"{self.prefix}fills" if stored else f"{self.prefix}fill_conflicts")
        return payload

    def invalidate(self, *keys: str) -> None:
        """Drop ``keys``; any fill that took its lease earlier will not store."""
        if not keys:
            return
        try:
            self.store.delete_many(list(keys))
        except BackendError as exc:
            # the old entries may still be on the server, where other processes read them: keep
            # resending until it takes them, and read around them here meanwhile
            self.stats.add(f"{self.prefix}invalidation_errors")
            log.warning("could not invalidate %d cache entries, will resend: %s", len(keys), exc)
            with self._pending_lock:
                self._pending.update(keys)
            self._schedule_resend()

    @property
    def pending(self) -> frozenset[str]:
        """Keys whose invalidation has not reached the store yet."""
        with self._pending_lock:
            return frozenset(self._pending)

    def _schedule_resend(self) -> None:
        with self._pending_lock:
            if self._resending or not self._pending:
                return
            self._resending = True
        timer = threading.Timer(RESEND_INTERVAL, self._resend)
        timer.daemon = True
        timer.start()

    def _resend(self) -> None:
        with self._pending_lock:
            keys = list(self._pending)
        try:
            self.store.delete_many(keys)
        except BackendError:
            self.stats.add(f"{self.prefix}invalidation_errors")
        else:
            with self._pending_lock:
                self._pending.difference_update(keys)
        finally:
            with self._pending_lock:
                self._resending = False
        self._schedule_resend()

    def _take_lease(self, key: str) -> object | None:
        """Return a cas token when this caller holds the fill lease for ``key``."""
        marker = self.signer.seal(key, _LEASE + os.urandom(8))
        if not self._call(self.store.add, key, marker, self.lease_ttl):
            return None
        raw, token = self._call(self.store.gets, key) or (None, None)
        return token if raw == marker else None

    def _call(self, method: Callable[..., R], *args: object) -> R | None:
        try:
            return method(*args)
        except BackendError as exc:
            self.stats.add(f"{self.prefix}errors")
            log.debug("volatile store failed, treated as a miss: %s", exc)
            return None
