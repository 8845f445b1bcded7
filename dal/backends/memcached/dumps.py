"""What a memcached server itself says it holds (``lru_crawler metadump all``), and hit counters.

The listing reads the server, never a client-side shadow: ``lru_crawler metadump all`` answers
one line per live item, ``key=<url-encoded> exp=<unix time|-1> la=<unix time> cas=<n>
fetch=<yes|no> cls=<slab class> size=<bytes>`` and ``END``. ``size`` is the bytes the item
occupies in its slab (header, key and value), ``la`` memcached's last access, which it bumps
on a write and, with its segmented LRU, on the second fetch and then at most once a minute: it
is the order memcached itself evicts in. ``fetch`` says whether the item was ever read, not
how often.

Exact hit counts are opt-in (``?hits=1``): each hit then sends ``add <counter> 0 noreply``
and ``incr <counter> 1 noreply``, two commands in one write that the server applies atomically
in order, with no answer to wait for; ``<counter>`` is the wire key of ``<key>/#hits``
(:func:`~dal.backends.memcached.keys.counter_key`, see :data:`~dal.backends.base.HIT_SUFFIX`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from dal.backends.base import HIT_TTL

#: tries of a metadump while the server's crawler is busy with another request
BUSY_TRIES = 50


@dataclass(frozen=True, slots=True)
class ListedEntry:
    """One item as the server reports it."""

    key: str
    #: bytes the item occupies on the server (header, key and value)
    size: int
    #: exact hits when counted (``?hits=1``), else ``None``
    hits: int | None
    #: unix time of the server's last access
    last_access: float
    #: unix time it expires, ``None`` when it never does
    expires_at: float | None
    #: whether it was ever read
    fetched: bool
    #: listed under its hashed wire key (over memcached's 250 bytes): ``key`` is that wire key, and
    #: which entry it is cannot be read back
    hashed: bool = False


def merge_listings(listings: Iterable[list[ListedEntry]]) -> list[ListedEntry]:
    """Return the entries of several servers' listings (the replicas of a replicated cache), each key
    once: with its largest size, its latest access and expiry, and read when any replica was read."""
    merged: dict[str, ListedEntry] = {}
    for listing in listings:
        for entry in listing:
            seen = merged.get(entry.key)
            merged[entry.key] = entry if seen is None else ListedEntry(
                entry.key, max(seen.size, entry.size), None, max(seen.last_access, entry.last_access),
                None if seen.expires_at is None or entry.expires_at is None
                else max(seen.expires_at, entry.expires_at), seen.fetched or entry.fetched, entry.hashed)
    return list(merged.values())


def count_hit(counter: bytes) -> bytes:
    """Return the commands counting one hit on the counter's wire key ``counter`` (no answers:
    ``noreply``); that is :func:`~dal.backends.memcached.keys.counter_key`, never the entry's wire
    key and a suffix: a key over 250 bytes would be refused, its data line read as a command and
    answered ``ERROR``, which the next ``get`` would read as its own."""
    return (b"add " + counter + b" 0 " + str(HIT_TTL).encode() + b" 1 noreply\r\n0\r\n"
            b"incr " + counter + b" 1 noreply\r\n")


def metadump(server: tuple[str, int], timeout: float, wanted: Callable[[str], bool]) -> list[ListedEntry]:
    """Return the live items of one server whose wire key is ``wanted`` (a full crawl of it)."""
    with socket.create_connection(server, timeout=timeout) as connection:
        connection.settimeout(max(timeout, 5.0))  # a crawl of a big server takes a while
        for _ in range(BUSY_TRIES):
            lines = _dump(connection)
            if lines is not None:
                return [entry for entry in map(_parse, lines) if entry is not None
                        and wanted(entry.key)]
            time.sleep(0.05)
    raise OSError(f"memcached {server[0]}:{server[1]}: the LRU crawler stayed busy")


def _dump(connection: socket.socket) -> list[bytes] | None:
    """Return the metadump's item lines, ``None`` when the crawler is busy."""
    connection.sendall(b"lru_crawler metadump all\r\n")
    buffer = b""
    while not buffer.endswith(b"END\r\n"):
        refused = buffer.startswith((b"BUSY", b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR"))
        if refused and buffer.endswith(b"\r\n"):
            if buffer.startswith(b"BUSY"):
                return None
            answer = buffer.decode("ascii", "replace").strip()
            raise OSError(f"memcached refused lru_crawler metadump: {answer}")
        chunk = connection.recv(262144)
        if not chunk:
            raise OSError("memcached closed the connection during a metadump")
        buffer += chunk
    return [line for line in buffer[:-5].split(b"\n") if line.startswith(b"key=")]


def _parse(line: bytes) -> ListedEntry | None:
    """Return the item a metadump line describes, under its wire key (the dump url-encodes it)."""
    fields = dict(part.split(b"=", 1) for part in line.strip().split(b" ") if b"=" in part)
    key = unquote(fields[b"key"].decode("ascii"))
    expires = int(fields.get(b"exp", b"-1"))
    if 0 < expires < time.time():
        return None  # expired, not reclaimed yet
    return ListedEntry(key, int(fields.get(b"size", b"0")), None, float(fields.get(b"la", b"0")),
                       None if expires <= 0 else float(expires), fields.get(b"fetch") == b"yes")
