"""``fakeredis://[name][/db]``: both Redis stores in-process, on fakeredis, for users' unit tests.

The same store classes as ``redis://``, given a fakeredis client instead of a connection: the same
Lua scripts run (fakeredis evaluates them with lupa), so a test exercises exactly the commits and
scans a real server would. Each name is one fake server per process (``fakeredis://`` is the name
``""``): every client opened with that name, in either role, sees the same data, and the data lives
as long as the process. Nothing is shared between processes: for tests of several processes, start
a real ``redis-server``.

Needs ``pip install 'dal[fakeredis]'`` (fakeredis with its Lua support).
"""

from __future__ import annotations

import threading
from typing import ClassVar

import fakeredis

from dal.backends.redis.cache import DEFAULT_TIMEOUT as CACHE_TIMEOUT
from dal.backends.redis.cache import RedisCache
from dal.backends.redis.connection import Opened, database
from dal.backends.redis.store import DEFAULT_TIMEOUT as STORE_TIMEOUT
from dal.backends.redis.store import RedisStore
from dal.backends.url import StoreURL, on_off, timeout_option
from dal.exceptions import ConfigurationError

_servers: dict[str, fakeredis.FakeServer] = {}
_lock = threading.Lock()


def fake_server(name: str) -> fakeredis.FakeServer:
    """Return this process's fake server called ``name``, created on first use."""
    with _lock:
        server = _servers.get(name)
        if server is None:
            server = _servers[name] = fakeredis.FakeServer()
        return server


def open_fake(url: StoreURL, default_timeout: float, options: tuple[str, ...] = ("timeout",)) -> Opened:
    """Open a client of the fake server a ``fakeredis://`` URL names (``options``: those it may have)."""
    url.check_options(options)
    if len(url.hosts) > 1 or url.user is not None or any(port is not None for _, port in url.hosts):
        raise ConfigurationError(f"{url} is not a fakeredis URL; write fakeredis:// or fakeredis://name[/db] "
                                 "(the name picks one of several independent fake servers in this process)")
    name = url.hosts[0][0] if url.hosts else ""
    db = database(url)
    client = fakeredis.FakeRedis(server=fake_server(name), db=db)
    return Opened(client, f"fakeredis {name!r}/{db}", timeout_option(url, default_timeout), db)


class FakeRedisStore(RedisStore):
    """:class:`~dal.backends.redis.store.RedisStore` on an in-process fake server."""

    scheme: ClassVar[str] = "fakeredis"

    @classmethod
    def from_url(cls, url: StoreURL) -> FakeRedisStore:
        return cls(url, open_fake(url, STORE_TIMEOUT))


class FakeRedisCache(RedisCache):
    """:class:`~dal.backends.redis.cache.RedisCache` on an in-process fake server."""

    scheme: ClassVar[str] = "fakeredis"

    @classmethod
    def from_url(cls, url: StoreURL) -> FakeRedisCache:
        """Open the fake server a URL names; ``?hits=1`` counts hits as on ``redis://``."""
        cache = cls(url, open_fake(url, CACHE_TIMEOUT, ("timeout", "hits")))
        cache.count_hits = url.option("hits", on_off, False)
        return cache
