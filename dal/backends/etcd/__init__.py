"""etcd v3 as a persistent store: one etcd transaction per commit, mod revisions as entry revisions.

``etcd://[user:password@]host:port[,host:port...]?timeout=5&ca_cert=PATH&cert_key=PATH&cert_cert=PATH``

:mod:`~dal.backends.etcd.store` builds the reads and commits, :mod:`~dal.backends.etcd.transport`
sends them (endpoints, failover, deadline, login, errors).
"""

from dal.backends.etcd.store import (
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    TXN_OPS,
    EtcdStore,
    prefix_range,
    write_requests,
)

# KEYS_PAGE is not re-exported: it is read in dal.backends.etcd.store, which is where to change it
__all__ = ["DEFAULT_PORT", "DEFAULT_TIMEOUT", "TXN_OPS", "EtcdStore", "prefix_range", "write_requests"]
