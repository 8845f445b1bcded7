"""Leadership on etcd: a key held by an etcd lease, as etcd's own election recipe does it.

Acquiring grants a lease (``LeaseGrant``) and creates the role's key attached to it in a
transaction that holds only while the key is absent (create revision 0). The leader keeps the
lease alive (``LeaseKeepAlive``); when it dies, nobody renews, etcd expires the lease after its
TTL and deletes the key with it, and a standby's next attempt creates the key anew. Releasing
revokes the lease, which deletes the key at once. The leader asking again keeps its lease (its id
is :attr:`Leadership.handle`), or, asking for another TTL, moves the key to a fresh lease of that
TTL in a transaction that holds only while the key is still on the old one, then revokes the old.
Expiry is decided by etcd's clock alone, so clients on machines whose clocks disagree still agree
on who leads.

The keys live under ``"\\0leadership/"``, outside every namespace (namespaces are names, never
starting with a NUL), so no scan, dump or check of a namespace ever sees them.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
from pyetcd import etcdrpc

from dal.backends.base import Leadership
from dal.backends.etcd.grants import LEADERSHIP_PREFIX
from dal.backends.etcd.transport import MAX_LEASE_TTL, EtcdTransport, etcd_error, utf8
from dal.backends.leadership import acquired, lease_ttl
from dal.exceptions import BackendError

#: the prefix of every role's key
PREFIX = LEADERSHIP_PREFIX
_CREATE, _LEASE, _EQUAL = etcdrpc.Compare.CREATE, etcdrpc.Compare.LEASE, etcdrpc.Compare.EQUAL


def role_key(role: str) -> bytes:
    """Return the etcd key a role's leader holds."""
    return utf8(f"{PREFIX}{role}")


class EtcdLeadership(EtcdTransport):
    """The leadership methods of :class:`~dal.backends.etcd.store.EtcdStore`."""

    def acquire_leadership(self, role: str, owner: str, ttl: float) -> Leadership:
        """Create the role's key on a fresh lease, unless another owner's key is there."""
        # etcd refuses a lease longer than its maximum: one that long never expires in practice
        ttl = min(lease_ttl(role, owner, ttl), float(MAX_LEASE_TTL))
        key, value = role_key(role), utf8(owner)
        found = self._call("Range", etcdrpc.RangeRequest(key=key)).kvs
        if found:  # a standby's usual answer, in one round trip
            holder = found[0].value.decode(errors="replace")
            if holder != owner:
                return Leadership(role, owner, ttl, acquired=False, holder=holder)
            kept = self._keep(role, owner, ttl, found[0].lease)
            if kept is not None:
                return kept
        # etcd counts leases in whole seconds and raises a short one to its minimum (1.5 election
        # timeouts, rounded up: 2 s by default), then deletes the key at its next look for expired
        # leases (every 0.5 s): a standby waits that long, and cannot take the key any sooner. Rounded
        # up, not down: a lease shorter than ``ttl`` would lapse under a caller renewing every ``ttl``
        granted = self._grant(ttl)
        put = etcdrpc.PutRequest(key=key, value=value, lease=granted.ID)
        request = etcdrpc.TxnRequest(
            compare=[etcdrpc.Compare(key=key, target=_CREATE, result=_EQUAL, create_revision=0)],
            success=[etcdrpc.RequestOp(request_put=put)],
            failure=[etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key))])
        # not sent again after no answer: a resend that finds the first one's key would read as
        # another holder's, and revoking our lease would then delete the key we hold
        response = self._call("Txn", request, resend=False)
        lease = Leadership(role, owner, float(granted.TTL), acquired=True, holder=owner, handle=granted.ID)
        if response.succeeded:
            return lease
        self._revoke(granted.ID)  # not needed: it would expire, but an unused lease is clutter
        kvs = response.responses[0].response_range.kvs
        holder = kvs[0].value.decode(errors="replace") if kvs else None
        return Leadership(role, owner, ttl, acquired=False, holder=holder)

    def _keep(self, role: str, owner: str, ttl: float, lease_id: int) -> Leadership | None:
        """Renew ``owner``'s lease ``lease_id`` that holds the role's key, moved to a fresh lease when
        its TTL is not the one ``ttl`` is granted; ``None`` when it no longer holds the key."""
        kept = self._keep_alive(lease_id)
        key = role_key(role)
        if not kept or not self._on_lease(key, lease_id):
            return None
        if kept == _lease_seconds(ttl):
            return Leadership(role, owner, float(kept), acquired=True, holder=owner, handle=lease_id)
        # asked for another TTL (a restart with another timeout): a caller renewing every third of
        # the TTL it asked for would lose a shorter lease it still holds, unknowingly
        granted = self._grant(ttl)
        if kept == granted.TTL:  # etcd raised the TTL asked for to its minimum: the lease has it
            self._revoke(granted.ID)
            return Leadership(role, owner, float(kept), acquired=True, holder=owner, handle=lease_id)
        put = etcdrpc.PutRequest(key=key, value=utf8(owner), lease=granted.ID)
        request = etcdrpc.TxnRequest(
            compare=[etcdrpc.Compare(key=key, target=_LEASE, result=_EQUAL, lease=lease_id)],
            success=[etcdrpc.RequestOp(request_put=put)])
        # not sent again after no answer: a resend would find the key moved, and we would revoke
        # the fresh lease it is on
        if not self._call("Txn", request, resend=False).succeeded:  # it expired or was released
            self._revoke(granted.ID)
            return None
        self._revoke(lease_id)  # no key on it any more: revoking deletes nothing
        return Leadership(role, owner, float(granted.TTL), acquired=True, holder=owner, handle=granted.ID)

    def _grant(self, ttl: float) -> Any:
        """Grant a lease of ``ttl`` seconds, rounded up to whole seconds (etcd raises it to its minimum)."""
        return self._call("LeaseGrant", etcdrpc.LeaseGrantRequest(TTL=_lease_seconds(ttl)),
                          service="lease")

    def _keep_alive(self, lease_id: int) -> int:
        """Renew the lease; return its TTL, 0 when etcd no longer has it."""
        answer: Any = self._call("LeaseKeepAlive", etcdrpc.LeaseKeepAliveRequest(ID=lease_id),
                                 service="lease")
        return 0 if answer is None else max(0, int(answer.TTL))  # TTL 0 (or less): a lease it lost

    def _on_lease(self, key: bytes, lease_id: int) -> bool:
        """Whether ``key`` is held by the lease ``lease_id``."""
        kvs = self._call("Range", etcdrpc.RangeRequest(key=key)).kvs
        return bool(kvs) and kvs[0].lease == lease_id

    def renew_leadership(self, lease: Leadership) -> bool:
        """Keep the lease alive; ``False`` when it expired or the key is no longer on it."""
        if not acquired(lease) or not lease.handle:
            return False
        return bool(self._keep_alive(lease.handle)) and self._on_lease(role_key(lease.role), lease.handle)

    def release_leadership(self, lease: Leadership) -> None:
        """Revoke the lease, which deletes the role's key with it."""
        if acquired(lease) and lease.handle:
            self._revoke(lease.handle)

    def _revoke(self, lease_id: int) -> None:
        try:
            self._call("LeaseRevoke", etcdrpc.LeaseRevokeRequest(ID=lease_id), service="lease")
        except BackendError as exc:
            cause = exc.__cause__
            if isinstance(cause, grpc.RpcError) and etcd_error(cause)[0] == grpc.StatusCode.NOT_FOUND:
                return  # expired already: released all the same
            raise


def _lease_seconds(ttl: float) -> int:
    """Return the TTL etcd is asked for: whole seconds, rounded up (a lease shorter than ``ttl`` would
    lapse under a caller renewing every ``ttl``), at least 1 (etcd raises it to its own minimum)."""
    return max(1, math.ceil(ttl))
