"""Redis as a volatile store: values stamped for compare-and-set, TTLs in milliseconds.

Each value is stored as an 8-byte random stamp followed by the value. ``gets`` returns the stamp as
the compare-and-set token and ``cas`` stores only while the stored value still begins with it (one
Lua script), so a value rewritten in between, even with the same bytes, gets a new stamp and fails
the cas (no ABA). Keys are prefixed ``dal:c:`` so the cache can share a database with other data,
the durable store's included.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import ClassVar

import redis

from dal.backends.base import HIT_SUFFIX, HIT_TTL, CacheFullError, RefusedError
from dal.backends.redis.connection import (
    CACHE,
    ERRORS,
    MAX_PX,
    OPTIONS,
    Opened,
    Raw,
    RedisClient,
    SettingRefusedError,
    open_redis,
)
from dal.backends.redis.limits import SCREEN, ServerModeRefused, byte_length
from dal.backends.redis.restarts import Restarts, run_id_of
from dal.backends.redis.scripts import CAS, COUNTED_GET
from dal.backends.url import StoreURL, on_off
from dal.exceptions import BackendError, ConfigurationError
from dal.values import clipped_repr

#: seconds a request may take: short, a slow cache is a miss (twice memcached's, since one Redis server
#: may also run the durable store's commit scripts, each of which holds it for its duration)
DEFAULT_TIMEOUT = 0.5
STAMP = 8
#: keys per DEL in delete_many (one pipeline carries them all)
DELETE_BATCH = 1000
#: the PX of a negative TTL: the write leaves the key absent
EXPIRED = -1
#: seconds the check of the server when the cache is opened waits for each answer (connecting
#: too): a frozen server costs configure() about this, not the cache's whole timeout
OPEN_WAIT = 0.1


def milliseconds(ttl: float) -> int | None:
    """Return the PX of a TTL in seconds, at least 1; ``None`` for 0 (no expiry) and -1 for a negative
    TTL, which stores something expired at once (memcached's meaning): nothing is left to read.

    A TTL past :data:`MAX_PX` (an infinite one too) is ``None`` as well, as memcached's is: Redis
    refuses a PX whose expiry time overflows, and never expiring outlives it all the same."""
    if ttl == 0 or ttl * 1000 > MAX_PX:
        return None
    return max(1, math.ceil(ttl * 1000)) if ttl > 0 else EXPIRED


def _px(expiry: int | None) -> tuple[str | int, ...]:
    """Return SET's expiry arguments for :func:`milliseconds`' answer (none for no expiry)."""
    return () if expiry is None else ("PX", expiry)


class RedisCache(RedisClient):
    """A :class:`~dal.backends.base.VolatileStore` on one Redis server."""

    scheme: ClassVar[str] = "redis"
    shared: ClassVar[bool] = True

    def __init__(self, url: StoreURL, opened: Opened) -> None:
        super().__init__(url, opened)
        self._cas = opened.client.register_script(CAS)
        self._counted_get = opened.client.register_script(COUNTED_GET)
        #: count every hit exactly (``?hits=1``): an INCR in the same script as the read
        self.count_hits = False
        #: which start of the server this cache trusts (see :mod:`dal.backends.redis.restarts`)
        self.restarts = Restarts(self._where)

    def reached_as(self) -> tuple[str, int]:
        """Return where this cache's client points and its database (see ``RedisStore.evicts_from``)."""
        return self._where, self._db

    @classmethod
    def from_url(cls, url: StoreURL) -> RedisCache:
        """Open the Redis server a URL names, and refuse it with ConfigurationError when it is not a
        standalone server (see :mod:`~dal.backends.redis.limits`): one connection, made now and
        closed, that waits at most :data:`OPEN_WAIT` seconds for each step. A server that does
        not answer so soon is checked by the first connection that reaches it, which it then
        fails, as a dead server's does.

        ``?hits=1`` counts every hit exactly, in the script that reads (one round trip still).
        """
        url.check_options((*OPTIONS, "hits"))
        hits = url.option("hits", on_off, False)
        plain = replace(url, options=MappingProxyType({k: v for k, v in url.options.items() if k != "hits"}))
        cache = cls(url, open_redis(plain, DEFAULT_TIMEOUT))
        cache.count_hits = hits
        # every connection the pool opens checks which start of the server it reached (none is open
        # yet), and, until one has, which kind of server it is
        cache._client.connection_pool.connection_kwargs["redis_connect_func"] = cache.restarts.connected
        try:
            cache._calls.probe(min(cache.timeout, OPEN_WAIT))
        except ServerModeRefused as exc:
            cache.close()
            raise ConfigurationError(str(exc)) from None
        except ERRORS as exc:
            # credentials or a database number the server refuses: a setting to correct, which no retry
            # mends (SettingRefusedError, as the durable store's); down or slow: a miss, and its first
            # connection checks it
            failure = cache._probe_failure("check of the server", exc, first=True)
            if isinstance(failure, SettingRefusedError):
                cache.close()
                raise failure from exc
        return cache

    # --- reads ----------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        if self.count_hits:
            return self.get_many([key]).get(key)
        raw: Raw = self._command("get", "GET", CACHE + key)
        return None if raw is None else raw[STAMP:]

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Return the present values among ``keys`` in one MGET (a script counting hits with ``?hits=1``)."""
        if not self.count_hits:
            return self.get_many_uncounted(keys)
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        sent = [CACHE + key for key in wanted]
        raws: list[Raw] = self._script("get_many", self._counted_get, len(sent) * 2, *sent,
                                       *[name + HIT_SUFFIX for name in sent], HIT_TTL)
        # Lua returns false for an absent key
        return {key: raw[STAMP:] for key, raw in zip(wanted, raws, strict=True) if raw}

    def get_many_uncounted(self, keys: Sequence[str]) -> dict[str, bytes]:
        """As :meth:`get_many`, counting no hit (statistics' own reads, administration): one MGET."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        raws: list[Raw] = self._command("get_many", "MGET", *[CACHE + key for key in wanted])
        return {key: raw[STAMP:] for key, raw in zip(wanted, raws, strict=True) if raw is not None}

    def gets(self, key: str) -> tuple[bytes | None, object]:
        raw: Raw = self._command("gets", "GET", CACHE + key)
        return (None, None) if raw is None else (raw[STAMP:], raw[:STAMP])

    # --- writes ---------------------------------------------------------------------

    def set(self, key: str, value: bytes, ttl: float) -> bool:
        expiry = milliseconds(ttl)
        stamped = _stamped(value)  # a value that is not bytes is refused, even stored expired
        if expiry == EXPIRED:  # stored and expired at once: what it replaced is gone
            self.delete(key)
            return True
        if not self._fits(key, stamped):  # never stored: the old value must not stay for readers
            self._drop(key)
            return False
        try:
            self._command("set", "SET", CACHE + key, stamped, *_px(expiry))
        except CacheFullError:  # not stored, so the old value must not stay for readers
            self.delete(key)
            return False
        return True

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        expiry = milliseconds(ttl)
        stamped = _stamped(value)  # a value that is not bytes is refused, even stored expired
        if expiry == EXPIRED:  # added only where absent, and expired at once: nothing changes
            return not self._command("add", "EXISTS", CACHE + key)
        if not self._fits(key, stamped):  # never stored (what is there stays: add replaces nothing)
            return False
        # b"OK", or None where the key exists; CacheFullError (raised, not False) when the server is full:
        # nothing tells whether the key is free, and an add taking a lock must not read it as another's
        return self._command("add", "SET", CACHE + key, stamped, *_px(expiry), "NX") is not None

    def cas(self, key: str, value: bytes, token: object, ttl: float) -> bool:
        if not isinstance(token, bytes) or len(token) != STAMP:  # gets found nothing (or not gets' token):
            return False  # there is no write to compare against
        expiry = milliseconds(ttl) or 0
        stamped = _stamped(value)
        if not self._fits(key, stamped):  # never stored, as a cas over a newer write is not
            self._drop(key)
            return False
        try:
            return bool(self._script("cas", self._cas, 1, CACHE + key, token, stamped, expiry))
        except CacheFullError:  # not stored, as one too large is not
            self._drop(key)
            return False

    def _failure(self, what: str, exc: BaseException, *, whole: bool = True) -> BackendError:
        """As a store's, but a write refused for the server's maxmemory (with noeviction) is a
        :class:`CacheFullError`: not stored, a miss as a value over its size limit is, never a failure
        that makes the cache distrust the server."""
        failure = super()._failure(what, exc, whole=whole)
        if isinstance(failure, RefusedError) and _out_of_memory(exc):
            return CacheFullError(f"{self.url} is at its maxmemory: {failure}")
        return failure

    def _fits(self, key: str, stamped: bytes) -> bool:
        """Tell whether the server takes ``key`` and its stamped value (see
        :mod:`~dal.backends.redis.limits`): a value it refuses is not cached, as one over
        memcached's item limit is not, rather than fail the connection it is sent on."""
        if len(stamped) < SCREEN and len(key) < SCREEN:
            return True
        return self._too_long([_sent_key(key), (f"the value of {clipped_repr(key)} (with its stamp)",
                                                len(stamped))]) is None

    def _drop(self, key: str) -> None:
        """Delete the old value of ``key``, whose new one is not stored; none is there when the key
        itself is longer than the server takes (and DEL would carry it)."""
        if len(key) < SCREEN or self._too_long([_sent_key(key)]) is None:
            self.delete(key)

    def delete(self, key: str) -> None:
        self._command("delete", "DEL", CACHE + key)

    def delete_many(self, keys: Sequence[str]) -> list[str]:
        """Delete ``keys`` in one pipeline; on a failure return them all (which were deleted is unknown)."""
        if not keys:
            return []
        sent = [CACHE + key for key in dict.fromkeys(keys)]
        try:
            self._calls.pipeline([("DEL", *sent[start:start + DELETE_BATCH])
                                  for start in range(0, len(sent), DELETE_BATCH)], transaction=False)
        except ERRORS:
            return list(keys)
        return []

    def nodes(self) -> list[str]:
        """Return ``[""]``: one server holds every entry."""
        return [""]

    def node(self, key: str) -> str:
        return ""

    # --- a restarted server (see :mod:`dal.backends.redis.restarts`) ---------------------------

    def settle_restart(self, marker: str, prefix: str, keep: Callable[[str], bool]) -> str | None:
        """Make sure no entry under ``prefix`` predates this start of the server, then trust it.

        The server's ``run_id`` is new at every start; ``marker`` holds the one under which the
        entries under ``prefix`` were last known current. Where they differ, the server started
        again since (from a snapshot or an AOF that may predate deletes it had confirmed, or as a
        promoted replica that missed some): every entry under ``prefix`` goes, then ``marker``
        takes the new ``run_id``. Return why entries were removed: ``"restarted"`` (another
        ``run_id`` was marked) or ``"unmarked"`` (none was: the namespace's first check of this
        server, or the mark was evicted), else ``None``. A restart while this runs
        raises BackendError: nothing is trusted then. A server that does not let the client run
        ``INFO`` is not checked. Keys ``keep`` accepts stay (single-flight locks, which hold no data:
        removing one would let a second caller compute what its holder computes).
        """
        self.restarts.suspend()  # connections to any start may open while this finds out which
        try:
            found = self._calls.pipeline([("INFO", "server"), ("GET", CACHE + marker)], transaction=False,
                                         errors_inline=True)
        except ERRORS as exc:
            raise self._failure("restart check", exc, whole=False) from exc
        if isinstance(found[0], redis.ResponseError):
            return None  # INFO renamed, or not granted by the ACL: a restart cannot be told (documented)
        run_id = run_id_of(found[0])
        cleared = None if found[1] == run_id.encode() else "unmarked" if found[1] is None else "restarted"
        if cleared is not None:
            self.clear_under(prefix, keep)
        confirmed = self._pipeline("restart check", [("SET", CACHE + marker, run_id), ("INFO", "server")],
                                   transaction=False)
        if run_id_of(confirmed[1]) != run_id:
            raise BackendError(f"redis {self._where} restarted while its entries were checked; "
                               "the next catch-up checks again")
        self.restarts.trust(run_id)
        return cleared

    def clear_under(self, prefix: str, keep: Callable[[str], bool] = lambda key: False) -> None:
        """Delete every entry under ``prefix`` but those whose key ``keep`` accepts (SCAN, then UNLINK
        per batch found)."""
        pattern = _glob_escape(CACHE + prefix) + "*"
        try:
            cursor: Raw = b"0"
            while True:
                cursor, names = self._calls.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                names = [name for name in names if not keep(name[len(CACHE):].decode(errors="replace"))]
                if names:
                    self._calls.call("UNLINK", *names)
                if int(cursor) == 0:
                    return
        except ERRORS as exc:
            raise self._failure("scan", exc) from exc

    # --- administration (``dal cache``) --------------------------------------------------

    def list_entries(self, prefix: str) -> list[ListedEntry]:
        """Return every entry under ``prefix``: SCAN, then per batch one pipeline of MEMORY USAGE,
        OBJECT IDLETIME and PTTL (none of which counts as an access) and the hit counters."""
        found: list[ListedEntry] = []
        pattern = _glob_escape(CACHE + prefix) + "*"
        try:
            batch: list[bytes] = []
            cursor: Raw = b"0"
            while True:
                cursor, names = self._calls.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                for name in names:
                    if not name.endswith(HIT_SUFFIX.encode()):
                        batch.append(name)
                    if len(batch) >= 500:
                        found += self._describe(batch)
                        batch = []
                if int(cursor) == 0:
                    break
            found += self._describe(batch)
        except ERRORS as exc:
            raise self._failure("scan", exc) from exc
        return found

    def _describe(self, names: list[bytes]) -> list[ListedEntry]:
        """Describe ``names``. An entry the server does not size (``MEMORY USAGE`` refused: fakeredis,
        or a Redis with the command renamed away) is charged its key's and value's lengths instead
        (:meth:`_lengths`), never 0; an entry without ``OBJECT IDLETIME`` has no known last access."""
        if not names:
            return []
        answers = self._calls.pipeline(
            [command for name in names for command in (
                ("MEMORY", "USAGE", name, "SAMPLES", 0), ("OBJECT", "IDLETIME", name), ("PTTL", name),
                ("GET", name + HIT_SUFFIX.encode()))],
            transaction=False, errors_inline=True)
        unsized = [name for index, name in enumerate(names) if not isinstance(answers[4 * index], int)]
        lengths, untouched = self._lengths(unsized) if unsized else ({}, True)
        now = time.time()
        listed: list[ListedEntry] = []
        for index, name in enumerate(names):
            size, idle, pttl, hits = answers[4 * index:4 * index + 4]
            if not isinstance(pttl, int) or pttl == -2:
                continue  # gone meanwhile
            if name in lengths and not untouched:
                idle = None  # the length was read as an access: from now on, no access time holds
            listed.append(ListedEntry(
                name.decode("utf-8", "surrogateescape")[len(CACHE):],
                size if isinstance(size, int) else len(name) + lengths.get(name, 0),
                int(hits) if hits is not None and not isinstance(hits, Exception)
                else (0 if self.count_hits else None),
                now - idle if isinstance(idle, int) else None,
                None if pttl < 0 else now + pttl / 1000))
        return listed

    def _lengths(self, names: list[bytes]) -> tuple[dict[bytes, int], bool]:
        """Return the ``STRLEN`` of each of ``names`` (the stamped value's bytes), and whether they
        were read without counting as an access (``CLIENT NO-TOUCH``, Redis 7.2 and fakeredis)."""
        answers = self._calls.pipeline([("CLIENT", "NO-TOUCH", "ON"), *[("STRLEN", name) for name in names],
                                        ("CLIENT", "NO-TOUCH", "OFF")], transaction=False, errors_inline=True)
        lengths = {name: length for name, length in zip(names, answers[1:-1], strict=True)
                   if isinstance(length, int)}
        return lengths, not isinstance(answers[0], Exception)


@dataclass(frozen=True, slots=True)
class ListedEntry:
    """One cache entry as the server reports it."""

    key: str
    #: bytes Redis uses for it (MEMORY USAGE: key, value and their overhead); where the server does
    #: not answer MEMORY USAGE, the key's and the (stamped) value's lengths
    size: int
    #: exact hits when counted (``?hits=1``), else ``None``
    hits: int | None
    #: unix time of the last access (from OBJECT IDLETIME, to the second); ``None`` under an LFU policy,
    #: where the server does not answer OBJECT IDLETIME, or where the size had to be read by an access
    last_access: float | None
    expires_at: float | None


def _out_of_memory(exc: BaseException) -> bool:
    """Tell whether Redis refused a write for its maxmemory: redis-py turns the ``OOM`` reply into
    OutOfMemoryError, matched by name (the stubs mypy reads lack it)."""
    return isinstance(exc, redis.ResponseError) and (
        type(exc).__name__ == "OutOfMemoryError" or str(exc).startswith("OOM"))


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def _sent_key(key: str) -> tuple[str, int]:
    """Return how a size refusal names a cache key, and its bytes as its longest command sends it: a
    read counting hits (``?hits=1``, in this process or another) sends its counter's key too."""
    return f"the key {clipped_repr(key)}", byte_length(CACHE + key + HIT_SUFFIX)


def _stamped(value: bytes) -> bytes:
    """Return ``value`` behind a fresh random stamp, the token of this one write."""
    if not isinstance(value, bytes):
        raise TypeError(f"cache values must be bytes, not {type(value).__name__}")
    return os.urandom(STAMP) + value
