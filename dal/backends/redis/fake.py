"""``fakeredis://[name][/db]``: both Redis stores in-process, on fakeredis, for users' unit tests.

The same store classes as ``redis://``, given a fakeredis client instead of a connection: the same
Lua scripts run (fakeredis evaluates them with lupa), so a test exercises exactly the commits and
scans a real server would. Each name is one fake server per process (``fakeredis://`` is the name
``""``): every client opened with that name, in either role, sees the same data, and the data lives
as long as the process. Nothing is shared between processes, so both stores say ``shared = False``,
as ``memory://`` does: the demo runs its refresher in this process, ``dal stats`` says its numbers
are this process's, and a context checks its fake cache as a process-local one (emptied by
:meth:`FakeRedisCache.clear` after a commit it did not hear of). For tests of several processes,
start a real ``redis-server``.

Needs ``pip install 'dal[fakeredis]'`` (fakeredis with its Lua support): without Lua (fakeredis
installed without its ``[lua]`` extra) both stores refuse to open, with ConfigurationError.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import fakeredis
import redis

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


@functools.cache
def lua_supported() -> bool:
    """Whether this fakeredis runs Lua scripts, asked of fakeredis itself (once per process).

    Installed without its ``[lua]`` extra (lupa), fakeredis answers every script command "unknown
    command": each commit would then fail as one whose outcome is unknown, after the store's whole
    timeout, though nothing ran.
    """
    try:
        # typed Any: FakeRedis's methods are untyped for mypy (no-untyped-call)
        client: Any = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        client.script_load("return 1")
    except redis.ResponseError:
        return False
    return True


def open_fake(url: StoreURL, default_timeout: float, options: tuple[str, ...] = ("timeout",)) -> Opened:
    """Open a client of the fake server a ``fakeredis://`` URL names (``options``: those it may have)."""
    if not lua_supported():  # both stores run Lua: the commits, the cache's compare-and-set
        raise ConfigurationError("fakeredis:// needs fakeredis with Lua support (lupa): "
                                 "pip install 'dal[fakeredis]'")
    url.check_options(options)
    if len(url.hosts) > 1 or url.user is not None or url.password is not None or \
            any(port is not None for _, port in url.hosts):
        raise ConfigurationError(f"{url} is not a fakeredis URL (it takes no user, password or port); write "
                                 "fakeredis:// or fakeredis://name[/db] "
                                 "(the name picks one of several independent fake servers in this process)")
    name = url.hosts[0][0] if url.hosts else ""
    db = database(url)
    if db >= 16:  # refused at configure(), as redis:// refuses a database its server lacks
        raise ConfigurationError(f"fakeredis has no database {db} (it has 16): name one from 0 to 15 in "
                                 f"{url}")
    client = fakeredis.FakeRedis(server=fake_server(name), db=db)
    return Opened(client, f"fakeredis {name!r}/{db}", timeout_option(url, default_timeout), db)


class FakeRedisStore(RedisStore):
    """:class:`~dal.backends.redis.store.RedisStore` on an in-process fake server."""

    scheme: ClassVar[str] = "fakeredis"
    #: no other process reaches the data (a commit from elsewhere is impossible)
    shared: ClassVar[bool] = False
    #: its fake server lives as long as the process, so data outlives the client (conformance reads it)
    outlives_its_client: ClassVar[bool] = True
    #: what stands for the data this client reaches (its fake server), for dal.cache.ledger
    data_key: object

    @classmethod
    def from_url(cls, url: StoreURL) -> FakeRedisStore:
        store = cls(url, open_fake(url, STORE_TIMEOUT))
        # clients of one fake server (URLs that differ in options) reach the same data: a local cache
        # in front of one must hear of the others' commits (dal.cache.ledger counts them per data)
        store.data_key = fake_server(url.hosts[0][0] if url.hosts else "")
        return store


class FakeRedisCache(RedisCache):
    """:class:`~dal.backends.redis.cache.RedisCache` on an in-process fake server."""

    scheme: ClassVar[str] = "fakeredis"
    #: no other process sees the entries: commits elsewhere never invalidate them
    shared: ClassVar[bool] = False

    @classmethod
    def from_url(cls, url: StoreURL) -> FakeRedisCache:
        """Open the fake server a URL names; ``?hits=1`` counts hits as on ``redis://``."""
        cache = cls(url, open_fake(url, CACHE_TIMEOUT, ("timeout", "hits")))
        cache.count_hits = url.option("hits", on_off, False)
        return cache

    def clear(self, keep: Callable[[str], bool] | None = None, endings: tuple[str, ...] = ("",)) -> None:
        """Remove every entry of this database, or every entry but those whose key ends with one of
        ``endings`` and that ``keep`` accepts (``memory://``'s ``clear``, same arguments).

        What a context does to a process-local cache that may have missed a commit (another
        context's in this process, or another process's to a shared durable store): as
        ``memory://``'s. Only the cache's own keys (``dal:c:``) go; a durable store in the same
        fake database keeps its data.
        """
        self.clear_under("", lambda key: keep is not None and key.endswith(endings) and keep(key))
