"""Removing cache entries: delete (an invalidation), prune to a size in LRU order, clean stalled locks.

Deleting is safe at any moment because it is exactly what an invalidation does (``dal/cache/leases.py``):
a fill in progress holds a lease marker under the key, and deleting the key voids the lease, so
the fill's ``cas`` fails and the value it read is not cached. Version tokens are deleted with a
hybrid's entries, which invalidates every cached query result that depends on that hybrid
(its own, and other hybrids' dotted paths through it); a reader then recreates fresh random
tokens, never an old one. Nothing here writes a value: a stale value cannot come from it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from dal.backends.base import HIT_SUFFIX
from dal.cache import owners
from dal.config import Context, current
from dal.exceptions import BackendError, DalError
from dal.model.registry import hybrids
from dal.objects.dynamics import fill_lease
from dal.objects.dynamics_locks import marked_too_large
from dal.structures import is_guid
from dal.tools.cache.listing import Entry, age, check_dynamic, entries, registered

#: the kinds ``delete`` and ``prune`` remove (locks go only through ``clean``; statistics stay)
REMOVABLE = ("object", "dynamic", "query", "version")
#: the kinds that may hold a lock or a fill lease (``clean``)
HELD = ("lock", "object", "dynamic", "query")
#: seconds ``clean`` lists again until an entry it read is listed (memcached, see :func:`_listed_again`)
RELIST_WAIT = 3.0


@dataclass(frozen=True, slots=True)
class Pruned:
    """What :func:`prune` removed, and the namespace's cached bytes afterwards."""

    entries: int
    bytes: int
    remaining: int
    #: entries under hashed keys (see :class:`~dal.tools.cache.listing.Entry`), left: which entry
    #: each is cannot be read back, so they are never removed
    hashed: int = 0


@dataclass(frozen=True, slots=True)
class Deleted:
    """What :func:`delete_report` deleted, and how many entries under hashed keys it had to leave."""

    entries: int
    #: entries under hashed keys that may be among those asked for (every one with ``everything``),
    #: left: which entry each is, a lock or a value, cannot be read back; they expire with their TTL
    hashed: int = 0


def _select(found: list[Entry], hybrid: str | None, guid: str | None, dynamic: str | None) -> list[Entry]:
    chosen: list[Entry] = []
    for entry in found:
        if entry.kind not in REMOVABLE or entry.hashed:
            continue
        if hybrid is not None and entry.hybrid != hybrid:
            continue
        if dynamic is not None and (entry.kind != "dynamic" or entry.dynamic != dynamic):
            continue
        if guid is not None and entry.guid != guid:
            continue
        chosen.append(entry)
    return chosen


def delete(context: Context, *, hybrid: str | None = None, guid: str | None = None,
           dynamic: str | None = None, everything: bool = False) -> int:
    """Delete cache entries; return how many were deleted.

    ``everything``: every object, dynamic, query and version entry of the namespace. Otherwise
    ``hybrid`` (a registered hybrid's logical or class name; an unknown one raises ``DalError``)
    is required: all its entries and version tokens, or with ``guid`` that object's document and
    dynamics, or with ``dynamic`` that dynamic's values (of ``guid`` only, if given). Locks are
    left to :func:`clean`, and so are entries under hashed keys (:func:`delete_report` counts
    them). A deletion the store did not confirm raises ``DalError``.
    """
    return delete_report(context, hybrid=hybrid, guid=guid, dynamic=dynamic, everything=everything).entries


def delete_report(context: Context, *, hybrid: str | None = None, guid: str | None = None,
                  dynamic: str | None = None, everything: bool = False) -> Deleted:
    """As :func:`delete`, also counting the entries under hashed keys it left (``dal cache rm``)."""
    if everything == (hybrid is not None) or (hybrid is None and (guid or dynamic)):
        raise DalError("say what to delete: a hybrid (with a guid and/or a dynamic), or everything")
    name = None if hybrid is None else _checked(hybrid, guid, dynamic)
    found = entries(context)
    # a hybrid alone takes its version tokens along (every result depending on it goes); a guid or
    # a dynamic selects no version token (a token has neither)
    deleted = _invalidate(context, _select(found, name, guid, dynamic))
    return Deleted(deleted, sum(entry.hashed for entry in found))


def _checked(hybrid: str, guid: str | None, dynamic: str | None) -> str:
    """Return the logical name of ``hybrid``; a guid that is none, or a dynamic the hybrid does not
    declare, raises ``DalError`` (a typo would otherwise delete nothing, and say so as a success)."""
    meta = registered(hybrid)._meta
    if guid is not None and not is_guid(guid):
        raise DalError(f"{guid!r} is not a guid (a UUID such as 0e5c1f6a-9b1d-4f53-8a1b-2c3d4e5f6a7b)")
    if dynamic is not None:
        check_dynamic(meta, dynamic, f" (without a dynamic, every entry of {meta.name} is deleted, those of "
                                     "dynamics it no longer declares too)")
    return meta.name


def _invalidate(context: Context, chosen: list[Entry]) -> int:
    if not chosen:
        return 0
    keys = [entry.key for entry in chosen]
    if context.volatile.shared:
        keys += [key + HIT_SUFFIX for key in keys]  # a deleted entry's count starts again
    undelivered = set(context.objects.invalidate(*keys))
    if undelivered:
        raise DalError(f"the cache did not confirm {len(undelivered)} deletions; they are resent while this "
                       "process runs, and the entries expire with their TTL")
    return len(chosen)


def prune(context: Context, max_size: int) -> Pruned:
    """Delete least recently accessed entries until the namespace's cached bytes are at most ``max_size``.

    Locks, statistics and entries under hashed keys are never removed (nor counted as
    removable); entries whose last access the store does not know go first. Returns the entries
    and bytes removed, and the hashed entries left.
    """
    # NaN compares false both ways; an int too large for a float is still a size
    if not _non_negative(max_size):
        raise DalError(f"max_size must be a number of bytes, 0 or more, not {max_size!r}")
    found = entries(context, sort="last_access")
    total = sum(entry.size for entry in found)
    chosen: list[Entry] = []
    for entry in found:
        if total <= max_size:
            break
        if entry.kind in REMOVABLE and not entry.hashed:
            chosen.append(entry)
            total -= entry.size
    removed = _invalidate(context, chosen)
    return Pruned(removed, sum(entry.size for entry in chosen), total, sum(entry.hashed for entry in found))


def _lock_ttl(entry: Entry) -> float:
    """Return the TTL the lock under ``entry`` was taken with (its spec's ``lock_timeout``; 10 s unknown)."""
    try:
        meta = hybrids.get(entry.hybrid or "")._meta
    except LookupError:
        return 10.0
    if entry.dynamic is not None:
        spec = meta.dynamics.get(entry.dynamic)
        return spec.lock_timeout if spec is not None else 10.0
    return meta.mirror.lock_timeout if meta.mirror is not None else 10.0


def _lease_ttl(context: Context, entry: Entry) -> float:
    """Return the TTL the fill lease under ``entry`` was taken with: a dynamic's lasts its
    ``lock_timeout`` and a margin (:func:`~dal.objects.dynamics.fill_lease`); others, the cache's."""
    if entry.kind == "dynamic" and entry.dynamic is not None:
        try:
            spec = hybrids.get(entry.hybrid or "")._meta.dynamics.get(entry.dynamic)
        except LookupError:
            spec = None  # unknown here: its age is then underestimated, so it is kept, not removed early
        if spec is not None:
            return fill_lease(context.dynamics, spec)
    return context.objects.lease_ttl


def clean(context: Context, stall_time: float = 60.0) -> list[str]:
    """Remove locks and fill leases taken more than ``stall_time`` seconds ago whose owner is gone;
    return their keys.

    A lock or lease names the process that took it (:mod:`dal.cache.owners`): one of a process of
    this host that still runs is kept, however old. One of another host (whose processes cannot
    be looked at from here), or of an older dal that named no owner, is taken to be gone once
    older than ``stall_time``: give the longest a computation may run. Each candidate is read
    (``gets``), then the namespace is listed again, and the entry is removed only when that
    second listing still finds it stalled, by a compare-and-set on the token of the read (to an
    expired item): a lock or lease taken again at any moment since the first listing stays (before
    the read, the second listing finds it young; after it, the compare-and-set fails). Removing a
    lease voids its fill (never caches a stale value); removing a lock lets the next caller compute.
    """
    if not _non_negative(stall_time):
        raise DalError(f"stall_time must be a number of seconds, 0 or more, not {stall_time!r}")
    read: dict[str, object] = {}
    for entry in _stalled(context, entries(context, kind=HELD), stall_time):
        token = _read_stalled(context, entry)
        if token is not None:
            read[entry.key] = token
    if not read:
        return []
    # their ages again, listed after the reads: the entry read is the one listed now, or the cas fails
    return [entry.key for entry in _stalled(context, _listed_again(context, read), stall_time)
            if _conditional_delete(context, entry.key, read[entry.key])]


def _stalled(context: Context, found: list[Entry], stall_time: float) -> list[Entry]:
    """Return the entries of ``found`` taken more than ``stall_time`` seconds ago (as locks or leases)."""
    now = time.time()
    chosen: list[Entry] = []
    for entry in found:
        ttl = _lock_ttl(entry) if entry.kind == "lock" else _lease_ttl(context, entry)
        stalled = age(entry, ttl, now)
        if stalled is not None and stalled > stall_time:
            chosen.append(entry)
    return chosen


def _listed_again(context: Context, read: dict[str, object]) -> list[Entry]:
    """List the entries under the keys of ``read`` (each with the token its read returned) again.
    A memcached before 1.6.9, walked by its LRU lists (dal/backends/memcached/dumps.py), leaves out an
    item a fetch (the read) moves between them until it has moved: list again, for
    :data:`RELIST_WAIT` seconds at most, while one missing is still there as read (one deleted or
    rewritten since is not waited for: it is left, as the cas would leave it)."""
    deadline = time.monotonic() + RELIST_WAIT
    wanted, looked = set(read), set[str]()
    while True:
        found = [entry for entry in entries(context, kind=HELD) if entry.key in wanted]
        if len(found) == len(wanted) or time.monotonic() >= deadline:
            return found
        # looked at once each: a fetch moves the item again, which would keep it out of the crawl
        for key in wanted - {entry.key for entry in found} - looked:
            looked.add(key)
            try:
                raw, token = context.volatile.gets(key)
            except BackendError:
                continue
            if raw is None or token != read[key]:
                wanted.discard(key)
        time.sleep(0.1)


def _read_stalled(context: Context, entry: Entry) -> object | None:
    """Read ``entry``: return its compare-and-set token if it is a lock or lease whose owner may be
    gone, else ``None``."""
    try:
        raw, token = context.volatile.gets(entry.key)
    except BackendError:
        return None
    if raw is None or token is None:
        return None
    if entry.kind != "lock" and not context.objects.is_lease(entry.key, raw):
        return None  # a value written since its lease: not stalled
    payload = context.objects.signer.open(entry.key, raw)
    if payload is not None and owners.gone(payload) is False:
        return None  # its owner runs on this host: still computing
    return token


def _conditional_delete(context: Context, key: str, token: object) -> bool:
    """Delete ``key`` if unchanged since the read that gave ``token`` (a cas to an already-expired item)."""
    try:
        return bool(context.volatile.cas(key, b"", token, -1))
    except BackendError:
        return False


def _declaring(obj: object, dynamic: str) -> str:
    """Return the logical name of ``obj``'s hybrid, once it is a hybrid's object declaring ``dynamic``
    (else a typo would read as "not cached", and a wrong type as a TypeError from inside)."""
    meta = getattr(type(obj), "_meta", None)
    if meta is None or not isinstance(getattr(obj, "guid", None), str):
        raise DalError(f"takes an object of a hybrid, not {obj!r}")
    check_dynamic(meta, dynamic)
    return str(meta.name)


def is_being_cached(obj: object, dynamic: str) -> bool:
    """Tell whether a computation of ``obj``'s ``dynamic`` holds its lock, or a fill its lease, now (see
    :func:`is_cached` for what it refuses)."""
    context = current()
    key = context.keys.cached_dynamic(_declaring(obj, dynamic), obj.guid, dynamic)  # type: ignore[attr-defined]
    store = context.volatile
    try:
        lock = store.gets(f"{key}/lock")[0]  # the mark of a value too large to cache is no computation
        if lock is not None and not marked_too_large(context.dynamics, f"{key}/lock", lock):
            return True
        raw = store.gets(key)[0]
    except BackendError:
        return False
    return raw is not None and context.dynamics.is_lease(key, raw)


def is_cached(obj: object, dynamic: str) -> bool:
    """Tell whether ``obj``'s ``dynamic`` has a cached value now (a lease is not one); an object that is
    not a hybrid's, or a dynamic its hybrid does not declare, raises ``DalError``."""
    context = current()
    key = context.keys.cached_dynamic(_declaring(obj, dynamic), obj.guid, dynamic)  # type: ignore[attr-defined]
    try:
        raw = context.volatile.gets(key)[0]
    except BackendError:
        return False
    return raw is not None and not context.dynamics.is_lease(key, raw) and \
        context.dynamics.signer.open(key, raw) is not None


def _non_negative(value: float) -> bool:
    """Tell whether ``value`` is a number 0 or more (an int or a float, not a bool or a string): NaN
    compares false both ways, and an int too large for a float is still one."""
    if type(value) not in (int, float):
        return False
    return value >= 0 and (isinstance(value, int) or math.isfinite(value))
