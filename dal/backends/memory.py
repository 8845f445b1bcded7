"""Process-local stores: a transactional ``MemoryStore`` and an LRU ``MemoryCache``.

Both live in this process only (``shared = False``); the registry hands out one instance
per URL per process, so ``memory://a`` and ``memory://b`` are distinct stores.
"""

from __future__ import annotations

import heapq
import threading
import time
import uuid
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Sequence
from typing import ClassVar

from dal.backends.base import (
    Check,
    CommitResult,
    Delete,
    DeletePrefix,
    Entry,
    Op,
    Put,
    evaluate_checks,
    utf8,
)
from dal.backends.local_leases import ProcessLocalLeadership
from dal.backends.memory_lru import DEFAULT_MAX_SIZE, ByteBoundedLru, CacheEntryInfo, Slot, charge, expiry
from dal.backends.url import StoreURL, plain_int
from dal.exceptions import ConfigurationError

__all__ = ["CacheEntryInfo", "MemoryCache", "MemoryStore"]


def _check_memory_url(url: StoreURL, known: tuple[str, ...]) -> None:
    """Reject what a memory URL cannot mean: several hosts, a port, a path, unknown options."""
    if len(url.hosts) > 1 or url.path not in ("", "/") or url.user is not None or url.password is not None \
            or any(port is not None for _, port in url.hosts):  # memory:// has no server: a port is a slip
        raise ConfigurationError(
            f"{url} is not a memory store URL (it takes no user, password, port or path); write memory:// or "
            "memory://name (the name picks one of several independent stores in this process)")
    url.check_options(known)


def _encodable(*texts: object) -> None:
    """Refuse a key (or prefix) with a lone surrogate, as every store does: UTF-8 cannot encode it."""
    for text in texts:
        if isinstance(text, str) and not text.isascii():  # ASCII always encodes: no copy made
            utf8(text, "memory://")


def _validate_ops(checks: Sequence[Check], ops: Sequence[Op]) -> None:
    """Raise TypeError on a malformed op, InvalidValueError on a key UTF-8 cannot encode, before
    anything is written, so a commit stays atomic."""
    for item in (*checks, *ops):
        _encodable(getattr(item, "key", getattr(item, "prefix", "")))
    for op in ops:
        if isinstance(op, Put):
            if not isinstance(op.value, bytes):
                raise TypeError(f"Put({op.key!r}) value must be bytes, not {type(op.value).__name__}")
        elif not isinstance(op, (Delete, DeletePrefix)):
            raise TypeError(f"unknown op {op!r}")


class MemoryStore(ProcessLocalLeadership):
    """A process-local PersistentStore: a dict of entries plus a sorted key list for scans."""

    scheme: ClassVar[str] = "memory"
    shared: ClassVar[bool] = False
    ambiguous_commits: ClassVar[bool] = False
    timeout: float = 1.0

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        self._identity = uuid.uuid4().hex  # the data lives in this object only
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._keys: list[str] = []  # sorted, always the same set as _entries
        self._revision = 0

    @classmethod
    def from_url(cls, url: StoreURL) -> MemoryStore:
        """Open a fresh, empty store; ``memory://name`` takes no options."""
        _check_memory_url(url, ())
        return cls(url)

    def get(self, key: str) -> Entry | None:
        """Return the entry under ``key``, or ``None``."""
        # One dict lookup is atomic and entries are immutable, so no lock is needed.
        entry = self._entries.get(key)
        if entry is None:
            _encodable(key)  # a key with a lone surrogate is never stored: checked on a miss only
        return entry

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        """Return the present entries among ``keys``, all as of one instant."""
        with self._lock:
            entries = self._entries
            found = {key: entries[key] for key in keys if key in entries}
        if len(found) < len(keys):
            _encodable(*(key for key in keys if key not in found))
        return found

    def scan(self, prefix: str, *, start_after: str | None = None,
             limit: int | None = None) -> list[tuple[str, Entry]]:
        """Return up to ``limit`` ``(key, entry)`` pairs under ``prefix``, in key order."""
        if limit is not None and limit <= 0:
            return []
        _encodable(prefix, start_after)
        with self._lock:
            keys = self._keys
            index = bisect_left(keys, prefix)
            if start_after is not None:
                index = max(index, bisect_right(keys, start_after))
            found: list[tuple[str, Entry]] = []
            while index < len(keys) and keys[index].startswith(prefix):
                found.append((keys[index], self._entries[keys[index]]))
                if limit is not None and len(found) >= limit:
                    break
                index += 1
            return found

    def scan_keys(self, prefixes: Sequence[str]) -> dict[str, list[str]]:
        """Return, for each prefix, every key under it in key order, all as of one instant."""
        _encodable(*prefixes)
        with self._lock:
            keys = self._keys
            found: dict[str, list[str]] = {}
            for prefix in prefixes:
                index = bisect_left(keys, prefix)
                end = index
                while end < len(keys) and keys[end].startswith(prefix):
                    end += 1
                found[prefix] = keys[index:end]
            return found

    def commit(self, checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        """Apply every op atomically if every check holds; otherwise apply nothing."""
        _validate_ops(checks, ops)
        with self._lock:
            failed, current = self._failed_checks(checks)
            if failed:
                return CommitResult(ok=False, failed=failed, current=current)
            self._revision += 1
            revision = self._revision
            for op in ops:
                if isinstance(op, Put):
                    if op.key not in self._entries:
                        insort(self._keys, op.key)
                    self._entries[op.key] = Entry(op.value, revision)
                elif isinstance(op, Delete):
                    if self._entries.pop(op.key, None) is not None:
                        del self._keys[bisect_left(self._keys, op.key)]
                elif isinstance(op, DeletePrefix):  # _validate_ops let nothing else through
                    self._delete_prefix(op.prefix)
            return CommitResult(ok=True, revision=revision)

    def identity(self) -> str:
        """Return a random name made when this store was: its data exists nowhere else."""
        return self._identity

    def change_token(self) -> object:
        """Return a constant: nothing outside this object can write to it."""
        return 0

    def close(self) -> None:
        """Do nothing: there is no connection to release."""

    def _failed_checks(self, checks: Sequence[Check]) -> tuple[tuple[int, ...], dict[str, Entry]]:
        def newest(prefix: str) -> int:
            position, revision = bisect_left(self._keys, prefix), 0
            while position < len(self._keys) and self._keys[position].startswith(prefix):
                revision = max(revision, self._entries[self._keys[position]].revision)
                position += 1
            return revision

        return evaluate_checks(checks, self._entries.get, newest)

    def _delete_prefix(self, prefix: str) -> None:
        start = bisect_left(self._keys, prefix)
        end = start
        while end < len(self._keys) and self._keys[end].startswith(prefix):
            del self._entries[self._keys[end]]
            end += 1
        del self._keys[start:end]


# --- the cache ------------------------------------------------------------------------


def _non_negative_int(text: str) -> int:
    value = plain_int(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


class MemoryCache(ByteBoundedLru):
    """A process-local VolatileStore: TTLs, compare-and-set, LRU eviction bounded in bytes.

    ``memory://name?max_size=BYTES`` bounds the sum of entry charges (UTF-8 key, value and a
    measured fixed overhead: ``dal/backends/memory_lru.py``); the default is 64 MiB, ``0``
    means unbounded. Expired entries are dropped by the next call that touches the cache,
    read or not, so distinct keys that are never read again do not pile up: a heap of
    deadlines finds them without scanning.
    """

    scheme: ClassVar[str] = "memory"
    shared: ClassVar[bool] = False

    def __init__(self, url: StoreURL, max_size: int = DEFAULT_MAX_SIZE) -> None:
        super().__init__(max_size)  # and its lock, which every call here holds
        self.url = url
        self._writes = 0  # cas tokens: a write always gets a token no earlier write had
        #: (deadline, token, key) of every write with a TTL; an entry whose slot was rewritten or
        #: removed since is stale, skipped when it comes up, and compacted away when they pile up
        self._deadlines: list[tuple[float, int, str]] = []

    @classmethod
    def from_url(cls, url: StoreURL) -> MemoryCache:
        """Open a fresh, empty cache; the only option is ``max_size`` in bytes (0: unbounded)."""
        _check_memory_url(url, ("max_size",))
        return cls(url, url.option("max_size", _non_negative_int, DEFAULT_MAX_SIZE))

    def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None``."""
        # every cached read of the embedded default: _expire, _live and _touch written out (three
        # calls less, measured ~5% of a cached dynamic read); keep it in step with them. The lock
        # is taken by acquire/release, not ``with``: measured 71 ns against 148 uncontended (``with``
        # looks up and binds __enter__ and __exit__, then calls __exit__ with three arguments)
        lock = self._lock
        lock.acquire()
        try:
            now = time.monotonic()
            deadlines = self._deadlines
            if deadlines and deadlines[0][0] <= now:
                self._drop_expired(now)
            slot = self._slots.get(key)
            if slot is None:
                return None
            if slot.deadline <= now:
                self._remove(key)
                return None
            slot.hits += 1
            slot.last_access = time.time()
            self._slots.move_to_end(key)
            return slot.value
        finally:
            lock.release()

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Return the present values among ``keys``."""
        found: dict[str, bytes] = {}
        with self._lock:
            now = self._expire()
            for key in keys:
                slot = self._touch(key, now)
                if slot is not None:
                    found[key] = slot.value
        return found

    def gets(self, key: str) -> tuple[bytes | None, object]:
        """Return the value and a token for :meth:`cas` (``(None, None)`` when absent)."""
        with self._lock:
            slot = self._touch(key, self._expire())
            return (None, None) if slot is None else (slot.value, slot.token)

    def set(self, key: str, value: bytes, ttl: float) -> bool:
        """Store unconditionally; ``False`` when the entry alone exceeds ``max_size``."""
        with self._lock:
            self._expire()
            return self._store(key, value, ttl)

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store only if ``key`` is absent; ``True`` when stored."""
        with self._lock:
            if self._live(key, self._expire()) is not None:
                return False
            return self._store(key, value, ttl)

    def cas(self, key: str, value: bytes, token: object, ttl: float) -> bool:
        """Store only if ``key`` still holds the write :meth:`gets` returned ``token`` for."""
        with self._lock:
            slot = self._live(key, self._expire())
            if slot is None or token is None or slot.token != token:
                return False
            return self._store(key, value, ttl)

    def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        with self._lock:
            self._expire()
            self._remove(key)

    def nodes(self) -> list[str]:
        """Return the one (unnamed) place entries live: this object."""
        return [""]

    def node(self, key: str) -> str:
        """Return ``""``: every entry lives here."""
        return ""

    def delete_many(self, keys: Sequence[str]) -> list[str]:
        """Remove every key in ``keys``; nothing can fail, so nothing is returned."""
        with self._lock:
            self._expire()
            for key in keys:
                self._remove(key)
        return []

    def entries(self) -> list[CacheEntryInfo]:
        """Return statistics of every live entry, least recently used first; expired ones are dropped."""
        with self._lock:
            self._expire()
            return [CacheEntryInfo(key, slot.size, slot.hits, slot.last_access, slot.expires_at)
                    for key, slot in self._slots.items()]

    def prune(self, max_size: int) -> list[str]:
        """Evict least recently used entries until ``total_size <= max_size``; return their keys in order."""
        with self._lock:
            return self._evict(max_size)

    def clear(self, keep: Callable[[str], bool] | None = None, endings: tuple[str, ...] = ("",)) -> None:
        """Remove every entry, or every entry but those whose key ends with one of ``endings`` and that
        ``keep`` accepts (the endings, tested in C, spare a call of ``keep`` per key: a flush drops
        many entries and keeps few)."""
        with self._lock:
            kept = [] if keep is None else [(key, slot) for key, slot in self._slots.items()
                                            if key.endswith(endings) and keep(key)]
            self._drop_all()
            for key, slot in kept:  # in their order: the least recently used stays first
                self._admit(key, slot)
            self._deadlines = [(slot.deadline, slot.token, key) for key, slot in kept
                               if slot.expires_at is not None]
            heapq.heapify(self._deadlines)

    def close(self) -> None:
        """Do nothing: entries stay for whoever still holds this cache."""

    # --- internals; callers hold the lock ---------------------------------------------

    def _expire(self) -> float:
        """Drop every entry whose deadline passed; return the time used (``time.monotonic()``)."""
        now = time.monotonic()
        deadlines = self._deadlines
        if deadlines and deadlines[0][0] <= now:  # the common case costs this one comparison
            self._drop_expired(now)
        return now

    def _drop_expired(self, now: float) -> None:
        deadlines, slots = self._deadlines, self._slots
        while deadlines and deadlines[0][0] <= now:
            _, token, key = heapq.heappop(deadlines)
            slot = slots.get(key)
            if slot is not None and slot.token == token:
                self._remove(key)

    def _live(self, key: str, now: float) -> Slot | None:
        slot = self._slots.get(key)
        if slot is not None and slot.deadline <= now:
            self._remove(key)
            return None
        return slot

    def _touch(self, key: str, now: float) -> Slot | None:
        """Return the live slot under ``key`` and count the read as a hit."""
        slot = self._live(key, now)
        if slot is not None:
            slot.hits += 1
            slot.last_access = time.time()
            self._slots.move_to_end(key)
        return slot

    def _store(self, key: str, value: bytes, ttl: float) -> bool:
        if not isinstance(value, bytes):
            raise TypeError(f"cache values must be bytes, not {type(value).__name__}")
        self._remove(key)
        size = charge(key, value)
        if not self._fits(key, size):
            return False  # the old value is gone too, so no reader sees it as if the set had worked
        wall = time.time()
        expires = expiry(ttl, wall)
        if expires is None:
            return True  # memcached semantics: a negative (or NaN) TTL stores something already expired
        self._writes += 1
        self._admit(key, Slot(value, size, self._writes, *expires, wall))
        if expires[1] is not None:
            deadlines = self._deadlines
            heapq.heappush(deadlines, (expires[0], self._writes, key))
            if len(deadlines) > 2 * len(self._slots) + 64:
                # mostly stale (rewritten or removed keys): keep one entry per live slot with a TTL,
                # so this list stays within twice the entries held, at amortised constant cost
                self._deadlines = [(slot.deadline, slot.token, name) for name, slot in self._slots.items()
                                   if slot.expires_at is not None]
                heapq.heapify(self._deadlines)
        return True
