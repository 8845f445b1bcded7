"""The byte accounting and LRU eviction of ``MemoryCache`` (``dal/backends/memory.py``).

An entry is charged what the process holds for it: its UTF-8 key and its value, plus
:data:`ENTRY_OVERHEAD`, the measured cost of everything else an entry keeps alive (the ``str``
and ``bytes`` object headers, its slot with its timestamps and token, its place in the ordered
dict, its deadline in the heap). So ``max_size``, the sum of the charges, bounds the memory the
cache holds, not only its payload.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: Bytes one entry costs beyond its key and value bytes, measured with ``tracemalloc`` (CPython
#: 3.11, 64-bit) on entries as dal writes them (a ~60-character ASCII key such as
#: ``dal/<digest>/o/<hybrid>/<guid>``, the caller keeping no reference): about 350-375 bytes
#: filling a cache with entries without a TTL, 445-470 with one (the deadline heap adds a tuple
#: and a list slot), and 775-795 at the peak of a full cache under constant eviction, whose heap
#: also keeps the deadlines of evicted entries, with their keys, until it is compacted at twice
#: the entries held (compacting sooner costs a fill under eviction ~25% more). dal writes its
#: entries with a TTL, so the charge is that peak, rounded up: the bound then bounds memory.
ENTRY_OVERHEAD = 800

#: The default bound of a ``memory://`` cache: 64 MiB, memcached's own default memory limit (``-m
#: 64``), so the embedded default behaves as the shared cache it stands in for. With the charge
#: above it holds about 36,000 documents of 1 KB (~1,860 bytes each, key and overhead included),
#: or 75,000 small entries (version tokens, leases) of under 100 bytes; ``max_size=0`` in the
#: URL lifts the bound, ``max_size=BYTES`` sets another.
DEFAULT_MAX_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CacheEntryInfo:
    """Statistics of one cached entry, as :meth:`MemoryCache.entries` reports them."""

    key: str
    #: bytes charged against ``max_size``: the UTF-8 key, the value and :data:`ENTRY_OVERHEAD`
    size: int
    #: reads that found the entry since it was last written
    hits: int
    #: ``time.time()`` of the last read or write
    last_access: float
    #: ``time.time()`` at which the entry expires, ``None`` when it never does
    expires_at: float | None


@dataclass(slots=True)
class Slot:
    """One held entry: its value, its charge and what reads and expiry need."""

    value: bytes
    size: int
    token: int
    deadline: float  # time.monotonic() deadline, so wall-clock jumps cannot expire entries early
    expires_at: float | None
    last_access: float
    hits: int = 0


def expiry(ttl: float, wall: float) -> tuple[float, float | None] | None:
    """Return when an entry stored at ``wall`` (``time.time()``) with ``ttl`` expires: its
    ``time.monotonic()`` deadline and its ``time.time()`` expiry (``inf`` and ``None``: never), or
    ``None`` when it is stored already expired, as memcached and Redis store it: a negative or NaN
    TTL (NaN compares false with every number). 0, an infinite TTL and an int too large for a
    float (``10**400``) never expire, as on those stores."""
    if not ttl >= 0:
        return None
    try:
        seconds = float(ttl)
    except OverflowError:
        seconds = math.inf
    if seconds == 0 or seconds == math.inf:
        return math.inf, None
    return time.monotonic() + seconds, wall + seconds


def charge(key: str, value: bytes) -> int:
    """Return the bytes an entry is charged: its UTF-8 key, its value and the fixed overhead."""
    return len(key.encode("utf-8", "surrogatepass")) + len(value) + ENTRY_OVERHEAD


class ByteBoundedLru:
    """Slots in least-recently-used order, their summed charge, and eviction down to a bound.

    Not thread-safe: the cache built on it holds its lock (``_lock``) around every call, and drops
    the entries whose TTL ran out (``_expire``, under that lock), which only it knows of.
    """

    def __init__(self, max_size: int) -> None:
        #: the bound in bytes; 0 means unbounded
        self.max_size = max_size
        self._slots: OrderedDict[str, Slot] = OrderedDict()  # least recently used first
        self._size = 0
        self._lock = threading.Lock()
        #: keys the bound never evicts nor refuses (see :meth:`pin`): key endings, then a predicate
        self._pinned: tuple[tuple[str, ...], Callable[[str], bool]] | None = None

    def pin(self, endings: tuple[str, ...], keep: Callable[[str], bool]) -> None:
        """Never evict nor refuse for its size a key ending with one of ``endings`` that ``keep``
        accepts: the single-flight locks of the layer above, which knows the key layout. A lock holds
        no data, and one evicted (by fills of other keys) while its holder computes, or refused by a
        bound smaller than one entry, lets a second caller compute what the holder computes. Each
        lives no longer than its TTL, so the few held stay few."""
        self._pinned = (endings, keep)

    def _kept(self, key: str) -> bool:
        pinned = self._pinned
        return pinned is not None and key.endswith(pinned[0]) and pinned[1](key)

    @property
    def total_size(self) -> int:
        """Return the summed charge of live entries: expired ones are dropped first, as by any call."""
        with self._lock:
            self._expire()
            return self._size

    def _expire(self) -> float:
        """Drop every entry whose TTL ran out (none here: the cache built on it keeps the deadlines);
        return the time used (``time.monotonic()``). Called with the lock held."""
        return time.monotonic()

    def _fits(self, key: str, size: int) -> bool:
        """Tell whether an entry charged ``size`` can be held at all (a pinned key always can)."""
        return not self.max_size or size <= self.max_size or self._kept(key)

    def _admit(self, key: str, slot: Slot) -> None:
        """Hold ``slot`` under ``key`` (absent: the caller removed it) and evict down to the bound."""
        self._slots[key] = slot
        self._size += slot.size
        if self.max_size:
            self._evict(self.max_size)

    def _remove(self, key: str) -> None:
        slot = self._slots.pop(key, None)
        if slot is not None:
            self._size -= slot.size

    def _evict(self, max_size: int) -> list[str]:
        """Drop least recently used entries until the charge is at most ``max_size``; return their keys."""
        removed: list[str] = []
        spared = 0  # pinned keys moved to the recent end: once all that is left, nothing more goes
        while self._size > max_size and len(self._slots) > spared:
            key, slot = self._slots.popitem(last=False)
            if self._pinned is not None and self._kept(key):
                self._slots[key] = slot
                spared += 1
                continue
            self._size -= slot.size
            removed.append(key)
        return removed

    def _drop_all(self) -> None:
        self._slots.clear()
        self._size = 0
