"""What a Redis server must be for dal, and the longest argument it takes.

dal needs a standalone ``redis-server`` (a primary, with replicas or not): ``INFO server`` names its
``redis_mode``, and a cluster-mode server or a Sentinel is refused at first contact, in either role.
On a cluster-mode server, even one node owning every slot, a script or an ``MGET`` over keys of
several slots is refused (the commit's cache evictions, the cache's multi-get and invalidations),
and a node that does not own a key answers ``MOVED``, which dal does not follow.

Redis refuses a request holding an argument longer than its ``proto-max-bulk-len`` (512 MB by
default, at least 1 MB), and it does so while reading the request: the connection is reset
mid-send, or the reply is a protocol error. dal compares each key and value with it first.
"""

from __future__ import annotations

from typing import Any

import redis

#: the least ``proto-max-bulk-len`` Redis takes (CONFIG SET refuses less): an argument no longer
#: than this always goes, so a request without a longer one needs no look at the server's setting
LEAST_BULK = 1024 * 1024
#: Redis's default ``proto-max-bulk-len``, assumed where the server does not let the client read it
DEFAULT_BULK = 512 * 1024 * 1024
#: the most bytes dal adds around a key in any command that carries it: ``{dal}:d:`` before a data
#: key (8), ``dal:c:`` before a cache key and ``/#hits`` after its hit counter's (12)
AROUND = 16
#: the length (characters or bytes) from which a key or value is measured: UTF-8 holds a character
#: in at most 4 bytes, so anything shorter is, with :data:`AROUND`, at most :data:`LEAST_BULK` bytes
SCREEN = (LEAST_BULK - AROUND) // 4

#: the ``redis_mode`` values dal refuses, with what to do instead
MODES = {
    "cluster": "a cluster-mode server (cluster-enabled yes) spreads keys over slots, refuses a script "
               "or a multi-key command over keys of several slots even with one node, and answers "
               "MOVED for a key another node owns. dal needs a standalone redis-server (a primary, "
               "with replicas or not): run one without cluster-enabled",
    "sentinel": "a Sentinel monitors servers and holds no data. dal needs a standalone redis-server: "
                "point the URL at the primary it monitors",
}


class ServerModeRefused(redis.ConnectionError):
    """A connection reached a server of a mode dal refuses (:data:`MODES`); the message says why."""


def connect_checked(where: str, connection: Any) -> None:
    """Set up a new connection (redis-py's ``on_connect``: AUTH, HELLO, SELECT) for a server at
    ``where``. A server of a mode dal refuses may refuse a step of it, before any check could read
    its mode: a cluster-mode server refuses ``SELECT`` of a database other than 0, a Sentinel has no
    ``SELECT``. Such an error reply is then :class:`ServerModeRefused` when ``INFO server``, read on
    the same connection, names such a mode; otherwise it stands."""
    try:
        connection.on_connect()
    except redis.ResponseError:
        try:
            connection.send_command("INFO", "server")
            info = connection.read_response()
        except (redis.RedisError, OSError):
            info = None  # INFO refused too (or the server went): the first error says more
        refused = None if info is None else mode_refusal(where, info)
        if refused is not None:
            raise ServerModeRefused(refused) from None
        raise


def mode_refusal(where: str, info: Any) -> str | None:
    """Return why the server an ``INFO server`` answer describes is refused, else ``None``."""
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("redis_mode:"):
            mode = line[len("redis_mode:"):].strip()
            cause = MODES.get(mode)
            return None if cause is None else (
                f"the redis server of {where} runs in {mode} mode (redis_mode:{mode} in INFO server): "
                f"{cause}")
    return None


def byte_length(arg: str | bytes) -> int:
    """Return how many bytes ``arg`` is sent as (UTF-8 for text)."""
    return len(arg) if isinstance(arg, bytes) else len(arg.encode("utf-8", "surrogatepass"))


def bulk_limit_of(answer: Any) -> int | None:
    """Return the limit a ``CONFIG GET proto-max-bulk-len`` answer names (a map under RESP3, a
    name and its value under RESP2), else ``None``."""
    if isinstance(answer, dict) and len(answer) == 1:
        answer = next(iter(answer.items()))
    if isinstance(answer, list | tuple) and len(answer) == 2:
        try:
            return int(answer[1])
        except (TypeError, ValueError):
            return None
    return None
