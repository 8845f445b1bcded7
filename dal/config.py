"""``configure()`` and the context every object operation reads: stores, keys, caches, stats."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from dal.backends import located, open_persistent, open_volatile
from dal.backends.base import Check, CommitResult, Entry, Op, PersistentStore, VolatileStore
from dal.backends.url import StoreURL, parse_url
from dal.cache.counters import Stats
from dal.cache.journal import Journal
from dal.cache.leases import LeasedCache
from dal.cache.ledger import ledger_for
from dal.cache.seen import FRESH, Seen, Verdict, seen_for
from dal.cache.signing import Signer
from dal.cache.stats import Publisher
from dal.cache.sweeps import Sweep, Sweeper
from dal.cache.trust import Trust
from dal.exceptions import BackendError
from dal.keys import FLIGHT_ENDINGS, Keys, is_flight_lock
from dal.settings import hmac_key_setting, namespace_setting, setting

DEFAULT_PERSISTENT = "sqlite:///dal.sqlite3"
DEFAULT_VOLATILE = "memory://"
#: a cached document lives at most this long even if an invalidation was lost
SAFETY_TTL = 600.0


@dataclass(eq=False)
class Context:
    """The configured stores of this process and the machinery built on them.

    Compared and hashed by identity (each is a live set of connections), so the layers above
    can keep per-context state in a ``weakref.WeakKeyDictionary`` (:mod:`dal.objects.schema`).
    """

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
    _seen: Seen | None = field(init=False, default=None, repr=False)
    _located: StoreURL = field(init=False, repr=False)
    #: commit tokens and durable invalidations; None when both stores are local to this process
    journal: Journal | None = field(init=False, default=None, repr=False)
    sweeper: Sweeper | None = field(init=False, default=None, repr=False)
    #: False when a process-local cache could not notice another process's commits
    caches_objects: bool = field(init=False)
    _change_token: object = field(init=False, default=None, repr=False)
    #: one emptying of a local cache at a time (check_local_cache); new after a fork (_open)
    _flushing: threading.Lock = field(init=False, repr=False)
    _generation: int = field(init=False, default=0, repr=False)
    publisher: Publisher | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.stats = Stats()
        # the file a relative SQLite path names now, in configure(): a forked child reopens it too
        self._located = located("persistent", self.persistent_url)
        self._open()
        # with a shared cache, publish counters so `dal stats` sees every process
        self.publisher = Publisher(self) if self.volatile.shared else None

    def _open(self) -> None:
        self._flushing = threading.Lock()  # a fork may have copied it held
        persistent = self.persistent = open_persistent(self._located)
        self.volatile = open_volatile(self.volatile_url)
        pin = getattr(self.volatile, "pin", None)  # a process-local cache never evicts a lock (memory_lru)
        if pin is not None:
            pin(FLIGHT_ENDINGS, is_flight_lock)
        # cache keys name the store by its identity, learnt on first use (etcd needs a round trip)
        self.keys = Keys(self.namespace, lambda: store_digest(persistent))
        signer = Signer(self.hmac_key)
        # other processes write a shared cache: after losing contact with it, do not trust it
        trust = Trust(self.volatile.nodes() if self.volatile.shared else None)
        self.objects = LeasedCache(self.volatile, signer, self.stats, prefix="object_", trust=trust)
        self.dynamics = LeasedCache(self.volatile, signer, self.stats, prefix="dynamic_", trust=trust)
        if self.objects.placement.replicated:
            # a replica whose entry fails the signature counts as no reply (published statistics
            # are the one unsigned entry under the cache root)
            def verify(key: str, raw: bytes) -> bool:
                return signer.open(key, raw) is not None or key.startswith(self.keys.published_stats())

            self.volatile.verify = verify  # type: ignore[attr-defined]
        self._seen = None  # found on first use: naming the store may take a round trip
        local_cache_of_shared_store = self.persistent.shared and not self.volatile.shared
        self._change_token = self.persistent.change_token()
        self.caches_objects = not (local_cache_of_shared_store and self._change_token is None)
        self._guard = local_cache_of_shared_store and self.caches_objects
        # every context counts its commits; a local cache also checks that none bypassed it
        self._ledger = ledger_for(self.volatile, persistent)
        self._local = not self.volatile.shared
        self._generation = _forks
        if self.sweeper is not None:
            self.sweeper.stop()  # a no-op in a forked child: that one was the parent's
        self.journal = self.sweeper = None
        # a shared cache needs invalidations that outlive their writer, and a store whose
        # answers can be lost needs commits it can recognise afterwards
        if self.volatile.shared or self.persistent.ambiguous_commits:
            self.journal = Journal(self.persistent, self.keys, self.objects, self.stats,
                                   delivers=self.volatile.shared)
            sweep = Sweep(self.journal)
            trust.catch_up = sweep.catch_up
            self.sweeper = Sweeper(sweep)

    def close(self) -> None:
        """Stop this context's background work (journal sweeps, resends, the statistics publisher)."""
        self.objects.close()
        self.dynamics.close()
        if self.sweeper is not None:
            self.sweeper.stop()
        if self.publisher is not None:
            self.publisher.stop()

    @property
    def seen(self) -> Seen:
        """The highest revision this process has seen of each object (monotonic reads).

        One record per store (by identity, however its URL is spelled) and namespace, kept across
        ``configure()`` calls: revisions of one store only grow, whenever they were seen.
        """
        seen = self._seen
        if seen is None:
            seen = self._seen = seen_for(self.keys.cache_root)
        return seen

    @seen.setter
    def seen(self, record: Seen) -> None:
        self._seen = record

    def load_document(self, hybrid: str, guid: str) -> Entry | None:
        """Return the stored document of one object, through the object cache when it is exact.

        A cached document older than a revision of the object this process has seen is never
        returned (monotonic reads): it is dropped and the durable store read instead. Counted
        here, not by the cache: a hit is a document served from the cache, so a dropped one is a
        miss (``object_stale`` or ``object_unsure`` as well), and hits + misses = cached loads.
        """
        if not self.caches_objects:
            return self.persistent.get(self.keys.doc(hybrid, guid))
        self.check_local_cache()

        def load() -> bytes | None:  # the document's key is built only on a miss
            entry = self.persistent.get(self.keys.doc(hybrid, guid))
            return None if entry is None else _to_payload(entry)

        cache_key = self.keys.cached_doc(hybrid, guid)
        objects = self.objects
        payload = objects.get(cache_key)
        if payload is not None:
            entry = _from_payload(payload)
            verdict = self.seen.verdict(hybrid, guid, entry.revision)
            if verdict is FRESH:
                self.stats.add(objects.hits_label)
                return entry
            self._distrusted(verdict, [cache_key])
        self.stats.add(objects.misses_label)  # nothing cached, or nothing this process may serve
        # what the durable store returns is the truth: no verdict on it
        payload = objects.fill(cache_key, load, SAFETY_TTL)
        return None if payload is None else _from_payload(payload)

    def _distrusted(self, verdict: Verdict, cache_keys: list[str]) -> None:
        """Count cached documents this process may not serve (the callers count them as misses);
        drop those known to be stale."""
        self.stats.add(f"object_{verdict.value}", len(cache_keys))
        if verdict is Verdict.STALE:  # older than a revision seen here: evidently stale everywhere
            self.objects.invalidate(*cache_keys)

    def commit(self, checks: Sequence[Check], ops: Sequence[Op],
               invalidate: Sequence[str] = ()) -> CommitResult:
        """Run one transaction on the durable store, then invalidate the cache keys it outdates.

        Through the journal when there is one (see ``dal/cache/journal.py``): a commit whose answer
        was lost is recognised, and ``invalidate`` is delivered even if this process dies.
        Counted in ``stats``.
        """
        self.stats.add("commits")
        try:
            if self.journal is not None:
                return self.journal.commit(checks, ops, invalidate)
            try:
                result = self.persistent.commit(checks, ops)
            except BackendError:
                self.invalidate(*invalidate)  # whatever the store did, nothing it touched may stay cached
                raise
            if result.ok:
                self.invalidate(*invalidate)  # no journal: a local cache keeps and resends what fails
            return result
        finally:
            _count_commit()
            self._ledger.committed()

    def data_stamp(self) -> tuple[int, int, object] | None:
        """Return a marker that is equal at two calls only if nothing was committed in between.

        Any commit counts: through any context of this process (whatever its outcome), or by
        another process (the store's :meth:`change_token`). ``None`` when the store cannot tell
        cheaply (etcd): then nothing read earlier may be taken as current. Read it *before*
        reading data, so a commit that lands during the read changes it. A forked child's stamps
        never equal its parent's: its stores count their change tokens afresh, from the first look.
        """
        token = self.persistent.change_token()
        return None if token is None else (_forks, _last_commit, token)

    def load_documents(self, hybrid: str, guids: list[str]) -> dict[str, Entry]:
        """Return the stored documents of many objects in two batched round trips at most.

        Cached documents come from one multi-get; the rest from one durable multi-get. Misses
        are not cached here: a batch cannot take a lease per key without a round trip per key.
        """
        found: dict[str, Entry] = {}
        if self.caches_objects:
            self.check_local_cache()
            cache_keys = {self.keys.cached_doc(hybrid, guid): guid for guid in guids}
            refused: dict[Verdict, list[str]] = {}
            cached = self.objects.get_many(list(cache_keys), count=False)  # counted here, as load_document
            for cache_key, payload in cached.items():
                entry = _from_payload(payload)
                verdict = self.seen.verdict(hybrid, cache_keys[cache_key], entry.revision)
                if verdict is Verdict.FRESH:
                    found[cache_keys[cache_key]] = entry
                else:
                    refused.setdefault(verdict, []).append(cache_key)
            for verdict, refused_keys in refused.items():
                self._distrusted(verdict, refused_keys)
            self.stats.add(self.objects.hits_label, len(found))  # served from the cache: hits
            self.stats.add(self.objects.misses_label, len(cache_keys) - len(found))
        missing = {self.keys.doc(hybrid, guid): guid for guid in guids if guid not in found}
        if missing:
            for doc_key, entry in self.persistent.get_many(list(missing)).items():
                found[missing[doc_key]] = entry
        return found

    def invalidate(self, *cache_keys: str) -> None:
        """Drop cached entries after a committed write."""
        self.objects.invalidate(*cache_keys)

    def check_local_cache(self) -> None:
        """Drop a process-local cache when another process committed to the shared store, or a
        commit through another context of this process bypassed it (:mod:`dal.cache.ledger`)."""
        # Another thread that sees the same change waits on _flushing until the cache was emptied, then
        # finds the change noted: noting it before emptying would let that thread read an entry the
        # change made stale in between
        if self._local and self._ledger.missed():
            with self._flushing:
                if self._ledger.missed():
                    mark = self._ledger.mark()  # before emptying: a commit landing meanwhile is missed again
                    self._clear_local()
                    self._ledger.synced(mark)
        if not self._guard:
            return
        token = self.persistent.change_token()
        if token != self._change_token:
            with self._flushing:
                if token != self._change_token:
                    self._clear_local()
                    self._change_token = token

    def _clear_local(self) -> None:
        clear = getattr(self.volatile, "clear", None)
        if clear is not None:
            # locks hold no data, so none can be stale: dropping one would let a second caller
            # compute a locked dynamic (or refresh an object) while its holder still does. Values
            # and fill leases go: a fill whose lease went stores nothing (dal/cache/leases.py)
            clear(keep=is_flight_lock, endings=FLIGHT_ENDINGS)
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
    """Return a short digest naming a durable store's data (a file, a cluster, a memory store).

    It comes from the store's identity, not from how its URL spells it, so processes that reach
    one store by different names (a symlink, ``localhost``, another member) share cache keys;
    ``rediss://`` is ``redis://`` over TLS, the same data (processes reaching one Redis with and
    without TLS must see each other's invalidations).
    """
    family = SAME_DATA.get(store.scheme, store.scheme)
    return hashlib.sha256(f"{family}:{store.identity()}".encode()).hexdigest()[:10]


#: schemes that reach the same stored data as another scheme does
SAME_DATA = {"rediss": "redis"}

_context: Context | None = None
_lock = threading.RLock()
#: bumped in every forked child, so a context notices without a system call per use
_forks = 0
#: the number of the latest commit through any context of this process (see Context.data_stamp)
_commit_numbers, _last_commit = itertools.count(1), 0


def _count_commit() -> None:
    # next() on a count is atomic under the GIL, and each number is handed out once: however two
    # threads' assignments interleave, a stamp read before a commit never equals one read after it
    global _last_commit
    _last_commit = next(_commit_numbers)


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
    and ``dal``. Only unset ones do: an empty setting (an argument or a variable set to nothing)
    is refused (see :func:`setting`). Everything is validated now: a bad URL, scheme or option
    raises ConfigurationError.
    """
    global _context
    persistent_url = parse_url(setting(persistent, "DAL_PERSISTENT_URL", DEFAULT_PERSISTENT,
                                       "persistent URL"))
    volatile_url = parse_url(setting(volatile, "DAL_VOLATILE_URL", DEFAULT_VOLATILE, "volatile URL"))
    name = namespace_setting(namespace)
    context = Context(persistent_url, volatile_url, name, hmac_key_setting(hmac_key))
    with _lock:
        if _context is not None:
            _context.close()
        _context = context
    return context


def current() -> Context:
    """Return the current context, configuring the defaults on first use."""
    context = _context
    # every dal read starts here: when neither configuring nor a fork is due, no call at all
    if context is None or context._generation != _forks:
        if context is None:
            with _lock:  # threads meeting a first use at once share the one the first makes
                context = _context or configure()
        context.reopen_if_forked()
    return context
