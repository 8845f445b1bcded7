"""What etcd refuses before applying anything, logins, compaction mid-read, and odd inputs.

A commit etcd refused outright (permission, space alarm, size, op count, empty key, a bad login)
is a :class:`~dal.backends.base.RefusedError`: the journal reports at once that nothing was
written and leaves no marker. Each scenario that changes the server (auth, alarm) gets its own
etcd, stopped by its PID.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pyetcd import etcdrpc
from test_commit_outcome import _RpcError

import dal.backends.etcd.store as etcd_store
from dal import DataObject, Property, configure
from dal.backends.base import Put, RefusedError, Revision, TooLargeError
from dal.backends.etcd import EtcdStore
from dal.backends.etcd.grants import leadership_grant
from dal.backends.url import parse_url
from dal.exceptions import BackendError, CommitOutcomeUnknownError, InvalidValueError
from dal.testing.fixtures import start_or_skip
from dal.testing.servers import RunningServer, closed_port, start_etcd

pytestmark = pytest.mark.etcd

ROOT = ("root", "rootpw")


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[RunningServer]:
    """An etcd of this test alone (it enables auth or raises an alarm)."""
    server = start_or_skip("etcd", lambda: start_etcd(tmp_path / "etcd"))
    try:
        yield server
    finally:
        server.stop()


def _hostport(server: RunningServer) -> str:
    return f"{server.host}:{server.port}"


def enable_auth(server: RunningServer) -> tuple[Any, tuple[tuple[str, str], ...]]:
    """Turn auth on with a root user and a user ``ro`` who may only read; return the stub and root's token."""
    auth = etcdrpc.AuthStub(grpc.insecure_channel(_hostport(server)))
    auth.UserAdd(etcdrpc.AuthUserAddRequest(name=ROOT[0], password=ROOT[1]))
    auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user=ROOT[0], role="root"))
    auth.AuthEnable(etcdrpc.AuthEnableRequest())
    token = (("token", auth.Authenticate(etcdrpc.AuthenticateRequest(name=ROOT[0], password=ROOT[1])).token),)
    auth.RoleAdd(etcdrpc.AuthRoleAddRequest(name="reader"), metadata=token)
    read_all = etcdrpc.Permission(permType=etcdrpc.Permission.READ, key=b"\0", range_end=b"\0")
    auth.RoleGrantPermission(etcdrpc.AuthRoleGrantPermissionRequest(name="reader", perm=read_all),
                             metadata=token)
    auth.UserAdd(etcdrpc.AuthUserAddRequest(name="ro", password="ropw"), metadata=token)
    auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="ro", role="reader"), metadata=token)
    return auth, token


def store_of(url: str) -> EtcdStore:
    return EtcdStore.from_url(parse_url(url))


def markers(store: EtcdStore, namespace: str) -> list[str]:
    """Return the journal's "cancelled" markers: a fence that ran left one."""
    return [key for key, entry in store.scan(f"{namespace}/x/") if entry.value[:1] == b"C"]


class RefusalThing(DataObject):
    name: str = Property()


def save_refused(namespace: str) -> tuple[BackendError, float]:
    thing = RefusalThing(name="a")
    started = time.monotonic()
    with pytest.raises(BackendError) as failed:
        thing.save()
    assert not isinstance(failed.value, CommitOutcomeUnknownError), failed.value
    return failed.value, time.monotonic() - started


# --- refusals ---------------------------------------------------------------------------------


def test_a_save_a_read_only_user_may_not_make_is_refused_at_once_and_leaves_no_marker(
        own_etcd: RunningServer) -> None:
    enable_auth(own_etcd)
    root = store_of(f"etcd://{ROOT[0]}:{ROOT[1]}@{_hostport(own_etcd)}")
    namespace = f"t{uuid.uuid4().hex[:8]}"
    configure(f"etcd://ro:ropw@{_hostport(own_etcd)}", "memory://", namespace=namespace)
    try:
        error, took = save_refused(namespace)
        assert took < 2.0, f"{took:.1f} s: the refused commit was fenced as uncertain"
        assert isinstance(error.__cause__, RefusedError)
        message = str(error)
        assert "permission denied" in message and "readwrite" in message and "leadership" in message
        assert "Nothing was written" in message
        assert markers(root, namespace) == []
        with pytest.raises(RefusedError):
            store_of(f"etcd://ro:ropw@{_hostport(own_etcd)}").commit([], [Put(f"{namespace}/k", b"v")])
    finally:
        root.close()


def _run_grant(command: str) -> None:
    """Run the ``curl`` command the permission message gives (the same request by urllib without curl)."""
    if shutil.which("curl"):
        subprocess.run([*shlex.split(command), "--fail", "--silent"], check=True, timeout=10)
        return
    _, url, _, header, _, body = shlex.split(command)
    name, _, value = header.partition(": ")
    with urllib.request.urlopen(urllib.request.Request(url, body.encode(), {name: value}), timeout=10):
        pass


def test_a_user_granted_what_the_permission_message_names_saves_loads_and_leads(
        own_etcd: RunningServer) -> None:
    """The message names every grant dal needs, in a form that works: readwrite on the namespace's
    prefix (etcdctl --prefix) lets a user save and load (the store's identity needs no grant), and
    the leadership prefix, which no etcdctl argument can carry, is granted by the curl it gives."""
    auth, token = enable_auth(own_etcd)
    namespace = f"t{uuid.uuid4().hex[:8]}"
    auth.RoleAdd(etcdrpc.AuthRoleAddRequest(name="app"), metadata=token)
    within = etcdrpc.Permission(permType=etcdrpc.Permission.READWRITE, key=f"{namespace}/".encode(),
                                range_end=f"{namespace}0".encode())  # what etcdctl's --prefix grants
    auth.RoleGrantPermission(etcdrpc.AuthRoleGrantPermissionRequest(name="app", perm=within), metadata=token)
    auth.UserAdd(etcdrpc.AuthUserAddRequest(name="app", password="apppw"), metadata=token)
    auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="app", role="app"), metadata=token)
    url = f"etcd://app:apppw@{_hostport(own_etcd)}"
    configure(url, "memory://", namespace=namespace)
    thing = RefusalThing(name="granted")
    thing.save()
    assert RefusalThing(thing.guid).name == "granted"
    store = store_of(url)
    with pytest.raises(RefusedError) as denied:
        store.acquire_leadership("granted-role", "me", 5)
    message = str(denied.value)
    assert "--prefix readwrite NAMESPACE/" in message and leadership_grant() in message, message
    _run_grant(leadership_grant("app", _hostport(own_etcd), token[0][1]))
    lease = store.acquire_leadership("granted-role", "me", 5)
    assert lease.acquired
    store.release_leadership(lease)
    store.close()


def test_a_wrong_password_is_refused_and_says_to_check_it(own_etcd: RunningServer) -> None:
    enable_auth(own_etcd)
    store = store_of(f"etcd://{ROOT[0]}:nope@{_hostport(own_etcd)}")
    with pytest.raises(RefusedError, match="check the user and password"):
        store.commit([], [Put("k", b"v")])
    store.close()


def _alarm(server: RunningServer, action: Any) -> None:
    channel = grpc.insecure_channel(_hostport(server))
    member = etcdrpc.KVStub(channel).Range(etcdrpc.RangeRequest(key=b"k")).header.member_id
    request = etcdrpc.AlarmRequest(action=action, memberID=member, alarm=etcdrpc.AlarmType.NOSPACE)
    etcdrpc.MaintenanceStub(channel).Alarm(request)


def test_a_commit_under_the_space_alarm_is_refused_and_says_how_to_free_space(
        own_etcd: RunningServer) -> None:
    store = store_of(own_etcd.url)
    namespace = f"t{uuid.uuid4().hex[:8]}"
    configure(own_etcd.url, "memory://", namespace=namespace)
    RefusalThing(name="schema first").save()
    _alarm(own_etcd, etcdrpc.AlarmRequest.ACTIVATE)
    try:
        error, took = save_refused(namespace)
        assert took < 2.0, f"{took:.1f} s: the refused commit was fenced as uncertain"
        message = str(error)
        assert "etcdctl alarm disarm" in message and "--quota-backend-bytes" in message
        assert "Nothing was written" in message
        assert markers(store, namespace) == []
        # a commit that creates a key shows it did not apply (the key is absent): refused
        with pytest.raises(RefusedError):
            store.commit([Revision(f"{namespace}/new", 0)], [Put(f"{namespace}/new", b"v")])
        # one that creates none cannot show it: the write that crosses the quota is applied and
        # answered "database space exceeded" all the same
        with pytest.raises(BackendError) as plain:
            store.commit([], [Put(f"{namespace}/other", b"v")])
        assert not isinstance(plain.value, RefusedError)
    finally:
        _alarm(own_etcd, etcdrpc.AlarmRequest.DEACTIVATE)
        store.close()


def test_a_save_over_the_size_limit_leaves_no_marker(etcd_server: RunningServer) -> None:
    namespace = f"t{uuid.uuid4().hex[:8]}"
    configure(etcd_server.url, "memory://", namespace=namespace)
    store = store_of(etcd_server.url)
    RefusalThing(name="schema first").save()
    thing = RefusalThing(name="x" * 1_800_000)
    with pytest.raises(BackendError, match="Nothing was written") as failed:
        thing.save()
    assert isinstance(failed.value.__cause__, RefusedError)
    assert markers(store, namespace) == []
    store.close()


def test_a_size_refusal_after_the_member_in_use_refused_the_connection_stays_a_too_large_error(
        etcd_server: RunningServer) -> None:
    """The member in use just went down (its port refuses connections): gRPC fails the send before
    it goes out, so the live member's refusal is the request's only answer: a TooLargeError, and
    the journal leaves no marker."""
    dead = f"127.0.0.1:{closed_port()}"
    namespace = f"t{uuid.uuid4().hex[:8]}"
    context = configure(f"etcd://{dead},{_hostport(etcd_server)}", "memory://", namespace=namespace)
    store: Any = context.persistent
    RefusalThing(name="schema first").save()

    def member_in_use_down() -> None:
        store._client._current_endpoint_label = dead
        store._client.endpoints[dead].last_failed = 0

    member_in_use_down()
    with pytest.raises(TooLargeError, match="Nothing was written"):
        RefusalThing(name="x" * 1_800_000).save()
    assert markers(store, namespace) == []
    member_in_use_down()
    with pytest.raises(TooLargeError):  # a commit that may not be sent twice goes on as well
        store.commit([], [Put(f"{namespace}/big", b"x" * 1_800_000)])


@pytest.mark.parametrize("ops", [[Put("", b"v")], [Put(f"many/{i}", b"v") for i in range(129)]],
                         ids=["empty key", "too many ops"])
def test_a_commit_etcd_checks_and_refuses_is_a_refused_error(etcd_server: RunningServer,
                                                             ops: list[Put]) -> None:
    store = store_of(etcd_server.url)
    with pytest.raises(RefusedError):
        store.commit([], ops)
    store.close()


# --- logins -----------------------------------------------------------------------------------


def test_a_user_on_an_etcd_without_auth_goes_on_without_a_token_and_logs_in_once_auth_is_on(
        own_etcd: RunningServer) -> None:
    store = store_of(f"etcd://{ROOT[0]}:{ROOT[1]}@{_hostport(own_etcd)}")
    assert store.commit([], [Put("before", b"v")]).ok
    enable_auth(own_etcd)
    # the server now wants a user on every request ("user name is empty"): the store logs in
    assert store.commit([], [Put("after", b"v")]).ok
    assert store.get("after") is not None
    store.close()


# --- compaction between the requests of one read ------------------------------------------


def _compacting(store: EtcdStore, every: bool) -> dict[str, int]:
    """Make etcd compact away the revision a read is pinned to after its first request (each time)."""
    original = store._call
    calls = {"n": 0, "compactions": 0}

    def call(method: str, request: Any, **options: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2 or (every and calls["n"] > 1):
            revision = original("Txn", etcdrpc.TxnRequest(success=[etcdrpc.RequestOp(
                request_put=etcdrpc.PutRequest(key=b"compact/bump", value=b"x"))])).header.revision
            original("Compact", etcdrpc.CompactionRequest(revision=revision))
            calls["compactions"] += 1
        return original(method, request, **options)

    store._call = call  # type: ignore[method-assign]
    return calls


def test_a_multi_chunk_read_compacted_mid_way_starts_over(etcd_server: RunningServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_of(etcd_server.url)
    prefix = f"cmp{uuid.uuid4().hex[:8]}/"
    keys = [f"{prefix}{i:04d}" for i in range(200)]
    store.commit([], [Put(key, b"v") for key in keys[:100]])
    store.commit([], [Put(key, b"v") for key in keys[100:]])
    calls = _compacting(store, every=False)
    assert len(store.get_many(keys)) == 200
    assert calls["compactions"] == 1
    calls["n"] = 0
    monkeypatch.setattr(etcd_store, "KEYS_PAGE", 50)
    assert len(store.scan_keys([prefix])[prefix]) == 200
    assert calls["compactions"] == 2
    store.close()


def test_a_read_compacted_every_time_gives_up_and_says_why(etcd_server: RunningServer) -> None:
    store = store_of(etcd_server.url)
    prefix = f"cmp{uuid.uuid4().hex[:8]}/"
    keys = [f"{prefix}{i:04d}" for i in range(200)]
    store.commit([], [Put(key, b"v") for key in keys[:100]])
    _compacting(store, every=True)
    with pytest.raises(BackendError, match=r"compacted during each of 3 reads.*try again"):
        store.get_many(keys)
    store.close()


# --- odd inputs -------------------------------------------------------------------------------


def test_a_leadership_ttl_past_etcds_maximum_is_clamped(etcd_server: RunningServer) -> None:
    store = store_of(etcd_server.url)
    role = f"role-{uuid.uuid4().hex[:8]}"
    lease = store.acquire_leadership(role, "me", 1e300)
    try:
        assert lease.acquired and lease.ttl == 9_000_000_000  # etcd's MaxLeaseTTL
    finally:
        store.release_leadership(lease)
        store.close()


@pytest.mark.parametrize("call", [
    lambda store: store.get("a\ud800"),
    lambda store: store.get_many(["ok", "a\ud800"]),
    lambda store: store.scan("a\ud800"),
    lambda store: store.scan_keys(["a\ud800"]),
    lambda store: store.commit([], [Put("a\ud800", b"v")]),
    lambda store: store.commit([Revision("a\ud800", 0)], []),
    lambda store: store.acquire_leadership("r\ud800", "me", 5),
    lambda store: store.acquire_leadership("r", "m\ud800", 5),
], ids=["get", "get_many", "scan", "scan_keys", "put", "check", "role", "owner"])
def test_a_key_with_a_lone_surrogate_is_an_invalid_value(etcd_server: RunningServer, call: Any) -> None:
    store = store_of(etcd_server.url)
    with pytest.raises(InvalidValueError, match="surrogate"):
        call(store)
    store.close()


# --- stubbed members: what no real server can be made to do on cue -----------------------------


def _stubbed(url: str, stubs: dict[str, dict[str, Any]]) -> EtcdStore:
    store = EtcdStore.from_url(parse_url(url))
    store._stubs = stubs  # type: ignore[attr-defined]
    return store


def test_a_login_refused_after_a_send_that_got_no_answer_is_not_a_refusal() -> None:
    """Member A dropped the connection after the commit went out (it may apply it), B refuses A's
    token (simple tokens are per member), and logging in again fails: the commit is uncertain."""
    logins: list[str] = []

    class Kv:
        def __init__(self, first: bool) -> None:
            self.first = first

        def Txn(self, request: Any, timeout: float, metadata: Any) -> Any:
            if self.first:
                raise _RpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed")
            raise _RpcError(grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")

    class Auth:
        def Authenticate(self, request: Any, timeout: float, metadata: Any) -> Any:
            logins.append("login")
            if len(logins) == 1:
                return etcdrpc.AuthenticateResponse(token="t1")
            raise _RpcError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: authentication failed, "
                                                               "invalid user ID or password")

    hosts = ["127.0.0.1:23791", "127.0.0.1:23792"]
    store = _stubbed(f"etcd://u:p@{','.join(hosts)}?timeout=5",
                     {host: {"kv": Kv(host == hosts[0]), "auth": Auth()} for host in hosts})
    store._client._current_endpoint_label = hosts[0]  # type: ignore[attr-defined]
    with pytest.raises(BackendError) as raised:
        store.commit([Revision("k", 0)], [Put("k", b"v")])
    assert not isinstance(raised.value, RefusedError), raised.value
    assert "may have been applied" in str(raised.value) and len(logins) == 2


def test_a_slow_but_healthy_member_keeps_nearly_the_whole_timeout() -> None:
    """Every member serves the read in 1.2 s, under a 2.5 s timeout over 3 members: the first send
    waits 2.5 s less 0.5 s for each of the 2 others, and the read succeeds on it (a share of a third
    each, 0.83 s, failed it on every member)."""
    sends: list[float] = []

    class Kv:
        def Range(self, request: Any, timeout: float, metadata: Any) -> Any:
            sends.append(timeout)
            if timeout < 1.2:
                time.sleep(timeout)
                raise _RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            time.sleep(1.2)
            return etcdrpc.RangeResponse()

    hosts = ["127.0.0.1:23791", "127.0.0.1:23792", "127.0.0.1:23793"]
    store = _stubbed(f"etcd://{','.join(hosts)}?timeout=2.5", {host: {"kv": Kv()} for host in hosts})
    assert store.scan("big/") == []
    assert len(sends) == 1 and 1.3 < sends[0] <= 1.5, sends


#: what the leader of a cluster that lost its quorum does with a request: keep it unanswered until the
#: deadline, or (having stepped down meanwhile) answer that its leader changed
TAKEN = {"unanswered": (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
         "leader-changed": (grpc.StatusCode.UNAVAILABLE, "etcdserver: leader changed"),
         "timed-out": (grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out")}


def _members_of_a_cluster_without_quorum(silent: str, taken: str = "unanswered") -> dict[str, dict[str, Any]]:
    """Stubs of three members: ``silent`` (the leader left alone) takes a commit and does not apply it
    (``taken``: how it answers), the other two refuse connections."""
    class Kv:
        def __init__(self, host: str) -> None:
            self.host = host

        def Txn(self, request: Any, timeout: float, metadata: Any) -> Any:
            if self.host == silent:
                raise _RpcError(*TAKEN[taken])
            raise _RpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last "
                                                         "error: UNKNOWN: Connection refused")

    return {host: {"kv": Kv(host)} for host in HOSTS}


HOSTS = ["127.0.0.1:23791", "127.0.0.1:23792", "127.0.0.1:23793"]


@pytest.mark.parametrize("taken", list(TAKEN))
@pytest.mark.parametrize("order", [(1, 0, 2, 0), (0, 2, 1, 2), (0, 1, 2, 1), (1, 1, 1, 1)])
def test_a_commit_one_member_took_and_never_answered_is_reported_as_unanswered(
        order: tuple[int, ...], taken: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Member 1 takes the commit and answers nothing; the others refuse it. In whatever order the
    sends reach them (a refusing member's failure mark may have expired by the last one), the failure
    says the cluster did not answer (the commit may apply), never that it could not be reached."""
    members = _members_of_a_cluster_without_quorum(HOSTS[1], taken)
    store = _stubbed(f"etcd://{','.join(HOSTS)}?timeout=2", members)
    endpoints: Any = store._endpoints  # type: ignore[attr-defined]
    by_host = {endpoint.netloc: endpoint for endpoint in endpoints}
    picks = iter([by_host[HOSTS[index]] for index in order])
    monkeypatch.setattr(store, "_pick_endpoint", lambda: next(picks))
    for endpoint in endpoints:
        monkeypatch.setattr(endpoint, "is_failed", lambda: False)
    with pytest.raises(BackendError) as raised:
        store.commit([Revision("k", 0)], [Put("k", b"v")])
    message = str(raised.value)
    said = "did not answer within 2 s" if taken == "unanswered" else "did not confirm the request"
    assert said in message and "majority" in message and "could not reach" not in message, message
    assert "UNAVAILABLE" not in message and not isinstance(raised.value, RefusedError)


def test_a_commit_not_safe_to_resend_is_not_sent_to_another_member_after_etcd_took_it() -> None:
    """A member answered that it could not confirm the commit (it proposed it: it may yet apply), so a
    commit without a check that would fail on its own first application goes nowhere else."""
    sends: list[str] = []

    class Kv:
        def __init__(self, host: str) -> None:
            self.host = host

        def Txn(self, request: Any, timeout: float, metadata: Any) -> Any:
            sends.append(self.host)
            if self.host == HOSTS[0]:
                raise _RpcError(grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out")
            return etcdrpc.TxnResponse(succeeded=True)

    store = _stubbed(f"etcd://{','.join(HOSTS)}?timeout=2", {host: {"kv": Kv(host)} for host in HOSTS})
    store._client._current_endpoint_label = HOSTS[0]  # type: ignore[attr-defined]
    with pytest.raises(BackendError, match="may yet be applied"):
        store.commit([], [Put("k", b"v")])  # no check: sent twice, it would apply twice
    assert sends == [HOSTS[0]]


@pytest.mark.parametrize("answer", ["etcdserver: no leader", "etcdserver: rpc not supported for learner"])
def test_an_answer_refusing_before_applying_is_not_taken_for_a_proposal(answer: str) -> None:
    class Kv:
        def Txn(self, request: Any, timeout: float, metadata: Any) -> Any:
            raise _RpcError(grpc.StatusCode.UNAVAILABLE, answer)

    store = _stubbed(f"etcd://{','.join(HOSTS)}?timeout=2", {host: {"kv": Kv()} for host in HOSTS})
    with pytest.raises(BackendError) as raised:
        store.commit([Revision("k", 0)], [Put("k", b"v")])
    message = str(raised.value)
    assert "refused the request before applying it" in message and "may yet" not in message, message
