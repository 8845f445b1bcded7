"""A locked dynamic's lock: its release by its holder alone, and the mark of a value too large to cache.

The lock (``<value key>/lock``) holds its owner's random token (:func:`dal.cache.owners.token`) and is
released by a conditional delete, only while it holds that token (:func:`release`). An owner whose
value the cache refused as too large for an item (memcached's 1 MiB, Redis's limits, a ``memory://``
store's ``max_size``) leaves the lock holding a mark instead (:func:`mark_too_large`), for
``lock_timeout``: the value will never be cached, so a caller waiting for it, or missing it while the
mark lives, computes its own at once rather than take the lock and compute one after another.
"""

from __future__ import annotations

from dal.cache import owners
from dal.cache.leases import LeasedCache
from dal.config import Context
from dal.exceptions import BackendError

#: what a lock's token starts with when its owner's value was too large to cache
TOO_LARGE = b"too-large/"


def hand_over(context: Context, key: str, token: bytes, refused: list[bytes], lock_timeout: float,
              label: str) -> None:
    """End a lock owner's turn: release its lock (``<key>/lock``, while it holds ``token``); or, when
    its fill's entry (``refused``) was not stored for its size, leave the mark of a value too large to
    cache in it for ``lock_timeout`` (counted ``<label>too_large``)."""
    cache, lock_key = context.dynamics, f"{key}/lock"
    if refused and too_large(cache, key, refused[0]) and mark_too_large(cache, lock_key, token, lock_timeout):
        context.stats.add(label + "too_large")
    else:
        release(context, lock_key, token)


def too_large(cache: LeasedCache, key: str, refused: bytes) -> bool:
    """Tell whether the store refused ``refused`` (a fill's sealed entry, which it did not store under
    ``key``) for its size, rather than for an invalidation or an expired lease.

    Either way nothing is under ``key``; so an entry of the same size is offered, for a second, under a
    key of its own: taken (and deleted at once), the value fits, and the fill lost its lease; refused,
    and nothing under that key either, the value is too large. Run only after a fill did not store.
    """
    store, probe = cache.store, f"{key}/fits"
    try:
        if store.gets(key)[0] is not None:
            return False  # another caller's value or lease: not a refusal of this one
        if store.add(probe, refused, 1):
            store.delete(probe)
            return False
        return store.gets(probe)[0] is None  # else another owner's probe is under way
    except BackendError:
        return False


def mark_too_large(cache: LeasedCache, lock_key: str, token: bytes, ttl: float) -> bool:
    """Replace this owner's lock (while it holds ``token``) by a mark that its value is too large to
    cache, for ``ttl`` seconds; return whether it did (else the lock is released as ever)."""
    store = cache.store
    try:
        held, version = store.gets(lock_key)
        if held != token:
            return False
        return bool(store.cas(lock_key, cache.signer.seal(lock_key, owners.token(TOO_LARGE)), version, ttl))
    except BackendError:
        return False


def marked_too_large(cache: LeasedCache, lock_key: str, held: bytes | None) -> bool:
    """Tell whether a lock's entry ``held`` is the mark of a value too large to cache."""
    if held is None:
        return False
    opened = cache.signer.open(lock_key, held)
    return opened is not None and opened.startswith(TOO_LARGE)


def release(context: Context, lock_key: str, token: bytes) -> None:
    """Delete the lock only if this caller still holds it (it may have expired and moved on); when
    the store does not answer, once it does (:func:`release_later`)."""
    cache = context.dynamics
    if _released(cache, lock_key, token) is None:
        release_later(cache, lock_key, token)


def _released(cache: LeasedCache, lock_key: str, token: bytes) -> bool | None:
    """Delete the lock if it holds ``token``; return whether it held it, ``None`` with no answer (the
    server is then no longer trusted, as after any failed call: its catch-up also revives it for us)."""
    store = cache.store
    try:
        held, version = store.gets(lock_key)
        if held != token:
            return False
        store.cas(lock_key, b"", version, -1)  # an already-expired item: a conditional delete
    except BackendError as exc:
        cache.failed(lock_key, exc)
        return None
    return True


def release_later(cache: LeasedCache, lock_key: str, token: bytes) -> None:
    """Release the lock holding ``token`` once the store answers, with the cache's resends.

    The lock's ``add`` or its release got no answer (a timeout, a paused server): the add may still
    be applied (a paused server applies what waits in its sockets when it resumes), and a lock whose
    caller moved on would block every reader of that value for ``lock_timeout``. It is released only
    while it holds ``token`` (another caller's lock stays), and looked at until the store found it
    without ``token`` at two resends in a row: an add sent on a connection since dropped may land
    just after the store answers on a new one. A process that exits first leaves it to its TTL; a
    forked child opens a cache of its own, so it never releases its parent's locks.
    """
    misses = [0]

    def attempt() -> bool:
        released = _released(cache, lock_key, token)
        if released is None:
            misses[0] = 0
            return False
        misses[0] = 2 if released else misses[0] + 1
        return misses[0] >= 2

    cache.retry(attempt)
