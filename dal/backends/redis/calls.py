"""dal's own call path for its hot Redis commands: redis-py's connections, dal's list of them.

redis-py's client spends about 30 us of a 100 us loopback call around the connection: the pool's
checkout and release under a lock, the retry wrapper, the observability hooks, the deprecated-args
wrapper, the response callbacks. :class:`Calls` keeps redis-py's ``Connection`` (connect, AUTH, TLS,
timeouts, the RESP parser, dal's packer) and replaces that layer by a list, keeping what the pool
guarantees:

- a connection serves one call at a time: ``list.pop`` and ``append`` are atomic, so two threads
  never hold the same one;
- a call that does not read its whole answer (any exception, ``KeyboardInterrupt`` or one raised by
  a signal handler included) disconnects its connection instead of putting it back: a later call
  would read the stale answer as its own;
- before use, an idle connection the server closed, or that holds unread bytes, is reconnected, as
  redis-py's ``ConnectionPool.get_connection`` does (one ``poll``: about 1.5 us). redis-py keeps a
  connection holding bytes when maintenance notifications are on (its default under RESP3, in case
  they are a notice): dal sends nothing that makes a server push, so bytes there are a stale answer;
- a forked child never uses (nor shuts down) its parent's sockets: it drops the list and opens its own;
- one attempt per call, as the client is configured (``Retry(NoBackoff(), 0)``): a commit is never
  sent twice.

Answers come back as the server sent them (no response callbacks): bytes, ``None``, ints and lists.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dal.exceptions import InvalidValueError

#: what makes redis-py's pool reconnect an idle connection instead of failing the call
STALE = (RedisConnectionError, RedisTimeoutError, OSError)


class Connection(Protocol):
    """The part of ``redis.Connection`` a call uses."""

    @property
    def is_connected(self) -> bool: ...
    def connect(self) -> None: ...
    def disconnect(self, *args: Any, **kwargs: Any) -> None: ...
    def can_read(self, timeout: float = 0) -> bool: ...
    def pack_command(self, *args: Any) -> Any: ...
    def pack_commands(self, commands: Any) -> Any: ...
    def send_packed_command(self, command: Any, check_health: bool = True) -> None: ...
    def read_response(self, disable_decoding: bool = False) -> Any: ...
    def should_reconnect(self) -> bool: ...


class Calls:
    """One command per call on connections made like ``pool``'s own (its class and settings)."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._free: list[Connection] = []
        self._pid = os.getpid()

    def call(self, *args: Any) -> Any:
        """Send one command, return the server's answer; a ``ResponseError`` (an error reply, read
        whole) leaves the connection in use, any other exception disconnects it."""
        free, connection = self._take()
        try:
            self._ready(connection)
            connection.send_packed_command(connection.pack_command(*args), check_health=False)
            answer = connection.read_response()
        except redis.ResponseError:
            self._put_back(free, connection)
            raise
        except BaseException as exc:
            # between the send and the end of the answer, or in the middle of connecting: whatever
            # is left on this socket belongs to no later call
            connection.disconnect()
            _check_sendable(exc)
            raise
        self._put_back(free, connection)
        return answer

    def pipeline(self, commands: Sequence[tuple[Any, ...]], *, transaction: bool,
                 errors_inline: bool = False) -> list[Any]:
        """Send ``commands`` in one write (between ``MULTI`` and ``EXEC`` with ``transaction``: they
        run as one) and return their answers.

        An error reply is read whole, like any answer, so the connection is used again; then the
        first error raises, or with ``errors_inline`` (outside a transaction) stands in its
        command's place. Any other exception drops the connection, as :meth:`call` does.
        """
        sent = [("MULTI",), *commands, ("EXEC",)] if transaction else list(commands)
        free, connection = self._take()
        answers: list[Any] = []
        try:
            self._ready(connection)
            connection.send_packed_command(connection.pack_commands(sent), check_health=False)
            for _ in sent:
                try:
                    answers.append(connection.read_response())
                except redis.ResponseError as exc:  # read whole: the next answer follows
                    answers.append(exc)
        except BaseException as exc:
            connection.disconnect()  # an answer may be left unread
            _check_sendable(exc)
            raise
        self._put_back(free, connection)
        if transaction:
            if isinstance(answers[-1], redis.ResponseError):
                raise answers[-1]  # EXECABORT: a command was refused when queued
            if answers[-1] is None:  # EXEC aborted: only a WATCH does that, and dal sends none
                raise redis.exceptions.ExecAbortError("EXEC aborted the transaction")
            answers = answers[-1]  # a failed command's error comes in its place
        if not errors_inline:
            for answer in answers:
                if isinstance(answer, redis.ResponseError):
                    raise answer
        return answers

    def probe(self, timeout: float) -> None:
        """Open a connection like the others but waiting at most ``timeout`` seconds to connect and
        for each answer, set it up (the pool's ``redis_connect_func`` runs: dal's checks of the
        server), and close it: a look at the server that a frozen one holds up only so long."""
        pool: Any = self._pool
        connection: Connection = pool.connection_class(
            **{**pool.connection_kwargs, "socket_timeout": timeout, "socket_connect_timeout": timeout})
        try:
            _connect(connection)
        finally:
            connection.disconnect()

    def close(self) -> None:
        """Disconnect the idle connections (a later call opens new ones; one in use at the time is
        disconnected when its call ends)."""
        free, self._free = self._free, []
        if self._pid != os.getpid():
            return  # the parent's sockets: not this process's to close
        while True:  # popped one by one: a call that took one from this list meanwhile keeps it alone
            try:
                connection = free.pop()
            except IndexError:
                return
            connection.disconnect()

    def _take(self) -> tuple[list[Connection], Connection]:
        """Return the list a connection goes back to and the connection: one of it, or a new one."""
        if self._pid != os.getpid():
            self._forked()
        free = self._free
        try:
            return free, free.pop()
        except IndexError:
            return free, self._new()

    def _new(self) -> Connection:
        pool: Any = self._pool  # the pool's attributes are not in every version of the stubs
        connection: Connection = pool.connection_class(**pool.connection_kwargs)
        return connection

    def _ready(self, connection: Connection) -> None:
        """Connect, or reconnect a connection the server closed or that holds unread bytes: what
        ``ConnectionPool.get_connection`` does (its ``can_read`` is one ``poll`` of the socket)."""
        if not connection.is_connected:
            _connect(connection)
        try:
            stale = connection.can_read()
        except STALE:
            stale = True
        if stale:
            connection.disconnect()
            _connect(connection)
            if connection.can_read():
                raise RedisConnectionError("Connection not ready")

    def _put_back(self, free: list[Connection], connection: Connection) -> None:
        # a server's maintenance notice (RESP3, redis-py's default) can ask for a new session, which
        # redis-py's pool honours on release: so does this list
        if free is self._free and not connection.should_reconnect():
            free.append(connection)
            if free is not self._free:  # close() swapped the list meanwhile, and may have drained it
                connection.disconnect()
        else:  # asked to, or closed (or forked) while the call ran
            connection.disconnect()

    def _forked(self) -> None:
        # the inherited connections are dropped, never disconnected here: redis-py's own disconnect
        # skips the shutdown of a socket another pid opened, so the parent's sessions are untouched
        self._free = []
        self._pid = os.getpid()


def _check_sendable(exc: BaseException) -> None:
    """Raise InvalidValueError for the UnicodeEncodeError of packing a command, before anything is
    sent: a key with a lone surrogate, which UTF-8 cannot encode (connecting raises no such error:
    :func:`_connect` makes it a ConnectionError)."""
    if isinstance(exc, UnicodeEncodeError):
        raise InvalidValueError(f"cannot send {exc.object!r} to Redis: UTF-8 cannot encode its lone "
                                f"surrogate {exc.object[exc.start:exc.end]!r}") from exc


def _connect(connection: Connection) -> None:
    """Connect; what fails in setting up the connection is a ``redis.ConnectionError``.

    redis-py turns socket errors into ConnectionError, but lets others pass: ``ssl``'s TypeError for
    a key without its certificate, an OverflowError for a socket timeout out of range. Every caller
    handles RedisError (the cache counts it as a miss), and none expects those, which escaped a save
    after its commit (the cache's invalidation connects too).
    """
    try:
        connection.connect()
    except (redis.RedisError, OSError):
        raise
    except Exception as exc:
        raise RedisConnectionError(f"could not set up a connection: {type(exc).__name__}: {exc}") from exc
