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
from typing import Any

import grpc
from pyetcd import etcdrpc
from pyetcd.client import Endpoint, MultiEndpointEtcd3Client
from pyetcd.exceptions import NoServerAvailableError

from dal.backends.base import RefusedError, TooLargeError
from dal.backends.base import utf8 as base_utf8
from dal.backends.etcd.grants import permission_denied
from dal.backends.etcd.tls import tls_failure
from dal.backends.url import StoreURL
from dal.exceptions import BackendError

#: seconds a failed endpoint is passed over while others remain (pyetcd's default is 300)
ENDPOINT_RETRY_AFTER = 2.0
#: seconds kept back for each further member a send may still go to: a member that is frozen or cut
#: off accepts a request and never answers, so a send waits the time left less this reserve per
#: member still untried, and an unanswered one goes to the next member (a healthy one answers
#: within milliseconds); a send waits at least this long (or what is left of the deadline)
ATTEMPT_FLOOR = 0.5
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
NO_SPACE = (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
PERMISSION_DENIED = (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")
EMPTY_KEY = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
DUPLICATE_KEY = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
TOO_MANY_REQUESTS = (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests")
USER_EMPTY = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: user name is empty")
AUTH_NOT_ENABLED = (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
AUTH_OLD_REVISION = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")
COMPACTED = (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
#: what a refusal says when an earlier send of the same request got no answer (it may still apply)
UNANSWERED = " (an earlier send of this request got no answer and may have been applied)"
#: etcd's longest lease, in seconds (MaxLeaseTTL in its lessor); a longer one is refused
MAX_LEASE_TTL = 9_000_000_000


class SpaceExceededError(BackendError):
    """etcd answered "database space exceeded" to a request sent once. Not a refusal by itself: the
    write that takes the database over its quota is applied and answered with this error all the
    same (etcd's quotaApplierV3), so :meth:`~dal.backends.etcd.store.EtcdStore.commit` reads back
    whether it was."""


class CompactedError(BackendError):
    """A read pinned to a revision etcd has compacted away since (reading again at the current one works)."""


def utf8(text: str) -> bytes:
    """Return ``text`` in UTF-8 for etcd, whose keys are bytes (see :func:`dal.backends.base.utf8`)."""
    return base_utf8(text, "etcd")


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
        secure = self._tls = credentials is not None
        self._endpoints = [
            Endpoint(host, port, secure=secure, creds=credentials,
                     time_retry=ENDPOINT_RETRY_AFTER, opts=_CHANNEL_OPTIONS)
            for host, port in hosts]
        # no user/password here: pyetcd would authenticate eagerly against one random endpoint
        self._client = MultiEndpointEtcd3Client(endpoints=self._endpoints, timeout=timeout, failover=True)
        self._stubs = {ep.netloc: {"kv": etcdrpc.KVStub(ep.channel), "auth": etcdrpc.AuthStub(ep.channel),
                                   "lease": etcdrpc.LeaseStub(ep.channel),
                                   "cluster": etcdrpc.ClusterStub(ep.channel)}
                       for ep in self._endpoints}
        self._where = ", ".join(ep.netloc for ep in self._endpoints)

    def close(self) -> None:
        self._closed = True
        self._client.close()

    def still_current(self) -> bool:
        """Tell whether ``configure()`` may hand this client out again: not once it is closed."""
        return not self._closed

    def _call(self, method: str, request: Any, *, txn_size: tuple[int, int] | None = None,
              service: str = "kv", resend: bool = True, tries: Tries | None = None) -> Any:
        """Send one request (KV, lease, cluster), failing over between endpoints, within the timeout.

        ``resend``: whether a send that got no answer may be sent again to another member (see
        :meth:`_send`); a request that may not gets the whole deadline on its first member.
        ``tries``, when given, learns whether a send went unanswered even when a later one answered.
        """
        if self._closed:  # gRPC would raise a bare ValueError on its closed channels
            raise BackendError(f"the etcd store {self.url} is closed; open it again (dal.configure())")
        deadline = time.monotonic() + self.timeout
        tries = Tries() if tries is None else tries
        for attempt in range(2):
            try:
                metadata = self._auth_metadata(deadline)
            except RefusedError as exc:
                if not tries.unanswered:
                    raise
                # a login refused now says nothing of the earlier send that got no answer
                raise BackendError(f"{exc}{UNANSWERED}") from exc
            try:
                return self._send(method, request, deadline, metadata, service=service, resend=resend,
                                  tries=tries)
            except grpc.RpcError as exc:
                # tokens expire (etcd's simple tokens after 5 minutes idle), a changed auth store
                # outdates them, and auth enabled after we went without one asks for a user: log in
                # again, once (etcd refused the request before applying it)
                if attempt == 0 and self._login_again(exc, metadata) and (resend or not tries.unanswered):
                    self._token = None
                    continue
                raise self._error(exc, txn_size, deadline, answered=not tries.unanswered) from exc
        raise AssertionError("unreachable")

    def _login_again(self, exc: Any, metadata: tuple[tuple[str, str], ...] | None) -> bool:
        if self._user is None:
            return False
        error = etcd_error(exc)
        return error in (INVALID_AUTH_TOKEN, AUTH_OLD_REVISION) if metadata else error == USER_EMPTY

    def _auth_metadata(self, deadline: float) -> tuple[tuple[str, str], ...] | None:
        if self._user is None:
            return None
        with self._auth_lock:
            if self._token is None:
                request = etcdrpc.AuthenticateRequest(name=self._user, password=self._password)
                try:
                    self._token = self._send("Authenticate", request, deadline, None, service="auth",
                                             resend=True, tries=Tries()).token
                except grpc.RpcError as exc:
                    # as etcd's Go client does: without auth enabled, go on without a token (clients
                    # can get their credentials before `auth enable`); USER_EMPTY says when to log in
                    if etcd_error(exc) != AUTH_NOT_ENABLED:
                        raise self._login_error(exc, deadline) from exc
                    self._token = ""
            return (("token", self._token),) if self._token else None

    def _send(self, method: str, request: Any, deadline: float,
              metadata: tuple[tuple[str, str], ...] | None, *, service: str, resend: bool,
              tries: Tries) -> Any:
        """Try the endpoints in turn while they do not answer; raise the last gRPC error.

        UNAVAILABLE mostly means the request never reached a server, but only a failure to connect
        proves it (:data:`NEVER_SENT`: a connection can drop after sending, and etcd reports some
        server-side timeouts with it), and DEADLINE_EXCEEDED means a member took it and did not
        answer (frozen, cut off from the others): either may still apply, even much later (a
        frozen member resumed reads it then). Each send waits the time left less a reserve
        (ATTEMPT_FLOOR) per member still to try, and is sent again to the next member when
        ``resend`` says that is safe: reads, lease keep-alives and revokes, a lease grant (at worst
        an extra lease expires unused), and a commit whose checks a first send that did apply makes
        fail (:meth:`~dal.backends.etcd.store.EtcdStore.commit` says which): dal's
        commits carry a token key checked absent (``dal/cache/journal.py``), whose presence in the
        failed resend's read-back shows that the first send applied. UNAVAILABLE is retried
        whatever ``resend`` says, as it always was (a commit without such checks repeats the same
        writes); one that failed to connect was never sent, so leaves a later refusal certain.
        """
        error: grpc.RpcError | None = None
        #: the first member that took the request and did not answer, and its error: what the
        #: failure is reported as, whatever the others said after (refused at once: no member down
        #: explains a request that one took and never answered)
        sends, silent, unanswered = len(self._endpoints), None, None
        while sends > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # most of the time left, less a reserve of ATTEMPT_FLOOR per member still to try: a slow
            # but healthy member keeps nearly the whole timeout, a frozen one leaves the others that
            wait = max(remaining - ATTEMPT_FLOOR * (sends - 1), min(remaining, ATTEMPT_FLOOR)) if resend \
                else remaining
            sends -= 1
            endpoint = self._pick_endpoint()
            if silent is not None and endpoint.is_failed():
                endpoint = silent  # the others refused it at once: the one that took it may yet answer
            call = getattr(self._stubs[endpoint.netloc][service], method)
            try:
                if method == "LeaseKeepAlive":  # a stream both ways: one request, its one answer
                    return next(call(iter([request]), timeout=wait, metadata=metadata), None)
                return call(request, timeout=wait, metadata=metadata)
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                endpoint.fail()
                tries.unanswered = tries.unanswered or not _never_sent(exc)
                if (code == grpc.StatusCode.DEADLINE_EXCEEDED or _proposed(exc)) and not resend:
                    raise  # taken by a member, and it may yet apply: not to be sent to another
                error = exc
                # a member took the request and did not answer in its share: one more send, which
                # goes to it again when the others refuse (a member without quorum answers nothing
                # until the deadline)
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and silent is None:
                    silent, sends, unanswered = endpoint, sends + 1, exc
                elif unanswered is None and _proposed(exc):
                    unanswered = exc  # a member took it and said it could not confirm it (no quorum)
        if error is None:
            raise self._timed_out()
        raise unanswered if unanswered is not None else error

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

    def _login_error(self, exc: Any, deadline: float) -> BackendError:
        code, details = etcd_error(exc)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return self._error(exc, None, deadline, answered=False)
        # the request itself was never sent
        return RefusedError(f"etcd at {self._where} refused the login of user {self._user!r} "
                            f"({code.name}: {details}); check the user and password in {self.url}")

    def _error(self, exc: Any, txn_size: tuple[int, int] | None, deadline: float, *,
               answered: bool = False) -> BackendError:
        """Return the BackendError of a failed request; a :class:`RefusedError` when etcd refused
        it before applying any of it and no earlier send of it went unanswered (``answered``)."""
        code, details = etcd_error(exc)
        # etcd reports its own side of an expired deadline as UNKNOWN or UNAVAILABLE (for example
        # without quorum); what the caller needs to know is that the time ran out
        out_of_time = time.monotonic() >= deadline - min(0.1, self.timeout / 10)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED or (
                out_of_time and code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE)):
            return self._timed_out()
        if _proposed(exc):
            return BackendError(
                f"etcd at {self._where} did not confirm the request: a member took it and answered "
                f"{details.removeprefix('etcdserver: ')!r} (it may yet be applied); check that a majority of "
                "its members are running and reach each other (a cluster that lost its quorum commits "
                f"nothing), or raise the timeout option of {self.url}")
        if code == grpc.StatusCode.UNAVAILABLE and details.startswith("etcdserver: "):
            return BackendError(
                f"etcd at {self._where} refused the request before applying it: "
                f"{details.removeprefix('etcdserver: ')!r}; check that a majority of its voting members "
                "are running and reach each other, and that this client names voting members, not only "
                "learners")
        if code == grpc.StatusCode.UNAVAILABLE:
            return BackendError(tls_failure(self._where, details, self._tls, self.url) or (
                f"could not reach etcd at {self._where} ({details}); check that its members are running "
                "and that this host can connect to them"))
        if (code, details) == NO_SPACE:
            message = (f"etcd at {self._where} is out of space: its database reached its quota and its "
                       "NOSPACE alarm refuses writes; free space (etcdctl compact to an old revision, then "
                       "etcdctl defrag) and clear the alarm (etcdctl alarm disarm), or restart etcd with a "
                       "larger --quota-backend-bytes")
            return SpaceExceededError(message) if answered else BackendError(message)
        if (code, details) == COMPACTED:
            return CompactedError(f"etcd at {self._where} compacted the revision this read was pinned "
                                  "to while it ran (mvcc: required revision has been compacted); "
                                  "reading again works")
        refusal = self._refusal(code, details, txn_size)
        if refusal is None:
            return BackendError(f"etcd at {self._where} failed: {code.name}: {details}")
        if answered:
            return TooLargeError(refusal) if _too_large(code, details) else RefusedError(refusal)
        return BackendError(f"{refusal}{UNANSWERED}")

    def _refusal(self, code: Any, details: str, txn_size: tuple[int, int] | None) -> str | None:
        """Say what to do about an error etcd answers before applying anything of the request."""
        error = (code, details)
        if error == TOO_MANY_OPS and txn_size is None:  # a read: get_many and scan_keys send smaller ones
            return (f"this read needs more operations in one etcd transaction than the server at "
                    f"{self._where} allows (--max-txn-ops, 128 by default); start etcd with a larger "
                    "--max-txn-ops")
        if error == TOO_MANY_OPS:
            checks, writes = txn_size or (0, 0)
            return (f"this commit needs {max(checks, writes)} operations in one etcd transaction "
                    f"({checks} checks, {writes} writes) but the server at {self._where} allows fewer "
                    f"(--max-txn-ops, 128 by default); start etcd with a larger --max-txn-ops, or make the "
                    f"transaction smaller: a delete(abandon=...) unlinks every referrer in its one "
                    f"transaction, so unlink some of them first (set their relation to None and save "
                    f"them) and delete again with fewer; otherwise save fewer objects per call")
        if _too_large(code, details):
            # "retrying" must not read as a remedy (the journal adds that nothing was written)
            return (f"this request is larger than the etcd server at {self._where} accepts "
                    f"(--max-request-bytes, 1.5 MiB by default); start etcd with a larger "
                    f"--max-request-bytes or write less per transaction (sent again as it is, it fails "
                    f"the same way)")
        if error == PERMISSION_DENIED:
            who = f"user {self._user!r}" if self._user else "this client"
            return permission_denied(self._where, who)
        if error == USER_EMPTY:
            return (f"etcd at {self._where} has authentication enabled and this client gave no user; "
                    f"put one in the URL (etcd://user:password@host:port)")
        if error in (EMPTY_KEY, DUPLICATE_KEY):
            return f"etcd at {self._where} refused the request: {details}"
        if error == TOO_MANY_REQUESTS:
            return (f"etcd at {self._where} is overloaded (too many requests: it applies writes more "
                    "slowly than it commits them); try again later")
        if error in (INVALID_AUTH_TOKEN, AUTH_OLD_REVISION):
            return f"etcd at {self._where} refused this client's login token twice ({details}); try again"
        return None


class Tries:
    """What the sends of one request learnt: whether one went unanswered (and may still apply)."""

    def __init__(self) -> None:
        self.unanswered = False


#: etcd's own UNAVAILABLE answers to a request it proposed and could not confirm (its rpctypes): the
#: request may yet apply. Its other UNAVAILABLE answers (``no leader``, ``not capable``, ``rpc not
#: supported for learner``) refuse a request before proposing it.
PROPOSED = ("etcdserver: request timed out", "etcdserver: leader changed", "etcdserver: server stopped")


def _proposed(exc: Any) -> bool:
    """Tell whether an error is etcd's answer that it took the request and could not confirm it."""
    code, details = etcd_error(exc)
    return bool(code == grpc.StatusCode.UNAVAILABLE and details.startswith(PROPOSED))


#: what gRPC answers for a request it failed before putting it on any connection: no connection to
#: the member could be made (refused, unreachable, a failed TLS handshake; gRPC fails such a request
#: at once, "fail fast") or its name did not resolve. Any other UNAVAILABLE (a connection dropped,
#: reset, closed) may come after the request went out, so only these count as never sent.
NEVER_SENT = ("failed to connect to all addresses", "errors resolving ", "DNS resolution failed")


def _never_sent(exc: Any) -> bool:
    """Tell whether gRPC failed a request before sending it to any member (see NEVER_SENT)."""
    code, details = etcd_error(exc)
    return bool(code == grpc.StatusCode.UNAVAILABLE and details.startswith(NEVER_SENT))


def _too_large(code: Any, details: str) -> bool:
    """Whether etcd (or gRPC in front of it) refused the request for its size."""
    return (code, details) == REQUEST_TOO_LARGE or (
        code == OVER_GRPC_LIMIT[0] and details.startswith(OVER_GRPC_LIMIT[1]))
