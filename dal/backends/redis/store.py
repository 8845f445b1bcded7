"""Redis as a persistent store: a Lua script per commit, one counter for revisions, a sorted set for scans.

Layout (see :mod:`~dal.backends.redis.connection`): a dal key's value sits at ``{dal}:d:<key>`` as
``b"<revision>:" + value``, so one ``GET`` (or one ``MGET`` for many) reads value and revision
together; ``{dal}:revision`` counts commits; ``{dal}:keys`` is a sorted set of every key with score 0,
which ``ZRANGEBYLEX`` reads in byte order, that is code-point order for UTF-8 keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

import redis

from dal.backends.base import (
    Check,
    CommitResult,
    Delete,
    DeletePrefix,
    Entry,
    Evict,
    Exists,
    Op,
    PrefixEmpty,
    PrefixUnchanged,
    Put,
    RefusedError,
    Revision,
    StoreReplacedError,
    TooLargeError,
    utf8,
)
from dal.backends.keytext import bash_quoted, first_undecodable
from dal.backends.redis.cache import RedisCache
from dal.backends.redis.connection import (
    CACHE,
    COUNTER,
    DATA,
    ERRORS,
    IDENTITY,
    INDEX,
    Opened,
    Raw,
    open_redis,
)
from dal.backends.redis.leadership import RedisLeadership
from dal.backends.redis.limits import (
    SCREEN,
    ServerModeRefused,
    byte_length,
    connect_checked,
    mode_refusal,
)
from dal.backends.redis.scripts import COMMIT, SCAN
from dal.backends.tokens import ChangeTokens
from dal.backends.url import StoreURL
from dal.exceptions import BackendError, ConfigurationError
from dal.values import clipped_repr

DEFAULT_TIMEOUT = 5.0
#: keys a script reads (or deletes) per ZRANGEBYLEX: bounds each step's reply, and the arguments of
#: one MGET or DEL (Lua's ``unpack`` takes a few thousand at most)
PAGE = 1000


def entry(raw: bytes) -> Entry:
    """Return the entry a stored value holds (``b"<revision>:" + value``); ValueError for a value
    without that stamp (another client wrote it: see :meth:`RedisStore._entry`)."""
    revision, colon, value = raw.partition(b":")
    if not colon or not revision.isdigit():
        raise ValueError("no '<revision>:' stamp")
    return Entry(value, int(revision))


def lex_range(prefix: str, start_after: str | None = None) -> tuple[bytes, bytes]:
    """Return ZRANGEBYLEX's bounds of the keys under ``prefix`` (after ``start_after``)."""
    encoded = _utf8(prefix)
    # no UTF-8 text holds the byte 0xFF, so prefix + 0xFF is above every key under prefix
    low, high = (b"[" + encoded, b"(" + encoded + b"\xff") if encoded else (b"-", b"+")
    after = None if start_after is None else _utf8(start_after)
    if after is not None and after >= encoded:
        low = b"(" + after
    return low, high


def _utf8(text: str) -> bytes:
    return utf8(text, "Redis")


def commit_args(checks: Sequence[Check], ops: Sequence[Op]) -> list[Any]:
    """Return the commit script's arguments after the data prefix and the page size (see
    :data:`~dal.backends.redis.scripts.COMMIT`): the counts, two per check, two per write, one per evict.

    The kinds are tested most frequent first: a save sends a dozen evicts, and this runs on every commit.
    """
    args: list[Any] = [len(checks), 0]
    for check in checks:
        if isinstance(check, Revision):
            args += ["R" + check.key, check.revision]
        elif isinstance(check, Exists):
            args += ["E" + check.key, 0]
        elif isinstance(check, PrefixEmpty):
            args += ["P" + check.prefix, 0]
        elif isinstance(check, PrefixUnchanged):
            args += ["U" + check.prefix, check.revision]
        else:
            raise TypeError(f"unknown check {check!r}")
    evicted: list[str] = []
    for op in ops:  # all checked before anything is sent, so a bad op never leaves half a commit
        if isinstance(op, Evict):
            # a cache entry, no data key: deleting it before or after the writes is the same
            evicted.append(CACHE + op.key)
        elif isinstance(op, Put):
            if not isinstance(op.value, bytes):
                raise TypeError(f"Put({op.key!r}) value must be bytes, not {type(op.value).__name__}")
            args += ["P" + op.key, op.value]
        elif isinstance(op, Delete):
            args += ["D" + op.key, b""]
        elif isinstance(op, DeletePrefix):
            args += ["X" + op.prefix, b""]
        else:
            raise TypeError(f"unknown op {op!r}")
    args[1] = len(ops) - len(evicted)
    return args + evicted


def long_args(args: list[Any]) -> list[tuple[str, int]]:
    """Return what each of the commit's arguments of :data:`~dal.backends.redis.limits.SCREEN`
    characters or bytes and more is, with its length in bytes: nothing for a usual commit, which
    this tells by their total length, in a microsecond or so. A key is measured as its reads send
    it (DATA + key, longer than the commit's kind letter + key): one that fits only in the commit
    would be written and never read back."""
    if sum(map(len, [arg for arg in args if arg.__class__ is not int])) < SCREEN:
        return []
    found: list[tuple[str, int]] = []
    evicts = 2 + 2 * (args[0] + args[1])  # the counts, a pair per check and per write, then the evicts
    for index, arg in enumerate(args):
        if isinstance(arg, int) or len(arg) < SCREEN:
            continue
        if index >= evicts:
            name = f"the cache key of {clipped_repr(arg[len(CACHE):])}"
        elif isinstance(arg, bytes):
            name = f"the value of {clipped_repr(args[index - 1][1:])}"
        else:
            name, arg = f"the key {clipped_repr(arg[1:])}, read as {DATA}<key>,", DATA + arg[1:]
        found.append((name, byte_length(arg)))
    return found


class RedisStore(RedisLeadership):
    """A :class:`~dal.backends.base.PersistentStore` on one Redis server (or primary)."""

    scheme: ClassVar[str] = "redis"
    shared: ClassVar[bool] = True
    # a connection can drop after Redis ran the commit script and before its answer arrived
    ambiguous_commits: ClassVar[bool] = True

    def __init__(self, url: StoreURL, opened: Opened) -> None:
        super().__init__(url, opened)
        self._commit = opened.client.register_script(COMMIT)
        self._scan = opened.client.register_script(SCAN)
        self._identity: str | None = None
        #: the name the first client wrote into this database (``identity()`` reads it), which every
        #: commit checks: another one there means the data this client knew was lost
        self._name: str | None = None
        self._replaced = False
        self._tokens = ChangeTokens()
        #: the server was seen to be standalone and to keep every key (see :meth:`_check_server`)
        self._kept = False

    @classmethod
    def from_url(cls, url: StoreURL) -> RedisStore:
        """Open the Redis server a URL names (no connection is made until the first request)."""
        store = cls(url, open_redis(url, DEFAULT_TIMEOUT))
        # a server of a mode dal refuses is told even where it refuses the connection's SELECT
        store._client.connection_pool.connection_kwargs["redis_connect_func"] = partial(
            connect_checked, store._where)
        return store

    # --- reads ----------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        raw: Raw = self._command(f"get of {key!r}", "GET", DATA + key)
        return None if raw is None else self._entry(key, raw)

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        """Return the present entries among ``keys``: one MGET, which Redis answers as of one instant."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        raws: list[Raw] = self._command(f"get_many of {len(wanted)} keys", "MGET",
                                        *[DATA + key for key in wanted])
        return {key: self._entry(key, raw) for key, raw in zip(wanted, raws, strict=True) if raw is not None}

    def scan(self, prefix: str, *, start_after: str | None = None,
             limit: int | None = None) -> list[tuple[str, Entry]]:
        """Return up to ``limit`` entries under ``prefix`` in key order, read by one script (one instant),
        ``PAGE`` keys per step inside it."""
        if limit is not None and limit <= 0:
            return []
        low, high = lex_range(prefix, start_after)
        found: list[bytes] = self._script(f"scan of {prefix!r}", self._scan, 1, INDEX, DATA, PAGE, low, high,
                                          limit or 0)
        pairs = zip(self._texts(found[::2]), found[1::2], strict=True)
        # a key without a value (None) cannot be seen, since a commit writes both in one script: skipped
        return [(key, self._entry(key, raw)) for key, raw in pairs if raw is not None]

    def scan_keys(self, prefixes: Sequence[str]) -> dict[str, list[str]]:
        """Return the keys under each prefix: one ZRANGEBYLEX each, in one MULTI (one instant)."""
        wanted = list(dict.fromkeys(prefixes))
        if not wanted:
            return {}

        answers = self._pipeline(f"scan of {len(wanted)} prefixes",
                                 [("ZRANGEBYLEX", INDEX, *lex_range(prefix)) for prefix in wanted],
                                 transaction=True)
        return {prefix: self._texts(keys) for prefix, keys in zip(wanted, answers, strict=True)}

    def _texts(self, keys: list[bytes]) -> list[str]:
        """Return scanned keys as text; one that is not UTF-8 (another client wrote it: dal writes text
        keys only) is a BackendError naming it, its other bytes escaped as bash's ``$'...'`` reads them."""
        try:
            return [key.decode() for key in keys]
        except UnicodeDecodeError:
            pass
        key = first_undecodable(keys)
        shown = bash_quoted(key)
        raise BackendError(
            f"the redis database of {self._where} (db {self._db}) holds the key {shown} in {INDEX}, "
            "which is not UTF-8 text: another client wrote it (dal writes UTF-8 keys only), and dal cannot "
            f"read the keys around it; delete it (in bash: redis-cli -n {self._db} ZREM '{INDEX}' "
            f"{shown}, then redis-cli -n {self._db} DEL {bash_quoted(DATA.encode() + key)})")

    def _entry(self, key: str, raw: bytes) -> Entry:
        """Return the entry ``raw`` holds; a value without dal's ``<revision>:`` stamp (another client
        wrote it, as a hand fix with redis-cli does) is a BackendError naming the key and the fix."""
        try:
            return entry(raw)
        except ValueError:
            raise BackendError(self._unstamped(key)) from None

    def _unstamped(self, key: str) -> str:
        """Say that the value of ``key`` lacks dal's stamp, and how to mend it."""
        data, index = bash_quoted((DATA + key).encode()), bash_quoted(key.encode())
        return (f"the redis database of {self._where} (db {self._db}) holds a value at {data} without "
                "dal's '<revision>:' stamp: another client wrote it (dal stores each value behind its "
                f"revision), and dal cannot read it; delete it (in bash: redis-cli -n {self._db} DEL {data}, "
                f"then redis-cli -n {self._db} ZREM '{INDEX}' {index}); `dal check` then names what else of "
                "it is left")

    # --- writes ---------------------------------------------------------------------

    def commit(self, checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        """Check every condition and apply every op in one Lua script, or fail having written nothing.

        ``Evict`` ops delete entries of the Redis cache of this database (see :meth:`evicts_from`)
        in the same script: invalidated at the instant of the commit, with no round trip of their
        own; nothing is deleted when a check fails.
        """
        return self._run_commit(commit_args(checks, ops), ops)

    def evicts_from(self, cache: object) -> bool:
        """Tell whether ``Evict`` ops can delete ``cache``'s entries: a Redis cache of the same server
        and database, reached the same way (another spelling of the host is not known to be it)."""
        return isinstance(cache, RedisCache) and cache.reached_as() == (self._where, self._db)

    def _run_commit(self, args: list[Any], ops: Sequence[Op]) -> CommitResult:
        self._check_server()
        long = long_args(args)
        refused = self._too_long(long) if long else None
        if refused is not None:
            raise TooLargeError(f"redis commit of {len(ops)} ops: {refused}")
        # once read (cache keys derive from it), every commit checks the store still bears that name
        answer = self._script(f"commit of {len(ops)} ops", self._commit, 3, COUNTER, INDEX, IDENTITY,
                              DATA, PAGE, self._name or "", *args)
        if answer[0] == 2:
            self._replaced = True
            now = bytes(answer[1]).decode(errors="replace") or "none"
            raise StoreReplacedError(
                f"the redis database of {self._where} (db {self._db}) no longer bears the name this client "
                f"read from it ({self._name}; now {now}): its data was lost since (FLUSHDB, or a restart "
                "without persistence), and what other processes cache under its new name this process "
                "would not invalidate. Call configure() again (or restart the process) to use the store "
                "as it is now")
        if answer[0] == 3:
            raise RefusedError(f"redis commit of {len(ops)} ops was refused before it wrote anything: "
                               + self._unstamped(bytes(answer[1]).decode(errors="replace")))
        if answer[0] == 1:
            revision = int(answer[1])
            self._tokens.committed(revision)
            return CommitResult(ok=True, revision=revision)
        failed, current = answer[1], answer[2]
        return CommitResult(ok=False, failed=tuple(int(index) for index in failed),
                            current={bytes(key).decode(): self._entry(bytes(key).decode(), raw)
                                     for key, raw in zip(current[::2], current[1::2], strict=True)})

    # --- the store itself -----------------------------------------------------------

    def identity(self) -> str:
        """Return the random name the first client wrote into this database, and its number."""
        if self._identity is None:
            self._check_server()
            mine = uuid.uuid4().hex

            # the first client's name stays (SET NX); the database number too: two databases of
            # one server are two stores
            named = self._pipeline("identity", [("SET", IDENTITY, mine, "NX"), ("GET", IDENTITY)],
                                   transaction=True)
            self._name = bytes(named[1]).decode()
            self._identity = f"redis-{self._name}-db{self._db}"
        return self._identity

    def still_current(self) -> bool:
        """Tell whether this client may serve another ``configure()``: not once the database bears
        another name than the client read (its data was lost since: see :class:`StoreReplacedError`),
        as a commit found or as one read now tells (one GET per ``configure()`` of the URL; a server
        that does not answer is left for the next call to report)."""
        if self._replaced or self._name is None:
            return not self._replaced
        try:
            named: Raw = self._command("read of the store's name", "GET", IDENTITY)
        except BackendError:
            return True
        self._replaced = named is None or bytes(named).decode(errors="replace") != self._name
        return not self._replaced

    def change_token(self) -> int:
        """Return a number that moves whenever another client committed since the last call
        (the commit counter, one GET; see :mod:`~dal.backends.tokens`)."""
        self._check_server()  # read once, at configure(): the first thing a context asks
        ticket = self._tokens.ticket()
        current = self._command("read of the commit counter", "GET", COUNTER)
        return self._tokens.token(int(current or 0), ticket)

    def _check_server(self) -> None:
        """Refuse a server dal cannot use, read once per store from ``INFO server`` and ``INFO
        memory`` (one round trip): one not standalone (see :mod:`~dal.backends.redis.limits`), and
        one that may evict the durable store's keys (:meth:`_refuse_eviction`). A section the
        server does not let this client read (INFO renamed, disabled or not granted) is not checked.
        """
        if self._kept:
            return
        what = "read of the server's settings (INFO server and memory)"
        try:
            answers = self._calls.pipeline([("INFO", "server"), ("INFO", "memory")], transaction=False,
                                           errors_inline=True)
        except ServerModeRefused as exc:  # found while connecting (see connect_checked)
            raise ConfigurationError(str(exc)) from None
        except ERRORS as exc:
            raise self._probe_failure(what, exc, first=True) from exc
        texts: list[str | None] = []
        for answer in answers:
            if isinstance(answer, redis.ResponseError):
                if not isinstance(answer, redis.exceptions.NoPermissionError) and \
                        "unknown command" not in str(answer):
                    raise self._probe_failure(what, answer, first=True) from answer
                texts.append(None)  # not granted, renamed or disabled: nothing to read
            else:
                texts.append(answer.decode(errors="replace") if isinstance(answer, bytes) else str(answer))
        server, memory = texts
        refused = None if server is None else mode_refusal(self._where, server)
        if refused is not None:
            raise ConfigurationError(refused)
        if memory is not None:
            self._refuse_eviction(memory)
        self._kept = True

    def _refuse_eviction(self, memory: str) -> None:
        """Refuse a server that may evict the durable store's keys: with a maxmemory and an
        ``allkeys-*`` policy Redis deletes any key to make room, committed documents, their index and
        the revision counter among them. A ``volatile-*`` policy takes only keys with an expiry, and
        the only such keys are leadership leases (the refresher's): one taken early costs what a
        leader frozen past its lease does, two refreshers for the length of a batch, never data. Read
        from ``INFO memory`` (``CONFIG`` is often renamed or disabled).
        """
        fields = dict(line.strip().partition(":")[::2] for line in memory.splitlines())
        limit, policy = fields.get("maxmemory", "0"), fields.get("maxmemory_policy", "noeviction")
        if limit not in ("", "0") and policy.startswith("allkeys-"):
            raise ConfigurationError(
                f"the redis server of {self._where} has maxmemory {limit} and maxmemory-policy {policy}: "
                "it would evict the durable store's keys (committed data) to make room. Set "
                "maxmemory-policy noeviction (or a volatile-* one) on it (CONFIG SET and redis.conf), or "
                "give the durable store a server of its own: the policy is the server's, another database "
                "of it shares it")
