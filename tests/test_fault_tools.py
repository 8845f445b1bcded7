"""The fault-test tools themselves: a multi-member etcd cluster and a loopback proxy that loses answers.

Timing bounds here are correctness bounds (nothing may hang), not benchmarks, so they are generous.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from pyetcd import etcdrpc

from dal.testing.cluster import EtcdCluster, Member, start_etcd_cluster
from dal.testing.fixtures import start_or_skip
from dal.testing.proxy import LoopbackProxy
from dal.testing.servers import RunningServer, start_etcd

#: seconds a client waits for something that should happen at once
SOON = 5.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    with start_or_skip("etcd cluster", lambda: start_etcd_cluster(tmp_path / "cluster")) as running:
        yield running


@pytest.fixture
def single_etcd(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_or_skip("etcd", lambda: start_etcd(tmp_path / "etcd"))
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def kv_stub(host: str, port: int) -> Iterator[Any]:
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        yield etcdrpc.KVStub(channel)


def get(member: Member, key: bytes, *, serializable: bool = False) -> bytes | None:
    """Read ``key`` from one member: linearizable by default, or from its local copy only."""
    with kv_stub(*member.endpoint) as kv:
        response = kv.Range(etcdrpc.RangeRequest(key=key, serializable=serializable), timeout=SOON)
    return bytes(response.kvs[0].value) if response.kvs else None


def put_anywhere(cluster: EtcdCluster, key: bytes, value: bytes, within: float = 10.0) -> None:
    """Write through whichever of the cluster's endpoints takes it, as a failing-over client does."""
    deadline = time.monotonic() + within
    errors: list[str] = []
    while time.monotonic() < deadline:
        for host, port in cluster.endpoints:
            with kv_stub(host, port) as kv:
                try:
                    kv.Put(etcdrpc.PutRequest(key=key, value=value), timeout=2)
                    return
                except grpc.RpcError as exc:
                    errors.append(f"{port}: {exc.code()}")
        time.sleep(0.1)
    pytest.fail(f"no endpoint of {cluster.url} took a write within {within} s: {errors[-6:]}")


def leader_ids(cluster: EtcdCluster) -> set[int]:
    """Return the leader id every live member reports."""
    ids = set()
    for member in cluster.live_members():
        with grpc.insecure_channel(f"{member.host}:{member.client_port}") as channel:
            status = etcdrpc.MaintenanceStub(channel).Status(etcdrpc.StatusRequest(), timeout=SOON)
        ids.add(int(status.leader))
    return ids


def member_id(member: Member) -> int:
    with grpc.insecure_channel(f"{member.host}:{member.client_port}") as channel:
        status = etcdrpc.MaintenanceStub(channel).Status(etcdrpc.StatusRequest(), timeout=SOON)
    return int(status.header.member_id)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- the etcd cluster ----------------------------------------------------------------------


@pytest.mark.etcd
def test_cluster_starts_three_members_that_agree_on_one_leader(cluster: EtcdCluster) -> None:
    assert len(cluster.members) == 3
    assert all(member.running for member in cluster.members)
    ports = [port for member in cluster.members for port in (member.client_port, member.peer_port)]
    assert len(set(ports)) == 6
    assert cluster.url == "etcd://" + ",".join(f"127.0.0.1:{m.client_port}" for m in cluster.members)
    assert all(member.data_dir.is_dir() and member.log_path.is_file() for member in cluster.members)

    leader = cluster.leader()
    assert leader in cluster.members
    # every member names the same leader: one cluster, not three single-member ones
    assert leader_ids(cluster) == {member_id(leader)}
    assert len({member_id(member) for member in cluster.members}) == 3

    # a write through one member is read back linearizably through each of the others
    first, *others = cluster.members
    with kv_stub(*first.endpoint) as kv:
        kv.Put(etcdrpc.PutRequest(key=b"k", value=b"v"), timeout=SOON)
    assert [get(member, b"k") for member in others] == [b"v", b"v"]


@pytest.mark.etcd
def test_killed_leader_is_replaced_and_rejoins_with_what_it_missed(cluster: EtcdCluster) -> None:
    old = cluster.leader()
    cluster.kill(old)
    assert not old.running
    killed_at = time.monotonic()

    new = cluster.leader(timeout=10)
    # election timeout is 500 ms: a new leader within a few seconds, not etcd's default scale
    assert time.monotonic() - killed_at < 5
    assert new is not old
    assert new in cluster.members
    assert leader_ids(cluster) == {member_id(new)}

    put_anywhere(cluster, b"written-while-down", b"yes")
    assert cluster.wait_healthy(10) is new

    cluster.restart(old)
    assert old.running
    # its local copy (a serializable read asks no other member) holds the write it missed
    assert get(old, b"written-while-down", serializable=True) == b"yes"
    assert get(old, b"written-while-down") == b"yes"
    assert len(leader_ids(cluster)) == 1


@pytest.mark.etcd
def test_paused_leader_is_replaced_and_resumes_as_a_follower(cluster: EtcdCluster) -> None:
    old = cluster.leader()
    cluster.pause(old)
    try:
        assert old.paused
        new = cluster.leader(timeout=10)
        assert new is not old
        put_anywhere(cluster, b"written-while-frozen", b"yes")
    finally:
        cluster.resume(old)
    assert not old.paused
    assert cluster.wait_healthy(10) is new
    assert get(old, b"written-while-frozen") == b"yes"
    assert leader_ids(cluster) == {member_id(new)}


@pytest.mark.etcd
def test_stop_ends_every_process_the_cluster_started(tmp_path: Path) -> None:
    cluster = start_or_skip("etcd cluster", lambda: start_etcd_cluster(tmp_path / "cluster"))
    try:
        victim, frozen = cluster.members[0], cluster.members[1]
        cluster.kill(victim)
        cluster.restart(victim)
        # a frozen member must be stopped too (a stopped process ignores SIGTERM until continued)
        cluster.pause(frozen)
        pids = cluster.pids
        assert len(pids) == 4
        assert sum(alive(pid) for pid in pids) == 3
    finally:
        cluster.stop()
    assert [pid for pid in pids if alive(pid)] == []
    assert all(member.process.returncode is not None for member in cluster.members)
    cluster.stop()


# --- the proxy against a tiny TCP server ---------------------------------------------------


class EchoServer:
    """A loopback TCP server that sends back what it receives and remembers it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.listener.getsockname()
        self.received = bytearray()
        self.accepted = 0
        self.got_data = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    self.received += data
                    self.got_data.set()
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        # closing alone does not wake a thread blocked in accept(); shutting down does (on Linux)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(SOON)
        for thread in self._threads:
            thread.join(SOON)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[LoopbackProxy]:
    with LoopbackProxy(echo.address) as running:
        yield running


def connect(proxy: LoopbackProxy, timeout: float = SOON) -> socket.socket:
    return socket.create_connection(proxy.address, timeout=timeout)


def receive_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def read_to_end(sock: socket.socket) -> bytes:
    """Read until the peer ends the connection; a reset ends it too."""
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)


def test_proxy_forwards_both_ways_with_half_close(proxy: LoopbackProxy, echo: EchoServer) -> None:
    # bigger than any socket buffer, so the proxy's backpressure and partial sends are exercised
    payload = os.urandom(3 * 1024 * 1024)
    with connect(proxy) as first, connect(proxy) as second:
        second.sendall(b"hello")
        assert receive_exactly(second, 5) == b"hello"

        def send_all_then_end() -> None:
            first.sendall(payload)
            first.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send_all_then_end)
        sender.start()
        # the client's end of input reaches the server, whose end comes back after the whole echo
        assert read_to_end(first) == payload
        sender.join(SOON)
    assert echo.accepted == 2
    assert proxy.connections == 2
    assert proxy.bytes_to_server == proxy.bytes_to_client == len(payload) + 5


def test_drop_next_answer_close_delivers_the_request_and_drops_the_client(
        proxy: LoopbackProxy, echo: EchoServer) -> None:
    with connect(proxy) as bystander:
        bystander.sendall(b"before")
        assert receive_exactly(bystander, 6) == b"before"
        handle = proxy.drop_next_answer("close")
        assert not handle.claimed
        with connect(proxy) as victim:
            victim.sendall(b"request")
            assert handle.wait(SOON)
            # the connection ends (reset) with none of the answer
            assert read_to_end(victim) == b""
        assert handle.claimed and handle.fired
        assert handle.discarded_bytes == len(b"request")
        assert b"request" in echo.received
        # one-shot, and only the faulted connection: the others and new ones work
        bystander.sendall(b"after")
        assert receive_exactly(bystander, 5) == b"after"
    with connect(proxy) as fresh:
        fresh.sendall(b"fresh")
        assert receive_exactly(fresh, 5) == b"fresh"


def test_drop_next_answer_hold_makes_the_client_time_out(proxy: LoopbackProxy, echo: EchoServer) -> None:
    handle = proxy.drop_next_answer("hold", hold=1.0)
    with connect(proxy, timeout=0.3) as victim:
        sent_at = time.monotonic()
        victim.sendall(b"request")
        with pytest.raises(TimeoutError):
            victim.recv(100)
        assert handle.wait(SOON)
        assert b"request" in echo.received
        # after the hold the connection is reset, still without the answer
        victim.settimeout(SOON)
        assert read_to_end(victim) == b""
        assert 0.9 < time.monotonic() - sent_at < SOON
    assert handle.discarded_bytes == len(b"request")
    with connect(proxy) as fresh:
        fresh.sendall(b"fresh")
        assert receive_exactly(fresh, 5) == b"fresh"


def test_drop_next_answer_refuses_a_second_fault_or_a_bad_mode(proxy: LoopbackProxy) -> None:
    with pytest.raises(ValueError):
        proxy.drop_next_answer("lose")
    with pytest.raises(ValueError):
        proxy.drop_next_answer("hold")
    proxy.drop_next_answer()
    with pytest.raises(RuntimeError):
        proxy.drop_next_answer()


def test_blackhole_forwards_nothing_then_delivers_late(proxy: LoopbackProxy, echo: EchoServer) -> None:
    with connect(proxy) as before:
        before.sendall(b"ping")
        assert receive_exactly(before, 4) == b"ping"
        proxy.blackhole(True)
        before.settimeout(0.3)
        before.sendall(b"lost?")
        with connect(proxy, timeout=0.3) as during:
            during.sendall(b"late")
            with pytest.raises(TimeoutError):
                during.recv(100)
            with pytest.raises(TimeoutError):
                before.recv(100)
            # a partition: the server saw neither the bytes nor the new connection
            assert echo.received == b"ping"
            assert echo.accepted == 1
            proxy.blackhole(False)
            during.settimeout(SOON)
            before.settimeout(SOON)
            # nothing was discarded: it all arrives once the partition ends
            assert receive_exactly(during, 4) == b"late"
            assert receive_exactly(before, 5) == b"lost?"
    assert echo.accepted == 2


def test_lose_throws_away_what_is_sent_meanwhile_and_keeps_connections(
        proxy: LoopbackProxy, echo: EchoServer) -> None:
    with connect(proxy) as busy, connect(proxy) as idle:
        for sock in (busy, idle):
            sock.sendall(b"ping")
            assert receive_exactly(sock, 4) == b"ping"
        proxy.lose(True)
        busy.settimeout(0.3)
        busy.sendall(b"lost")
        with pytest.raises(TimeoutError):
            busy.recv(100)
        proxy.lose(False)
        # the server never saw the bytes sent meanwhile, and nothing arrives late
        assert echo.received == b"pingping" and proxy.bytes_lost == 4
        busy.settimeout(SOON)
        busy.sendall(b"next")
        assert receive_exactly(busy, 4) == b"next"
        # a connection idle meanwhile works on as before
        idle.settimeout(SOON)
        idle.sendall(b"again")
        assert receive_exactly(idle, 5) == b"again"


def test_cut_resets_current_connections_and_keeps_listening(proxy: LoopbackProxy) -> None:
    with connect(proxy) as victim:
        victim.sendall(b"x")
        assert receive_exactly(victim, 1) == b"x"
        assert proxy.active == 1
        proxy.cut()
        with pytest.raises(ConnectionResetError):
            victim.recv(100)
    assert proxy.active == 0
    with connect(proxy) as fresh:
        fresh.sendall(b"y")
        assert receive_exactly(fresh, 1) == b"y"


def test_stop_closes_everything_and_is_idempotent(echo: EchoServer) -> None:
    proxy = LoopbackProxy(echo.address).start()
    client = connect(proxy)
    proxy.stop()
    proxy.stop()
    with client:
        assert read_to_end(client) == b""
    with pytest.raises(ConnectionRefusedError):
        connect(proxy).close()


# --- the proxy in front of a real etcd -----------------------------------------------------


@pytest.fixture
def etcd_proxy(single_etcd: RunningServer) -> Iterator[LoopbackProxy]:
    with LoopbackProxy((single_etcd.host, single_etcd.port)) as running:
        yield running


@pytest.mark.etcd
def test_grpc_put_whose_answer_is_lost_is_unavailable_yet_applied(
        single_etcd: RunningServer, etcd_proxy: LoopbackProxy) -> None:
    with kv_stub(*etcd_proxy.address) as kv:
        # one call first, so the HTTP/2 connection is up and idle when the fault is armed
        kv.Range(etcdrpc.RangeRequest(key=b"warm-up"), timeout=SOON)
        handle = etcd_proxy.drop_next_answer("close")
        with pytest.raises(grpc.RpcError) as raised:
            kv.Put(etcdrpc.PutRequest(key=b"lost-answer", value=b"applied"), timeout=SOON)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert handle.fired
        with kv_stub(single_etcd.host, single_etcd.port) as direct:
            response = direct.Range(etcdrpc.RangeRequest(key=b"lost-answer"), timeout=SOON)
        assert [bytes(kv.value) for kv in response.kvs] == [b"applied"]
        # the channel reconnects by itself: a call through the proxy works again (on a loaded
        # machine the first may still meet the closed connection before the channel saw it close)
        for attempt in range(3):
            try:
                again = kv.Range(etcdrpc.RangeRequest(key=b"lost-answer"), timeout=SOON)
                break
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 2:
                    raise
        assert [bytes(kv.value) for kv in again.kvs] == [b"applied"]
    assert etcd_proxy.connections == 2


@pytest.mark.etcd
def test_grpc_put_held_past_its_deadline_times_out_yet_is_applied(
        single_etcd: RunningServer, etcd_proxy: LoopbackProxy) -> None:
    with kv_stub(*etcd_proxy.address) as kv:
        kv.Range(etcdrpc.RangeRequest(key=b"warm-up"), timeout=SOON)
        handle = etcd_proxy.drop_next_answer("hold", hold=1.0)
        with pytest.raises(grpc.RpcError) as raised:
            kv.Put(etcdrpc.PutRequest(key=b"held-answer", value=b"applied"), timeout=0.3)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert handle.wait(SOON)
    with kv_stub(single_etcd.host, single_etcd.port) as direct:
        response = direct.Range(etcdrpc.RangeRequest(key=b"held-answer"), timeout=SOON)
    assert [bytes(kv.value) for kv in response.kvs] == [b"applied"]
