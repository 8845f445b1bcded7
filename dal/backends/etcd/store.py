"""etcd v3 as a persistent store: one etcd transaction per commit, mod revisions as entry revisions.

Reads and commits are built here; :class:`~dal.backends.etcd.transport.EtcdTransport` sends
them. A commit reads back what failed in the same round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

import grpc
from pyetcd import etcdrpc

from dal.backends.base import (
    Check,
    CommitResult,
    Delete,
    DeletePrefix,
    Entry,
    Exists,
    Op,
    PrefixUnchanged,
    Put,
    RefusedError,
    Revision,
)
from dal.backends.etcd.keytext import key_entries, key_texts
from dal.backends.etcd.leadership import EtcdLeadership
from dal.backends.etcd.tls import tls_credentials
from dal.backends.etcd.transport import (
    TOO_MANY_OPS,
    CompactedError,
    SpaceExceededError,
    Tries,
    etcd_error,
    utf8,
)
from dal.backends.url import StoreURL, host_text, timeout_option
from dal.exceptions import BackendError, ConfigurationError

DEFAULT_PORT = 2379
DEFAULT_TIMEOUT = 5.0
#: etcd's default --max-txn-ops; get_many stays under it so it works against stock servers
TXN_OPS = 128
#: keys per range request of scan_keys, so one response stays a few megabytes at most
KEYS_PAGE = 20_000
#: times a read of several requests pinned to one revision starts over when etcd compacts that
#: revision between two of them
SNAPSHOT_ATTEMPTS = 3
#: the options an etcd:// URL takes (user and password the parser takes out of the options: listed in
#: the error for an unknown one, as they are accepted)
_OPTIONS = ("timeout", "user", "password", "ca_cert", "cert_key", "cert_cert")
_MOD, _VERSION = etcdrpc.Compare.MOD, etcdrpc.Compare.VERSION
_EQUAL, _GREATER, _LESS = etcdrpc.Compare.EQUAL, etcdrpc.Compare.GREATER, etcdrpc.Compare.LESS
T = TypeVar("T")


class EtcdStore(EtcdLeadership):
    """A :class:`~dal.backends.base.PersistentStore` on an etcd v3 cluster."""

    scheme: ClassVar[str] = "etcd"
    shared: ClassVar[bool] = True
    # a connection can drop after etcd applied a txn and before its answer arrived
    ambiguous_commits: ClassVar[bool] = True
    #: range requests per read txn (get_many, scan_keys): TXN_OPS, halved for a server that refuses that many
    _read_ops: int = TXN_OPS

    @classmethod
    def from_url(cls, url: StoreURL) -> EtcdStore:
        """Open the etcd cluster a URL names (no connection is made until the first request)."""
        url.check_options(_OPTIONS)
        if url.path not in ("", "/"):
            raise ConfigurationError(f"{url} has a path; etcd:// URLs take none, write etcd://host:port")
        # gRPC reads its target as host:port, so an IPv6 address keeps its brackets there
        hosts = tuple((host_text(host), port) for host, port in url.require_hosts(DEFAULT_PORT))
        timeout = timeout_option(url, DEFAULT_TIMEOUT)
        if (url.user is None) != (url.password is None):
            raise ConfigurationError(f"{url} gives a user without a password or the reverse; give both")
        return cls(url, hosts, timeout=timeout, user=url.user, password=url.password,
                   credentials=tls_credentials(url))

    def __repr__(self) -> str:
        return f"EtcdStore({str(self.url)!r})"

    # --- reads ----------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        response = self._call("Range", etcdrpc.RangeRequest(key=utf8(key)))
        if not response.kvs:
            return None
        kv = response.kvs[0]
        return Entry(kv.value, kv.mod_revision)

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        wanted = [utf8(key) for key in dict.fromkeys(keys)]
        return self._snapshot(lambda: self._get_many(wanted))

    def _get_many(self, wanted: list[bytes]) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        for chunk, responses, _ in self._reads(wanted, lambda key, revision: etcdrpc.RangeRequest(
                key=key, revision=revision)):
            for key, op in zip(chunk, responses, strict=True):
                if op.response_range.kvs:
                    kv = op.response_range.kvs[0]
                    found[key.decode()] = Entry(kv.value, kv.mod_revision)
        return found

    def _reads(self, items: list[T], request: Callable[[T, int], Any]) -> Iterator[tuple[list[T], Any, int]]:
        """Send a range request per item (``request(item, revision)``), as few read txns as etcd's
        --max-txn-ops allows, the later ones pinned to the first one's revision so the whole is one
        snapshot; yield each chunk of items, its responses and that revision.

        A server whose --max-txn-ops is below TXN_OPS refuses a txn of that many: it is sent again
        halved until one passes, and this store keeps sending reads of that size.
        """
        revision, start = 0, 0
        while start < len(items):
            chunk = items[start:start + self._read_ops]
            reads = [etcdrpc.RequestOp(request_range=request(item, revision)) for item in chunk]
            try:
                response = self._call("Txn", etcdrpc.TxnRequest(success=reads))
            except BackendError as exc:
                if len(chunk) == 1 or not _too_many_ops(exc):
                    raise
                self._read_ops = len(chunk) // 2
                continue
            revision = revision or response.header.revision
            yield chunk, response.responses, revision
            start += len(chunk)

    def _snapshot(self, read: Callable[[], T]) -> T:
        """Run a read whose requests are pinned to its first one's revision; start it over at the
        current revision when etcd compacts that one away between two of them."""
        for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
            try:
                return read()
            except CompactedError as exc:
                if attempt == SNAPSHOT_ATTEMPTS:
                    raise BackendError(
                        f"{exc}, but it was compacted during each of {SNAPSHOT_ATTEMPTS} reads in a row: "
                        "something compacts this etcd very often (its --auto-compaction-retention, or a "
                        "client); try again") from exc
        raise AssertionError("unreachable")

    def scan(self, prefix: str, *, start_after: str | None = None,
             limit: int | None = None) -> list[tuple[str, Entry]]:
        if limit is not None and limit <= 0:
            return []
        start, end = prefix_range(prefix)
        if start_after is not None:
            start = max(start, utf8(start_after) + b"\0")
            if end != b"\0" and start >= end:
                return []
        # sort_order NONE on purpose: etcd returns ranges in ascending key order anyway, and an
        # explicit sort makes etcd 3.4 read the whole range before applying the limit
        request = etcdrpc.RangeRequest(key=start, range_end=end, limit=limit or 0)
        return key_entries(self._where, self._call("Range", request).kvs)

    def scan_keys(self, prefixes: Sequence[str]) -> dict[str, list[str]]:
        """Return the keys under each prefix: one read txn per 128 prefixes (fewer for an etcd whose
        --max-txn-ops is lower), all at one revision."""
        wanted = list(dict.fromkeys(prefixes))
        return self._snapshot(lambda: self._scan_keys(wanted))

    def _scan_keys(self, wanted: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for chunk, responses, revision in self._reads(wanted, lambda prefix, revision: self._keys_request(
                prefix, None, revision)):
            for prefix, op in zip(chunk, responses, strict=True):
                keys = key_texts(self._where, op.response_range.kvs)
                more = op.response_range.more
                while more:  # a huge range continues page by page at the same revision
                    page = self._call("Range", self._keys_request(prefix, keys[-1], revision))
                    keys += key_texts(self._where, page.kvs)
                    more = page.more
                found[prefix] = keys
        return found

    @staticmethod
    def _keys_request(prefix: str, start_after: str | None, revision: int) -> Any:
        start, end = prefix_range(prefix)
        if start_after is not None:
            start = utf8(start_after) + b"\0"
        return etcdrpc.RangeRequest(key=start, range_end=end, keys_only=True, limit=KEYS_PAGE,
                                    revision=revision)

    # --- writes ---------------------------------------------------------------------

    def commit(self, checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        # built in place: a message handed to a constructor or a repeated field is copied, which
        # cost more than the rest of the commit's Python (each put's value copied twice)
        request = etcdrpc.TxnRequest()
        compares, failure = request.compare, request.failure
        # on failure, the txn reads back what each check looked at, so a conflict costs one round trip
        key_reads: dict[str, int] = {}
        prefix_reads: dict[tuple[str, int], int] = {}
        for check in checks:
            if isinstance(check, Revision | Exists):
                key = utf8(check.key)
                if isinstance(check, Revision):
                    # an absent key compares as mod revision 0, which is what Revision(k, 0) means
                    compares.add(key=key, target=_MOD, result=_EQUAL, mod_revision=check.revision)
                else:
                    compares.add(key=key, target=_VERSION, result=_GREATER, version=0)
                if check.key not in key_reads:
                    key_reads[check.key] = len(failure)
                    failure.add().request_range.key = key
            else:
                start, end = prefix_range(check.prefix)
                # a range compare holds when every key in the range satisfies it, so it holds
                # vacuously on an empty range: version == 0 fails as soon as one key exists, and
                # mod_revision < r + 1 as soon as one was written after r
                after = check.revision if isinstance(check, PrefixUnchanged) else 0
                if isinstance(check, PrefixUnchanged):
                    compares.add(key=start, range_end=end, target=_MOD, result=_LESS, mod_revision=after + 1)
                else:
                    compares.add(key=start, range_end=end, target=_VERSION, result=_EQUAL, version=0)
                if (check.prefix, after) not in prefix_reads:
                    prefix_reads[(check.prefix, after)] = len(failure)
                    read = failure.add().request_range
                    read.key, read.range_end, read.limit = start, end, 1
                    read.keys_only, read.min_mod_revision = True, after + 1
        puts, deletes = add_write_requests(request.success, ops)
        # keys whose check a first send that applied makes fail (it rewrote or deleted them): with
        # one, a send that got no answer may go again to another member, it cannot apply twice
        guarded = [check.key for check in checks if isinstance(check, Revision) and (
            check.key in puts or (check.revision > 0 and check.key in deletes))]
        tries = Tries()
        try:
            response = self._call("Txn", request, txn_size=(len(checks), len(request.success)),
                                  resend=bool(guarded), tries=tries)
        except SpaceExceededError as exc:
            raise self._unless_applied(exc, [key for key in guarded if key in puts]) from exc
        if response.succeeded:
            return CommitResult(ok=True, revision=response.header.revision)
        return self._conflict(checks, response, key_reads, prefix_reads, tries.unanswered)

    def _unless_applied(self, exc: BackendError, created: list[str]) -> BackendError:
        """Tell a commit etcd answered "database space exceeded" and did not apply (a RefusedError)
        from one it applied all the same (the write that went over the quota): it was answered, so
        it is settled either way, and one applied wrote every key it created, so a created key
        still absent says it was not (dal's commits create their journal key)."""
        if created:
            reads = [etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=utf8(key), count_only=True))
                     for key in created]
            try:
                response = self._call("Txn", etcdrpc.TxnRequest(success=reads))
            except BackendError:
                return BackendError(str(exc))
            if any(op.response_range.count == 0 for op in response.responses):
                return RefusedError(str(exc))
        return BackendError(str(exc))

    @staticmethod
    def _conflict(checks: Sequence[Check], response: Any, key_reads: dict[str, int],
                  prefix_reads: dict[tuple[str, int], int], unanswered: bool) -> CommitResult:
        """Read a failed txn's answer. A send of it that got no answer (then resent to another member)
        may still apply, once every check it failed holds again: a key absent or present again, a
        prefix emptied, but never a key back at a revision it left (etcd's revisions only grow)."""
        failed: list[int] = []
        current: dict[str, Entry] = {}
        for index, check in enumerate(checks):
            if isinstance(check, Revision | Exists):
                kvs = response.responses[key_reads[check.key]].response_range.kvs
                entry = Entry(kvs[0].value, kvs[0].mod_revision) if kvs else None
                holds = (entry is not None if isinstance(check, Exists)
                         else (entry.revision if entry else 0) == check.revision)
                if not holds:
                    failed.append(index)
                    if entry is not None:
                        current[check.key] = entry
            else:
                after = check.revision if isinstance(check, PrefixUnchanged) else 0
                if response.responses[prefix_reads[(check.prefix, after)]].response_range.kvs:
                    failed.append(index)
        missed = [checks[index] for index in failed]
        unanswered = unanswered and not any(isinstance(check, Revision) and check.revision > 0
                                            for check in missed)
        return CommitResult(ok=False, failed=tuple(failed), current=current, unanswered=unanswered)

    def identity(self) -> str:
        """Return the cluster's id, which every member reports, whichever endpoint is asked.

        Read from the header of a member list, which etcd serves any client, whatever its role
        grants (a read of a key needs a grant on that key, and the store knows no key its user may read).
        """
        if self._identity is None:
            response = self._call("MemberList", etcdrpc.MemberListRequest(), service="cluster")
            self._identity = f"etcd-cluster-{response.header.cluster_id:016x}"
        return self._identity

    def change_token(self) -> object:
        # knowing whether anyone else committed would take a round trip: not cheap
        return None


def _too_many_ops(exc: BackendError) -> bool:
    """Whether etcd refused a request for holding more operations than its --max-txn-ops."""
    cause = exc.__cause__
    return isinstance(cause, grpc.RpcError) and etcd_error(cause) == TOO_MANY_OPS


def prefix_range(prefix: str) -> tuple[bytes, bytes]:
    """Return etcd's ``[key, range_end)`` for every key starting with ``prefix``.

    ``range_end`` ``b"\\0"`` means "to the end of the keyspace", which is what the empty
    prefix needs (etcd has no empty keys, so ``b"\\0"`` starts it).
    """
    start = utf8(prefix)
    end = bytearray(start)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return start or b"\0", b"\0"
    end[-1] += 1
    return start, bytes(end)


def write_requests(ops: Sequence[Op]) -> list[Any]:
    """Turn ordered ops into etcd txn requests with the same final effect (see add_write_requests)."""
    request = etcdrpc.TxnRequest()
    add_write_requests(request.success, ops)
    return list(request.success)


def add_write_requests(requests: Any, ops: Sequence[Op]) -> tuple[dict[str, bytes], set[str]]:
    """Append to ``requests`` (a txn's repeated RequestOp field) the requests of ordered ``ops``;
    return the keys they leave put (with their values) and those they delete (:func:`fold_ops`).

    etcd refuses a txn that puts a key twice or puts a key inside a range it also deletes
    ("duplicate key given in txn request"), so ops are folded in order (:func:`fold_ops`), and a
    prefix delete followed by puts under it becomes range deletes around them.
    """
    puts, deletes, prefixes = fold_ops(ops)
    for key, value in puts.items():
        # set in place (a key is never empty, so the put is present): no message is copied
        put = requests.add().request_put
        put.key, put.value = utf8(key), value
    for key in sorted(deletes):
        requests.add().request_delete_range.key = utf8(key)
    for prefix in prefixes:
        start, end = prefix_range(prefix)
        for key in sorted(key for key in puts if key.startswith(prefix)):
            encoded = utf8(key)
            if start < encoded:
                _delete_range(requests, start, encoded)
            start = encoded + b"\0"
        if end == b"\0" or start < end:
            _delete_range(requests, start, end)
    return puts, deletes


def fold_ops(ops: Sequence[Op]) -> tuple[dict[str, bytes], set[str], list[str]]:
    """Fold ordered ``ops`` into what they leave: the puts (the last op on a key wins), the keys
    deleted, and the prefixes deleted (outermost only; puts after a prefix delete survive it)."""
    puts: dict[str, bytes] = {}
    deletes: set[str] = set()
    prefixes: list[str] = []
    for op in ops:
        if isinstance(op, Put):
            puts[op.key] = op.value
            deletes.discard(op.key)
        elif isinstance(op, Delete):
            puts.pop(op.key, None)
            deletes.add(op.key)
        elif isinstance(op, DeletePrefix):
            puts = {key: value for key, value in puts.items() if not key.startswith(op.prefix)}
            deletes = {key for key in deletes if not key.startswith(op.prefix)}
            if not any(op.prefix.startswith(other) for other in prefixes):
                prefixes = [other for other in prefixes if not other.startswith(op.prefix)]
                prefixes.append(op.prefix)
        else:  # an Evict: etcd keeps no cache it could evict from (no evicts_from)
            raise TypeError(f"unknown op {op!r}")
    return puts, deletes, prefixes


def _delete_range(requests: Any, start: bytes, end: bytes) -> None:
    delete = requests.add().request_delete_range
    delete.key, delete.range_end = start, end


