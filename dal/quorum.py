"""Quorum reads over replicated cache servers: how many replies make an answer, and whose.

The pure core of a replicated volatile tier, after Ganeti's confd client (it asks several
master candidates the same question and needs ``_NeededReplies`` of them), without its three
flaws: confd counted *replies*, so disagreeing replies still made a quorum; it accepted a
reply from a peer it never asked; it compared MACs with ``==``. Here:

- :func:`needed_replies` is confd's table: all of 1 or 2 replicas, all but one of 3 or 4,
  then half plus one (1->1, 2->2, 3->2, 4->3, 5->3, 6->4, 7->4, 8->5; confd's docstring says
  "4->2, 6->3", which its own code and unit test contradict).
- :func:`vote` counts *agreement*: a cached entry is served only when at least ``needed``
  asked replicas returned the very same bytes and no answering replica returned anything
  else (other bytes, or a miss). A reply from a server that was not asked is ignored.
- :func:`replicas_for` picks the servers of a key by rendezvous (highest random weight)
  hashing, with the hash ``dal.backends.memcached.client.Rendezvous`` uses today
  (pymemcache's MurmurHash3 x86 32-bit, seed 0, of ``f"{server}-{key}"``, ties to the
  greater server name), so a key's first replica is the server it lives on today.

Signatures are not this module's business: the caller opens every reply with
:meth:`dal.cache.signing.Signer.open`, which checks the HMAC with ``hmac.compare_digest``
(constant time), and passes a reply whose signature fails as no reply at all. :func:`vote`
then compares the opened entries with ``==``: they are payloads every replica may hold,
not secrets, so a timing difference tells an attacker nothing a read would not.

Nothing here does I/O; the memcached backend does the asking (issue 14).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pymemcache.client.murmur3 import murmur3_32  # the hash the memcached client already picks servers by

from dal.exceptions import ConfigurationError

__all__ = ["Kind", "Outcome", "needed_replies", "replicas_for", "vote"]


def needed_replies(n: int) -> int:
    """Return how many replicas of ``n`` must agree before a cached entry is served."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"the number of replicas must be a whole number of at least 1, not {n!r}")
    if n <= 2:
        return n
    if n <= 4:
        return n - 1
    return n // 2 + 1


class Kind(enum.Enum):
    """What a vote decided."""

    #: serve ``Outcome.value``: at least ``needed`` replicas returned it and none said otherwise
    HIT = "hit"
    #: at least ``needed`` replicas missed and none returned an entry: read the durable store and fill
    MISS = "miss"
    #: the replies agree, but fewer than ``needed`` came: read the durable store
    SHORT = "short"
    #: two answering replicas differ (two entries, or an entry and a miss): read the durable store
    DISAGREE = "disagree"


@dataclass(frozen=True)
class Outcome:
    """The decision on one key, from the replies of the replicas asked for it."""

    kind: Kind
    #: the agreed entry on a ``HIT``; ``None`` otherwise
    value: bytes | None
    #: replies counted: from distinct asked servers (an entry or a miss)
    replies: int
    #: replies ignored because their server was not asked
    unasked: int
    #: asked servers, in the order asked, whose state is not the agreed one: on a ``HIT`` or a
    #: ``MISS`` those that did not answer; on ``SHORT`` or ``DISAGREE`` (nothing agreed) all of them
    repair: tuple[str, ...]


def vote(asked: Sequence[str], replies: Mapping[str, bytes | None], needed: int) -> Outcome:
    """Decide what the replies of the replicas asked for one key allow.

    ``replies`` maps a server to the entry it returned (already opened, its signature checked)
    or ``None`` for a miss; a server absent from it did not answer (or failed its signature).
    In order: ``DISAGREE`` when two counted replies differ (whatever their number: a
    divergence is evidence of a lost invalidation or of tampering); else ``SHORT`` when fewer
    than ``needed`` came; else ``HIT`` (all returned one entry) or ``MISS`` (all missed).
    ``asked`` naming a server twice counts it once. ``needed`` must be between 1 and the
    number of servers asked (:class:`ConfigurationError` otherwise).
    """
    order = list(dict.fromkeys(asked))
    if isinstance(needed, bool) or not isinstance(needed, int) or not 1 <= needed <= len(order):
        raise ConfigurationError(
            f"a vote needs between 1 and the {len(order)} servers asked to agree, not {needed!r}")
    counted = {server: replies[server] for server in order if server in replies}
    unasked = sum(1 for server in replies if server not in counted)
    answers = set(counted.values())
    if len(answers) > 1:
        kind = Kind.DISAGREE
    elif len(counted) < needed:
        kind = Kind.SHORT
    else:
        kind = Kind.MISS if None in answers else Kind.HIT
    if kind in (Kind.HIT, Kind.MISS):
        repair = tuple(server for server in order if server not in counted)
        value = next(iter(answers)) if kind is Kind.HIT else None
    else:
        repair, value = tuple(order), None
    return Outcome(kind=kind, value=value, replies=len(counted), unasked=unasked, repair=repair)


def replicas_for(key: str, servers: Sequence[str], count: int) -> list[str]:
    """Return the ``count`` servers that hold ``key``, the most preferred first.

    Rendezvous hashing: each server scores ``murmur3_32(f"{server}-{key}")`` and the highest
    scores win, ties to the greater name. The order of ``servers`` does not matter; removing a
    server moves only the keys it held, each to one new server, the others staying. Pass the
    servers as ``host:port`` and the key as sent on the wire, as ``Rendezvous`` sees them.
    Servers are compared as text, as they are hashed: two spellings of one server (``localhost``
    and ``127.0.0.1``) are the caller's to refuse, which needs name resolution (I/O, not done
    here; :mod:`dal.backends.memcached.addresses`).
    """
    if len(set(servers)) != len(servers):
        raise ConfigurationError(f"the servers {list(servers)} name one server twice")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(servers):
        raise ConfigurationError(
            f"replicas must be between 1 and the number of servers ({len(servers)}), not {count!r}")
    if count == len(servers) == 1:
        return [servers[0]]
    ranked = sorted(servers, key=lambda server: (murmur3_32(f"{server}-{key}"), server), reverse=True)
    return ranked[:count]

