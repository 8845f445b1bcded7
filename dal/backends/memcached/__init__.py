"""memcached as a volatile store: bytes under safe keys, spread over servers by consistent hashing.

``memcached://host:port[,host:port...]?timeout=0.25&connect_timeout=0.25&dead_timeout=5``

A server that fails is marked dead and skipped by reads and fills for ``dead_timeout`` seconds
(its keys stay where they hash, so they fail at once), so a dead cache costs a fast
``BackendError`` that the layer above counts as a miss, not a timeout per call. Deletes, the
invalidations, are never skipped: they are sent to each server on its own, dead or not.

:mod:`~dal.backends.memcached.cache` is the store, :mod:`~dal.backends.memcached.client` the
pymemcache client it uses, :mod:`~dal.backends.memcached.text` the single-server hit path.
"""

from dal.backends.memcached.cache import DEFAULT_PORT, ITEM_LIMIT, MemcachedCache, expiry, wire_key

__all__ = ["DEFAULT_PORT", "ITEM_LIMIT", "MemcachedCache", "expiry", "wire_key"]
