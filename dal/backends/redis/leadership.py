"""Leadership on Redis: a key per role holding its owner, with an expiry Redis keeps.

Acquiring sets the role's key to the owner with ``PX`` only while nobody else holds it; renewing
extends the expiry only while the key still holds that lease; releasing deletes it only then. The key
holds the owner stamped with the acquisition's token (:func:`~dal.backends.leadership.stamped`, kept
while its owner asks again before it expires), so a lease that expired, its owner having acquired
again since, neither renews nor releases the newer one. Each is
one Lua script, so the compare and the write are one step on the server. Expiry is decided by the
server's clock alone, so clients whose clocks disagree still agree on who leads, and a leader that
dies stops renewing and loses the key when Redis expires it.

The keys live under ``{dal}:lead:``, outside the data keys (``{dal}:d:``), so no scan, dump or
check of a namespace ever sees them.
"""

from __future__ import annotations

import math

from dal.backends.base import Leadership
from dal.backends.leadership import acquired, lease_ttl, new_token, stamped, unstamped
from dal.backends.redis.connection import LEADERSHIP, MAX_PX, Opened, RedisClient
from dal.backends.redis.scripts import ACQUIRE, RELEASE, RENEW
from dal.backends.url import StoreURL


def milliseconds(ttl: float) -> int:
    """Return a lease's TTL in whole milliseconds, rounded up (Redis's PX unit; never 0), at most
    :data:`~dal.backends.redis.connection.MAX_PX`: Redis refuses a longer one, which would outlive
    every holder anyway."""
    return min(MAX_PX, max(1, math.ceil(ttl * 1000)))


class RedisLeadership(RedisClient):
    """The leadership methods of :class:`~dal.backends.redis.store.RedisStore`."""

    def __init__(self, url: StoreURL, opened: Opened) -> None:
        super().__init__(url, opened)
        self._acquire = opened.client.register_script(ACQUIRE)
        self._renew = opened.client.register_script(RENEW)
        self._release = opened.client.register_script(RELEASE)

    def acquire_leadership(self, role: str, owner: str, ttl: float) -> Leadership:
        """Take ``role`` when nobody holds it or ``owner`` does already (then renewed)."""
        ttl = lease_ttl(role, owner, ttl)
        taken, held = self._script(f"acquire leadership of {role!r}", self._acquire, 1, LEADERSHIP + role,
                                   owner + "\0", stamped(owner, new_token()), milliseconds(ttl))
        holder, token = unstamped(bytes(held).decode(errors="replace"))
        if not taken:
            return Leadership(role, owner, ttl, acquired=False, holder=holder)
        return Leadership(role, owner, ttl, acquired=True, holder=owner, handle=token)

    def renew_leadership(self, lease: Leadership) -> bool:
        """Extend the lease by its TTL from now; ``False`` once the key expired or another holds it."""
        if not acquired(lease):
            return False
        renewed = self._script(f"renew leadership of {lease.role!r}", self._renew, 1, LEADERSHIP + lease.role,
                               stamped(lease.owner, lease.handle), milliseconds(lease.ttl))
        return bool(renewed)

    def release_leadership(self, lease: Leadership) -> None:
        """Delete the role's key if it still holds this lease (its owner, with its token)."""
        if acquired(lease):
            self._script(f"release leadership of {lease.role!r}", self._release, 1, LEADERSHIP + lease.role,
                         stamped(lease.owner, lease.handle))
