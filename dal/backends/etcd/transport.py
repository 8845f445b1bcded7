"""The wire to an etcd cluster: gRPC stubs per endpoint, failover, one deadline, login, and errors.

Requests go through the gRPC stubs directly (pyetcd supplies the generated messages and
the endpoint bookkeeping), so each call carries the time left of one overall deadline.
:class:`EtcdTransport` is what :class:`~dal.backends.etcd.store.EtcdStore` sends through;
gRPC failures become :class:`~dal.exceptions.BackendError` saying what to do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from pyetcd import etcdrpc
from pyetcd.client import Endpoint, MultiEndpointEtcd3Client
from pyetcd.exceptions import NoServerAvailableError

from dal.backends.url import StoreURL
from dal.exceptions import BackendError, ConfigurationError

#: seconds a failed endpoint is passed over while others remain (pyetcd's default is 300)
ENDPOINT_RETRY_AFTER = 2.0
_CHANNEL_OPTIONS = [
    # gRPC backs off up to 2 minutes before reconnecting; a recovered server should be used soon
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # big scans are bounded by their limit, not by gRPC's 4 MB default
    ("grpc.max_receive_message_length", -1),
]

# etcd's errors that dal tells apart, exactly as etcd defines them in its rpctypes
# (go.etcd.io/etcd/api/v3/v3rpc/rpctypes/error.go: ErrGRPCTooManyOps, ErrGRPCRequestTooLarge,
# ErrGRPCInvalidAuthToken). One gRPC status code covers several of etcd's errors (INVALID_ARGUMENT
# also means a duplicate key, an empty key, ...), and etcd's own Go client tells them apart by
# this (code, description) pair (rpctypes.Error); so does :func:`etcd_error`.
TOO_MANY_OPS = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
REQUEST_TOO_LARGE = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")
INVALID_AUTH_TOKEN = (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
#: what gRPC itself answers (before etcd sees it) for a request over the server's gRPC limit,
#: --max-request-bytes plus 512 KiB; RESOURCE_EXHAUSTED alone is also etcd's "database space exceeded"
OVER_GRPC_LIMIT = (grpc.StatusCode.RESOURCE_EXHAUSTED, "grpc: received message larger than max")


def etcd_error(exc: Any) -> tuple[Any, str]:
    """Return the (gRPC status code, description) of a gRPC error, to compare with the errors above."""
    return exc.code(), exc.details() or ""


class EtcdTransport:
    """Endpoints, their stubs and the login of one etcd cluster; sends requests within a deadline."""

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
        self._stubs = {ep.netloc: {"kv": etcdrpc.KVStub(ep.channel), "auth": etcdrpc.AuthStub(ep.channel),
                                   "lease": etcdrpc.LeaseStub(ep.channel)}
                       for ep in self._endpoints}
        self._where = ", ".join(ep.netloc for ep in self._endpoints)

    def close(self) -> None:
        self._closed = True
        self._client.close()

    def _call(self, method: str, request: Any, *, txn_size: tuple[int, int] | None = None,
              service: str = "kv") -> Any:
        """Send one KV (or lease) request, failing over between endpoints, all within the store's timeout."""
        if self._closed:  # gRPC would raise a bare ValueError on its closed channels
            raise BackendError(f"the etcd store {self.url} is closed; open it again (dal.configure())")
        deadline = time.monotonic() + self.timeout
        for attempt in range(2):
            metadata = self._auth_metadata(deadline)
            try:
                return self._send(method, request, deadline, metadata, service=service)
            except grpc.RpcError as exc:
                # tokens expire (etcd's simple tokens after 5 minutes idle): log in again, once
                if attempt == 0 and metadata and is_expired_token(exc):
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
                    self._token = self._send("Authenticate", request, deadline, None, service="auth").token
                except grpc.RpcError as exc:
                    raise self._error(exc, None, deadline) from exc
            return (("token", self._token),)

    def _send(self, method: str, request: Any, deadline: float,
              metadata: tuple[tuple[str, str], ...] | None, *, service: str) -> Any:
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
            call = getattr(self._stubs[endpoint.netloc][service], method)
            try:
                if method == "LeaseKeepAlive":  # a stream both ways: one request, its one answer
                    return next(call(iter([request]), timeout=remaining, metadata=metadata), None)
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
        code, details = etcd_error(exc)
        # etcd reports its own side of an expired deadline as UNKNOWN or UNAVAILABLE (for example
        # without quorum); what the caller needs to know is that the time ran out
        out_of_time = time.monotonic() >= deadline - min(0.1, self.timeout / 10)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED or (
                out_of_time and code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE)):
            return self._timed_out()
        if code == grpc.StatusCode.UNAVAILABLE:
            return BackendError(f"could not reach etcd at {self._where} ({details}); check that its members "
                                "are running and that this host can connect to them")
        if (code, details) == TOO_MANY_OPS:
            checks, writes = txn_size or (0, 0)
            return BackendError(
                f"this commit needs {max(checks, writes)} operations in one etcd transaction "
                f"({checks} checks, {writes} writes) but the server at {self._where} allows fewer "
                f"(--max-txn-ops, 128 by default); start etcd with a larger --max-txn-ops "
                f"or save fewer objects per transaction")
        if (code, details) == REQUEST_TOO_LARGE or (
                code == OVER_GRPC_LIMIT[0] and details.startswith(OVER_GRPC_LIMIT[1])):
            # "retrying" must not read as a remedy (the journal adds that nothing was written)
            return BackendError(
                f"this request is larger than the etcd server at {self._where} accepts "
                f"(--max-request-bytes, 1.5 MiB by default); start etcd with a larger "
                f"--max-request-bytes or write less per transaction (sent again as it is, it fails "
                f"the same way)")
        return BackendError(f"etcd at {self._where} failed: {code.name}: {details}")


def is_expired_token(exc: Any) -> bool:
    """Return whether a gRPC error says the login token is no longer valid (log in again)."""
    return etcd_error(exc) == INVALID_AUTH_TOKEN


def tls_credentials(url: StoreURL) -> Any:
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
