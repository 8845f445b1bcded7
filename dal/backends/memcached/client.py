"""pymemcache's client for everything but the single-server hit path: several servers, stores, ``gets``.

Rendezvous hashing spreads keys over servers; the subclass of ``HashClient`` makes its
dead-server bookkeeping thread-safe and delivers deletes to every server, dead or not.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

from pymemcache.client.hash import HashClient as PymemcacheHashClient
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import MemcacheError

#: what a failed memcached command raises: pymemcache's errors and the socket's (UnicodeError: a host
#: name the IDNA codec refuses, which the URL parser refuses first; never to escape untyped)
ERRORS = (MemcacheError, OSError, UnicodeError)


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
