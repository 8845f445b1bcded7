"""Leadership for a store whose data lives in this process alone (``memory://``).

A mixin of the store: the leases sit in a dict beside the data. Kept apart from
:mod:`dal.backends.base`, which says what leadership is, since only in-process stores need it.
"""

from __future__ import annotations

import threading
import time

from dal.backends.base import Leadership
from dal.backends.leadership import acquired, lease_ttl, new_token


class ProcessLocalLeadership:
    """Leadership for a store whose data lives in this process alone (every owner is here too).

    A mixin: the leases sit in a dict beside the data, their expiry on this process's
    monotonic clock, so a change of the wall clock neither ends nor extends one. Each acquisition
    draws a token (:attr:`Leadership.handle`), kept while its owner asks again before it expires;
    renewing and releasing match it, so a lease that expired leaves its owner's newer one alone.
    """

    #: role -> (owner, token, monotonic expiry); made on first use
    _leases: dict[str, tuple[str, int, float]] | None = None

    def acquire_leadership(self, role: str, owner: str, ttl: float) -> Leadership:
        ttl = lease_ttl(role, owner, ttl)
        now = time.monotonic()
        with _LOCAL_LEASES_LOCK:
            leases = self._local_leases()
            holder, token, expires = leases.get(role, (owner, 0, now))
            if expires <= now:  # nobody holds it: a fresh lease, which no earlier Leadership names
                token = new_token()
            elif holder != owner:
                return Leadership(role, owner, ttl, acquired=False, holder=holder)
            leases[role] = (owner, token, now + ttl)
        return Leadership(role, owner, ttl, acquired=True, holder=owner, handle=token)

    def renew_leadership(self, lease: Leadership) -> bool:
        if not acquired(lease):
            return False
        now = time.monotonic()
        with _LOCAL_LEASES_LOCK:
            leases = self._local_leases()
            holder, token, expires = leases.get(lease.role, ("", 0, now))
            if (holder, token) != (lease.owner, lease.handle) or expires <= now:
                return False
            leases[lease.role] = (lease.owner, token, now + lease.ttl)
            return True

    def release_leadership(self, lease: Leadership) -> None:
        if not acquired(lease):
            return
        with _LOCAL_LEASES_LOCK:
            leases = self._local_leases()
            if leases.get(lease.role, ("", 0, 0.0))[:2] == (lease.owner, lease.handle):
                del leases[lease.role]

    def _local_leases(self) -> dict[str, tuple[str, int, float]]:
        """Return role -> (owner, token, monotonic expiry), made on first use (the caller holds the lock)."""
        leases = self._leases
        if leases is None:
            leases = {}
            self._leases = leases
        return leases




_LOCAL_LEASES_LOCK = threading.Lock()
