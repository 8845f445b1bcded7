"""The backend registry: URL scheme -> backend class, imported on first use.

Store clients are cached per process under an HMAC of their full connection settings,
keyed by a secret drawn at import, so a changed setting (a new password, another host)
gets a new client and no password sits in a cache key or a log line.

A backend whose URL names a local file (SQLite) is cached under what the URL names now: its
class's ``located(url)`` gives the URL with the path made absolute (so a ``configure()`` after a
``chdir()`` opens the file in the new directory), and a cached client's ``still_current()`` tells
whether the file it holds is still the one at that path. One that is not (the file was deleted
or replaced) is dropped from the cache, never closed here: a context that still uses it keeps
it, and its connections close when the last one goes (SQLite neither checkpoints into a file
that moved nor deletes the -wal and -shm beside its path then, which are the new file's).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import importlib.util
import os
import threading
from collections.abc import Callable
from importlib import metadata
from typing import Literal, cast

from dal.backends.base import PersistentStore, VolatileStore
from dal.backends.url import StoreURL, parse_url
from dal.exceptions import ConfigurationError

Role = Literal["persistent", "volatile"]

#: scheme -> "module:Class" for each role
BACKENDS: dict[Role, dict[str, str]] = {
    "persistent": {
        "sqlite": "dal.backends.sqlite:SqliteStore",
        "memory": "dal.backends.memory:MemoryStore",
        "etcd": "dal.backends.etcd:EtcdStore",
        "redis": "dal.backends.redis:RedisStore",
        "rediss": "dal.backends.redis:SecureRedisStore",
        "fakeredis": "dal.backends.redis.fake:FakeRedisStore",
    },
    "volatile": {
        "memory": "dal.backends.memory:MemoryCache",
        "memcached": "dal.backends.memcached:Memcached",
        "redis": "dal.backends.redis:RedisCache",
        "rediss": "dal.backends.redis:SecureRedisCache",
        "fakeredis": "dal.backends.redis.fake:FakeRedisCache",
    },
}
#: scheme -> the pip extra that installs its client library, for schemes whose library is optional
EXTRAS: dict[str, str] = {"redis": "redis", "rediss": "redis", "fakeredis": "fakeredis"}
#: distribution -> the oldest version dal works with, for the optional client libraries: their pins in
#: pyproject.toml's extras (tests/test_user_testing.py checks they agree)
MINIMUM: dict[str, str] = {"redis": "8.1", "fakeredis": "2.20"}

_SECRET = os.urandom(32)
_clients: dict[str, PersistentStore | VolatileStore] = {}
_lock = threading.Lock()


def backend_class(role: Role, scheme: str) -> type[PersistentStore] | type[VolatileStore]:
    """Return the backend class serving ``scheme`` in ``role``; raise ConfigurationError otherwise."""
    target = BACKENDS[role].get(scheme)
    if target is None:
        known = ", ".join(f"{name}://" for name in sorted(BACKENDS[role]))
        other: Role = "volatile" if role == "persistent" else "persistent"
        hint = f" ({scheme}:// is a {other} store)" if scheme in BACKENDS[other] else ""
        raise ConfigurationError(f"unknown {role} store scheme {scheme!r}{hint}; known: {known}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # an optional client library that is not installed: say which extra brings it
        if scheme not in EXTRAS or (exc.name or "dal").partition(".")[0] == "dal":
            raise
        raise ConfigurationError(_missing(scheme, exc.name or "")) from exc
    return cast("type[PersistentStore] | type[VolatileStore]", getattr(module, class_name))


def _missing(scheme: str, module: str) -> str:
    """The message of a client library that is not installed, or too old to have ``module``."""
    package = module.partition(".")[0]
    if module == package or importlib.util.find_spec(package) is None:
        return (f"{scheme}:// needs the Python package {module!r}, which is not installed: "
                f"pip install 'dal[{EXTRAS[scheme]}]'")
    # a submodule of an installed package: an older release of it (another package's pin, say)
    dist = (metadata.packages_distributions().get(package) or [package])[0]
    try:
        installed = metadata.version(dist)
    except metadata.PackageNotFoundError:
        installed = "(version unknown)"
    lacks = f"{dist} {installed} is installed, which has no module {module!r}"
    if dist in MINIMUM:
        return f"{scheme}:// needs {dist}>={MINIMUM[dist]}; {lacks}: pip install '{dist}>={MINIMUM[dist]}'"
    return f"{scheme}:// needs a newer {dist}; {lacks} (too old for dal): pip install --upgrade {dist}"


def settings_digest(role: Role, url: StoreURL) -> str:
    """Return the keyed hash that identifies a client with exactly these settings."""
    # surrogatepass: a path read from a file name that is not UTF-8 holds lone surrogates
    # (os.fsdecode's surrogateescape), and still names one store
    message = f"{role}\x00{url.settings()}".encode("utf-8", "surrogatepass")
    return hmac.new(_SECRET, message, hashlib.sha256).hexdigest()


def open_persistent(url: str | StoreURL) -> PersistentStore:
    """Return this process's client for a persistent store URL, creating it on first use."""
    return cast(PersistentStore, _open("persistent", url))


def open_volatile(url: str | StoreURL) -> VolatileStore:
    """Return this process's client for a volatile store URL, creating it on first use."""
    return cast(VolatileStore, _open("volatile", url))


def located(role: Role, url: StoreURL) -> StoreURL:
    """Return ``url`` naming the file it names now (a relative SQLite path made absolute in the working
    directory of this call), for a store whose class tells; else ``url`` itself."""
    locate: Callable[[StoreURL], StoreURL] | None = getattr(backend_class(role, url.scheme), "located", None)
    return url if locate is None else locate(url)


def _open(role: Role, url: str | StoreURL) -> PersistentStore | VolatileStore:
    parsed = located(role, parse_url(url) if isinstance(url, str) else url)
    cls = backend_class(role, parsed.scheme)
    digest = settings_digest(role, parsed)
    with _lock:
        client = _clients.get(digest)
    if client is not None:
        if _current(client):
            return client
        with _lock:  # only this one: another thread may have put a current client there meanwhile
            if _clients.get(digest) is client:
                del _clients[digest]
    # Created without the lock: a client may take its store's whole timeout to connect, and
    # neither other threads opening other stores nor a fork() meanwhile should wait for it.
    created = cls.from_url(parsed)
    with _lock:
        client = _clients.setdefault(digest, created)
    if client is not created:
        created.close()  # another thread created the same client first: use that one
    return client


def _current(client: PersistentStore | VolatileStore) -> bool:
    """Tell whether a cached client still reaches what its URL names (see the module docstring);
    a client of a remote store, which has no ``still_current()``, always does."""
    still: Callable[[], bool] | None = getattr(client, "still_current", None)
    return still is None or still()


def _forget_clients_in_child() -> None:
    global _lock
    # another thread may have held the lock at the fork: in the child, nobody would release it
    _lock = threading.Lock()
    # a forked child must not share its parent's sockets or SQLite handles: it opens its own
    _clients.clear()


os.register_at_fork(after_in_child=_forget_clients_in_child)


def close_all() -> None:
    """Close and forget every cached client (tests and forked children use this)."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()
