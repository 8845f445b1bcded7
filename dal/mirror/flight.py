"""Single flight of refreshes: one lock per object in the volatile store, as locked dynamics take.

The lock is an ``add`` of a random owner token (signed like every cache entry), expiring after
the mirror's ``lock_timeout`` so a crashed owner blocks nobody for longer. The owner refreshes,
then swaps its token for a short-lived *done* marker (compare-and-set, only if it still holds
the lock): a process that waited sees it and reads the refreshed document from the store instead
of calling the remote again. A process arriving later takes a done marker over as a free lock.
Without a usable volatile store (down, or not trusted after an outage) there is no lock to take:
every caller refreshes, without waiting. With a process-local store (``memory://``, the default),
the flight is single among the threads of one process only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dal.cache import owners
from dal.config import Context
from dal.exceptions import BackendError

_DONE = b"done"
#: seconds a done marker stays for the waiters to see it
DONE_TTL = 5.0
#: first and longest pause between two looks at a lock another process holds
POLL_FIRST = 0.002
POLL_LONGEST = 0.05


@dataclass(frozen=True)
class Lock:
    """A refresh lock this caller holds; ``token`` is ``None`` when no lock could be taken at all."""

    key: str
    token: bytes | None


def lock_key(context: Context, hybrid: str, guid: str) -> str:
    """Return the volatile-store key of the refresh lock of one object (beside its cached document)."""
    return f"{context.keys.cached_doc(hybrid, guid)}/refresh"


def acquire(context: Context, key: str, ttl: float) -> Lock | None:
    """Take the lock under ``key``; ``None`` when another caller holds it (then :func:`wait` for it)."""
    cache = context.dynamics
    if not cache.usable(key):
        return Lock(key, None)
    store, signer = cache.store, cache.signer
    token = signer.seal(key, owners.token(b"L"))
    try:
        if store.add(key, token, ttl):
            return Lock(key, token)
        held, version = store.gets(key)
        if held is None:  # released between the two calls: try once more
            return Lock(key, token) if store.add(key, token, ttl) else None
        if signer.open(key, held) == _DONE and store.cas(key, token, version, ttl):
            return Lock(key, token)  # the last refresh is over: this one may start
    except BackendError:
        context.stats.add("mirror_lock_errors")
        return Lock(key, None)
    return None


def release(context: Context, lock: Lock) -> None:
    """Leave a done marker in place of the lock, only if this caller still holds it."""
    if lock.token is None:
        return
    cache = context.dynamics
    try:
        held, version = cache.store.gets(lock.key)
        if held == lock.token:
            cache.store.cas(lock.key, cache.signer.seal(lock.key, _DONE), version, DONE_TTL)
    except BackendError:
        pass  # the lock expires after its ttl


def wait(context: Context, key: str, ttl: float, deadline: float) -> Lock | None:
    """Wait for the holder of the lock ``key`` to finish; ``None`` when it did (its result is stored).

    Otherwise return the lock the caller refreshes under: taken (``token`` set) when the lock
    vanished without a done marker (its holder died, or it expired, or no caller got a majority
    of a replicated store's copies: rivals' ``add`` calls each took some replicas and gave them
    back), so one caller of those waiting refreshes and the others wait again; or none (``token``
    ``None``) when the volatile store failed or at ``deadline`` (``time.monotonic()``).
    """
    cache = context.dynamics
    pause = POLL_FIRST
    while time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, POLL_LONGEST)
        try:
            held = cache.store.gets(key)[0]  # a majority's view: a quorum read could repair the lock away
        except BackendError:
            return Lock(key, None)
        if held is None:
            taken = acquire(context, key, ttl)
            if taken is not None:
                return taken
            pause = POLL_FIRST  # another caller took it just now: wait for that one
        elif cache.signer.open(key, held) == _DONE:
            return None
    return Lock(key, None)
