"""Redis as a store for both roles: a durable store and a cache, on one server (or a primary).

``redis://[user:password@]host:port[/db][?timeout=S]``, and ``rediss://...`` for TLS with the options
``ca_cert``, ``cert_key`` and ``cert_cert`` (paths). ``timeout`` is the seconds one request may take
(5 for the durable store, 0.5 for the cache). ``fakeredis://[name][/db]`` serves both roles in-process
(:mod:`~dal.backends.redis.fake`, for tests).

Durability is Redis's: with ``appendonly yes`` and ``appendfsync always`` an acknowledged commit
survives a crash of the server; with ``everysec`` the last second may be lost; without AOF, what the
last snapshot holds. It is one server (with replicas, asynchronously copied), not a consensus cluster.

:mod:`~dal.backends.redis.store` is the durable store (a Lua script per commit),
:mod:`~dal.backends.redis.leadership` its leases, :mod:`~dal.backends.redis.cache` the cache,
:mod:`~dal.backends.redis.scripts` the Lua, :mod:`~dal.backends.redis.connection` the URL, the client
and the Redis keys dal uses, :mod:`~dal.backends.redis.limits` the server dal needs (standalone) and
the longest argument it takes. Needs ``pip install 'dal[redis]'``.
"""

from __future__ import annotations

from typing import ClassVar

from dal.backends.redis.cache import RedisCache
from dal.backends.redis.connection import DEFAULT_PORT

# PAGE is not re-exported: it is read in dal.backends.redis.store, which is where to change it
from dal.backends.redis.store import RedisStore

__all__ = ["DEFAULT_PORT", "RedisCache", "RedisStore", "SecureRedisCache", "SecureRedisStore"]


class SecureRedisStore(RedisStore):
    """:class:`RedisStore` over TLS (``rediss://``)."""

    scheme: ClassVar[str] = "rediss"


class SecureRedisCache(RedisCache):
    """:class:`RedisCache` over TLS (``rediss://``)."""

    scheme: ClassVar[str] = "rediss"
