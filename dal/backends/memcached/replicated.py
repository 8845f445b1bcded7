"""A replicated memcached: each entry on ``replicas`` servers, read back only on a quorum.

Opened by ``memcached://h1,h2,h3?replicas=N`` with N above 1 (docs/caching.md, "Quorum reads").

After Ganeti's confd client (issue 14), which asks several replicas the same question and needs
:func:`dal.quorum.needed_replies` of them; unlike confd, a quorum here is one of *agreeing*
replies (:func:`dal.quorum.vote`), and a reply from a server that was not asked never counts.

- **Where.** Each key lives on the ``replicas`` servers :func:`dal.quorum.replicas_for` picks by
  rendezvous hashing of its wire key; the first is the server a single-copy cache would use.
- **Reads** (``get``, ``get_many``) ask every replica of every key at once: one pipelined
  multi-get per server, all sent before any answer is read, so the servers work in parallel,
  and read against one deadline, the read timeout (:mod:`~dal.backends.memcached.multiget`).
  A value is returned only on a ``HIT`` (at least ``needed_replies(replicas)`` replicas
  returned the same bytes and none answered otherwise). ``MISS``, ``SHORT`` (too few replies)
  and ``DISAGREE`` (an entry and a miss, or two entries) are misses for the caller, which then
  reads the durable store. (Every replica returning the same entry is a ``HIT`` taken without
  calling :func:`~dal.quorum.vote`: the hit path's one shortcut; anything else is voted on.)
- **Repair.** On ``SHORT`` and ``DISAGREE``, the copies of the replicas that answered with an
  entry are *deleted*, before the miss is returned, so the caller's leased fill (``add`` of a
  lease on every replica, then ``cas``) can take its lease and rewrite every replica. A delete,
  not an overwrite with the majority's bytes, because only a delete is safe under the lease
  rules (docs/caching.md): a repair that *wrote* the bytes it read would be a plain ``set`` of a
  value read earlier, the very stale set leases exist to stop. A writer may commit and delete
  every replica between the repairer's read and its write; the write would then land after the
  invalidation, and two repairers doing so on two replicas would make a stale quorum that nothing
  removes. A delete cannot outlive an invalidation that way: it only removes, as an invalidation
  does; at worst it voids a fill in progress (that fill's ``cas`` fails, the next read fills
  again). A replica that did not answer is not repaired now (the delete would fail or wait for
  its timeout): the vote that next hears it disagree repairs it.
  Nor is a key one of whose replicas holds a lease marker (``filling``, the cache layer's
  test): a fill is under way, adding its lease or writing its value one replica after the other;
  deleting a copy meanwhile would void it (its ``cas`` falls short), so a locked dynamic's owner
  would store nothing and a waiter compute again. That fill's ``cas`` makes the replicas agree,
  or its lease expires.
- **Leases and locks** (``add``, ``gets``, ``cas``) hold on a majority: ``add`` is true when at
  least ``needed_replies(replicas)`` replicas took it; one that took fewer is rolled back, on
  each replica that took it, by a ``cas`` of exactly the value it added into an already-expired
  item (memcached's conditional delete), so another caller's lock is never removed. ``gets``
  returns the entry that many replicas hold, with a token naming each of them and its own cas
  unique; ``cas`` is true when that many of them took it. With one server of three dead, leases
  and locks are still taken, so single flight survives it.
- **Invalidations** (``delete``, ``delete_many``) go to every replica, each server's share on its
  own, dead or not; a key is reported undelivered when any replica did not confirm it, so the
  caller resends it (``delete`` raises ``BackendError`` then); ``delete_on`` sends each server only
  the keys given for it (the journal's sweep: to the replicas that have not confirmed them).

- **Signatures.** Given ``verify`` (the cache layer's signature check), a replica's entry that
  fails it counts as no reply, as a reply from a server not asked does, and is deleted.
- **Failures.** Given ``on_failure`` (the cache layer's :meth:`dal.cache.trust.Trust.fail`), each
  server that did not answer a read, a lease, a lock or a fill is reported by name, so trust is
  lost for that server alone; :meth:`delete_each` says which server missed which invalidation.
  The hooks (``verify``, ``on_failure``, ``filling``, ``counts``) are set by the context that
  opened the store; the client is shared per process and URL, so the last context configured
  on a URL sets them (its signer and trust are the ones in use).

Counters (``self.counts``: a :class:`~dal.backends.memcached.fanout.Counts` of its own, or the
context's ``Stats`` once a context uses the store), for reads only: quorum hits and misses,
disagreements, short reads, repairs (replica copies deleted) and rejected replies (bad signature).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from dal.backends.memcached.addresses import refuse_aliases
from dal.backends.memcached.cache import MemcachedCache, url_settings
from dal.backends.memcached.dumps import ListedEntry, merge_listings
from dal.backends.memcached.fanout import Answers, Counter, Counts, FanOut
from dal.backends.memcached.keys import wire_key
from dal.backends.memcached.multiget import MultiGet
from dal.backends.memcached.options import check_replicas, refuse_duplicates, replicas_option
from dal.backends.url import StoreURL
from dal.exceptions import BackendError
from dal.quorum import Kind, Outcome, needed_replies, replicas_for, vote

R = TypeVar("R")
_OPTIONS = ("timeout", "connect_timeout", "dead_timeout", "replicas")
#: keys whose replicas are remembered before the memo starts over (hashing is pure Python)
REPLICA_MEMO = 100_000
_COUNTED = {Kind.HIT: "quorum_hits", Kind.MISS: "quorum_misses",
            Kind.DISAGREE: "quorum_disagreements", Kind.SHORT: "quorum_short_reads"}


@dataclass(frozen=True, slots=True)
class ReplicaToken:
    """A ``gets`` token of a replicated entry: each agreeing server with its own cas unique."""

    tokens: tuple[tuple[str, object], ...]


class ReplicatedCache:
    """A :class:`~dal.backends.base.VolatileStore` keeping each entry on several memcached servers."""

    scheme: ClassVar[str] = "memcached"
    shared: ClassVar[bool] = True

    def __init__(self, url: StoreURL, servers: Sequence[tuple[str, int]], *, replicas: int, timeout: float,
                 connect_timeout: float, dead_timeout: float,
                 verify: Callable[[str, bytes], bool] | None = None) -> None:
        self.url = url
        #: whether a replica's entry is authentic (its signature holds); one that is not counts as
        #: no reply, and is deleted (the cache layer passes its signer's check; None: all are)
        self.verify = verify
        #: told the servers (``host:port``) that did not answer a call (the cache layer passes its
        #: trust's ``fail``; None: nobody is told)
        self.on_failure: Callable[[list[str]], None] | None = None
        #: whether a replica's entry is a fill in progress (the cache layer's lease marker): a key
        #: with one among its replies is not repaired, so the fill's ``cas`` can complete
        self.filling: Callable[[str, bytes], bool] | None = None
        self._names = tuple(f"{host}:{port}" for host, port in servers)  # as written: placement hashes them
        refuse_duplicates(str(url), servers)
        check_replicas(str(url), len(servers), replicas)
        if replicas > 1:  # two spellings of one server would be two agreeing votes (.addresses)
            refuse_aliases(str(url), servers)
        self.replicas = replicas
        self.needed = needed_replies(replicas)
        self._timeout = timeout
        # one single-server cache per server: its own fast get path, dead-server skipping, key
        # hashing, TTLs and item-size handling, unchanged
        self._caches = {name: MemcachedCache(StoreURL("memcached", ((host, port),)), [(host, port)],
                                             timeout=timeout, connect_timeout=connect_timeout,
                                             dead_timeout=dead_timeout)
                        for name, (host, port) in zip(self._names, servers, strict=True)}
        self._reader = MultiGet(dict(zip(self._names, servers, strict=True)), timeout=timeout,
                                connect_timeout=connect_timeout, dead_timeout=dead_timeout)
        self._memo: dict[str, tuple[str, ...]] = {}
        self._fan_out = FanOut()  # a pool per server: calls to a paused one hold no other's
        #: the counters (the cache layer puts its own ``Stats`` here, so ``dal stats`` shows them)
        self.counts: Counter = Counts()

    @classmethod
    def from_url(cls, url: StoreURL) -> ReplicatedCache:
        """Open ``memcached://h1:p1,h2:p2,...?replicas=N`` (connections are made on first use)."""
        servers, seconds = url_settings(url, _OPTIONS)
        return cls(url, servers, replicas=replicas_option(url), timeout=seconds["timeout"],
                   connect_timeout=seconds["connect_timeout"], dead_timeout=seconds["dead_timeout"])

    def __repr__(self) -> str:
        return f"ReplicatedCache({str(self.url)!r}, replicas={self.replicas})"

    def replicas_of(self, key: str) -> tuple[str, ...]:
        """Return the servers (``host:port``) that hold ``key``, the most preferred first."""
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= REPLICA_MEMO:
                self._memo.clear()
            found = self._memo[key] = tuple(replicas_for(wire_key(key), self._names, self.replicas))
        return found

    def server(self, name: str) -> MemcachedCache:
        """Return the single-server cache of one server (``host:port``), e.g. to look at one replica."""
        return self._caches[name]

    # --- reads ----------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Return the values a quorum of each key's replicas agrees on; repair where they do not."""
        return self._read(keys, self.counts)

    def get_many_uncounted(self, keys: Sequence[str]) -> dict[str, bytes]:
        """As :meth:`get_many`, counting nothing (statistics' own reads, administration)."""
        return self._read(keys, Counts())

    def _read(self, keys: Sequence[str], counts: Counter) -> dict[str, bytes]:
        plan = {key: (wire_key(key).encode(), self.replicas_of(key)) for key in keys}
        shares: dict[str, list[bytes]] = {}
        for sent, servers in plan.values():
            for name in servers:
                shares.setdefault(name, []).append(sent)
        answered = self._reader.get_many(shares)
        if len(answered) < len(shares):
            self._failed([name for name in shares if name not in answered])
        found: dict[str, bytes] = {}
        voted: list[tuple[str, tuple[str, ...], dict[str, bytes | None]]] = []
        for key, (sent, servers) in plan.items():
            replies = {name: answered[name].get(sent) for name in servers if name in answered}
            first = replies.get(servers[0])
            if first is not None and len(replies) == len(servers) and all(
                    value == first for value in replies.values()) and (
                    self.verify is None or self.verify(key, first)):
                found[key] = first  # unanimous (and authentic): a HIT whatever the quorum
            else:
                voted.append((key, servers, replies))
        if found:
            counts.add("quorum_hits", len(found))
        if voted:
            self._settle(voted, found, counts)
        return found

    def _settle(self, voted: list[tuple[str, tuple[str, ...], dict[str, bytes | None]]],
                found: dict[str, bytes], counts: Counter) -> None:
        """Vote on the keys whose replies were not unanimous; repair where nothing was agreed."""
        repairs: dict[str, list[str]] = {}
        for key, servers, replies in voted:
            for name in self._forged(key, replies, counts):
                del replies[name]  # no reply; and deleted, whatever the vote
                repairs.setdefault(name, []).append(key)
            outcome = self.decide(servers, replies, counts)
            if outcome.kind is Kind.HIT and outcome.value is not None:
                found[key] = outcome.value
            elif outcome.kind in (Kind.SHORT, Kind.DISAGREE) and not self._filling(key, replies):
                for name in outcome.repair:
                    if replies.get(name) is not None:
                        repairs.setdefault(name, []).append(key)
        if repairs:
            self._repair(repairs, counts)

    def _filling(self, key: str, replies: dict[str, bytes | None]) -> bool:
        """Tell whether a replica holds a lease marker of ``key`` (a fill under way)."""
        filling = self.filling
        return filling is not None and any(
            value is not None and filling(key, value) for value in replies.values())

    def _forged(self, key: str, replies: dict[str, bytes | None], counts: Counter) -> list[str]:
        """Return the servers whose entry for ``key`` fails :attr:`verify` (counted as rejected)."""
        verify = self.verify
        if verify is None:
            return []
        forged = [name for name, value in replies.items() if value is not None and not verify(key, value)]
        if forged:
            counts.add("quorum_rejected", len(forged))
        return forged

    def decide(self, asked: Sequence[str], replies: dict[str, bytes | None], counts: Counter) -> Outcome:
        """Vote on one key's replies (a server absent from ``replies`` did not answer); count it."""
        outcome = vote(asked, replies, self.needed)
        counts.add(_COUNTED[outcome.kind])
        return outcome

    def _repair(self, repairs: dict[str, list[str]], counts: Counter) -> None:
        """Delete the listed keys' copies on each server; count the copies confirmed deleted."""
        calls = {name: functools.partial(self._caches[name].delete_many, keys)
                 for name, keys in repairs.items()}
        answers = self._fan_out.run(calls)
        deleted = sum(len(repairs[name]) - len(undelivered) for name, undelivered in answers.results.items())
        counts.add("quorum_repairs", deleted)

    def gets(self, key: str) -> tuple[bytes | None, object]:
        """Return the entry at least ``needed`` replicas hold, and a token naming each of them.

        Unlike a read, a minority that differs does not hide the majority's entry: a lock or a
        lease is held when a majority holds it. Nothing is repaired (that would remove locks).
        """
        servers = self.replicas_of(key)
        calls = {name: functools.partial(self._caches[name].gets, key) for name in servers}
        answers = self._fan_out.run(calls, within=self._timeout)
        answered = answers.results  # a call still queued at the deadline (unstarted) is no failure
        self._failed([name for name in servers if name not in answered and name not in answers.unstarted])
        held: dict[bytes, list[str]] = {}
        for name in servers:
            value = answered[name][0] if name in answered else None
            if value is not None:
                held.setdefault(value, []).append(name)
        for value, names in held.items():
            if len(names) >= self.needed:
                return value, ReplicaToken(tuple((name, answered[name][1]) for name in names))
        return None, None

    # --- writes ---------------------------------------------------------------------

    def set(self, key: str, value: bytes, ttl: float) -> bool:
        """Store on every replica; true when at least ``needed`` stored it.

        A value too large is refused by every replica, each removing its old value (``False``);
        fewer than ``needed`` answering raises ``BackendError``.
        """
        answers = self._each(key, lambda cache: cache.set(key, value, ttl))
        stored = sum(1 for done in answers.results.values() if done)
        if stored >= self.needed:
            return True
        self._enough_answered(key, "set", len(answers.results))
        return False

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store on every replica where ``key`` is absent; true when at least ``needed`` took it.

        Otherwise each replica that took it gives it back (only if it still holds this value),
        and ``BackendError`` is raised if fewer than ``needed`` replicas answered at all.
        """
        answers = self._each(key, lambda cache: cache.add(key, value, ttl))
        added = [name for name, done in answers.results.items() if done]
        if len(added) >= self.needed:
            return True
        if added:
            self._roll_back(key, value, added)
        self._enough_answered(key, "add", len(answers.results))
        return False

    def _roll_back(self, key: str, value: bytes, names: Sequence[str]) -> None:
        """Remove ``value`` from the replicas ``names`` if each still holds exactly it (a ``cas``
        into an already-expired item: memcached's conditional delete)."""
        def give_back(cache: MemcachedCache) -> bool:
            held, token = cache.gets(key)
            return held == value and cache.cas(key, b"", token, -1)

        self._fan_out.run({name: functools.partial(give_back, self._caches[name]) for name in names})

    def cas(self, key: str, value: bytes, token: object, ttl: float) -> bool:
        """Store on each replica the token names, against its own cas unique; true when at least
        ``needed`` took it (a replica that did not is left as it is: a read sees it disagree)."""
        if not isinstance(token, ReplicaToken):
            return False
        tokens = dict(token.tokens)
        calls = {name: functools.partial(self._caches[name].cas, key, value, tokens[name], ttl)
                 for name in tokens if name in self._caches}
        answers = self._fan_out.run(calls)
        self._failed([name for name in calls if name not in answers.results])
        if sum(1 for done in answers.results.values() if done) >= self.needed:
            return True
        self._enough_answered(key, "cas", len(answers.results))
        return False

    def delete(self, key: str) -> None:
        """Remove ``key`` from every replica; ``BackendError`` when any did not confirm it."""
        if self.delete_many([key]):
            raise BackendError(f"memcached delete of one key on {self.url} failed: not every replica "
                               "confirmed it")

    def delete_many(self, keys: Sequence[str]) -> list[str]:
        """Delete ``keys`` on every replica, each server's share on its own (dead or not); return
        the keys some replica did not confirm."""
        undelivered = {key for failed in self.delete_each(keys).values() for key in failed}
        return [key for key in dict.fromkeys(keys) if key in undelivered]

    def delete_each(self, keys: Sequence[str]) -> dict[str, list[str]]:
        """Delete ``keys`` on every replica, each server's share on its own (dead or not); return,
        for each server that did not confirm its whole share, the keys it did not confirm."""
        shares: dict[str, list[str]] = {}
        for key in dict.fromkeys(keys):
            for name in self.replicas_of(key):
                shares.setdefault(name, []).append(key)
        return self.delete_on(shares)

    def delete_on(self, shares: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """Delete on each server (``host:port``) the keys given for it alone (dead or not), as
        :meth:`delete_each` does; the journal's sweep sends a key only to the replicas that have
        not confirmed it yet."""
        calls = {name: functools.partial(self._caches[name].delete_many, share)
                 for name, share in shares.items() if share}
        # a deadline, as for reads: a paused server's calls queue behind its few threads, each for a
        # whole timeout; those not started by then are left to the journal, not waited for in turn
        answers = self._fan_out.run(calls, within=self._timeout)
        undelivered: dict[str, list[str]] = {}
        for name in calls:
            failed = answers.results.get(name, shares[name])
            if failed:
                undelivered[name] = list(failed)
            else:
                self._reader.revive(name)  # it answers: reads may ask it again at once
        return undelivered

    def list_entries(self, prefix: str) -> list[ListedEntry]:
        """Return every live entry under ``prefix`` once, as its replicas report it (``dal cache ls``).

        Each server is crawled (``lru_crawler metadump``, as for one copy); a key is listed once,
        with its largest size, its latest access and expiry, and read when any replica was read.
        A server that does not answer raises ``BackendError``: a listing of some replicas only
        would miss entries silently. Hits are not counted on a replicated cache (``None``).
        """
        return merge_listings(self._caches[name].list_entries(prefix) for name in self._names)

    def nodes(self) -> list[str]:
        """Return the servers as ``host:port``."""
        return sorted(self._names)

    def node(self, key: str) -> str:
        """Return the first replica of ``key`` (the server a single-copy cache would use)."""
        return self.replicas_of(key)[0]

    def close(self) -> None:
        self._fan_out.close()
        self._reader.close()
        for cache in self._caches.values():
            cache.close()

    def _each(self, key: str, call: Callable[[MemcachedCache], R]) -> Answers[R]:
        """Run ``call`` on the single-server cache of every replica of ``key``, in parallel."""
        servers = self.replicas_of(key)
        answers = self._fan_out.run({name: functools.partial(call, self._caches[name]) for name in servers})
        if len(answers.results) < len(servers):
            self._failed([name for name in servers if name not in answers.results])
        return answers

    def _failed(self, names: list[str]) -> None:
        """Tell :attr:`on_failure` which servers did not answer."""
        if names and self.on_failure is not None:
            self.on_failure(names)

    def _enough_answered(self, key: str, what: str, answered: int) -> None:
        """Raise ``BackendError`` when fewer than ``needed`` replicas of ``key`` answered ``what``."""
        if answered < self.needed:
            raise BackendError(f"memcached {what} on {self.url}: {answered} of the {self.replicas} replicas "
                               f"answered, {self.needed} needed")
