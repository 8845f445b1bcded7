"""etcd v3 as a persistent store: one etcd transaction per commit, mod revisions as entry revisions.

``etcd://[user:password@]host:port[,host:port...]?timeout=5&ca_cert=PATH&cert_key=PATH&cert_cert=PATH``

Requests go through the gRPC stubs directly (pyetcd supplies the generated messages and
the endpoint bookkeeping), so each call carries the time left of one overall deadline and
a commit reads back what failed in the same round trip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import grpc
from pyetcd import etcdrpc
from pyetcd.client import Endpoint, MultiEndpointEtcd3Client
from pyetcd.exceptions import NoServerAvailableError

from dal.backends.base import (
    Check,
    CommitResult,
    Delete,
    Entry,
    Exists,
    Op,
    PrefixUnchanged,
    Put,
    Revision,
)
from dal.backends.url import StoreURL
from dal.exceptions import BackendError, ConfigurationError

DEFAULT_PORT = 2379
DEFAULT_TIMEOUT = 5.0
#: etcd's default --max-txn-ops; get_many stays under it so it works against stock servers
TXN_OPS = 128
#: keys per range request of scan_keys, so one response stays a few megabytes at most
KEYS_PAGE = 20_000
#: seconds a failed endpoint is passed over while others remain (pyetcd's default is 300)
ENDPOINT_RETRY_AFTER = 2.0
_OPTIONS = ("timeout", "ca_cert", "cert_key", "cert_cert")
_MOD, _VERSION = etcdrpc.Compare.MOD, etcdrpc.Compare.VERSION
_EQUAL, _GREATER, _LESS = etcdrpc.Compare.EQUAL, etcdrpc.Compare.GREATER, etcdrpc.Compare.LESS
_CHANNEL_OPTIONS = [
    # gRPC backs off up to 2 minutes before reconnecting; a recovered server should be used soon
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # big scans are bounded by their limit, not by gRPC's 4 MB default
    ("grpc.max_receive_message_length", -1),
]


class EtcdStore:
    """A :class:`~dal.backends.base.PersistentStore` on an etcd v3 cluster."""

    scheme: ClassVar[str] = "etcd"
    shared: ClassVar[bool] = True
    # a connection can drop after etcd applied a txn and before its answer arrived
    ambiguous_commits: ClassVar[bool] = True

    def __init__(self, url: StoreURL, hosts: Sequence[tuple[str, int]], *, timeout: float,
                 user: str | None = None, password: str | None = None,
                 credentials: Any = None) -> None:
        self.url = url
        self.timeout = timeout
        self._identity: str | None = None
        self._closed = False
        self._user = user
        self._password = password
        self._token: str | None = None
        self._auth_lock = threading.Lock()
        secure = credentials is not None
        self._endpoints = [
            Endpoint(host, port, secure=secure, creds=credentials,
                     time_retry=ENDPOINT_RETRY_AFTER, opts=_CHANNEL_OPTIONS)
            for host, port in hosts]
        # no user/password here: pyetcd would authenticate eagerly against one random endpoint
        self._client = MultiEndpointEtcd3Client(endpoints=self._endpoints, timeout=timeout, failover=True)
        self._stubs = {ep.netloc: (etcdrpc.KVStub(ep.channel), etcdrpc.AuthStub(ep.channel))
                       for ep in self._endpoints}
        self._where = ", ".join(ep.netloc for ep in self._endpoints)

    @classmethod
    def from_url(cls, url: StoreURL) -> EtcdStore:
        """Open the etcd cluster a URL names (no connection is made until the first request)."""
        url.check_options(_OPTIONS)
        if url.path not in ("", "/"):
            raise ConfigurationError(f"{url} has a path; etcd:// URLs take none, write etcd://host:port")
        hosts = url.require_hosts(DEFAULT_PORT)
        timeout = url.option("timeout", float, DEFAULT_TIMEOUT)
        if not timeout > 0:
            raise ConfigurationError(f"option timeout in {url} must be a positive number of seconds")
        if (url.user is None) != (url.password is None):
            raise ConfigurationError(f"{url} gives a user without a password or the reverse; give both")
        return cls(url, hosts, timeout=timeout, user=url.user, password=url.password,
                   credentials=_tls_credentials(url))

    def __repr__(self) -> str:
        return f"EtcdStore({str(self.url)!r})"

    # --- reads ----------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        response = self._call("Range", etcdrpc.RangeRequest(key=key.encode()))
        if not response.kvs:
            return None
        kv = response.kvs[0]
        return Entry(kv.value, kv.mod_revision)

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Entry] = {}
        revision = 0
        for start in range(0, len(wanted), TXN_OPS):
            chunk = wanted[start:start + TXN_OPS]
            # later chunks read at the first chunk's revision, so the result is one snapshot
            reads = [etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=k.encode(), revision=revision))
                     for k in chunk]
            response = self._call("Txn", etcdrpc.TxnRequest(success=reads))
            revision = revision or response.header.revision
            for key, op in zip(chunk, response.responses, strict=True):
                if op.response_range.kvs:
                    kv = op.response_range.kvs[0]
                    found[key] = Entry(kv.value, kv.mod_revision)
        return found

    def scan(self, prefix: str, *, start_after: str | None = None,
             limit: int | None = None) -> list[tuple[str, Entry]]:
        if limit is not None and limit <= 0:
            return []
        start, end = prefix_range(prefix)
        if start_after is not None:
            start = max(start, (start_after + "\0").encode())
            if end != b"\0" and start >= end:
                return []
        # sort_order NONE on purpose: etcd returns ranges in ascending key order anyway, and an
        # explicit sort makes etcd 3.4 read the whole range before applying the limit
        request = etcdrpc.RangeRequest(key=start, range_end=end, limit=limit or 0)
        response = self._call("Range", request)
        return [(kv.key.decode(), Entry(kv.value, kv.mod_revision)) for kv in response.kvs]

    def scan_keys(self, prefixes: Sequence[str]) -> dict[str, list[str]]:
        """Return the keys under each prefix: one read txn per 128 prefixes, all at one revision."""
        wanted = list(dict.fromkeys(prefixes))
        found: dict[str, list[str]] = {}
        revision = 0
        for start in range(0, len(wanted), TXN_OPS):
            chunk = wanted[start:start + TXN_OPS]
            reads = [etcdrpc.RequestOp(request_range=self._keys_request(prefix, None, revision))
                     for prefix in chunk]
            response = self._call("Txn", etcdrpc.TxnRequest(success=reads))
            revision = revision or response.header.revision
            for prefix, op in zip(chunk, response.responses, strict=True):
                keys = [kv.key.decode() for kv in op.response_range.kvs]
                more = op.response_range.more
                while more:  # a huge range continues page by page at the same revision
                    page = self._call("Range", self._keys_request(prefix, keys[-1], revision))
                    keys += [kv.key.decode() for kv in page.kvs]
                    more = page.more
                found[prefix] = keys
        return found

    @staticmethod
    def _keys_request(prefix: str, start_after: str | None, revision: int) -> Any:
        start, end = prefix_range(prefix)
        if start_after is not None:
            start = (start_after + "\0").encode()
        return etcdrpc.RangeRequest(key=start, range_end=end, keys_only=True, limit=KEYS_PAGE,
                                    revision=revision)

    # --- writes ---------------------------------------------------------------------

    def commit(self, checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        compares: list[Any] = []
        # on failure, the txn reads back what each check looked at, so a conflict costs one round trip
        key_reads: dict[str, int] = {}
        prefix_reads: dict[tuple[str, int], int] = {}
        failure: list[Any] = []
        for check in checks:
            if isinstance(check, Revision | Exists):
                key = check.key.encode()
                if isinstance(check, Revision):
                    # an absent key compares as mod revision 0, which is what Revision(k, 0) means
                    compares.append(etcdrpc.Compare(key=key, target=_MOD, result=_EQUAL,
                                                    mod_revision=check.revision))
                else:
                    compares.append(etcdrpc.Compare(key=key, target=_VERSION, result=_GREATER, version=0))
                if check.key not in key_reads:
                    key_reads[check.key] = len(failure)
                    failure.append(etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key)))
            else:
                start, end = prefix_range(check.prefix)
                # a range compare holds when every key in the range satisfies it, so it holds
                # vacuously on an empty range: version == 0 fails as soon as one key exists, and
                # mod_revision < r + 1 as soon as one was written after r
                after = check.revision if isinstance(check, PrefixUnchanged) else 0
                if isinstance(check, PrefixUnchanged):
                    compares.append(etcdrpc.Compare(key=start, range_end=end, target=_MOD, result=_LESS,
                                                    mod_revision=after + 1))
                else:
                    compares.append(etcdrpc.Compare(key=start, range_end=end, target=_VERSION,
                                                    result=_EQUAL, version=0))
                if (check.prefix, after) not in prefix_reads:
                    prefix_reads[(check.prefix, after)] = len(failure)
                    failure.append(etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(
                        key=start, range_end=end, limit=1, keys_only=True, min_mod_revision=after + 1)))
        success = write_requests(ops)
        request = etcdrpc.TxnRequest(compare=compares, success=success, failure=failure)
        response = self._call("Txn", request, txn_size=(len(checks), len(success)))
        if response.succeeded:
            return CommitResult(ok=True, revision=response.header.revision)
        return self._conflict(checks, response, key_reads, prefix_reads)

    @staticmethod
    def _conflict(checks: Sequence[Check], response: Any, key_reads: dict[str, int],
                  prefix_reads: dict[tuple[str, int], int]) -> CommitResult:
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
        return CommitResult(ok=False, failed=tuple(failed), current=current)

    def identity(self) -> str:
        """Return the cluster's id, which every member reports, whichever endpoint is asked."""
        if self._identity is None:
            request = etcdrpc.RangeRequest(key=b"\0", keys_only=True, count_only=True)
            self._identity = f"etcd-cluster-{self._call('Range', request).header.cluster_id:016x}"
        return self._identity

    def change_token(self) -> object:
        # knowing whether anyone else committed would take a round trip: not cheap
        return None

    def close(self) -> None:
        self._closed = True
        self._client.close()

    # --- transport ------------------------------------------------------------------

    def _call(self, method: str, request: Any, *, txn_size: tuple[int, int] | None = None) -> Any:
        """Send one KV request, failing over between endpoints, all within the store's timeout."""
        if self._closed:  # gRPC would raise a bare ValueError on its closed channels
            raise BackendError(f"the etcd store {self.url} is closed; open it again (dal.configure())")
        deadline = time.monotonic() + self.timeout
        for attempt in range(2):
            metadata = self._auth_metadata(deadline)
            try:
                return self._send(method, request, deadline, metadata, kv=True)
            except grpc.RpcError as exc:
                # tokens expire (etcd's simple tokens after 5 minutes idle): log in again, once
                if attempt == 0 and metadata and _is_expired_token(exc):
                    self._token = None
                    continue
                raise self._error(exc, txn_size, deadline) from exc
        raise AssertionError("unreachable")

    def _auth_metadata(self, deadline: float) -> tuple[tuple[str, str], ...] | None:
        if self._user is None:
            return None
        with self._auth_lock:
            if self._token is None:
                request = etcdrpc.AuthenticateRequest(name=self._user, password=self._password)
                try:
                    self._token = self._send("Authenticate", request, deadline, None, kv=False).token
                except grpc.RpcError as exc:
                    raise self._error(exc, None, deadline) from exc
            return (("token", self._token),)

    def _send(self, method: str, request: Any, deadline: float,
              metadata: tuple[tuple[str, str], ...] | None, *, kv: bool) -> Any:
        """Try the endpoints in turn while they are unreachable; raise the last gRPC error.

        Only UNAVAILABLE is retried elsewhere. It mostly means the request never reached a
        server, but not always (a connection can drop after sending, and etcd reports some
        server-side timeouts with it). Resending is still safe for what we send: reads are
        idempotent, and a commit's writes are guarded by revision checks, so a txn that did
        apply fails its checks when resent instead of applying twice (unguarded puts and
        deletes just repeat the same final state). Such a failure is not a conflict: dal's
        commits carry a token key (``dal/cache/journal.py``) whose presence in the failed resend's
        read-back shows that the first send applied.
        """
        error: grpc.RpcError | None = None
        for _ in range(len(self._endpoints)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            endpoint = self._pick_endpoint()
            kv_stub, auth_stub = self._stubs[endpoint.netloc]
            call = getattr(kv_stub if kv else auth_stub, method)
            try:
                return call(request, timeout=remaining, metadata=metadata)
            except grpc.RpcError as exc:
                code = exc.code()
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    endpoint.fail()
                if code != grpc.StatusCode.UNAVAILABLE:
                    raise
                error = exc
        if error is None:
            raise self._timed_out()
        raise error

    def _pick_endpoint(self) -> Any:
        try:
            self._client.channel  # noqa: B018 - the property is what fails over to a healthy endpoint
            return self._client.endpoint_in_use
        except NoServerAvailableError:
            # every endpoint failed recently; trying the one that failed longest ago beats not trying
            return min(self._endpoints, key=lambda ep: ep.last_failed)

    def _timed_out(self) -> BackendError:
        return BackendError(
            f"etcd at {self._where} did not answer within {self.timeout:g} s (the timeout option of "
            f"{self.url}); check that a majority of its members are running and reach each other (a "
            "cluster that lost its quorum answers nothing), or raise the timeout")

    def _error(self, exc: Any, txn_size: tuple[int, int] | None, deadline: float) -> BackendError:
        code = exc.code()
        details = exc.details() or ""
        # etcd reports its own side of an expired deadline as UNKNOWN or UNAVAILABLE (for example
        # without quorum); what the caller needs to know is that the time ran out
        out_of_time = time.monotonic() >= deadline - min(0.1, self.timeout / 10)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED or (
                out_of_time and code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE)):
            return self._timed_out()
        if code == grpc.StatusCode.UNAVAILABLE:
            return BackendError(f"could not reach etcd at {self._where} ({details}); check that its members "
                                "are running and that this host can connect to them")
        if "too many operations in txn request" in details:
            checks, writes = txn_size or (0, 0)
            return BackendError(
                f"this commit needs {max(checks, writes)} operations in one etcd transaction "
                f"({checks} checks, {writes} writes) but the server at {self._where} allows fewer "
                f"(--max-txn-ops, 128 by default); start etcd with a larger --max-txn-ops "
                f"or save fewer objects per transaction")
        if "request is too large" in details:
            return BackendError(
                f"this request is larger than the etcd server at {self._where} accepts "
                f"(--max-request-bytes, 1.5 MiB by default); start etcd with a larger "
                f"--max-request-bytes or write less per transaction")
        return BackendError(f"etcd at {self._where} failed: {code.name}: {details}")


def prefix_range(prefix: str) -> tuple[bytes, bytes]:
    """Return etcd's ``[key, range_end)`` for every key starting with ``prefix``.

    ``range_end`` ``b"\\0"`` means "to the end of the keyspace", which is what the empty
    prefix needs (etcd has no empty keys, so ``b"\\0"`` starts it).
    """
    start = prefix.encode()
    end = bytearray(start)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return start or b"\0", b"\0"
    end[-1] += 1
    return start, bytes(end)


def write_requests(ops: Sequence[Op]) -> list[Any]:
    """Turn ordered ops into etcd txn requests with the same final effect.

    etcd refuses a txn that puts a key twice or puts a key inside a range it also deletes
    ("duplicate key given in txn request"), so ops are folded in order: the last op on a key
    wins, and a prefix delete followed by puts under it becomes range deletes around them.
    """
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
        else:
            puts = {key: value for key, value in puts.items() if not key.startswith(op.prefix)}
            deletes = {key for key in deletes if not key.startswith(op.prefix)}
            if not any(op.prefix.startswith(other) for other in prefixes):
                prefixes = [other for other in prefixes if not other.startswith(op.prefix)]
                prefixes.append(op.prefix)
    requests = [etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key.encode(), value=value))
                for key, value in puts.items()]
    requests += [etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key.encode()))
                 for key in sorted(deletes)]
    for prefix in prefixes:
        start, end = prefix_range(prefix)
        for key in sorted(key for key in puts if key.startswith(prefix)):
            if start < key.encode():
                requests.append(_delete_range(start, key.encode()))
            start = (key + "\0").encode()
        if end == b"\0" or start < end:
            requests.append(_delete_range(start, end))
    return requests


def _delete_range(start: bytes, end: bytes) -> Any:
    return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=start, range_end=end))


def _is_expired_token(exc: Any) -> bool:
    return bool(exc.code() == grpc.StatusCode.UNAUTHENTICATED
                and "invalid auth token" in (exc.details() or ""))


def _tls_credentials(url: StoreURL) -> Any:
    """Return gRPC channel credentials when any TLS option is given, else ``None``."""
    paths = {name: url.options.get(name) for name in ("ca_cert", "cert_key", "cert_cert")}
    if not any(paths.values()):
        return None
    if bool(paths["cert_key"]) != bool(paths["cert_cert"]):
        raise ConfigurationError(f"{url} gives only one of cert_key and cert_cert; a client "
                                 "certificate needs both")
    contents: dict[str, bytes | None] = {}
    for name, path in paths.items():
        if not path:
            contents[name] = None
            continue
        try:
            contents[name] = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"option {name} of {url}: cannot read {path!r}: {exc.strerror}") from exc
    # without ca_cert, the server's certificate is checked against the system's trusted roots
    return grpc.ssl_channel_credentials(contents["ca_cert"], contents["cert_key"], contents["cert_cert"])
