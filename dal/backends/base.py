"""What a store is: the two protocols backends implement, and the values they exchange.

Backends are dumb on purpose: they move bytes under string keys and offer exactly the primitives
the object layer needs. Serialization, key layout, TTL policy and cache invalidation all live above
them (``dal/cache/leases.py``, ``dal/objects/transaction.py``); a backend never knows about hybrids.
Absent values are ``None`` here: a stored value is always ``bytes`` (a JSON document).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from dal.backends.url import StoreURL
from dal.exceptions import BackendError, InvalidValueError


@dataclass(frozen=True, slots=True)
class Entry:
    """A durable value and the revision at which it was last modified (always > 0)."""

    value: bytes
    revision: int


# --- transaction checks -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Revision:
    """Holds when ``key`` was last modified at ``revision``; ``revision=0`` means absent."""

    key: str
    revision: int


@dataclass(frozen=True, slots=True)
class Exists:
    """Holds when ``key`` is present, whatever its revision."""

    key: str


@dataclass(frozen=True, slots=True)
class PrefixEmpty:
    """Holds when no key starts with ``prefix``."""

    prefix: str


@dataclass(frozen=True, slots=True)
class PrefixUnchanged:
    """Holds when no key under ``prefix`` was written after ``revision`` (vacuously when empty).

    A caller that scanned a prefix passes the highest revision it saw there, so the commit
    fails if a key was added or rewritten under it since the scan.
    """

    prefix: str
    revision: int


Check = Revision | Exists | PrefixEmpty | PrefixUnchanged


# --- transaction operations ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``value`` under ``key``."""

    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``; removing an absent key is not an error."""

    key: str


@dataclass(frozen=True, slots=True)
class DeletePrefix:
    """Remove every key that starts with ``prefix``."""

    prefix: str


@dataclass(frozen=True, slots=True)
class Evict:
    """Remove ``key`` from the cache a store keeps in its own database (see :class:`EvictingStore`);
    sent only to a store whose ``evicts_from`` accepted that cache."""

    key: str


Op = Put | Delete | DeletePrefix | Evict


@dataclass(frozen=True, slots=True)
class CommitResult:
    """The outcome of :meth:`PersistentStore.commit`.

    When ``ok``, ``revision`` is the revision every written key now carries. When not ``ok``, nothing
    was written by this answer, ``failed`` holds the indexes (into ``checks``) of every check that did
    not hold, ascending, and ``current`` the present entries of the keys named by failing ``Revision``/
    ``Exists`` checks (absent there: absent from the store), so a caller can merge without another round
    trip; ``unanswered``: an earlier send of it got no answer and may apply once those checks hold again."""

    ok: bool
    revision: int = 0
    failed: tuple[int, ...] = ()
    current: Mapping[str, Entry] = field(default_factory=dict)
    unanswered: bool = False


class RefusedError(BackendError):
    """The store refused a request before applying any of it: sent again as it is, it fails the
    same way until what the message names is fixed, and retrying it is safe (nothing was written).

    The commit journal (``dal/cache/journal.py``) does not fence a refused commit as one that may
    have been applied.
    """

    nothing_written: ClassVar[bool] = True


class TooLargeError(RefusedError):
    """The store refused a request for its size (etcd's ``--max-request-bytes``): nothing was written,
    and the same request always fails; what it writes must be split, or made smaller."""


class StoreReplacedError(RefusedError):
    """The store lost its data and its name since this client read it: ``configure()`` again."""


class CacheFullError(RefusedError):
    """A cache refused a write for its memory limit (Redis's ``maxmemory`` with ``noeviction``): not
    stored, a miss, but no sign the server fails; a lock not taken for it is not held by another."""


# --- leadership ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leadership:
    """The outcome of :meth:`PersistentStore.acquire_leadership`: whether ``owner`` now leads ``role``.

    ``holder`` is the owner token of whoever leads when known (``owner`` itself once acquired);
    ``handle`` names this acquisition of the lease (an etcd lease id, elsewhere a random token; 0
    for a lease not acquired): renewing and releasing match it, not the owner alone, so a lease
    that expired, then was acquired again by the same owner, neither renews nor releases the new one.
    """

    role: str
    owner: str
    ttl: float
    acquired: bool
    holder: str | None = None
    handle: int = 0


def evaluate_checks(checks: Sequence[Check], lookup: Callable[[str], Entry | None],
                    newest: Callable[[str], int]) -> tuple[tuple[int, ...], dict[str, Entry]]:
    """Return the indexes of the checks that fail and the present entries of their keys, for stores that
    evaluate checks themselves in their own transaction (``newest``: the highest revision under a prefix,
    0 when there is none)."""
    failed: list[int] = []
    current: dict[str, Entry] = {}
    for index, check in enumerate(checks):
        if isinstance(check, PrefixEmpty):
            holds = newest(check.prefix) == 0
        elif isinstance(check, PrefixUnchanged):
            holds = newest(check.prefix) <= check.revision
        elif isinstance(check, (Revision, Exists)):
            entry = lookup(check.key)
            holds = entry is not None if isinstance(check, Exists) else \
                (entry.revision if entry is not None else 0) == check.revision
            if not holds and entry is not None:
                current[check.key] = entry
        else:
            raise TypeError(f"unknown check {check!r}")
        if not holds:
            failed.append(index)
    return tuple(failed), current


@runtime_checkable
class PersistentStore(Protocol):
    """A durable, transactional key-value store.

    Keys are ``str`` (UTF-8 when they hit the wire), ordered by code point for scans.
    Every commit that writes gets a revision strictly greater than any earlier one, and
    each key written by it carries that revision (etcd creates no revision for a commit
    that writes nothing). Ops of one commit apply in order. A failure or timeout raises ``BackendError``
    with the driver's error as its ``__cause__``.
    """

    #: the URL scheme this backend registers under
    scheme: ClassVar[str]
    #: other processes may commit to the same data concurrently
    shared: ClassVar[bool]
    #: a commit that raises BackendError may still have been applied (a store across a network,
    #: whose answer can be lost after it applied the commit); the layer above then finds out
    ambiguous_commits: ClassVar[bool]
    url: StoreURL
    #: seconds one request may take before it raises BackendError
    timeout: float

    @classmethod
    def from_url(cls, url: StoreURL) -> PersistentStore:
        """Open the store a parsed URL names; unknown or badly typed options raise ConfigurationError."""
        ...

    def get(self, key: str) -> Entry | None:
        """Return the entry under ``key``, or ``None``."""
        ...

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        """Return the present entries among ``keys`` in one round trip."""
        ...

    def scan(self, prefix: str, *, start_after: str | None = None,
             limit: int | None = None) -> list[tuple[str, Entry]]:
        """Return up to ``limit`` ``(key, entry)`` pairs under ``prefix``, in key order.

        ``start_after`` resumes a scan after the last key of a previous batch; ``limit <= 0``
        returns nothing, ``None`` everything.
        """
        ...

    def scan_keys(self, prefixes: Sequence[str]) -> dict[str, list[str]]:
        """Return, for each prefix, every key under it in key order (no values).

        All prefixes are read as of one instant, in one round trip where the store can (an
        index lookup of ``IN [a, b, c]`` is three prefixes, one request).
        """
        ...

    def commit(self, checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        """Apply every op atomically if every check holds; otherwise apply nothing."""
        ...

    def acquire_leadership(self, role: str, owner: str, ttl: float) -> Leadership:
        """Make ``owner`` the one leader of ``role`` for ``ttl`` seconds, unless another leads.

        At most one owner leads a role at a time, across every client of the stored data.
        Taken only when nobody leads, when the last leader's lease expired (it did not renew
        within ``ttl`` seconds: it died, or lost the store), or when ``owner`` leads already
        (then it is renewed for ``ttl`` seconds from now: the same lease, which the earlier
        Leadership still renews and releases, except on etcd asked for another TTL, which moves
        the key to a fresh lease). The result says whether it was taken, and who leads otherwise;
        its ``ttl`` is how long the lease lasts unrenewed (on etcd, ``ttl`` rounded up to whole
        seconds and at least etcd's minimum).
        Badly typed arguments raise ConfigurationError (:func:`dal.backends.leadership.lease_ttl`).
        """
        ...

    def renew_leadership(self, lease: Leadership) -> bool:
        """Extend an acquired lease by its ``ttl`` from now; ``False`` when it no longer holds.

        A lease that expired before this call no longer holds, even if nobody took it since, or
        if its owner acquired the role again since (that is another lease): its owner must acquire
        again (so it knows it may have been replaced meanwhile).
        Anything but a :class:`Leadership` raises ConfigurationError, here and in release.
        """
        ...

    def release_leadership(self, lease: Leadership) -> None:
        """Give the lease up at once, so a standby can lead without waiting for it to expire.

        Releasing a lease that no longer holds (expired, taken by another, or expired and then
        acquired again by its owner, a new lease) or was never acquired does nothing.
        """
        ...

    def identity(self) -> str:
        """Return a name of the stored data itself, the same however the store is reached.

        Two URLs naming one store (a file through a symlink, ``localhost`` and ``127.0.0.1``,
        different members of one etcd cluster) give one identity; two stores never share one.
        Cache keys are scoped by it. May take a round trip the first time.
        """
        ...

    def change_token(self) -> object:
        """Return a cheap marker that changes whenever another connection commits.

        A process-local cache in front of a shared store compares it to know whether what
        it holds may be stale. Stores that cannot tell cheaply return ``None``.
        """
        ...

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


@runtime_checkable
class EvictingStore(Protocol):
    """A durable store that can also delete cache entries inside a commit (an optional capability).

    Redis serving both roles from one database: a commit's cache entries go with it (``Evict``
    ops), at the instant of the commit and without a round trip of their own.
    """

    def evicts_from(self, cache: object) -> bool:
        """Tell whether ``Evict`` ops of a commit can delete the entries of ``cache`` (a volatile store)."""
        ...


#: a cache key's hit counter (a shared cache counting hits, ``?hits=1``) is the key with this
#: suffix, kept :data:`HIT_TTL` seconds after its first hit; ``dal cache rm`` deletes both
HIT_SUFFIX = "/#hits"
HIT_TTL = 24 * 3600


@runtime_checkable
class VolatileStore(Protocol):
    """A cache: values expire after their TTL and may vanish at any time.

    ``ttl`` is in seconds; ``0`` means no expiry. Values are ``bytes``. A compare-and-set
    token from :meth:`gets` is opaque to callers. A server failure raises ``BackendError``
    quickly (within the store's short timeout); the layer above treats it as a miss.
    """

    scheme: ClassVar[str]
    #: other processes see the same entries
    shared: ClassVar[bool]
    url: StoreURL

    @classmethod
    def from_url(cls, url: StoreURL) -> VolatileStore:
        """Open the store a parsed URL names; unknown or badly typed options raise ConfigurationError."""
        ...

    def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None``."""
        ...

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Return the present values among ``keys``, batched."""
        ...

    def gets(self, key: str) -> tuple[bytes | None, object]:
        """Return the value and a token for :meth:`cas` (``(None, None)`` when absent)."""
        ...

    def set(self, key: str, value: bytes, ttl: float) -> bool:
        """Store unconditionally; ``False`` when the value could not be stored (too large), in
        which case the key's old value is removed too, so readers never see it."""
        ...

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store only if ``key`` is absent; ``True`` when stored."""
        ...

    def cas(self, key: str, value: bytes, token: object, ttl: float) -> bool:
        """Store only if ``key`` is unchanged since :meth:`gets` returned ``token`` (``None``: False)."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        ...

    def nodes(self) -> list[str]:
        """Return the names of the servers entries are spread over (``[""]`` for a single one)."""
        ...

    def node(self, key: str) -> str:
        """Return the name of the server that holds ``key`` (one of :meth:`nodes`)."""
        ...

    def delete_many(self, keys: Sequence[str]) -> list[str]:
        """Remove every key in ``keys``; return those whose removal was not confirmed.

        Never raises for a server failure: each server's share is sent on its own, even to a
        server recently marked dead (an invalidation must not wait for a timer), and the keys of
        a server that failed are returned so the caller can resend them.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def utf8(text: str, store: str) -> bytes:
    """Return a key (or any text a store takes as bytes) in UTF-8; one holding a lone surrogate, which
    UTF-8 cannot encode, raises InvalidValueError naming it and the ``store`` it was for."""
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidValueError(f"cannot send {text!r} to {store}: UTF-8 cannot encode its lone "
                                f"surrogate {text[exc.start:exc.end]!r}") from exc
