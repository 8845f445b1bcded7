"""memcached as a volatile store: bytes under safe keys, spread over servers by consistent hashing.

``memcached://host:port[,host:port...]?timeout=0.25&connect_timeout=0.25&dead_timeout=5``

A server that fails is marked dead and skipped by reads and fills for ``dead_timeout`` seconds
(its keys stay where they hash, so they fail at once), so a dead cache costs a fast
``BackendError`` that the layer above counts as a miss, not a timeout per call. Deletes, the
invalidations, are never skipped: they are sent to each server on its own, dead or not.
"""

from __future__ import annotations

import hashlib
import math
import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from pymemcache.client.hash import HashClient
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import MemcacheError, MemcacheServerError

from dal.backends.url import StoreURL
from dal.exceptions import BackendError, ConfigurationError

DEFAULT_PORT = 11211
#: memcached's default item size limit (-I 1m); an item also holds its key and a header
ITEM_LIMIT = 1024 * 1024
ITEM_OVERHEAD = 512
R = TypeVar("R")
#: keys whose server node() remembers before it starts over
NODE_MEMO = 100_000
#: deletes sent in one pipelined burst before their answers are read (a huge burst would not be
#: answered within the timeout)
DELETE_BURST = 512
#: memcached reads an expiry above 30 days as a unix timestamp
RELATIVE_TTL_LIMIT = 30 * 24 * 3600
_OPTIONS = ("timeout", "connect_timeout", "dead_timeout")
#: keys sent as they are: 1 to 250 printable ASCII characters, without space and without "~",
#: which only hashed keys contain, so a sent key never stands for two different keys
_PLAIN_KEY = re.compile(r"[!-}]{1,250}")
_UNSAFE = re.compile(r"[^!-}]")
_READABLE = 64
_ERRORS = (MemcacheError, OSError)


def wire_key(key: str) -> str:
    """Return the memcached key for ``key``: itself when memcached accepts it, else a hashed form."""
    if _PLAIN_KEY.fullmatch(key):
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{_UNSAFE.sub('_', key[:_READABLE])}~{digest}"


def expiry(ttl: float) -> int:
    """Return memcached's exptime for a TTL in seconds (0 = never; negative = already expired)."""
    if ttl == 0:
        return 0
    if ttl < 0:
        return -1
    seconds = math.ceil(ttl)
    return seconds if seconds <= RELATIVE_TTL_LIMIT else int(time.time()) + seconds


class MemcachedCache:
    """A :class:`~dal.backends.base.VolatileStore` on one or more memcached servers."""

    scheme: ClassVar[str] = "memcached"
    shared: ClassVar[bool] = True

    def __init__(self, url: StoreURL, servers: Sequence[tuple[str, int]], *, timeout: float,
                 connect_timeout: float, dead_timeout: float) -> None:
        self.url = url
        self._where = ", ".join(f"{host}:{port}" for host, port in servers)
        # the hit path: with one server, a get goes over a per-thread connection of our own,
        # skipping HashClient's routing, its pool's lock and pymemcache's per-call work (together
        # about 40% of a cached load, measured with bench/); every other command uses pymemcache
        self._single = servers[0] if len(servers) == 1 else None
        self._nodes: dict[str, str] = {}
        self._timeouts = (timeout, connect_timeout)
        self._dead_timeout = dead_timeout
        self._dead_until = 0.0
        self._local = threading.local()
        self._client = _HashClient(
            list(servers), hasher=_Rendezvous, use_pooling=True,
            timeout=timeout, connect_timeout=connect_timeout,
            # fail once, then skip the server: retrying a dead cache only adds latency
            retry_attempts=0, dead_timeout=dead_timeout, ignore_exc=False,
            # set/add/cas must report whether they stored
            default_noreply=False)

    @classmethod
    def from_url(cls, url: StoreURL) -> MemcachedCache:
        """Open the memcached servers a URL names (connections are made on first use)."""
        url.check_options(_OPTIONS)
        if url.user is not None or url.path not in ("", "/"):
            raise ConfigurationError(f"{url}: memcached:// URLs take no user, password or path; "
                                     "write memcached://host:port[,host:port...]")
        servers = url.require_hosts(DEFAULT_PORT)
        seconds = {name: url.option(name, float, default)
                   for name, default in (("timeout", 0.25), ("connect_timeout", 0.25), ("dead_timeout", 5.0))}
        for name, value in seconds.items():
            if not value > 0:
                raise ConfigurationError(f"option {name} in {url} must be a positive number of seconds")
        return cls(url, servers, **seconds)

    def __repr__(self) -> str:
        return f"MemcachedCache({str(self.url)!r})"

    # --- reads ----------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        if self._single is not None:
            return self._direct_get(wire_key(key))
        try:
            value: bytes | None = self._client.get(wire_key(key))
        except _ERRORS as exc:
            raise self._error("get", exc) from exc
        return value

    def _direct_get(self, sent: str) -> bytes | None:
        return self._direct("get", lambda connection: connection.get(sent.encode()))

    def _direct(self, what: str, read: Callable[[_TextConnection], R], *, even_if_dead: bool = False) -> R:
        """Run ``read`` on this thread's own text connection to the single server.

        A server that failed less than ``dead_timeout`` ago is skipped (a fast miss), unless
        ``even_if_dead``: invalidations are always sent, since the server may be back already.
        """
        if not even_if_dead and self._dead_until and time.monotonic() < self._dead_until:
            raise BackendError(f"memcached {what} on {self._where} skipped: the server failed less than "
                               f"{self._dead_timeout} s ago")
        connection: _TextConnection | None = getattr(self._local, "connection", None)
        try:
            if connection is None:
                assert self._single is not None
                connection = self._local.connection = _TextConnection(self._single, *self._timeouts)
            return read(connection)
        except (OSError, _ProtocolError) as exc:
            self._local.connection = None
            if connection is not None:
                connection.close()
            self._dead_until = time.monotonic() + self._dead_timeout
            raise self._error(what, exc) from exc

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        wired = {wire_key(key): key for key in keys}
        if not wired:
            return {}
        if self._single is not None:
            sent_keys = [sent.encode() for sent in wired]
            answered = self._direct("get_many", lambda connection: connection.get_many(sent_keys))
            return {wired[sent.decode()]: value for sent, value in answered.items()}
        try:
            found: dict[str, bytes] = self._client.get_many(list(wired))
        except _ERRORS as exc:
            raise self._error("get_many", exc) from exc
        return {wired[sent]: value for sent, value in found.items()}

    def gets(self, key: str) -> tuple[bytes | None, object]:
        try:
            value, token = self._client.gets(wire_key(key))
        except _ERRORS as exc:
            raise self._error("gets", exc) from exc
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
            self._client.delete(wire_key(key))
        except _ERRORS as exc:
            raise self._error("delete", exc) from exc

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

    def _store(self, command: str, key: str, value: bytes, ttl: float, token: object = None) -> bool:
        sent = wire_key(key)
        if len(value) + len(sent) + ITEM_OVERHEAD > ITEM_LIMIT:
            if command != "add":
                # a failed set or cas must not leave the value it meant to replace for readers
                self.delete(key)
            return False
        args: tuple[Any, ...] = (sent, value, token) if command == "cas" else (sent, value)
        try:
            stored = getattr(self._client, command)(*args, expire=expiry(ttl))
        except MemcacheServerError as exc:
            if "too large" in str(exc) and command != "add":
                # a server started with a smaller -I than memcached's default
                self.delete(key)
                return False
            raise self._error(command, exc) from exc
        except _ERRORS as exc:
            raise self._error(command, exc) from exc
        self._dead_until = 0.0  # the server answered: the direct get path may use it again
        return stored is True

    def _revive(self) -> None:
        """Use the single server again at once: it just answered (both skip marks go)."""
        self._dead_until = 0.0
        assert self._single is not None
        self._client.revive(self._single)

    def _error(self, what: str, exc: BaseException) -> BackendError:
        return BackendError(f"memcached {what} on {self._where} failed: {type(exc).__name__}: {exc}")


class _ProtocolError(Exception):
    """The server answered something a ``get`` never answers."""


class _TextConnection:
    """One connection that speaks just memcached's text ``get`` and ``delete``, pipelined: the hit
    path and the invalidation after every write, without pymemcache's per-key overhead.

    Any error or timeout leaves the stream in an unknown state, so the caller closes it.
    """

    def __init__(self, server: tuple[str, int], timeout: float, connect_timeout: float) -> None:
        self._socket = socket.create_connection(server, timeout=connect_timeout)
        self._socket.settimeout(timeout)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def get(self, key: bytes) -> bytes | None:
        # the hit path of every cached load: one key, parsed without the multi-key bookkeeping
        self._socket.sendall(b"get " + key + b"\r\n")
        buffer = self._buffer
        while True:
            if buffer.startswith(b"END\r\n"):
                self._buffer = buffer[5:]
                return None
            line_end = buffer.find(b"\r\n")
            if line_end >= 0:
                header = buffer[:line_end].split(b" ")
                # VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n; a key other than ours means
                # the stream is out of step (e.g. shared across a fork): never return its value
                # ... and a length that is not a number means it is not memcached answering
                if len(header) != 4 or header[0] != b"VALUE" or header[1] != key or not header[3].isdigit():
                    raise _ProtocolError(buffer[:line_end].decode("ascii", "replace"))
                start = line_end + 2
                end = start + int(header[3])
                if len(buffer) >= end + 7:
                    if buffer[end:end + 7] != b"\r\nEND\r\n":
                        raise _ProtocolError("a get answer did not end with END")
                    self._buffer = buffer[end + 7:]
                    return buffer[start:end]
            chunk = self._socket.recv(65536)
            if not chunk:
                raise _ProtocolError("the server closed the connection")
            buffer += chunk


    def get_many(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """Send one ``get`` naming every key; read ``VALUE <key> <flags> <bytes>`` blocks until ``END``."""
        self._socket.sendall(b"get " + b" ".join(keys) + b"\r\n")
        wanted = set(keys)
        found: dict[bytes, bytes] = {}
        buffer = self._buffer
        position = 0
        while True:
            if buffer.startswith(b"END\r\n", position):
                self._buffer = buffer[position + 5:]
                return found
            line_end = buffer.find(b"\r\n", position)
            if line_end >= 0:
                header = buffer[position:line_end].split(b" ")
                # a key we did not ask for means the stream is out of step (e.g. shared across a
                # fork): never return its value
                if (len(header) != 4 or header[0] != b"VALUE" or header[1] not in wanted
                        or not header[3].isdigit()):
                    raise _ProtocolError(buffer[position:line_end].decode("ascii", "replace"))
                start = line_end + 2
                end = start + int(header[3])
                if len(buffer) >= end + 2:
                    if buffer[end:end + 2] != b"\r\n":
                        raise _ProtocolError("a value was not followed by CRLF")
                    found[header[1]] = buffer[start:end]
                    position = end + 2
                    continue
            chunk = self._socket.recv(262144)
            if not chunk:
                raise _ProtocolError("the server closed the connection")
            buffer = buffer[position:] + chunk
            position = 0

    def delete_many(self, keys: list[bytes]) -> None:
        """Send the deletes in bursts of DELETE_BURST, reading one answer per key after each burst."""
        for start in range(0, len(keys), DELETE_BURST):
            self._delete_burst(keys[start:start + DELETE_BURST])

    def _delete_burst(self, keys: list[bytes]) -> None:
        self._socket.sendall(b"".join(b"delete " + key + b"\r\n" for key in keys))
        buffer = self._buffer
        answered = 0
        while answered < len(keys):
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                chunk = self._socket.recv(65536)
                if not chunk:
                    raise _ProtocolError("the server closed the connection")
                buffer += chunk
                continue
            if buffer[:line_end] not in (b"DELETED", b"NOT_FOUND"):
                raise _ProtocolError(buffer[:line_end].decode("ascii", "replace"))
            buffer = buffer[line_end + 2:]
            answered += 1
        self._buffer = buffer

    def close(self) -> None:
        self._socket.close()


class _Rendezvous(RendezvousHash):  # type: ignore[misc]  # pymemcache ships no type information
    """Rendezvous hashing that skips hashing when there is only one server to choose.

    pymemcache's murmur3 is pure Python and costs a noticeable share of a local get.
    """

    def get_node(self, key: Any) -> Any:
        if len(self.nodes) == 1:
            return self.nodes[0]
        return super().get_node(key)


class _HashClient(HashClient):  # type: ignore[misc]  # pymemcache ships no type information
    """pymemcache's HashClient with its dead-server bookkeeping made thread-safe.

    pymemcache updates its failed/dead tables without a lock, so two threads failing on the
    same server at once can raise KeyError or ValueError from inside it, or change a dict
    another thread iterates. Failures are rare, so one lock around that bookkeeping is cheap.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._book_lock = threading.RLock()
        super().__init__(*args, **kwargs)

    def _mark_failed_server(self, server: Any) -> None:
        with self._book_lock:
            if server not in self._dead_clients:
                super()._mark_failed_server(server)

    def remove_server(self, server: Any, port: Any = None) -> None:
        # Mark the server dead but keep the ring as it is: moving its keys to another server
        # would send invalidations where no reader looks once it is back (stale reads). Its
        # keys fail fast instead, which the layer above counts as misses.
        server = server if port is None else (server, port)
        with self._book_lock:
            if server not in self._dead_clients:
                self._failed_clients.pop(server, None)
                self._dead_clients[server] = time.time()

    def _retry_dead(self) -> None:
        with self._book_lock:
            now = time.time()
            last_check = float(getattr(self, "_last_dead_check_time", 0.0))
            if now - last_check > self.dead_timeout:
                for server, since in list(self._dead_clients.items()):
                    if now - since > self.dead_timeout:
                        del self._dead_clients[server]
                self._last_dead_check_time = now

    def _get_client(self, key: Any) -> Any:
        client = super()._get_client(key)
        if client is not None and client.server in self._dead_clients:
            raise MemcacheError(f"memcached {client.server} is marked dead for up to {self.dead_timeout} s")
        return client

    def deliver_deletes(self, wired: dict[str, str]) -> list[str]:
        """Delete the wire keys of ``wired``, one batch per server, dead or not; return the
        original keys (``wired``'s values) of the servers that failed.

        pymemcache's own delete_many sends one delete per key and raises for a dead server
        before sending anything, so one dead server would block the others' invalidations.
        """
        batches: defaultdict[str, list[str]] = defaultdict(list)
        for sent in wired:
            batches[self.hasher.get_node(sent)].append(sent)
        undelivered: list[str] = []
        for node, batch in batches.items():
            client = self.clients[node]
            try:
                client.delete_many(batch, noreply=False)
            except _ERRORS:
                self._mark_failed_server(client.server)
                undelivered += [wired[sent] for sent in batch]
            else:
                self.revive(client.server)
        return undelivered

    def revive(self, server: Any) -> None:
        """Forget that ``server`` failed: it just answered, so reads may use it again."""
        if self._dead_clients or self._failed_clients:
            with self._book_lock:
                self._dead_clients.pop(server, None)
                self._failed_clients.pop(server, None)
