"""Refuse a replicated cache that names one memcached server twice under two spellings.

A quorum counts servers: ``127.0.0.1:P`` and ``localhost:P`` (or ``LOCALHOST:P``, ``127.1:P``)
are one server, whose two "replicas" always agree, so one faulty server (a missed invalidation)
plus one dead one would make a quorum of a stale entry. The text of each ``host:port`` stays
what placement hashes (rendezvous hashing over the names as written: keys must not move); only
this check resolves them.

Checked once, when the replicated cache is opened, against what each name resolves to then
(``socket.getaddrinfo``: a numeric address needs no DNS). A name that does not resolve then is
left out of the check, not refused: the cache tolerates a missing server by design (its replies
are missing, reads fall short of a quorum and go to the durable store), and an application must
not fail to start because one cache server's name is not in DNS yet. Since names may also resolve
differently later, this is a guard against a mistaken URL, not a guarantee: name each server
once, by one spelling.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from dal.exceptions import ConfigurationError

__all__ = ["addresses_of", "refuse_aliases"]


def _canonical(address: str) -> str:
    """Return one spelling of a resolved address (an IPv4-mapped IPv6 address as its IPv4)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:  # a scoped link-local address (fe80::1%eth0): compared as written
        return address
    mapped = parsed.ipv4_mapped if isinstance(parsed, ipaddress.IPv6Address) else None
    return str(mapped or parsed)


def addresses_of(host: str, port: int) -> frozenset[tuple[str, int]]:
    """Return the (address, port) pairs ``host`` resolves to now; none when it does not resolve."""
    name = host.removeprefix("[").removesuffix("]").lower()  # a URL's IPv6 host keeps its brackets
    try:
        found = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # socket.gaierror is an OSError; an over-long label a UnicodeError
        return frozenset()
    return frozenset((_canonical(str(sockaddr[0])), int(sockaddr[1])) for *_, sockaddr in found)


def refuse_aliases(where: str, servers: Sequence[tuple[str, int]]) -> None:
    """Raise ConfigurationError when two of ``servers`` resolve to a shared (address, port).

    ``where`` names the configuration (the URL) in the message, which gives both spellings.
    """
    seen: dict[tuple[str, int], str] = {}
    for host, port in servers:
        spelling = f"{host}:{port}"
        for address in sorted(addresses_of(host, port)):
            other = seen.setdefault(address, spelling)
            if other != spelling:
                raise ConfigurationError(
                    f"{where} names one memcached server twice: {other} and {spelling} both reach "
                    f"{address[0]} port {address[1]}; each replica must be a server of its own, "
                    "so name it once")
