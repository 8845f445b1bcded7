"""A replicated memcached refuses one server named twice under two spellings.

``127.0.0.1:P`` and ``localhost:P`` are one server: counted as two replicas, they always agree,
so one faulty server plus one dead one made a quorum of a stale entry, and ``replicas=2`` over
the two spellings dodged "more replicas than servers" (docs/caching.md, "Quorum reads").
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from dal.backends import backend_class
from dal.backends.memcached.addresses import addresses_of, refuse_aliases
from dal.backends.memcached.replicated import ReplicatedCache
from dal.backends.url import parse_url
from dal.exceptions import ConfigurationError

PORT = 11999


def _open(url: str) -> Any:
    """Open a memcached:// URL (no connection is made: the servers need not run)."""
    return backend_class("volatile", "memcached").from_url(parse_url(url))


@pytest.mark.parametrize("alias", ["localhost", "LOCALHOST", "127.1", "[::ffff:127.0.0.1]", "2130706433"])
def test_two_spellings_of_one_server_are_refused_naming_both(alias: str) -> None:
    url = f"memcached://127.0.0.1:{PORT},{alias}:{PORT},127.0.0.1:{PORT + 1}?replicas=3"
    with pytest.raises(ConfigurationError, match="names one memcached server twice") as raised:
        _open(url)
    assert f"127.0.0.1:{PORT}" in str(raised.value) and f"{alias}:{PORT}" in str(raised.value)


def test_two_spellings_cannot_make_more_replicas_than_servers() -> None:
    with pytest.raises(ConfigurationError, match=f"127.0.0.1:{PORT} and localhost:{PORT}"):
        _open(f"memcached://127.0.0.1:{PORT},localhost:{PORT}?replicas=2")


def test_one_copy_of_each_entry_is_not_checked() -> None:
    """Without replicas nothing is voted on: two names of one server hold the same data."""
    _open(f"memcached://127.0.0.1:{PORT},localhost:{PORT}").close()


def test_distinct_servers_keep_their_names_as_written_for_placement() -> None:
    cache = _open(f"memcached://localhost:{PORT},127.0.0.1:{PORT + 1},LocalHost:{PORT + 2}?replicas=2")
    assert isinstance(cache, ReplicatedCache)
    written = {f"localhost:{PORT}", f"127.0.0.1:{PORT + 1}", f"LocalHost:{PORT + 2}"}
    placed = {name for key in ("a", "b", "c", "d", "e", "f") for name in cache.replicas_of(key)}
    assert placed <= written and len(placed) >= 2  # rendezvous hashing of the text, unresolved
    cache.close()


def test_a_name_that_does_not_resolve_is_left_out_of_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def resolve(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "cache-b.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    assert addresses_of("cache-b.example", PORT) == frozenset()
    refuse_aliases("url", [("127.0.0.1", PORT), ("cache-b.example", PORT)])  # a missing server, not refused
    with pytest.raises(ConfigurationError):
        refuse_aliases("url", [("127.0.0.1", PORT), ("cache-b.example", PORT), ("localhost", PORT)])


def test_addresses_are_compared_in_one_spelling() -> None:
    loopback = {("127.0.0.1", PORT)}
    assert addresses_of("[::ffff:127.0.0.1]", PORT) == addresses_of("127.0.0.1", PORT) == loopback
    assert ("127.0.0.1", PORT) in addresses_of("LOCALHOST", PORT)
