"""memcached as a volatile store: :class:`MemcachedCache`, and how TTLs are sent (keys: :mod:`.keys`)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

from pymemcache.exceptions import MemcacheServerError

from dal.backends.base import HIT_SUFFIX, HIT_TTL
from dal.backends.memcached.client import ERRORS, HashClient, Rendezvous
from dal.backends.memcached.dumps import ListedEntry, metadump, read_back
from dal.backends.memcached.keys import counter_key, encoded_key, may_be_under, wire_bytes, wire_key
from dal.backends.memcached.text import ProtocolError, TextConnection
from dal.backends.url import StoreURL, on_off, plain_float
from dal.exceptions import BackendError, ConfigurationError

DEFAULT_PORT = 11211
#: memcached's default item size limit (-I 1m); an item also holds its key and a header
ITEM_LIMIT = 1024 * 1024
ITEM_OVERHEAD = 512
R = TypeVar("R")
#: keys whose server node() remembers before it starts over
NODE_MEMO = 100_000
#: memcached reads an expiry above 30 days as a unix timestamp
RELATIVE_TTL_LIMIT = 30 * 24 * 3600
#: the options of a memcached:// URL with one copy of each entry
OPTIONS = ("timeout", "connect_timeout", "dead_timeout", "hits")
#: the longest timeout an option may set, in seconds: every wait is bounded (poll takes its
#: milliseconds as a C int)
MAX_SECONDS = 3600.0
#: memcached's answer to a value over its item size limit (-I), ``SERVER_ERROR object too large for
#: cache`` (memcached's proto_text.c), which pymemcache raises as MemcacheServerError carrying the
#: text after ``SERVER_ERROR``; compared whole, as the server's typed answer, never searched
SERVER_TOO_LARGE = b"object too large for cache"


def expiry(ttl: float) -> int:
    """Return memcached's exptime for a TTL in seconds (0 = never; negative = already expired).

    Never shorter than ``ttl``, less than 2 s longer (``ceil(ttl) + 1``): memcached's clock ticks once
    a second, so an item given exptime N lives between N-1 and N seconds (measured: 0.77 to 0.95 s
    for 1), and a lock or lease that lapsed early would let a second caller in. Above 30 days memcached reads
    an absolute unix time, which it parses as a signed 32-bit number: one past 2**31 - 1
    (2038-01-19) would be stored already expired, without an error, so such a TTL is sent as 0
    (never expires), which outlives it too; an infinite TTL as well. A NaN TTL is sent as -1,
    already expired, as a negative one is: Redis's backend stores it so too.
    """
    latest = 2**31 - 1  # the latest unix time memcached takes as an expiry
    if ttl == 0 or ttl == math.inf:
        return 0
    if not ttl > 0:  # negative, or NaN (which compares false with every number)
        return -1
    seconds = math.ceil(ttl) + 1
    if seconds <= RELATIVE_TTL_LIMIT:
        return seconds
    # int() truncates the clock by less than the second added above
    expires = int(time.time()) + seconds
    return expires if expires <= latest else 0


def url_settings(url: StoreURL,
                 options: tuple[str, ...]) -> tuple[tuple[tuple[str, int], ...], dict[str, float]]:
    """Return the servers and the timeouts (``timeout``, ``connect_timeout``, ``dead_timeout``,
    positive seconds) a ``memcached://`` URL names, refusing options outside ``options``."""
    url.check_options(options)
    if url.user is not None or url.password is not None or url.path not in ("", "/"):
        raise ConfigurationError(f"{url}: memcached:// URLs take no user, password or path; "
                                 "write memcached://host:port[,host:port...]")
    servers = url.require_hosts(DEFAULT_PORT)
    seconds = {name: url.option(name, plain_float, default)
               for name, default in (("timeout", 0.25), ("connect_timeout", 0.25), ("dead_timeout", 5.0))}
    for name, value in seconds.items():
        if not 0 < value <= MAX_SECONDS:
            raise ConfigurationError(f"option {name} in {url} must be a positive number of seconds, "
                                     f"at most {MAX_SECONDS:g}")
    return servers, seconds


class MemcachedCache:
    """A :class:`~dal.backends.base.VolatileStore` on one or more memcached servers."""

    scheme: ClassVar[str] = "memcached"
    shared: ClassVar[bool] = True

    def __init__(self, url: StoreURL, servers: Sequence[tuple[str, int]], *, timeout: float,
                 connect_timeout: float, dead_timeout: float) -> None:
        self.url = url
        self._where = ", ".join(f"{host}:{port}" for host, port in servers)
        self._servers = tuple(servers)
        #: count every hit exactly on the server (``?hits=1``; see :mod:`~dal.backends.memcached.dumps`)
        self.count_hits = url.option("hits", on_off, False)
        # the hit path: with one server, a get goes over a per-thread connection of our own,
        # skipping HashClient's routing, its pool's lock and pymemcache's per-call work (together
        # about 40% of a cached load, measured with bench/); every other command uses pymemcache
        self._single = servers[0] if len(servers) == 1 else None
        self._nodes: dict[str, str] = {}
        self._timeouts = (timeout, connect_timeout)
        self._dead_timeout = dead_timeout
        self._dead_until = 0.0
        self._dead_cause = ""  # the failure that started the skip, which the skip names
        self._local = threading.local()
        self._client = HashClient(
            list(servers), hasher=Rendezvous, use_pooling=True,
            timeout=timeout, connect_timeout=connect_timeout,
            # fail once, then skip the server: retrying a dead cache only adds latency
            retry_attempts=0, dead_timeout=dead_timeout, ignore_exc=False,
            # set/add/cas must report whether they stored
            default_noreply=False)

    @classmethod
    def from_url(cls, url: StoreURL) -> MemcachedCache:
        """Open the memcached servers a URL names (connections are made on first use)."""
        servers, seconds = url_settings(url, OPTIONS)
        return cls(url, servers, **seconds)

    def __repr__(self) -> str:
        return f"MemcachedCache({str(self.url)!r})"

    # --- reads ----------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        if self._single is not None:
            # the hit path of every cached load: ``_direct`` written out (keep the two in step), so a
            # hit makes no closure and two calls less; counted hits, a new connection and a skipped
            # server (which raises) go there
            if self.count_hits or (self._dead_until and time.monotonic() < self._dead_until):
                return self._direct_get(key)
            connection: TextConnection | None = getattr(self._local, "connection", None)
            if connection is not None:
                try:
                    return connection.get(wire_bytes(key))
                except (OSError, ProtocolError) as exc:
                    raise self._failed("get", connection, exc) from exc
                except BaseException:
                    self._drop(connection)  # interrupted: see _drop
                    raise
            return self._direct_get(key)  # opens this thread's connection
        try:
            value: bytes | None = self._client.get(wire_key(key))
        except ERRORS as exc:
            raise self._error("get", exc) from exc
        if value is not None and self.count_hits:
            self._count([counter_key(key)])
        return value

    def _direct_get(self, key: str) -> bytes | None:
        sent = wire_bytes(key)
        if self.count_hits:
            counter = counter_key(key).encode()
            return self._direct("get", lambda connection: connection.get_counted(sent, counter))
        return self._direct("get", lambda connection: connection.get(sent))

    def _direct(self, what: str, read: Callable[[TextConnection], R], *, even_if_dead: bool = False) -> R:
        """Run ``read`` on this thread's own text connection to the single server.

        A server that failed less than ``dead_timeout`` ago is skipped (a fast miss), unless
        ``even_if_dead``: invalidations are always sent, since the server may be back already.
        """
        if not even_if_dead:
            self._skip_if_dead(what)
        connection: TextConnection | None = getattr(self._local, "connection", None)
        try:
            if connection is None:
                assert self._single is not None
                connection = self._local.connection = TextConnection(self._single, *self._timeouts)
            return read(connection)
        except (OSError, ProtocolError, UnicodeError) as exc:  # UnicodeError: a host IDNA refuses
            raise self._failed(what, connection, exc) from exc
        except BaseException:
            if connection is not None:
                self._drop(connection)  # interrupted: see _drop
            raise

    def _skip_if_dead(self, what: str) -> None:
        """Raise at once while the single server is skipped (it failed less than ``dead_timeout`` ago).

        Every call but an invalidation: a fill or a lock right after a read that timed out would
        otherwise wait a timeout of its own (pymemcache, which sends them, never saw the read fail).
        """
        if self._dead_until and time.monotonic() < self._dead_until:
            raise BackendError(f"memcached {what} on {self._where} skipped: the server failed less than "
                               f"{self._dead_timeout} s ago ({self._dead_cause})")

    def _failed(self, what: str, connection: TextConnection | None, exc: Exception) -> BackendError:
        """The server failed: drop this thread's connection, skip the server ``dead_timeout``, and
        return the error to raise."""
        self._local.connection = None
        if connection is not None:
            connection.close()
        self._mark_dead(exc)
        return self._error(what, exc)

    def _drop(self, connection: TextConnection) -> None:
        """Close this thread's connection after a command was interrupted by an exception that is no
        failure of the server (a signal handler's: a soft time limit, KeyboardInterrupt): its answer
        may still arrive, and the next command would read it as its own (a stale value)."""
        self._local.connection = None
        connection.close()

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        if self._single is not None and keys:  # one server: the wire keys as the bytes its connection sends
            sent = {wire_bytes(key): key for key in keys}
            answered = self._direct("get_many", lambda connection: connection.get_many(list(sent)))
            found = {sent[wire]: value for wire, value in answered.items()}
            if self.count_hits and found:
                counters = [counter_key(key).encode() for key in found]
                self._direct("get_many", lambda connection: connection.count_hits(counters))
            return found
        wired = {wire_key(key): key for key in keys}
        found = self._fetch(list(wired))
        if self.count_hits and found:
            self._count([counter_key(wired[sent]) for sent in found])
        return {wired[sent]: value for sent, value in found.items()}

    def _fetch(self, sent_keys: list[str]) -> dict[str, bytes]:
        """Return the values of those wire keys that are cached, by wire key, counting no hit."""
        if not sent_keys:
            return {}
        if self._single is not None:
            encoded = [sent.encode() for sent in sent_keys]
            answered = self._direct("get_many", lambda connection: connection.get_many(encoded))
            return {sent.decode(): value for sent, value in answered.items()}
        try:
            found: dict[str, bytes] = self._client.get_many(sent_keys)
        except ERRORS as exc:
            raise self._error("get_many", exc) from exc
        return found

    def gets(self, key: str) -> tuple[bytes | None, object]:
        self._skip_if_dead("gets")
        try:
            value, token = self._client.gets(wire_key(key))
        except ERRORS as exc:
            raise self._client_failed("gets", exc) from exc
        return (None, None) if value is None else (value, token)

    # --- writes ---------------------------------------------------------------------

    def set(self, key: str, value: bytes, ttl: float) -> bool:
        return self._store("set", key, value, ttl)

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        return self._store("add", key, value, ttl)

    def cas(self, key: str, value: bytes, token: object, ttl: float) -> bool:
        if token is None:  # gets found nothing: there is no write to compare against
            return False
        return self._store("cas", key, value, ttl, token)

    def delete(self, key: str) -> None:
        try:
            # pymemcache skips a server it marked dead (a failed call here sets both its mark and
            # dal's): a caller whose delete fails stops trusting the server, and invalidations go
            # through delete_many, which is sent to a dead server too
            self._client.delete(wire_key(key))
        except ERRORS as exc:
            raise self._client_failed("delete", exc) from exc

    def nodes(self) -> list[str]:
        """Return the servers as ``host:port`` (``[""]`` with one server)."""
        return [""] if self._single is not None else sorted(self._client.clients)

    def node(self, key: str) -> str:
        """Return the server rendezvous hashing picks for ``key`` (whether it is dead or not)."""
        if self._single is not None:
            return ""
        node = self._nodes.get(key)
        if node is None:
            # pymemcache hashes in pure Python (about 40 us a key): remember, within a bound
            if len(self._nodes) >= NODE_MEMO:
                self._nodes.clear()
            node = self._nodes[key] = str(self._client.hasher.get_node(wire_key(key)))
        return node

    def delete_many(self, keys: Sequence[str]) -> list[str]:
        """Delete ``keys``, each server's share on its own; return the keys of servers that failed.

        Sent even to a server marked dead: a restarted server must get the invalidation at once,
        and a paused one queues it in its socket and applies it when it resumes.
        """
        if not keys:
            return []
        if self._single is not None:
            sent_keys = [wire_key(key).encode() for key in keys]
            try:
                self._direct("delete_many", lambda connection: connection.delete_many(sent_keys),
                             even_if_dead=True)
            except BackendError:
                return list(keys)
            self._revive()
            return []
        return self._client.deliver_deletes({wire_key(key): key for key in keys})

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
        self._client.close()

    # --- administration (``dal cache``) --------------------------------------------------

    def list_entries(self, prefix: str) -> list[ListedEntry]:
        """Return every live item under ``prefix`` as the servers report them (a crawl of each).

        Hit counters are not listed: their counts are each entry's ``hits`` (``None`` when no
        process counts hits). Keys are read back from their wire form; a key too long for
        memcached even encoded is listed under its hashed wire key (``hashed``) when its visible
        start agrees with ``prefix``.
        """
        dumped: list[ListedEntry] = []
        wanted = encoded_key(prefix)
        try:
            for server in self._servers:
                dumped += metadump(server, self._timeouts[0], lambda sent: may_be_under(sent, wanted))
        except (OSError, UnicodeError) as exc:
            raise self._error("lru_crawler metadump", exc) from exc
        dumped = [read_back(entry) for entry in dumped]
        listed = [entry for entry in dumped if not entry.key.endswith(HIT_SUFFIX)]
        counting = self.count_hits or len(listed) < len(dumped)
        # the counters are read by key, for every listed entry: a walk is no snapshot (one written
        # during it may be missed, and a server before 1.6.9 walks its LRUs, which skip an item that
        # is moving between them: a counter just incremented, seen missed)
        counts = self.hit_counts([entry.key for entry in listed if not entry.hashed]) if counting else {}
        unknown = 0 if counting else None
        return [replace(entry, hits=None if entry.hashed else counts.get(entry.key, unknown))
                for entry in listed]

    def hit_counts(self, keys: Sequence[str]) -> dict[str, int]:
        """Return the counted hits of those of ``keys`` that have a counter (one batched read)."""
        counters = {counter_key(key): key for key in keys}  # the wire keys get_many counts on
        found = self._fetch(list(counters))
        return {counters[counter]: int(value) for counter, value in found.items() if value.strip().isdigit()}

    def get_many_uncounted(self, keys: Sequence[str]) -> dict[str, bytes]:
        """As :meth:`get_many`, counting no hit (for administration)."""
        wired = {wire_key(key): key for key in keys}
        return {wired[sent]: value for sent, value in self._fetch(list(wired)).items()}

    def _count(self, counters: list[str]) -> None:
        """Count one hit on each counter's wire key through pymemcache (several servers), answers not
        awaited."""
        for counter in counters:
            try:
                self._client.add(counter, b"0", expire=HIT_TTL, noreply=True)
                self._client.incr(counter, 1, noreply=True)
            except ERRORS:
                pass  # a count lost with its server; the hit itself was served

    def _store(self, command: str, key: str, value: bytes, ttl: float, token: object = None) -> bool:
        if not isinstance(value, bytes):  # as Redis and memory:// refuse it (pymemcache sends str(value))
            raise TypeError(f"cache values must be bytes, not {type(value).__name__}")
        sent = wire_key(key)
        if len(value) + len(sent) + ITEM_OVERHEAD > ITEM_LIMIT:
            if command != "add":
                # a failed set or cas must not leave the value it meant to replace for readers
                self.delete(key)
            return False
        args: tuple[Any, ...] = (sent, value, token) if command == "cas" else (sent, value)
        self._skip_if_dead(command)
        try:
            stored = getattr(self._client, command)(*args, expire=expiry(ttl))
        except MemcacheServerError as exc:
            if exc.args[:1] == (SERVER_TOO_LARGE,):
                # a server started with a smaller -I than memcached's default: refused, as a value
                # over ITEM_LIMIT is above (an add leaves what it did not replace)
                if command != "add":
                    self.delete(key)
                return False
            raise self._error(command, exc) from exc
        except ERRORS as exc:
            raise self._client_failed(command, exc) from exc
        self._dead_until = 0.0  # the server answered: the direct get path may use it again
        return stored is True

    def _client_failed(self, what: str, exc: BaseException) -> BackendError:
        """A command through pymemcache failed: with one server, reads skip it too (``dead_timeout``)
        when pymemcache skips it (after a socket error, not after its own skip); return the error."""
        if self._single is not None and isinstance(exc, OSError):
            self._mark_dead(exc)
        return self._error(what, exc)

    def _mark_dead(self, exc: BaseException) -> None:
        """Skip the single server ``dead_timeout`` from now, because of ``exc``."""
        self._dead_until = time.monotonic() + self._dead_timeout
        self._dead_cause = f"{type(exc).__name__}: {exc}"

    def _revive(self) -> None:
        """Use the single server again at once: it just answered (both skip marks go)."""
        self._dead_until = 0.0
        assert self._single is not None
        self._client.revive(self._single)

    def _error(self, what: str, exc: BaseException) -> BackendError:
        return BackendError(f"memcached {what} on {self._where} failed: {type(exc).__name__}: {exc}")
