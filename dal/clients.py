"""A cache of remote API clients, one per set of connection settings.

A mirrored hybrid's ``_refresh`` talks to a remote API through a client that is slow to build
(a login, a TLS handshake, a connection pool). :class:`ClientCache` builds each client once per
process and hands it out again for the same settings::

    clients = ClientCache(RapiClient)
    client = clients.get({"host": cluster.hostname, "port": cluster.port,
                          "user": cluster.username, "password": cluster.password},
                         owner=cluster.guid)

The cache key is an HMAC-SHA256, under a secret drawn when this module is imported, of the
canonical JSON of the settings (sorted keys, fixed separators): unlike Ganeti Web Manager's
unsalted SHA-1 of ``user + password + host + port`` run together, no two different settings
share a key (``("ab", "c")`` and ``("a", "bc")`` are different JSON) and no password can be
guessed back from a key that leaks into a log.

With ``owner`` (a cluster's guid, say), a changed setting (a new password) drops and closes the
owner's previous client, so an old connection does not linger; a client also handed out without
an owner stays, since its other callers may still use it. This module sits at the bottom of
dal's layers: it imports nothing of dal but its exceptions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import weakref
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

from dal.exceptions import ConfigurationError

__all__ = ["ClientCache", "settings_key"]

C = TypeVar("C")

#: drawn per process at import: keys are comparable within a process only, and worthless outside it
_SECRET = os.urandom(32)
_caches: weakref.WeakSet[ClientCache[Any]] = weakref.WeakSet()


def settings_key(settings: Mapping[str, Any]) -> str:
    """Return the cache key of ``settings``: the hex HMAC-SHA256 of their canonical JSON.

    Raise :class:`~dal.exceptions.ConfigurationError` when a setting is not JSON (a set, an
    object, a NaN) or a mapping has a key that is not a string: those have no canonical text,
    so two different settings could otherwise share a key.
    """
    if not isinstance(settings, Mapping):
        raise ConfigurationError(f"client settings must be a mapping, not {type(settings).__name__}")
    plain = _plain_json(settings, "settings")
    try:
        text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
        data = text.encode("utf-8", "surrogatepass")  # a lone surrogate still has one encoding
    except (TypeError, ValueError) as exc:  # _plain_json should have caught it; stay typed anyway
        raise ConfigurationError(f"client settings are not JSON: {exc}") from exc
    return hmac.new(_SECRET, data, hashlib.sha256).hexdigest()


def _plain_json(value: Any, where: str) -> Any:
    """Return ``value`` as what json.dumps takes (any Mapping a dict, any tuple a list); refuse non-JSON."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigurationError(f"client setting {where} is {value!r}, which JSON cannot hold")
        return value
    if isinstance(value, Mapping):
        # a Mapping that is no dict (a MappingProxyType, say) is one json.dumps refuses: copied here
        plain: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                # json.dumps would turn 1 into "1": two settings would share a key
                raise ConfigurationError(f"client setting {where} has the key {key!r}; keys must be strings")
            plain[key] = _plain_json(item, f"{where}[{key!r}]")
        return plain
    if isinstance(value, (list, tuple)):
        return [_plain_json(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise ConfigurationError(f"client setting {where} is a {type(value).__name__} ({value!r}), "
                             "not a JSON value (str, int, float, bool, None, list, dict)")


class ClientCache(Generic[C]):
    """Clients built by ``factory(**settings)``, one per distinct settings, shared by threads."""

    def __init__(self, factory: Callable[..., C]) -> None:
        self.factory = factory
        self._lock = threading.Lock()
        self._clients: dict[str, C] = {}
        #: key -> the lock held while its client is built, so racing threads build it once
        self._building: dict[str, threading.Lock] = {}
        #: owner -> key of the client it used last
        self._owners: dict[Hashable, str] = {}
        #: keys of the clients handed out without an owner: no owner's rotation or drop closes them
        self._unowned: set[str] = set()
        _caches.add(self)

    def key(self, settings: Mapping[str, Any]) -> str:
        """Return the key ``settings`` are cached under (see :func:`settings_key`)."""
        return settings_key(settings)

    def get(self, settings: Mapping[str, Any], owner: Hashable | None = None) -> C:
        """Return the client for ``settings``, building it with ``factory(**settings)`` on first use.

        With ``owner``, the client this owner was given before, if it was another one that no
        other owner uses and that was never handed out without an owner, is dropped and closed
        (when it has ``close()``). A client handed out without an owner stays until :meth:`clear`.
        A factory that raises caches nothing: the next call tries again.
        """
        if owner is not None:
            try:
                hash(owner)
            except TypeError as exc:  # checked first: a client built for it would only linger
                raise ConfigurationError(f"a client's owner must be hashable (a guid, say), not "
                                         f"{type(owner).__name__}") from exc
        key = settings_key(settings)
        stale: C | None = None
        while True:
            client = self._client(key, settings)
            with self._lock:
                # another owner's rotation (or a drop) may have closed it since _client returned it:
                # hand out only a client still cached, recorded for its owner under the same lock
                if self._clients.get(key) is not client:
                    continue
                if owner is None:
                    self._unowned.add(key)
                    return client
                previous = self._owners.get(owner)
                self._owners[owner] = key
                if previous is not None and previous != key and self._unused(previous):
                    stale = self._clients.pop(previous, None)
                break
        if stale is not None:
            _close(stale)
        return client

    def _client(self, key: str, settings: Mapping[str, Any]) -> C:
        with self._lock:
            if key in self._clients:
                return self._clients[key]
            building = self._building.setdefault(key, threading.Lock())
        # built outside the cache's lock: a slow login must not hold up clients of other settings
        with building:
            with self._lock:
                if key in self._clients:  # another thread built it while this one waited
                    return self._clients[key]
            client = self.factory(**settings)
            with self._lock:
                self._clients[key] = client
                self._building.pop(key, None)
            return client

    def _unused(self, key: str) -> bool:
        """Tell whether no owner uses the client under ``key``, nor was it handed out without one
        (called with the cache's lock held)."""
        return key not in self._unowned and key not in self._owners.values()

    def drop(self, owner: Hashable) -> None:
        """Forget ``owner``; close its client unless another owner uses it or it was handed out
        without an owner."""
        with self._lock:
            key = self._owners.pop(owner, None)
            stale = self._clients.pop(key, None) if key is not None and self._unused(key) else None
        if stale is not None:
            _close(stale)

    def clear(self) -> None:
        """Close and forget every client."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
            self._owners.clear()
            self._unowned.clear()
        for client in clients:
            _close(client)

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)

    def __contains__(self, settings: object) -> bool:
        if not isinstance(settings, Mapping):
            return False
        key = settings_key(settings)
        with self._lock:
            return key in self._clients

    def _forget_in_child(self) -> None:
        # the parent's clients hold its sockets: a forked child builds its own, and closes none
        # of the parent's (closing a shared socket could end the parent's session)
        self._lock = threading.Lock()
        self._clients = {}
        self._building = {}
        self._owners = {}
        self._unowned = set()


def _close(client: object) -> None:
    close = getattr(client, "close", None)
    if callable(close):
        close()


def _after_fork_in_child() -> None:
    for cache in list(_caches):
        cache._forget_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
