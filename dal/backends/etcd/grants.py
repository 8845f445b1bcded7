"""What an etcd role needs for dal, as the permission-denied error says it.

dal reads and writes keys under its namespace's prefix (``NAMESPACE/``) only, and the keys of
leadership under :data:`LEADERSHIP_PREFIX`; it reads the cluster's id (the store's identity) from
a member list, which etcd serves any client. The leadership prefix starts with a NUL byte, which
no shell argument (so no ``etcdctl`` command line) can carry: etcd's JSON gateway takes keys in
base64, and grants it.
"""

from __future__ import annotations

import base64

#: the prefix of every leadership key, outside every namespace (a namespace never starts with a NUL)
LEADERSHIP_PREFIX = "\0leadership/"


def _base64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def leadership_grant(role: str = "ROLE", host: str = "HOST:2379", token: str = "TOKEN") -> str:
    """Return the ``curl`` command granting ``role`` readwrite on the leadership prefix through etcd's
    JSON gateway (``/v3/auth/role/grant``, as root: ``token`` is root's, from ``/v3/auth/authenticate``)."""
    start = LEADERSHIP_PREFIX.encode()
    end = start[:-1] + bytes([start[-1] + 1])
    body = (f'{{"name": "{role}", "perm": {{"permType": "READWRITE", "key": "{_base64(start)}", '
            f'"range_end": "{_base64(end)}"}}}}')
    return f"curl http://{host}/v3/auth/role/grant -H 'Authorization: {token}' -d '{body}'"


def permission_denied(where: str, who: str) -> str:
    """Say what etcd's "permission denied" means for dal: the grants its user's role needs."""
    return (f"etcd at {where} denied {who} this request (permission denied); its role needs readwrite "
            "on the namespace's key prefix (etcdctl role grant-permission ROLE --prefix readwrite "
            "NAMESPACE/) and, to hold leadership (dal leader), on the prefix '\\0leadership/', which "
            "starts with a NUL byte no shell argument can carry: grant that one as root through etcd's "
            f"JSON gateway ({leadership_grant()}); see docs/backends.md, etcd permissions")
