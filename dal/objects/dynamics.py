"""Reading dynamic properties: TTL caching, single-flight locking, and per-dynamic statistics.

A dynamic's value is cached in the volatile store for its ``timeout``, shared by every
process on that store, and filled under the same lease as cached documents, so an
invalidation racing a computation never lets the older value be cached after it.

With ``locked=True``, a miss takes a lock in the volatile store first (``add`` of a random owner
token, expiring after ``lock_timeout`` so a crashed owner cannot block anyone for longer). The owner
computes and stores the value, then releases the lock only if it still holds it (compare-and-set to
an expired item: a conditional delete). A lock whose ``add`` or release got no answer is released so
once the store answers (``_release_later``). Everyone else polls for the value, and computes for
itself when the lock vanished without a value (the owner failed) or after waiting ``lock_timeout``,
and at once when it holds the mark of a value too large to cache (:mod:`dal.objects.dynamics_locks`).
When the volatile store is unreachable, or not trusted (see ``dal/cache/leases.py``), nothing would
be cached, so there is no lock to take either: every caller computes, without waiting.

A fill's lease must outlast the computation, or the value is never cached (its ``cas`` finds
the lease expired) and, locked, each waiter in turn takes the lock and computes again. So a
dynamic's lease lasts its ``lock_timeout`` (which the application sets to its loader's longest
run, locked or not) and a margin, never less than the cache's own lease (:func:`fill_lease`).
A lock owner that finds a lease there (its fill's owner died, or outran its lock) shares what is left
of it rather than wait it out: whichever of the two returns first within it stores.

A value is cached as ``[<value>,<revision>,"<digest>"]`` (:mod:`dal.objects.dynamics_tags`): the
revision of the object it was computed from, and a digest of the type its class declares.
Only an object that is a stored revision fills the cache: a new one, one with unsaved changes,
one whose last save has an unknown outcome, or one older than a revision this process has seen
computes its value for itself and caches nothing (its fields are not what everyone else reads;
:mod:`dal.objects.dynamics_owner`). One loaded under another store or namespace than the current
``configure()``'s neither reads nor fills this one's cache: it computes its own value too.
A reader whose object is newer than the cached value's revision reads it as a miss: it removes
that value (only if it is still the one read) and computes again. So a value computed by an
object loaded before another process's save (which no lease can catch: the save came first)
is never served to an object loaded after it. A reader whose class declares another type (a
deploy changed it, and the other version's processes still run) reads it as a miss too, as it does
a value that does not validate as its type and an entry of an earlier dal (``[<value>,<revision>]``,
``[<value>]``): it replaces the value, never serves it as the wrong type nor raises. The tag is inside
the payload, so it is signed with it (:mod:`dal.cache.signing`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from dal.backends.base import CacheFullError
from dal.cache import owners
from dal.cache.leases import LeasedCache
from dal.config import Context, current
from dal.exceptions import BackendError
from dal.objects.decoding import UNTAGGED, loads_value
from dal.objects.dynamics_locks import hand_over, marked_too_large
from dal.objects.dynamics_locks import release_later as _release_later
from dal.objects.dynamics_owner import Owner, stored_revision
from dal.objects.dynamics_tags import dumps, loads_typed, tail
from dal.objects.origin import loaded_elsewhere
from dal.structures import Dynamic

#: first and longest pause between two looks at a value another caller is computing
POLL_FIRST = 0.002
POLL_LONGEST = 0.02
#: seconds a dynamic's fill lease outlasts its ``lock_timeout``: the lease is taken after the
#: lock, and the value stored after the loader returns, each a round trip later
LEASE_MARGIN = 1.0

#: what ``read`` is given when it reads the cache itself (``read_many`` gives each object its payload)
_GET: Any = object()


def fill_lease(cache: LeasedCache, spec: Dynamic) -> float:
    """Return how long a fill of ``spec`` holds its lease: ``lock_timeout`` (set to its loader's
    longest run) and a margin, at least the cache's own lease TTL."""
    return max(cache.lease_ttl, spec.lock_timeout + LEASE_MARGIN)


def read(obj: Owner, spec: Dynamic, fetched: Any = _GET) -> Any:
    """Return the value of dynamic ``spec`` of ``obj``: cached, or computed once.

    This is ``DataObject._dynamic`` itself (a method of the object), not a function it calls: a
    cached read is mostly calls, and that call less (with ``current()`` telling that no fork
    happened without a call either) took a read from 3.8 us to 3.6 us (issue 16). ``fetched``: the
    payload :func:`read_many` fetched for ``obj`` in its multi-get (``None``: nothing cached), read
    here exactly as one this call fetched itself.
    """
    context = current()
    if spec.timeout == 0:
        label = f"dynamic.{obj._meta.name}.{spec.name}."
        return _value(spec, _compute(context, obj, spec, label, obj._revision))
    if fetched is _GET:  # else read_many checked it, before its multi-get
        context.check_local_cache()  # another process's save invalidates our dynamics too
    # _known written out: one call less on every cached read
    names: dict[Dynamic, _Names] | None = obj.__dict__.get("_dynamic_names")  # see _names
    known = None if names is None else names.get(spec)
    revision = obj._revision
    if known is None or known[0] is not context.keys or known[1] != obj.guid or known[5] != revision:
        known = _names(context, obj, spec)
        if known is None:  # loaded under another configure(): this store's cache is not its own
            return _elsewhere(context, obj, spec)
    _, _, key, label, hits, _, tail = known
    payload = context.dynamics.get(key) if fetched is _GET else fetched
    if payload is None:
        return _miss(context, obj, spec, key, label)
    # the common case, a value computed from this object's revision for this class's type, is told by
    # the payload's end, with no tag to parse (parsing the revision measured 0.23 us more per read than
    # the value alone); any other payload goes by the revision and type it names
    value = loads_value(payload, tail)
    validator = spec.validator
    if value is UNTAGGED:
        tagged = loads_typed(payload)
        if tagged is None or tagged[2] != validator.digest:
            # cached for another declared type (another version of this class), or by an earlier dal
            return _unserved(context, obj, spec, key, label, payload, "mistyped" if tagged else "outdated")
        if tagged[1] < revision:  # computed from an older revision than this object's
            return _unserved(context, obj, spec, key, label, payload, "outdated")
        value = tagged[0]
    if not validator.native:  # native: from_json would return the value itself
        try:
            value = validator.from_json(value)
        except ValueError:  # pydantic's ValidationError is one: not a value of this type after all
            return _unserved(context, obj, spec, key, label, payload, "mistyped")
    # this thread's own counts (see Stats.local): two events for one lookup of the thread's dict
    counts = context.stats.local()
    counts["dynamic_hits"] = counts.get("dynamic_hits", 0) + 1
    counts[hits] = counts.get(hits, 0) + 1
    return value


def read_many(objs: Sequence[Owner], spec: Dynamic) -> list[Any]:
    """Return the value of dynamic ``spec`` of each of ``objs``: their cached values fetched in one
    multi-get, each served by :func:`read` as a read of its own serves it (revision, type and signature
    checked, hit counted), and only the misses computed, by ``read`` as well (leases, locks).

    A payload refused (older than its object, of another type) is computed again as ``read`` would,
    there. Each miss then reads the cache again before it computes, as ``read`` alone does: an earlier
    computation of the batch (a dynamic reading another object's, of the same batch) or another
    process may have cached it since the multi-get, and a locked dynamic is computed once.
    """
    if spec.timeout == 0 or len(objs) < 2:
        return [read(obj, spec) for obj in objs]  # nothing cached, or nothing to batch
    context = current()
    context.check_local_cache()  # once for the batch: what ``read`` does before its own get
    # None: an object loaded under another configure(), which reads nothing cached here (``_elsewhere``)
    keys = [None if known is None else known[2] for known in (_known(context, obj, spec) for obj in objs)]
    wanted = dict.fromkeys(key for key in keys if key is not None)
    found = context.dynamics.get_many(list(wanted), count=False)
    values: list[Any] = [_GET] * len(objs)
    for index, obj in enumerate(objs):
        key = keys[index]
        payload = None if key is None else found.get(key)
        if payload is not None:
            values[index] = read(obj, spec, payload)
    for index, obj in enumerate(objs):
        if values[index] is _GET:
            values[index] = read(obj, spec)
    return values


def _unserved(context: Context, obj: Owner, spec: Dynamic, key: str, label: str, payload: bytes,
              why: str) -> Any:
    """Read a cached payload not to be served to ``obj`` (``why``) as a miss: remove it, if it is still
    the one read, and compute again (replacing it, when ``obj`` may fill)."""
    context.stats.add(label + why)
    _drop(context.dynamics, key, payload)
    return _miss(context, obj, spec, key, label)


#: what ``_names`` keeps per dynamic of an object: the context's keys and the guid they were built
#: for, then the cache key, the statistics label and the label of its hits, the object's revision
#: and how a value computed from that revision for the dynamic's type ends (``,<revision>,"<digest>"]``)
_Names = tuple[object, str, str, str, str, int, str]


class _Memo(dict[Dynamic, _Names]):
    """Where ``_names`` keeps them: a copy by pickle or deepcopy starts empty (they are one context's)."""
    def __reduce__(self) -> tuple[type[_Memo], tuple[()]]:
        return _Memo, ()


def _known(context: Context, obj: Owner, spec: Dynamic) -> _Names | None:
    """Return the names :func:`_names` kept in ``obj`` for ``spec``, built again when they are not for
    ``context``'s keys, ``obj``'s guid or its revision; None for an object loaded elsewhere (_names)."""
    names: dict[Dynamic, _Names] | None = obj.__dict__.get("_dynamic_names")
    known = None if names is None else names.get(spec)
    if known is None or known[0] is not context.keys or known[1] != obj.guid or known[5] != obj._revision:
        return _names(context, obj, spec)
    return known


def _names(context: Context, obj: Owner, spec: Dynamic) -> _Names | None:
    """Build, and keep in the object, the cache key and the statistics labels of ``spec`` of ``obj``;
    None, keeping nothing, for an object loaded under another store or namespace (:func:`_elsewhere`).

    Building them costs more per cached read than finding them again (measured: the key, the
    label and its ``hits`` are three string builds), so ``read`` finds them in the object; they
    depend only on the context's keys (a new ``configure()`` makes new ones), the hybrid, the
    guid and the name, and are built again when the keys or the guid are not those they were
    built for, or the object is at another revision (saved or refreshed since).
    """
    if not context.caches_objects or loaded_elsewhere(obj, context) is not None:
        return None
    names: dict[Dynamic, _Names] = obj.__dict__.setdefault("_dynamic_names", _Memo())
    keys, guid, hybrid, revision = context.keys, obj.guid, obj._meta.name, obj._revision
    label = f"dynamic.{hybrid}.{spec.name}."
    known = names[spec] = (keys, guid, keys.cached_dynamic(hybrid, guid, spec.name), label, label + "hits",
                           revision, tail(revision, spec.validator.digest))
    return known


def _elsewhere(context: Context, obj: Owner, spec: Dynamic) -> Any:
    """Compute the value of an object loaded under another store or namespace than ``context``'s,
    neither reading nor filling this store's cache (counted ``unshared``): its fields are the other
    store's revision, which this store's readers must never be served, nor it theirs. Its own fields
    are readable, so its dynamics are too, as its saves, deletes and reverse lists are not. Any object's
    too, uncounted as with ``timeout=0``, where ``context.caches_objects`` is False (see config.py)."""
    label = f"dynamic.{obj._meta.name}.{spec.name}."
    for event in ("dynamic_misses", label + "misses", label + "unshared") if context.caches_objects else ():
        context.stats.add(event)
    return _value(spec, _compute(context, obj, spec, label, obj._revision))


def _miss(context: Context, obj: Owner, spec: Dynamic, key: str, label: str) -> Any:
    stats, cache = context.stats, context.dynamics
    stats.add("dynamic_misses")
    stats.add(label + "misses")
    revision = obj._revision

    def compute() -> bytes:
        return _compute(context, obj, spec, label, revision)

    if not stored_revision(context, obj):
        # its value is its own: neither cached nor waited for (no lock to take either)
        stats.add(label + "unshared")
        return _value(spec, compute())
    if spec.locked and cache.usable(key):
        payload = _single_flight(context, key, compute, spec, label, revision)
    else:
        if spec.locked:  # no usable lock server: compute without waiting, as when it is down
            stats.add(label + "lock_errors")
        payload = cache.fill(key, compute, spec.timeout, lease_ttl=fill_lease(cache, spec))
    assert payload is not None  # compute() returns bytes or raises
    try:
        return _value(spec, payload)
    except ValueError:
        # a waiter's value, stored by another process under this type's digest, that does not validate
        # here (a validator changed that the type's description does not show): not served
        stats.add(label + "mistyped")
        _drop(cache, key, payload)
        return _value(spec, compute())


def _compute(context: Context, obj: Owner, spec: Dynamic, label: str, revision: int) -> bytes:
    """Return ``[<value>,<revision>,"<digest>"]``: the value computed, tagged with the revision it was
    computed from and its type's digest."""
    started = time.perf_counter()
    try:
        value = spec.compute(obj)
    finally:
        context.stats.add(label + "computations")
        context.stats.add(label + "compute_seconds", time.perf_counter() - started)
    validator = spec.validator
    return dumps(validator.to_json(value), revision, validator.digest)


def _value(spec: Dynamic, payload: bytes) -> Any:
    """Return the value of a payload this process computed or found fresh enough to serve; a
    ValueError (pydantic's ValidationError is one) when it does not validate as ``spec``'s type."""
    tagged = loads_typed(payload)
    assert tagged is not None  # written by _compute, or checked by _fresh_for before it was served
    return spec.validator.from_json(tagged[0])


def _fresh_for(payload: bytes, revision: int, spec: Dynamic) -> bool:
    """Tell whether a cached payload may be served to an object at ``revision`` of ``spec``'s type."""
    tagged = loads_typed(payload)
    return tagged is not None and tagged[1] >= revision and tagged[2] == spec.validator.digest


def _drop(cache: LeasedCache, key: str, payload: bytes) -> None:
    """Remove the value ``payload`` cached under ``key``, only if it is still there: an entry put
    since (a fresher value, a fill's lease) stays. A failure leaves it to its TTL (readers newer
    than it keep reading it as a miss)."""
    store = cache.store
    try:
        raw, version = store.gets(key)
        if raw is None or cache.is_lease(key, raw):
            return
        opened = cache.signer.open(key, raw)
        if opened is not None and opened[1:] == payload:
            store.cas(key, b"", version, -1)  # an already-expired item: a conditional delete
    except BackendError:
        pass


def _single_flight(context: Context, key: str, compute: Any, spec: Dynamic, label: str,
                   revision: int) -> bytes | None:
    cache, stats = context.dynamics, context.stats
    store, signer = cache.store, cache.signer
    lock_key = f"{key}/lock"
    deadline = time.monotonic() + spec.lock_timeout
    waited = False

    def fill(refused: list[bytes] | None = None) -> bytes | None:  # a lease found is shared: its fill's
        return cache.fill(key, compute, spec.timeout, lease_ttl=fill_lease(cache, spec),  # owner died or
                          share=True, refused=refused)  # outran its lock

    while True:
        token = signer.seal(lock_key, owners.token())
        try:
            owner = store.add(lock_key, token, spec.lock_timeout)
        except BackendError as exc:
            stats.add(label + "lock_errors")  # no lock server: compute, do not wait
            if not isinstance(exc, CacheFullError):  # refused for memory: certainly not applied
                _release_later(cache, lock_key, token)  # yet the add may be applied (see _release_later)
            return fill()
        if owner:
            refused: list[bytes] = []
            try:
                # the last owner may have stored one since this caller missed: served, not computed again
                return _fresh_or_dropped(cache, key, revision, spec) or fill(refused)
            finally:  # released; or, its value too large to cache, marked so that waiters compute at once
                hand_over(context, key, token, refused, spec.lock_timeout, label)
        if time.monotonic() > deadline:  # the lock keeps coming and going, or cannot be taken at all
            stats.add(label + "lock_timeouts")
            return fill()
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
                return fill()
            if cached is not None and (payload := _fresh_or_dropped(cache, key, revision, spec)):
                return payload
            if marked_too_large(cache, lock_key, locked):
                return fill()  # nothing will be cached: computed at once, not after each other waiter
            if locked is None:
                break  # the owner is done or gone without a value: try to become the owner
            if time.monotonic() > deadline:
                stats.add(label + "lock_timeouts")
                return fill()


def _fresh_or_dropped(cache: LeasedCache, key: str, revision: int, spec: Dynamic) -> bytes | None:
    """Return the value cached under ``key`` (verified like any cache read; None while a lease sits
    there) if it is ``revision``'s; remove one that is not (older than this object, of another type,
    an earlier dal's), so that a fill can take its place."""
    payload = cache.get(key)
    if payload is not None and not _fresh_for(payload, revision, spec):
        _drop(cache, key, payload)
        return None
    return payload
