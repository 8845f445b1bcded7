"""``configure()`` and the context every object operation reads: stores, keys, caches, stats."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from dal.backends import open_persistent, open_volatile
from dal.backends.base import Check, CommitResult, Entry, Op, PersistentStore, VolatileStore
from dal.backends.url import StoreURL, parse_url
from dal.cache import LeasedCache, Signer, Stats
from dal.exceptions import ConfigurationError
from dal.keys import Keys
from dal.stats import Publisher

DEFAULT_PERSISTENT = "sqlite:///dal.sqlite3"
DEFAULT_VOLATILE = "memory://"
#: a cached document lives at most this long even if an invalidation was lost
SAFETY_TTL = 600.0


@dataclass
class Context:
    """The configured stores of this process and the machinery built on them."""

    persistent_url: StoreURL
    volatile_url: StoreURL
    namespace: str
    hmac_key: bytes | None = field(repr=False)
    persistent: PersistentStore = field(init=False, repr=False)
    volatile: VolatileStore = field(init=False, repr=False)
    keys: Keys = field(init=False, repr=False)
    stats: Stats = field(init=False, repr=False)
    objects: LeasedCache = field(init=False, repr=False)
    dynamics: LeasedCache = field(init=False, repr=False)
    #: False when a process-local cache could not notice another process's commits
    caches_objects: bool = field(init=False)
    _seen: object = field(init=False, default=None, repr=False)
    _generation: int = field(init=False, default=0, repr=False)
    publisher: Publisher | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.stats = Stats()
        self._open()
        # with a shared cache, publish counters so `dal stats` sees every process
        self.publisher = Publisher(self) if self.volatile.shared else None

    def _open(self) -> None:
        self.persistent = open_persistent(self.persistent_url)
        self.volatile = open_volatile(self.volatile_url)
        self.keys = Keys(self.namespace, store_digest(self.persistent))
        signer = Signer(self.hmac_key)
        self.objects = LeasedCache(self.volatile, signer, self.stats, prefix="object_")
        self.dynamics = LeasedCache(self.volatile, signer, self.stats, prefix="dynamic_")
        local_cache_of_shared_store = self.persistent.shared and not self.volatile.shared
        self._seen = self.persistent.change_token()
        self.caches_objects = not (local_cache_of_shared_store and self._seen is None)
        self._guard = local_cache_of_shared_store and self.caches_objects
        self._generation = _forks

    def load_document(self, hybrid: str, guid: str) -> Entry | None:
        """Return the stored document of one object, through the object cache when it is exact."""
        doc_key = self.keys.doc(hybrid, guid)
        if not self.caches_objects:
            return self.persistent.get(doc_key)
        self.check_local_cache()

        def load() -> bytes | None:
            entry = self.persistent.get(doc_key)
            return None if entry is None else _to_payload(entry)

        payload = self.objects.fetch(self.keys.cached_doc(hybrid, guid), load, SAFETY_TTL)
        if payload is None:
            return None
        return _from_payload(payload)

    def commit(self, checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        """Run one transaction on the durable store, counted in ``stats``."""
        self.stats.add("commits")
        return self.persistent.commit(checks, ops)

    def load_documents(self, hybrid: str, guids: list[str]) -> dict[str, Entry]:
        """Return the stored documents of many objects in two batched round trips at most.

        Cached documents come from one multi-get; the rest from one durable multi-get. Misses
        are not cached here: a batch cannot take a lease per key without a round trip per key.
        """
        found: dict[str, Entry] = {}
        if self.caches_objects:
            self.check_local_cache()
            cache_keys = {self.keys.cached_doc(hybrid, guid): guid for guid in guids}
            for cache_key, payload in self.objects.get_many(list(cache_keys)).items():
                found[cache_keys[cache_key]] = _from_payload(payload)
        missing = {self.keys.doc(hybrid, guid): guid for guid in guids if guid not in found}
        if missing:
            for doc_key, entry in self.persistent.get_many(list(missing)).items():
                found[missing[doc_key]] = entry
        return found

    def invalidate(self, *cache_keys: str) -> None:
        """Drop cached entries after a committed write."""
        self.objects.invalidate(*cache_keys)

    def check_local_cache(self) -> None:
        """Drop a process-local cache when another process committed to the shared store."""
        if not self._guard:
            return
        token = self.persistent.change_token()
        if token != self._seen:
            self._seen = token
            clear = getattr(self.volatile, "clear", None)
            if clear is not None:
                clear()
            self.stats.add("object_local_flushes")

    def reopen_if_forked(self) -> None:
        """After a fork, open this process's own connections (the parent's are not ours to use)."""
        if self._generation != _forks:
            with _lock:
                if self._generation != _forks:
                    self._open()


def _to_payload(entry: Entry) -> bytes:
    """Return a cached document's payload: ``<revision> <document>``."""
    return b"%d " % entry.revision + entry.value


def _from_payload(payload: bytes) -> Entry:
    revision, _, value = payload.partition(b" ")
    return Entry(value, int(revision))


def store_digest(store: PersistentStore) -> str:
    """Return a short digest naming a durable store's data (a file, a cluster, a memory store)."""
    url = store.url
    path = getattr(store, "path", None)
    where = f"file:{path}" if path else ",".join(sorted(f"{host}:{port}" for host, port in url.hosts))
    return hashlib.sha256(f"{url.scheme}:{where}{url.path}".encode()).hexdigest()[:10]


_context: Context | None = None
_lock = threading.RLock()
#: bumped in every forked child, so a context notices without a system call per use
_forks = 0


def _after_fork_in_child() -> None:
    global _forks, _lock
    _forks += 1
    _lock = threading.RLock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def configure(persistent: str | None = None, volatile: str | None = None, *,
              namespace: str | None = None, hmac_key: str | bytes | None = None) -> Context:
    """Pick the stores by URL and make them current for this process.

    Unset arguments fall back to ``DAL_PERSISTENT_URL``, ``DAL_VOLATILE_URL``,
    ``DAL_NAMESPACE`` and ``DAL_HMAC_KEY``, then to ``sqlite:///dal.sqlite3``, ``memory://``
    and ``dal``. Everything is validated now: a bad URL, scheme or option raises
    ConfigurationError.
    """
    global _context
    persistent_url = parse_url(persistent or os.environ.get("DAL_PERSISTENT_URL") or DEFAULT_PERSISTENT)
    volatile_url = parse_url(volatile or os.environ.get("DAL_VOLATILE_URL") or DEFAULT_VOLATILE)
    name = namespace or os.environ.get("DAL_NAMESPACE") or "dal"
    if "/" in name or not name.strip():
        raise ConfigurationError(f"namespace {name!r} must be a non-empty name without '/'")
    key = hmac_key if hmac_key is not None else os.environ.get("DAL_HMAC_KEY") or None
    if isinstance(key, str):
        key = key.encode()
    if key is not None and len(key) < 16:
        raise ConfigurationError("hmac_key must be at least 16 bytes; use e.g. `openssl rand -hex 32`")
    context = Context(persistent_url, volatile_url, name, key)
    with _lock:
        if _context is not None and _context.publisher is not None:
            _context.publisher.stop()
        _context = context
    return context


def current() -> Context:
    """Return the current context, configuring the defaults on first use."""
    context = _context or configure()
    context.reopen_if_forked()
    return context
