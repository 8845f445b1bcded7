"""pymemcache's client for everything but the single-server hit path: several servers, stores, ``gets``.

Rendezvous hashing spreads keys over servers; the subclass of ``HashClient`` makes its
dead-server bookkeeping thread-safe and delivers deletes to every server, dead or not.

A ``gets`` token names the connection it was read on, as that connection was then (its number,
renewed each time it connects: :class:`CasToken`), and ``cas`` is sent over that connection only
while it has not reconnected; otherwise it is refused, nothing sent. memcached numbers its writes
from 1 again when it restarts, so a cas unique read before a restart may name another entry
written after it (a lease taken since, which the stale fill would replace); a restart breaks
every connection made before it, so the connection the token names can no longer take it.
"""

from __future__ import annotations

import itertools
import os
import select
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from pymemcache.client.base import Client as PymemcacheClient
from pymemcache.client.base import PooledClient
from pymemcache.client.hash import HashClient as PymemcacheHashClient
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import MemcacheError

#: what a failed memcached command raises: pymemcache's errors and the socket's (UnicodeError: a host
#: name the IDNA codec refuses, which the URL parser refuses first; never to escape untyped)
ERRORS = (MemcacheError, OSError, UnicodeError)
#: numbers the connections pymemcache opens in this process, in the order they are opened
_OPENED = itertools.count(1)


class Client(PymemcacheClient):  # type: ignore[misc]  # pymemcache ships no type information
    """pymemcache's connection to one server, numbered anew each time it connects, with a lock held
    by the one ``gets`` or ``cas`` it runs at a time."""

    number = 0  # not connected yet
    pid = 0  # the process that connected it

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()

    def _connect(self) -> None:
        super()._connect()
        self.number, self.pid = next(_OPENED), os.getpid()


@dataclass(frozen=True, slots=True)
class CasToken:
    """What ``gets`` returns for ``cas``: memcached's cas unique, and the connection it was read on
    with that connection's number then (see the module's notes). Two are equal when read on one
    connection, unbroken, from one write."""

    connection: Client
    number: int
    unique: bytes


class Pool(PooledClient):  # type: ignore[misc]  # pymemcache ships no type information
    """pymemcache's pool of connections to one server; ``gets`` and ``cas`` use connections of their
    own, ``cas`` the very one its token's ``gets`` used (whatever the thread)."""

    client_class = Client

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._compare: list[Client] = []  # the connections of gets and cas
        self._compare_lock = threading.Lock()
        self._pid = os.getpid()

    def _idle(self) -> Client:
        """Return a connection of ``gets`` that no other call uses, its lock held (made when none is)."""
        with self._compare_lock:
            if self._pid != os.getpid():  # a forked child never shares its parent's sockets
                self._compare, self._pid = [], os.getpid()
            for idle in self._compare:
                if idle.lock.acquire(blocking=False):
                    return idle
            client: Client = self._create_client()
            client.lock.acquire()
            self._compare.append(client)
            return client

    def gets(self, key: Any) -> tuple[Any, Any]:
        client = self._idle()
        try:
            value, unique = client.gets(key)
            return value, None if unique is None else CasToken(client, client.number, unique)
        except BaseException:
            client.close()  # its answer may still come: the next command would read it as its own
            raise
        finally:
            client.lock.release()

    def cas(self, key: Any, value: Any, cas: Any, expire: int = 0, noreply: Any = False,
            flags: Any = None) -> Any:
        if not isinstance(cas, CasToken) or cas.connection.server != self.server:
            return False  # the token of no gets of this server's
        client = cas.connection
        if client.pid != os.getpid():  # read before a fork: its socket, and maybe its lock, are the parent's
            return False
        with client.lock:
            if client.sock is None or client.number != cas.number:
                return False  # reconnected since (or closed): maybe to a server process restarted since
            if _hung_up(client.sock):
                client.close()  # the server closed it (it stopped, or restarted since), or it is out of step
                return False
            try:
                return client.cas(key, value, cas.unique, expire=expire, noreply=noreply, flags=flags)
            except BaseException:
                client.close()
                raise

    def close(self) -> None:
        super().close()
        with self._compare_lock:
            compare, self._compare = self._compare, []
        for client in compare:
            client.close()


def _hung_up(sock: Any) -> bool:
    """Tell whether a connection no command is waiting on reads as ready: the server closed it (an
    end of file, a reset) or sent what nothing asked for."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class Rendezvous(RendezvousHash):  # type: ignore[misc]  # pymemcache ships no type information
    """Rendezvous hashing that skips hashing when there is only one server to choose.

    pymemcache's murmur3 is pure Python and costs a noticeable share of a local get.
    """

    def get_node(self, key: Any) -> Any:
        if len(self.nodes) == 1:
            return self.nodes[0]
        return super().get_node(key)


class HashClient(PymemcacheHashClient):  # type: ignore[misc]  # pymemcache ships no type information
    """pymemcache's HashClient with its dead-server bookkeeping made thread-safe.

    pymemcache updates its failed/dead tables without a lock, so two threads failing on the
    same server at once can raise KeyError or ValueError from inside it, or change a dict
    another thread iterates. Failures are rare, so one lock around that bookkeeping is cheap.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._book_lock = threading.RLock()
        super().__init__(*args, **kwargs)

    def add_server(self, server: Any, port: Any = None) -> None:
        # pymemcache's, with a :class:`Pool` per server (always pooled: MemcachedCache asks so)
        server = server if port is None else (server, port)
        key = self._make_client_key(server)
        self.clients[key] = Pool(server, **self.default_kwargs)
        self.hasher.add_node(key)

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
            except ERRORS:
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
