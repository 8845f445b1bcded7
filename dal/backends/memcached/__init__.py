"""memcached as a volatile store: bytes under safe keys, spread over servers by consistent hashing.

``memcached://host:port[,host:port...]?timeout=0.25&connect_timeout=0.25&dead_timeout=5&replicas=1``

A server that fails is marked dead and skipped by reads and fills for ``dead_timeout`` seconds
(its keys stay where they hash, so they fail at once), so a dead cache costs a fast
``BackendError`` that the layer above counts as a miss, not a timeout per call. Deletes, the
invalidations, are never skipped: they are sent to each server on its own, dead or not.

``replicas`` (default 1: :class:`MemcachedCache`, one copy of each entry) above 1 opens a
:class:`~dal.backends.memcached.replicated.ReplicatedCache`: each entry on that many servers,
served only when a quorum of them agrees (docs/caching.md, "Quorum reads").

:mod:`~dal.backends.memcached.cache` is the store, :mod:`~dal.backends.memcached.client` the
pymemcache client it uses, :mod:`~dal.backends.memcached.text` the single-server hit path.
"""

from __future__ import annotations

from typing import ClassVar

from dal.backends.memcached.cache import (
    DEFAULT_PORT,
    ITEM_LIMIT,
    OPTIONS,
    MemcachedCache,
    expiry,
    url_settings,
)
from dal.backends.memcached.keys import logical_key, wire_key
from dal.backends.memcached.options import replicas_option
from dal.backends.memcached.replicated import ReplicatedCache
from dal.backends.url import StoreURL

__all__ = ["DEFAULT_PORT", "ITEM_LIMIT", "Memcached", "MemcachedCache", "ReplicatedCache", "expiry",
           "logical_key", "wire_key"]


class Memcached:
    """The ``memcached://`` entry of the backend registry: one copy of each entry, or ``replicas``."""

    scheme: ClassVar[str] = "memcached"
    shared: ClassVar[bool] = True

    @classmethod
    def from_url(cls, url: StoreURL) -> MemcachedCache | ReplicatedCache:
        """Open :class:`MemcachedCache` for ``replicas=1`` (the default), else :class:`ReplicatedCache`
        (a count that is not a whole number from 1 to the servers named, in the digits 0-9, is refused)."""
        if replicas_option(url) == 1:
            servers, seconds = url_settings(url, (*OPTIONS, "replicas"))
            return MemcachedCache(url, servers, **seconds)
        return ReplicatedCache.from_url(url)
