"""Reading dynamic properties: TTL caching, single-flight locking, and per-dynamic statistics.

A dynamic's value is cached in the volatile store for its ``timeout``, shared by every
process on that store, and filled under the same lease as cached documents, so an
invalidation racing a computation never lets the older value be cached after it.

With ``locked=True``, a miss takes a lock in the volatile store first (``add`` of a
random owner token, expiring after ``lock_timeout`` so a crashed owner cannot block
anyone for longer). The owner computes and stores the value, then releases the lock
only if it still holds it (compare-and-set to an expired item: a conditional delete).
Everyone else polls for the value, and computes for itself when the lock vanished
without a value (the owner failed) or after waiting ``lock_timeout``. When the volatile
store is unreachable, or not trusted (see ``dal/cache/leases.py``), nothing would be cached, so
there is no lock to take either: every caller computes, without waiting.

A fill's lease must outlast the computation, or the value is never cached (its ``cas`` finds
the lease expired) and, locked, each waiter in turn takes the lock and computes again. So a
dynamic's lease lasts its ``lock_timeout`` (the longest its loader may run, locked or not) and
a margin, never less than the cache's own lease (:func:`fill_lease`).
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from dal.cache import owners
from dal.cache.leases import LeasedCache
from dal.config import Context, current
from dal.exceptions import BackendError
from dal.objects.decoding import loads_only_item
from dal.structures import Dynamic


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class Owner(Protocol):
    """What reading a dynamic needs of its object (a ``DataObject``): its hybrid's name and its guid."""

    @property
    def guid(self) -> str: ...

    @property
    def _meta(self) -> _Named: ...

#: first and longest pause between two looks at a value another caller is computing
POLL_FIRST = 0.002
POLL_LONGEST = 0.02
#: seconds a dynamic's fill lease outlasts its ``lock_timeout``: the lease is taken after the
#: lock, and the value stored after the loader returns, each a round trip later
LEASE_MARGIN = 1.0


def fill_lease(cache: LeasedCache, spec: Dynamic) -> float:
    """Return how long a fill of ``spec`` holds its lease: ``lock_timeout``, the longest its loader
    may run, and a margin, at least the cache's own lease TTL."""
    return max(cache.lease_ttl, spec.lock_timeout + LEASE_MARGIN)


def read(obj: Owner, spec: Dynamic) -> Any:
    """Return the value of dynamic ``spec`` of ``obj``: cached, or computed once.

    This is ``DataObject._dynamic`` itself (a method of the object), not a function it calls: a
    cached read is mostly calls, and that call less (with ``current()`` telling that no fork
    happened without a call either) took a read from 3.8 us to 3.6 us (issue 16).
    """
    context = current()
    if spec.timeout == 0:
        label = f"dynamic.{obj._meta.name}.{spec.name}."
        return spec.validator.from_json(_decode(_compute(context, obj, spec, label)))
    context.check_local_cache()  # another process's save invalidates our dynamics too
    names: dict[Dynamic, _Names] | None = obj.__dict__.get("_dynamic_names")  # see _names
    known = None if names is None else names.get(spec)
    if known is None or known[0] is not context.keys or known[1] != obj.guid:
        known = _names(context, obj, spec)
    _, _, key, label, hits = known
    payload = context.dynamics.get(key)
    if payload is None:
        return _miss(context, obj, spec, key, label)
    # this thread's own counts (see Stats.local): two events for one lookup of the thread's dict
    counts = context.stats.local()
    counts["dynamic_hits"] = counts.get("dynamic_hits", 0) + 1
    counts[hits] = counts.get(hits, 0) + 1
    value = loads_only_item(payload)
    validator = spec.validator
    return value if validator.native else validator.from_json(value)  # native: from_json returns it


#: what ``_names`` keeps per dynamic of an object: the context's keys and the guid they were built
#: for, then the cache key, the statistics label and the label of its hits
_Names = tuple[object, str, str, str, str]


def _names(context: Context, obj: Owner, spec: Dynamic) -> _Names:
    """Build, and keep in the object, the cache key and the statistics labels of ``spec`` of ``obj``.

    Building them costs more per cached read than finding them again (measured: the key, the
    label and its ``hits`` are three string builds), so ``read`` finds them in the object; they
    depend only on the context's keys (a new ``configure()`` makes new ones), the hybrid, the
    guid and the name, and are built again when the keys or the guid are not those they were
    built for.
    """
    names: dict[Dynamic, _Names] = obj.__dict__.setdefault("_dynamic_names", {})
    keys, guid, hybrid = context.keys, obj.guid, obj._meta.name
    label = f"dynamic.{hybrid}.{spec.name}."
    known = names[spec] = (keys, guid, keys.cached_dynamic(hybrid, guid, spec.name), label, label + "hits")
    return known


def _miss(context: Context, obj: Owner, spec: Dynamic, key: str, label: str) -> Any:
    stats, cache = context.stats, context.dynamics
    stats.add("dynamic_misses")
    stats.add(label + "misses")

    def compute() -> bytes:
        return _compute(context, obj, spec, label)

    if spec.locked and cache.usable(key):
        payload = _single_flight(context, key, compute, spec, label)
    else:
        if spec.locked:  # no usable lock server: compute without waiting, as when it is down
            stats.add(label + "lock_errors")
        payload = cache.fill(key, compute, spec.timeout, lease_ttl=fill_lease(cache, spec))
    assert payload is not None  # compute() returns bytes or raises
    return spec.validator.from_json(_decode(payload))


def _compute(context: Context, obj: Owner, spec: Dynamic, label: str) -> bytes:
    started = time.perf_counter()
    try:
        value = spec.compute(obj)
    finally:
        context.stats.add(label + "computations")
        context.stats.add(label + "compute_seconds", time.perf_counter() - started)
    return json.dumps([spec.validator.to_json(value)]).encode()


def _decode(payload: bytes) -> Any:
    return loads_only_item(payload)  # json.loads(payload)[0], faster (see dal/objects/decoding.py)


def _single_flight(context: Context, key: str, compute: Any, spec: Dynamic, label: str) -> bytes | None:
    cache, stats = context.dynamics, context.stats
    store, signer = cache.store, cache.signer
    lock_key = f"{key}/lock"
    lease = fill_lease(cache, spec)
    deadline = time.monotonic() + spec.lock_timeout
    waited = False
    while True:
        token = signer.seal(lock_key, owners.token())
        try:
            owner = store.add(lock_key, token, spec.lock_timeout)
        except BackendError:
            stats.add(label + "lock_errors")  # no lock server: compute, do not wait
            return cache.fill(key, compute, spec.timeout, lease_ttl=lease)
        if owner:
            try:
                result: bytes | None = cache.fill(key, compute, spec.timeout, lease_ttl=lease)
                return result
            finally:
                _release(context, lock_key, token)
        if not waited:
            waited = True
            stats.add(label + "lock_waits")
        pause = POLL_FIRST
        while True:
            time.sleep(pause)
            pause = min(pause * 2, POLL_LONGEST)
            try:
                # as the lock is taken: a majority's view (``gets``), never a read that repairs, which
                # on a replicated store would delete a lock or lease seen on some replicas only
                # while its owner's writes are under way. The lock first: its owner stores the
                # value before releasing it, so no lock then no value means no value was stored
                locked = store.gets(lock_key)[0]
                cached = store.gets(key)[0]
            except BackendError:
                stats.add(label + "lock_errors")
                return cache.fill(key, compute, spec.timeout, lease_ttl=lease)
            if cached is not None:
                payload = cache.get(key)  # verified like any cache read; None while a lease sits there
                if payload is not None:
                    return payload
            if locked is None:
                break  # the owner is done or gone without a value: try to become the owner
            if time.monotonic() > deadline:
                stats.add(label + "lock_timeouts")
                return cache.fill(key, compute, spec.timeout, lease_ttl=lease)


def _release(context: Context, lock_key: str, token: bytes) -> None:
    """Delete the lock only if this caller still holds it (it may have expired and moved on)."""
    store = context.dynamics.store
    try:
        held, version = store.gets(lock_key)
        if held == token:
            store.cas(lock_key, b"", version, -1)  # an already-expired item: a conditional delete
    except BackendError:
        pass  # it expires after lock_timeout
