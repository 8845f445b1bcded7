"""What a memcached server itself says it holds (``lru_crawler metadump``), and hit counters.

The listing reads the server, never a client-side shadow: ``lru_crawler metadump hash`` answers
one line per live item, ``key=<url-encoded> exp=<unix time|-1> la=<unix time> cas=<n>
fetch=<yes|no> cls=<slab class> size=<bytes>`` and ``END``. ``size`` is the bytes the item
occupies in its slab (header, key and value), ``la`` memcached's last access, which it bumps
on a write and, with its segmented LRU, on the second fetch and then at most once a minute: it
is the order memcached itself evicts in. ``fetch`` says whether the item was ever read, not
how often.

``hash`` walks memcached's hash table, one bucket at a time under that bucket's lock: every item
stored from before the walk to its end is listed, once, whatever reads, writes and memcached's LRU
maintainer do to it meanwhile; one stored or removed during the walk may be listed or not. ``all``
walks the LRUs instead, and passes over every item that something else holds as it passes (or
whose lock stripe another request holds): a read in progress, and for up to a second an item read
a second time while in COLD, which memcached holds until its LRU maintainer (asleep up to a
second) wakes and moves it to WARM. So a listing taken right after such reads left them out: once
in CI, and every time in
``tests/test_cache_admin.py::test_a_memcached_listing_keeps_the_entries_a_second_read_is_moving_out_of_its_cold_lru``
(10 entries gone COLD, read twice, listed at once: none of the 10 listed, in 20 runs of 20). The
hash walk came with memcached 1.6.9; an older server refuses it (``BADCLASS``) and is walked by
its LRUs, :data:`LRU_MAINTAINER_SLEEP` apart, until a walk adds no key (:data:`LRU_WALKS` at
most), each key listed once with its newest ``cas``: only an item held (read) during each of those
walks is left out.

What it costs, measured on the 2-core development machine (memcached 1.6.18, 10,000 items of
300 bytes, best of 20 of :func:`metadump`): 57 ms by the hash walk, 44 ms by the one LRU walk
this module used to take (the hash walk visits every bucket, 65,536 at memcached's default
``hashpower``, and sleeps 0.1 ms after each 1,000 as the LRU walk does after each 1,000 items);
a server before 1.6.9 takes 1.1 s (two LRU walks a second apart), 2.1 s when the second adds keys.

Exact hit counts are opt-in (``?hits=1``): each hit then sends ``add <counter> 0 noreply``
and ``incr <counter> 1 noreply``, two commands in one write that the server applies atomically
in order, with no answer to wait for; ``<counter>`` is the wire key of ``<key>/#hits``
(:func:`~dal.backends.memcached.keys.counter_key`, see :data:`~dal.backends.base.HIT_SUFFIX`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from urllib.parse import unquote

from dal.backends.base import HIT_TTL
from dal.backends.memcached.keys import logical_key

#: tries of a metadump while the server's crawler is busy with another request
BUSY_TRIES = 50
#: walks of the LRUs, at most, on a server without the hash table walk (before memcached 1.6.9)
LRU_WALKS = 3
#: seconds between two walks of the LRUs: the longest sleep of memcached's LRU maintainer, which
#: holds an item read a second time while in COLD until it wakes and moves it to WARM
LRU_MAINTAINER_SLEEP = 1.0
#: answers refusing a walk for now: the crawler is busy, or (memcached 1.6.28 on) ``ERROR locked
#: try again later`` while the hash table grows
_BUSY = (b"BUSY", b"NOTSTARTED", b"ERROR locked")
#: the answer of a server without the hash walk (before 1.6.9: ``hash`` is no slab class)
_NO_HASH_WALK = b"BADCLASS"


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


def read_back(entry: ListedEntry) -> ListedEntry:
    """Return a dumped item under its key (under its wire key, ``hashed``, when that is hashed)."""
    key = logical_key(entry.key)
    if key is None:
        return replace(entry, hashed=True)
    return replace(entry, key=key)


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
    """Return the live items of one server whose wire key is ``wanted``, each once: its hash table
    walked, or its LRUs until a walk adds no key (see the module's notes)."""
    with socket.create_connection(server, timeout=timeout) as connection:
        connection.settimeout(max(timeout, 5.0))  # a crawl of a big server takes a while
        lines = _walk(connection, server, b"hash")
        if lines is None:  # memcached before 1.6.9
            lines, seen = [], set[bytes]()
            for walk in range(LRU_WALKS):
                if walk:
                    time.sleep(LRU_MAINTAINER_SLEEP)
                walked = _walk(connection, server, b"all") or []
                keys = {line.split(b" ", 1)[0] for line in walked}
                lines += walked
                if walk and keys <= seen:
                    break
                seen |= keys
        # the server's clock, asked only when an item expires: see _parse
        late = server_lag(connection) if any(b" exp=-1 " not in line for line in lines) else 0.0
    newest: dict[str, tuple[int, ListedEntry]] = {}
    for line in lines:
        parsed = _parse(line, late)
        if parsed is not None and wanted(parsed[1].key) and parsed[0] >= newest.get(parsed[1].key, (-1,))[0]:
            newest[parsed[1].key] = parsed
    return [entry for _, entry in newest.values()]


def _walk(connection: socket.socket, server: tuple[str, int], how: bytes) -> list[bytes] | None:
    """Return the item lines of one ``lru_crawler metadump <how>``, ``None`` when the server has no
    such walk; a crawler busy all :data:`BUSY_TRIES` raises ``OSError``."""
    for _ in range(BUSY_TRIES):
        lines = _dump(connection, how)
        if isinstance(lines, list):
            return lines
        if lines == _NO_HASH_WALK:
            return None
        time.sleep(0.05)
    raise OSError(f"memcached {server[0]}:{server[1]}: the LRU crawler stayed busy")


def _dump(connection: socket.socket, how: bytes) -> list[bytes] | bytes:
    """Return the metadump's item lines, or the answer refusing it for now or for good
    (:data:`_BUSY`, :data:`_NO_HASH_WALK`); any other refusal raises ``OSError``."""
    connection.sendall(b"lru_crawler metadump " + how + b"\r\n")
    buffer = b""
    while not buffer.endswith(b"END\r\n"):
        answer = buffer.removeprefix(b"OK\r\n")  # memcached 1.6.43 on answers OK first
        refused = answer.startswith((*_BUSY, _NO_HASH_WALK, b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR"))
        if refused and answer.endswith(b"\r\n"):
            if answer.startswith((*_BUSY, _NO_HASH_WALK)):
                return _NO_HASH_WALK if answer.startswith(_NO_HASH_WALK) else _BUSY[0]
            text = answer.decode("ascii", "replace").strip()
            raise OSError(f"memcached refused lru_crawler metadump: {text}")
        chunk = connection.recv(262144)
        if not chunk:
            raise OSError("memcached closed the connection during a metadump")
        buffer += chunk
    return [line for line in buffer[:-5].split(b"\n") if line.startswith(b"key=")]


def server_lag(connection: socket.socket) -> float:
    """Return how far this host's clock is ahead of the server's (its ``stats`` ``time``): its clock
    ticks once a second, so this is the skew between the two clocks plus up to a second."""
    connection.sendall(b"stats\r\n")
    buffer = b""
    while not buffer.endswith(b"END\r\n"):
        chunk = connection.recv(65536)
        buffer += chunk
        refused = buffer.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")) and b"\r\n" in buffer
        if not chunk or refused:
            raise OSError(f"memcached did not answer stats: {buffer[:80]!r}")
    now = time.time()
    for line in buffer.split(b"\r\n"):
        if line.startswith(b"STAT time "):
            return now - int(line.split()[2])
    raise OSError("memcached's stats did not say its time")


def _parse(line: bytes, late: float) -> tuple[int, ListedEntry] | None:
    """Return the ``cas`` and the item a metadump line describes, under its wire key (the dump
    url-encodes it); ``None`` when it has expired.

    Its expiry, on this host's clock, is the dump's ``exp`` (the server's time) plus ``late``
    (:func:`server_lag`) plus one second, and it is left out only once that passed: the server
    drops an item at the first tick of its clock at or past ``exp``, which comes up to a second
    after ``exp``'s second began (its ticks drift against the second, measured 10 ms a tick on a
    loaded host), and the skew between the clocks is ``late`` less up to a second. So an entry
    is listed until it expires, and said to expire less than 2 s after it does.
    """
    fields = dict(part.split(b"=", 1) for part in line.strip().split(b" ") if b"=" in part)
    key = unquote(fields[b"key"].decode("ascii"))
    exp = int(fields.get(b"exp", b"-1"))
    expires = None if exp <= 0 else exp + late + 1
    if expires is not None and expires < time.time():
        return None  # expired, not reclaimed yet
    return int(fields.get(b"cas", b"0")), ListedEntry(
        key, int(fields.get(b"size", b"0")), None, float(fields.get(b"la", b"0")), expires,
        fields.get(b"fetch") == b"yes")
