"""Opening a Redis client from a store URL, the Redis keys dal owns, and how failures are reported.

``redis://[user:password@]host:port[/db][?timeout=S]`` and ``rediss://...`` (TLS, with the options
``ca_cert``, ``cert_key`` and ``cert_cert``). One server: Redis replicates a primary to its
replicas, it does not spread one keyspace over several endpoints the way etcd members serve one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import redis
import redis.utils
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

from dal.backends.base import RefusedError
from dal.backends.redis.calls import Calls
from dal.backends.redis.limits import DEFAULT_BULK, LEAST_BULK, bulk_limit_of
from dal.backends.url import StoreURL, timeout_option
from dal.exceptions import BackendError, ConfigurationError


def packs_commands(module: ModuleType | None, used_by_redis_py: bool) -> bool:
    """Whether dal packs commands with hiredis: only a hiredis redis-py itself uses (3.2 on, for
    redis-py 8) and that has ``pack_command`` (2.2 on); with an older one every call would raise
    AttributeError, an error no caller expects."""
    return module is not None and used_by_redis_py and hasattr(module, "pack_command")


try:
    import hiredis
except ImportError:  # redis-py packs in Python then, and so does dal
    HIREDIS = False
else:
    HIREDIS = packs_commands(hiredis, bool(redis.utils.HIREDIS_AVAILABLE))

DEFAULT_PORT = 6379
TLS_OPTIONS = ("ca_cert", "cert_key", "cert_cert")
#: the options a redis:// URL takes (user and password the parser takes out of the options: listed in
#: the error for an unknown one, as they are accepted; the cache adds ``hits``)
OPTIONS = ("timeout", "user", "password", *TLS_OPTIONS)
#: what redis-py raises for a server that fails, times out or refuses a command (it wraps socket errors,
#: but an SSL handshake or a DNS lookup may still surface as OSError)
ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
#: what a read answers: bytes, or None for an absent key, since the client never decodes (decode_responses
#: is off); typed Any because redis-py's own annotations say ``bytes | str`` and the types-redis stubs bytes
Raw = Any

# --- the Redis keys of the durable store --------------------------------------------------
# Every one starts with "{dal}:", so the store can share a database with other data (a fixed
# prefix). The data keys are DATA + the dal key; nothing else starts so. The braces are a cluster
# hash tag, but a cluster-mode server is refused (see :mod:`~dal.backends.redis.limits`): the
# commit script also deletes cache keys, which hash elsewhere.

#: the whole prefix of the durable store's keys
STORE_PREFIX = "{dal}:"
#: the counter every commit increments: the revision of what it writes
COUNTER = STORE_PREFIX + "revision"
#: a sorted set of every dal key (all with score 0), read in key order with ZRANGEBYLEX
INDEX = STORE_PREFIX + "keys"
#: a dal key's value lives at DATA + key, as b"<revision>:" + value
DATA = STORE_PREFIX + "d:"
#: a random name written once (SET NX): the identity of the data in this database
IDENTITY = STORE_PREFIX + "identity"
#: a role's leader holds LEADERSHIP + role (the owner token, with Redis's own expiry)
LEADERSHIP = STORE_PREFIX + "lead:"
#: the cache's keys: no hash tag, cache entries are independent of each other
CACHE = "dal:c:"
#: the longest PX dal sends (about 146 million years): Redis adds it to its clock in milliseconds and
#: refuses a sum past 2**63 - 1 ("invalid expire time")
MAX_PX = 2**62


#: error replies after which Redis wrote nothing, with what to do. Redis refuses a command so before
#: running it, and inside a script only at a write that the same condition refuses whatever came
#: before: no server state changes while a script runs, and Redis 7 refuses a write for maxmemory
#: only while the script has written nothing yet (once it has, it lets the script finish over the
#: limit rather than stop it half way). A script's error reply keeps the code since Redis 7; older
#: servers wrap it in ERR, which stays uncertain. Left out: NOPERM (an ACL may refuse a later write
#: of the script after an earlier one went through) and plain ERR (a script's runtime error).
REFUSALS = {
    "OOM": "the server is at its maxmemory and its maxmemory-policy evicts nothing for this write: "
           "raise maxmemory or free memory",
    "READONLY": "the server is a read-only replica: point the URL at the primary",
    "MISCONF": "the server refuses writes since it failed to save to disk: see its log",
    "BUSY": "the server is running a long script: wait for it or stop it (SCRIPT KILL)",
    "LOADING": "the server is loading its data into memory: retry once it has",
    "MASTERDOWN": "the server is a replica that lost its primary: point the URL at the primary",
}


def refusal(exc: BaseException) -> str | None:
    """Return what to do about an error reply after which Redis wrote nothing, else ``None``."""
    if not isinstance(exc, redis.ResponseError):
        return None
    # redis-py strips the code from the replies it has an exception class for, and keeps it there
    code = getattr(exc, "status_code", None) or str(exc).partition(" ")[0]
    return REFUSALS.get(code)


class SettingRefusedError(ConfigurationError, RefusedError):
    """The server refused what the URL sets (a database number it lacks, credentials it does not
    take) to a look at its settings or limits: the first one is at ``configure()``. A setting to
    correct, which no retry mends (a ConfigurationError); refused before anything was written (a
    RefusedError, so a BackendError, redis-py's error the ``__cause__``). The same refusal of a
    command is a plain BackendError, as any failure of a call (a password changed meanwhile may be
    restored)."""


class Packer:
    """redis-py's hiredis packer (``HiredisRespSerializer``) less its pass over every argument to turn
    a ``bytearray`` or a ``memoryview`` into bytes, which dal never sends: about 5 us of the 30
    arguments of a save's commit. Those two still go as bytes (when hiredis refuses them), and a
    command name with a space (``"SCRIPT LOAD"``) is split, so the bytes on the wire are the same."""

    def pack(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):
            if " " in first:
                args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            pass
        converted: Any = tuple(bytes(arg) if isinstance(arg, bytearray | memoryview) else arg for arg in args)
        try:
            return [hiredis.pack_command(converted)]
        except TypeError as exc:  # what redis-py raises for an argument it cannot send
            raise redis.DataError(str(exc)) from exc


@dataclass(frozen=True)
class Opened:
    """A client and what the store built on it reports: where it points (no password), its timeout."""

    # generic in the types-redis stubs, not in redis-py's own annotations: right under either
    client: redis.Redis  # type: ignore[type-arg, unused-ignore]
    where: str
    timeout: float
    db: int


def database(url: StoreURL) -> int:
    """Return the database number the URL's path names (``/3``), 0 without a path."""
    path = url.path.strip("/")
    if not path:
        return 0
    if not re.fullmatch(r"[0-9]{1,5}", path):
        # a fakeredis:// URL names a fake server, never a port: its example is its own
        example = (f"fakeredis://{url.hosts[0][0] if url.hosts else 'name'}/0" if url.scheme == "fakeredis"
                   else f"{url.scheme}://host:port/0")
        raise ConfigurationError(
            f"{url}: the path of a {url.scheme}:// URL is a database number; write {example}")
    return int(path)


def tls_paths(url: StoreURL) -> dict[str, str | None]:
    """Return the TLS options of a ``rediss://`` URL (an empty one as not given, as etcd's), checked
    now: redis-py reads them only when it first connects, so a mistake would surface at the first
    request, and a key without its certificate as a bare TypeError from ``ssl``."""
    paths = {name: url.options.get(name) or None for name in TLS_OPTIONS}
    # a certificate file may hold its key too (ssl's load_cert_chain), so cert_cert alone is whole
    if paths["cert_key"] and not paths["cert_cert"]:
        raise ConfigurationError(f"{url} gives cert_key without cert_cert; a client certificate needs its "
                                 "certificate: give cert_cert too (or only cert_cert, a file holding both)")
    for name, path in paths.items():
        if path is None:
            continue
        try:
            with open(path, "rb") as file:
                file.read(1)
        except OSError as exc:
            raise ConfigurationError(f"option {name} of {url}: cannot read {path!r}: {exc.strerror}") from exc
    return paths


def open_redis(url: StoreURL, default_timeout: float) -> Opened:
    """Open a client of the one Redis server a ``redis://`` or ``rediss://`` URL names (it connects on
    first use), with ``timeout`` seconds for connecting and for each answer."""
    url.check_options(OPTIONS)
    hosts = url.require_hosts(DEFAULT_PORT)
    if len(hosts) > 1:
        raise ConfigurationError(f"{url} names several servers; a {url.scheme}:// store is one server "
                                 f"(a primary): write {url.scheme}://host:port[/db]")
    tls = url.scheme == "rediss"
    given = [name for name in TLS_OPTIONS if name in url.options]
    if given and not tls:
        raise ConfigurationError(f"option(s) {', '.join(given)} in {url} are for TLS; write rediss://")
    user = url.user or None  # redis://:password@host gives an empty user: Redis's requirepass
    if user is not None and url.password is None:
        raise ConfigurationError(f"{url} gives a user without a password; give both, or a password alone")
    timeout = timeout_option(url, default_timeout)
    db = database(url)
    host, port = hosts[0]
    # a dict: the TLS names only for rediss://, and the redis type stubs mypy reads lack the first
    settings: dict[str, Any] = {
        # maintenance notifications off: with them on (redis-py's default, "auto") its pool keeps a
        # connection holding unread bytes, in case they are a notice; dal asks for no pushes, so such
        # bytes are an interrupted call's answer, and the pool must reconnect, not let a call read it
        "maint_notifications_config": MaintNotificationsConfig(enabled=False)}
    if tls:
        paths = tls_paths(url)
        settings.update(ssl=True, ssl_ca_certs=paths["ca_cert"], ssl_keyfile=paths["cert_key"],
                        ssl_certfile=paths["cert_cert"])
    client = redis.Redis(
        host=host, port=port, db=db, username=user, password=url.password,
        socket_timeout=timeout, socket_connect_timeout=timeout,
        # one attempt per call: a retried commit that had applied would come back as a conflict, and a
        # cache that retries a dead server only adds latency to what counts as a miss anyway
        retry=Retry(NoBackoff(), 0), **settings)
    if HIREDIS:  # read by every connection the pool opens (none is open yet)
        client.connection_pool.connection_kwargs["command_packer"] = Packer()
    return Opened(client, f"{host}:{port}/{db}", timeout, db)


class RedisClient:
    """What the Redis stores share: the client, dal's own path for the hot calls
    (:mod:`~dal.backends.redis.calls`), and calls that turn a failure into BackendError."""

    url: StoreURL
    timeout: float

    def __init__(self, url: StoreURL, opened: Opened) -> None:
        self.url = url
        self.timeout = opened.timeout
        self._client = opened.client
        self._where = opened.where
        self._db = opened.db
        # connections of the client's own class and settings (timeouts, TLS, AUTH, the packer)
        self._calls = Calls(opened.client.connection_pool)
        #: the server's proto-max-bulk-len and whether it was read (not assumed), once needed
        self._bulk: tuple[int, bool] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.url)!r})"

    def _command(self, what: str, *args: Any) -> Raw:
        """Return the server's raw answer to one command (no response callback: ``SET`` answers
        ``b"OK"`` or ``None``); a failure raises BackendError, as :meth:`_script` does."""
        try:
            return self._calls.call(*args)
        except ERRORS as exc:
            raise self._failure(what, exc) from exc

    def _pipeline(self, what: str, commands: Sequence[tuple[Any, ...]], *, transaction: bool) -> list[Raw]:
        """Return the raw answers to ``commands`` sent together (see :meth:`Calls.pipeline`); a failure
        raises BackendError, as :meth:`_script` does."""
        try:
            return self._calls.pipeline(commands, transaction=transaction)
        except ERRORS as exc:
            raise self._failure(what, exc, whole=False) from exc

    def _failure(self, what: str, exc: BaseException, *, whole: bool = True) -> BackendError:
        """Return the BackendError of a failed call; for one command or script (``whole``) that Redis
        refused before it wrote anything, a :class:`RefusedError`."""
        cause = refusal(exc) if whole else None
        if cause is not None:
            return RefusedError(f"redis {what} on {self._where} was refused before it wrote anything: "
                                f"{type(exc).__name__}: {str(exc).rstrip('. ')}; {cause}")
        if isinstance(exc, redis.TimeoutError):  # redis-py's text says neither how long nor what to do
            # a TLS handshake with a plain server waits for an answer that never comes
            plain = (", or the server does not serve TLS on this port (write redis://)"
                     if self.url.scheme == "rediss" and "connecting" in str(exc) else "")
            return BackendError(
                f"redis {what} on {self._where} failed: the server did not answer within {self.timeout:g} s "
                f"(the timeout option of {self.url}; {exc}); check that redis-server is running and not "
                f"blocked, or raise timeout{plain}")
        if isinstance(exc, redis.AuthenticationError):  # a ConnectionError to redis-py
            return BackendError(
                f"redis {what} on {self._where} failed: the server refuses the credentials of {self.url} "
                f"({type(exc).__name__}: {str(exc).rstrip('. ')}); give its password in the URL "
                "(redis://:PASSWORD@host for requirepass, redis://USER:PASSWORD@host for an ACL user)")
        if "DB index is out of range" in str(exc):
            # fakeredis has 16 databases, and no redis.conf to raise them in
            count = ("(DB index is out of range: fakeredis has 16); name a database from 0 to 15 in "
                     f"{self.url}" if self.url.scheme == "fakeredis" else
                     "(DB index is out of range: its `databases` setting, 16 by default, is the count); "
                     f"name a database below it in {self.url}, or raise `databases` in redis.conf")
            return BackendError(f"redis {what} on {self._where} failed: the server has no database "
                                f"{self._db} {count}")
        return BackendError(f"redis {what} on {self._where} failed: {type(exc).__name__}: {exc}")

    def _probe_failure(self, what: str, exc: BaseException, *, first: bool = False) -> RefusedError:
        """Return the error of a failed look at the server that a request waits for (its settings,
        its limits): the request itself was not sent, so it wrote nothing, whatever the failure.
        ``first``: the look at its settings ``configure()`` makes, where a server refusing the URL's
        credentials or database number is a :class:`SettingRefusedError`, a setting to correct, which
        no retry mends; later (a limit read at a large write) it is a plain refusal of that request."""
        failure = self._failure(what, exc, whole=False)
        if first and (isinstance(exc, redis.AuthenticationError) or "DB index is out of range" in str(exc)):
            return SettingRefusedError(str(failure))
        return RefusedError(f"{failure}; the request waiting for it was not sent, so nothing was written: "
                            "retrying is safe")

    def _script(self, what: str, script: Any, keys: int, *args: Any) -> Any:
        """Run a registered script by EVALSHA (``keys`` of ``args`` are its KEYS); a server that answers
        NOSCRIPT (restarted, or ``SCRIPT FLUSH``) gets it with ``SCRIPT LOAD`` and the call again. A
        failure raises BackendError, as :meth:`_command` does.

        What redis-py's ``Script.__call__`` does, less its per-call copies of the arguments and its
        check for a pipeline: a few microseconds of a commit's client time. One attempt each: an
        EVALSHA that failed otherwise is never sent again (it may have run).
        """
        calls = self._calls
        try:
            try:
                return calls.call("EVALSHA", script.sha, keys, *args)
            except redis.exceptions.NoScriptError:
                calls.call("SCRIPT LOAD", script.script)
                return calls.call("EVALSHA", script.sha, keys, *args)
        except ERRORS as exc:
            raise self._failure(what, exc) from exc

    def _too_long(self, lengths: Sequence[tuple[str, int]]) -> str | None:
        """Return why the server refuses an argument of those ``lengths`` (what it is, its bytes),
        else ``None``: one longer than its proto-max-bulk-len, which is read (``CONFIG GET``) only
        for one past :data:`~dal.backends.redis.limits.LEAST_BULK`, once, and again before refusing
        (it may have been raised since)."""
        long = [(name, length) for name, length in lengths if length > LEAST_BULK]
        if not long:
            return None
        cached = self._bulk is not None
        limit, read = self._bulk_limit()
        if cached and any(length > limit for _, length in long):
            self._bulk = None
            limit, read = self._bulk_limit()
        over = [(name, length) for name, length in long if length > limit]
        if not over:
            return None
        name, length = over[0]
        setting = "its proto-max-bulk-len" if read else (
            "proto-max-bulk-len, assumed to be Redis's default: the server did not let this client read it")
        return (f"{name} is {length:,} bytes, more than the {limit:,} the redis server of {self._where} "
                f"takes in one argument ({setting}), so it is never stored; nothing was written: split the "
                "value over several keys, or raise proto-max-bulk-len on the server (CONFIG SET and "
                "redis.conf)")

    def _bulk_limit(self) -> tuple[int, bool]:
        """Return the server's proto-max-bulk-len, read once (Redis's default where ``CONFIG`` is
        renamed, disabled or not granted), and whether it was read."""
        if self._bulk is None:
            try:
                limit = bulk_limit_of(self._calls.call("CONFIG", "GET", "proto-max-bulk-len"))
            except redis.ResponseError:
                limit = None
            except ERRORS as exc:
                raise self._probe_failure("read of proto-max-bulk-len (CONFIG GET)", exc) from exc
            self._bulk = (DEFAULT_BULK, False) if limit is None else (limit, True)
        return self._bulk

    def close(self) -> None:
        """Close the client's connections and dal's own (a later call would open new ones)."""
        self._client.close()
        self._calls.close()
