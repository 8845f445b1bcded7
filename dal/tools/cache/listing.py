"""Listing a namespace's cache entries as the volatile store itself reports them.

Each store answers from its own records: ``memory://`` from its entries' statistics
(:meth:`~dal.backends.memory.MemoryCache.entries`), memcached from ``lru_crawler metadump hash``
of every server (:mod:`dal.backends.memcached.dumps` says what it can miss), Redis from ``SCAN``
with ``MEMORY USAGE``, ``OBJECT IDLETIME`` and ``PTTL``. The kind of an entry, its hybrid, guid
and dynamic come from the key layout (:mod:`dal.keys`): ``o/<hybrid>/<guid>`` an object,
``d/<hybrid>/<guid>/<dynamic>`` a dynamic, ``q/<hybrid>/<digest>`` a query result,
``v/<hybrid>/...`` a version token, ``.../lock`` (a locked dynamic's single flight) and
``o/.../refresh`` (a mirrored refresh) a lock, ``s/`` published statistics.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from dal.backends.base import VolatileStore
from dal.config import Context
from dal.exceptions import DalError
from dal.model.meta import HybridMeta
from dal.model.registry import hybrids
from dal.objects.dataobject import DataObject

KINDS = ("object", "dynamic", "query", "lock", "version", "stats", "other")
SORTS = ("hits", "last_access", "size")


@dataclass(frozen=True, slots=True)
class Entry:
    """One cache entry of a namespace."""

    key: str
    #: one of :data:`KINDS`
    kind: str
    hybrid: str | None
    guid: str | None
    #: the dynamic's name (for a dynamic's value or its lock)
    dynamic: str | None
    #: bytes the store charges for it (memory://: key and value; memcached: the whole item;
    #: Redis: MEMORY USAGE)
    size: int
    #: reads that found it (exact; ``None`` where the store does not count them, see docs/caching.md)
    hits: int | None
    #: unix time of its last access as the store records it, ``None`` when unknown
    last_access: float | None
    #: unix time it expires, ``None`` when it never does
    expires_at: float | None
    #: stored under a hashed key (memcached, a key over 250 bytes even percent-encoded): ``key`` is
    #: that wire key and ``kind`` is ``other``, since which entry it is cannot be read back
    hashed: bool = False


class _Listed(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def hits(self) -> int | None: ...
    @property
    def last_access(self) -> float | None: ...
    @property
    def expires_at(self) -> float | None: ...


def store_entries(store: VolatileStore, prefix: str) -> list[_Listed]:
    """Return the store's own records of its entries under ``prefix``."""
    lister = getattr(store, "list_entries", None)
    if lister is not None:
        listed: list[_Listed] = lister(prefix)
        return listed
    entries = getattr(store, "entries", None)
    if entries is None:
        raise DalError(f"{store.url.scheme}:// cannot list its entries; dal cache works on memory://, "
                       "memcached:// and redis://")
    return [entry for entry in entries() if entry.key.startswith(prefix)]


def classify(root: str, key: str) -> tuple[str, str | None, str | None, str | None]:
    """Return ``(kind, hybrid, guid, dynamic)`` of a cache key under ``root``."""
    parts = key[len(root):].split("/")
    head, rest = parts[0], parts[1:]
    if head == "o" and len(rest) == 2:
        return "object", rest[0], rest[1], None
    if head == "o" and len(rest) == 3 and rest[2] == "refresh":
        return "lock", rest[0], rest[1], None
    if head == "d" and len(rest) == 3:
        return "dynamic", rest[0], rest[1], rest[2]
    if head == "d" and len(rest) == 4 and rest[3] == "lock":
        return "lock", rest[0], rest[1], rest[2]
    if head == "q" and len(rest) == 2:
        return "query", rest[0], None, None
    if head == "v" and len(rest) >= 2:
        return "version", rest[0], None, None
    if head == "s":
        return "stats", None, None, None
    return "other", None, None, None


def registered(name: str) -> type[DataObject]:
    """Return the hybrid called ``name`` (its logical or its class name); an unknown name raises
    ``DalError`` listing the known ones."""
    if not isinstance(name, str):
        raise DalError(f"name a hybrid by its logical or class name (a str), not {name!r}")
    try:
        return hybrids.get(name)
    except LookupError as exc:
        raise DalError(str(exc.args[0]) if exc.args else f"no hybrid named {name!r}") from None


def check_dynamic(meta: HybridMeta, dynamic: object, hint: str = "") -> None:
    """Raise ``DalError`` unless ``dynamic`` names a dynamic the hybrid ``meta`` declares (``hint``:
    what the message adds)."""
    if not isinstance(dynamic, str) or dynamic not in meta.dynamics:
        known = ", ".join(meta.dynamics) or "none"
        raise DalError(f"{meta.name} has no dynamic {dynamic!r}; it has: {known}{hint}")


def hybrid_name(name: str) -> str:
    """Return the logical name of the hybrid called ``name``, as its keys hold it (see :func:`registered`)."""
    return registered(name)._meta.name


def entries(context: Context, *, kind: str | Sequence[str] | None = None, hybrid: str | None = None,
            sort: str | None = None, limit: int | None = None) -> list[Entry]:
    """Return the cache entries of ``context``'s namespace (and durable store).

    ``kind`` (one of :data:`KINDS`, or several) and ``hybrid`` (a registered hybrid's logical or
    class name; an unknown one raises ``DalError``) filter; ``sort`` orders by
    ``hits`` or ``size`` (largest first) or ``last_access`` (least recent first, the order
    :func:`~dal.tools.cache.removal.prune` removes in); otherwise by key. ``limit`` keeps the
    first ``limit``.
    """
    if kind is not None and not isinstance(kind, (str, Sequence)):
        raise DalError(f"kind must be a cache entry kind or a sequence of them, not {kind!r}; "
                       f"known: {', '.join(KINDS)}")
    kinds = (kind,) if isinstance(kind, str) else tuple(kind or ())
    for name in kinds:
        if not isinstance(name, str) or name not in KINDS:
            raise DalError(f"unknown cache entry kind {name!r}; known: {', '.join(KINDS)}")
    if sort is not None and sort not in SORTS:
        raise DalError(f"cannot sort cache entries by {sort!r}; by one of {', '.join(SORTS)}")
    if limit is not None and (type(limit) is not int or limit < 0):
        raise DalError(f"limit must be a whole number 0 or more, not {limit!r}")
    logical = None if hybrid is None else hybrid_name(hybrid)
    root = context.keys.cache_root
    found: list[Entry] = []
    for listed in store_entries(context.volatile, root):
        hashed = bool(getattr(listed, "hashed", False))
        what: tuple[str, str | None, str | None, str | None] = (
            ("other", None, None, None) if hashed else classify(root, listed.key))
        if (kinds and what[0] not in kinds) or (logical is not None and what[1] != logical):
            continue
        found.append(Entry(listed.key, *what, listed.size, listed.hits, listed.last_access,
                           listed.expires_at, hashed))
    found.sort(key=lambda entry: entry.key)
    if sort == "last_access":
        found.sort(key=lambda entry: entry.last_access if entry.last_access is not None else 0.0)
    elif sort is not None:
        found.sort(key=lambda entry: getattr(entry, sort) or 0, reverse=True)
    return found if limit is None else found[:limit]


def age(entry: Entry, ttl: float, now: float | None = None) -> float | None:
    """Return how long ago an entry written with ``ttl`` was written (from its expiry), or ``None``."""
    if entry.expires_at is None:
        return None
    return (now if now is not None else time.time()) - (entry.expires_at - ttl)
